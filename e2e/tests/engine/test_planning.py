"""How the engine plans reads of Iceberg tables: with the data files' statistics (what
DataFusion's own listing tables have), and without fetching a file's footer twice in a session.

Against the real stack: the catalog's tables (seeded lake.demo.a: 3000 rows, lake.demo.b: 2000
rows), read as alice with the keys the catalog vends; MinIO's audit log shows every request."""

import time

import pytest

from test_catalog_queries import connect, query

pytestmark = pytest.mark.usefixtures("needs_catalog")


def physical_plan(engine, sql: str) -> str:
    rows = query(engine, "alice", f"EXPLAIN {sql}").to_pylist()
    return next(r["plan"] for r in rows if r["plan_type"] == "physical_plan")


def test_a_join_builds_its_hash_table_from_the_smaller_table_as_the_files_say(engine):
    """demo.b (2000 rows) is the smaller side whichever way the query names the tables, and
    small enough to collect: DataFusion can only know that from the files' row counts."""
    for sql in ["SELECT count(*) FROM lake.demo.a a JOIN lake.demo.b b ON a.id = b.order_id",
                "SELECT count(*) FROM lake.demo.b b JOIN lake.demo.a a ON a.id = b.order_id"]:
        plan = physical_plan(engine, sql).splitlines()
        join = next(i for i, l in enumerate(plan) if "HashJoinExec" in l)
        assert "mode=CollectLeft" in plan[join], "\n".join(plan)
        build_side = next(l for l in plan[join + 1:] if "DataSourceExec" in l)
        assert "demo/b_" in build_side, "\n".join(plan)


def test_count_star_of_a_table_is_answered_from_its_files_row_counts(engine):
    plan = physical_plan(engine, "SELECT count(*) AS n FROM lake.demo.a")
    assert "DataSourceExec" not in plan, plan
    assert query(engine, "alice", "SELECT count(*) AS n FROM lake.demo.a").column("n").to_pylist() == [3000]
    # With a filter the rows are read and counted.
    filtered = query(engine, "alice", "SELECT count(*) AS n FROM lake.demo.a WHERE id <= 1000")
    assert filtered.column("n").to_pylist() == [1000]


def test_a_sessions_second_read_of_a_snapshot_fetches_no_footer_or_manifest_again(engine, minio_audit):
    """The first statement reads the snapshot's manifest list and manifests, each data file's
    footer (for its statistics) and its columns; the same statement again in the same session
    (after a new loadTable naming the same snapshot) reads only the columns, with freshly vended
    keys all the same (what is kept holds no data and no key)."""
    sql = "SELECT sum(score) AS s, count(name) AS n FROM lake.demo.a"

    def data_reads(cur) -> tuple[list, list[dict], list[dict]]:
        before = len(minio_audit.entries())
        cur.execute(sql)
        answer = cur.fetch_arrow_table().to_pylist()
        minio_audit.wait_for(minio_audit.object_read("demo/a_"), since=before)
        time.sleep(1.5)  # the webhook delivers asynchronously: let the run's last requests arrive
        reads = [e for e in minio_audit.entries()[before:] if minio_audit.object_read("demo/a_")(e)]
        manifests = [e for e in reads if e["api"]["object"].endswith(".avro")]
        return answer, [e for e in reads if e["api"]["object"].endswith(".parquet")], manifests

    with connect(engine, "alice") as conn, conn.cursor() as cur:
        first_answer, first, first_manifests = data_reads(cur)
        time.sleep(0.5)  # past the moment a statement's load is reused: the next one loads anew
        second_answer, second, second_manifests = data_reads(cur)
    assert first_answer == second_answer and first_answer[0]["n"] == 3000
    assert first and second, (first, second)
    assert len(second) < len(first), (len(first), len(second))
    assert len(first_manifests) >= 2, "the manifest list and a manifest"
    assert second_manifests == [], second_manifests
    keys = lambda reads: {e["requestClaims"]["accessKey"] for e in reads if e.get("requestClaims")}  # noqa: E731
    assert keys(second), "the second read is signed with vended keys too"
