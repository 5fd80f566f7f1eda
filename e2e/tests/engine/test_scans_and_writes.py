"""Reading and writing Iceberg tables through the engine, against the real catalog (Nessie) and
object store (MinIO): parallel scans, CREATE TABLE AS SELECT with rows, and time travel
(`FOR VERSION AS OF`, `FOR TIMESTAMP AS OF`). Expected values come from pyiceberg reading the
same tables directly, never from the engine.
"""

import datetime as dt
import re
import uuid

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pytest

from position_deletes import delete_positions
from test_catalog_queries import assert_denied, connect, denied, query


pytestmark = pytest.mark.usefixtures("needs_catalog")


@pytest.fixture
def scratch(engine):
    """A unique table name in alice's writable namespace, dropped afterwards."""
    name = f"lake.alice_ws.t_{uuid.uuid4().hex[:10]}"
    yield name
    try:
        run(engine, "alice", f"DROP TABLE {name}")
    except adbc.Error:
        pass


def run(engine, user: str, *statements: str) -> None:
    with connect(engine, user) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
            cur.fetchall()


def explain(engine, user: str, sql: str) -> str:
    return "\n".join(query(engine, user, f"EXPLAIN {sql}").column("plan").to_pylist())


def scan_line(plan: str) -> str:
    return next(l for l in plan.splitlines() if "DataSourceExec" in l or "ParallelIcebergScan" in l)


def parquet_scan(plan: str) -> tuple[int, int]:
    """(file groups = partitions, files) of the DataSourceExec reading Parquet."""
    line = next(l for l in plan.splitlines() if "DataSourceExec" in l)
    groups = int(re.search(r"file_groups=\{(\d+) groups?:", line).group(1))
    return groups, line.count(".parquet")


def test_a_scan_spreads_the_planned_files_over_the_cores_and_prunes_with_the_predicate(
    engine, catalog
):
    admin = catalog.pyiceberg(catalog.token("sqe-admin"))
    b = admin.load_table("demo.b")
    files = len(list(b.scan().plan_files()))
    assert files >= 2, f"demo.b should have several files (one per region), has {files}"

    plan = explain(engine, "bob", "SELECT region, sum(qty) FROM lake.demo.b GROUP BY region")
    assert parquet_scan(plan) == (2, files), plan

    # Partition pruning by iceberg's planning: a filter on the partition column leaves one file,
    # and DataFusion gets the predicate for row-group and page pruning.
    region = b.scan(selected_fields=("region",)).to_arrow().column("region")[0].as_py()
    pruned = explain(engine, "bob", f"SELECT count(*) FROM lake.demo.b WHERE region = '{region}'")
    assert parquet_scan(pruned) == (1, 1), pruned
    assert f"predicate=region@2 = {region}" in scan_line(pruned), pruned

    # And the parallel result is the whole table, row for row.
    expected = b.scan().to_arrow()
    got = query(engine, "bob", "SELECT * FROM lake.demo.b")
    key = [(c, "ascending") for c in expected.column_names]
    assert got.num_rows == expected.num_rows
    assert got.cast(expected.schema).sort_by(key).equals(expected.sort_by(key))


def test_a_table_whose_schema_changed_is_read_by_field_id(engine, catalog, scratch):
    """DataFusion's reader matches columns by name; after a rename that would read nulls (or the
    wrong column). Such tables go to iceberg-rust's reader, which matches by field id."""
    run(engine, "alice", f"CREATE TABLE {scratch} (id BIGINT, v VARCHAR)")
    run(engine, "alice", f"INSERT INTO {scratch} VALUES (1, 'one'), (2, 'two')")
    # Rename v → word and add extra, as alice, with a raw REST commit (pyiceberg's schema update
    # omits `last-column-id`, which Nessie 0.99 requires: HTTP 400).
    token = catalog.token("alice")
    field = lambda i, n, t: {"id": i, "name": n, "required": False, "type": t}  # noqa: E731
    change = {
        "requirements": [{"type": "assert-current-schema-id", "current-schema-id": 0}],
        "updates": [
            {"action": "add-schema", "last-column-id": 3, "schema": {
                "type": "struct", "schema-id": 1,
                "fields": [field(1, "id", "long"), field(2, "word", "string"), field(3, "extra", "long")]}},
            {"action": "set-current-schema", "schema-id": -1},
        ],
    }
    table_name = scratch.rsplit(".", 1)[1]
    r = catalog.request("POST", f"/namespaces/alice_ws/tables/{table_name}", token, json=change)
    assert r.status_code == 200, r.text
    run(engine, "alice", f"INSERT INTO {scratch} VALUES (3, 'three', 33)")

    plan = explain(engine, "alice", f"SELECT * FROM {scratch}")
    assert "ParallelIcebergScan" in plan and "DataSourceExec" not in plan, plan
    got = query(engine, "alice", f"SELECT id, word, extra FROM {scratch} ORDER BY id").to_pylist()
    assert got == [
        {"id": 1, "word": "one", "extra": None},
        {"id": 2, "word": "two", "extra": None},
        {"id": 3, "word": "three", "extra": 33},
    ]


def test_rows_deleted_merge_on_read_stay_deleted(engine, catalog, scratch):
    """A merge-on-read delete keeps the data file and lists its dead rows in a position-delete
    file. The engine must not return them: files with deletes go to iceberg-rust's reader, which
    applies them; files without still go to DataFusion's."""
    table_name = scratch.rsplit(".", 1)[1]
    run(engine, "alice", f"CREATE TABLE {scratch} (id BIGINT, v VARCHAR)")
    alice = catalog.pyiceberg(catalog.token("alice"))
    table = alice.load_table(f"alice_ws.{table_name}")
    ids = list(range(1000))
    table.append(pa.table({"id": ids, "v": [f"v{i}" for i in ids]}, schema=table.schema().as_arrow()))
    (data_file,) = [t.file.file_path for t in table.refresh().scan().plan_files()]
    # Rows are where pyiceberg wrote them: row i has id i. Delete every id divisible by 3.
    table = delete_positions(table, data_file, [i for i in ids if i % 3 == 0])

    # The catalog now plans a delete file against the data file, and pyiceberg applies it.
    tasks = list(table.scan().plan_files())
    assert [d.content.name for t in tasks for d in t.delete_files] == ["POSITION_DELETES"], tasks
    truth = table.scan().to_arrow()
    assert truth.num_rows == 666

    got = query(engine, "alice", f"SELECT count(*) AS n, sum(id) AS s, min(id % 3) AS m FROM {scratch}")
    assert got.to_pylist() == [{"n": 666, "s": sum(truth.column("id").to_pylist()), "m": 1}]
    assert query(engine, "alice", f"SELECT v FROM {scratch} WHERE id = 3").num_rows == 0
    assert query(engine, "alice", f"SELECT v FROM {scratch} WHERE id = 4").to_pylist() == [{"v": "v4"}]

    # A later append by the engine: its file has no deletes and is read by DataFusion's reader,
    # in the same scan as the file with deletes.
    run(engine, "alice", f"INSERT INTO {scratch} VALUES (3000, 'new'), (3003, 'new')")
    plan = explain(engine, "alice", f"SELECT * FROM {scratch}")
    assert "ParallelIcebergScan" in plan and "DataSourceExec" in plan, plan
    got = query(engine, "alice", f"SELECT count(*) AS n, sum(id) AS s FROM {scratch}").to_pylist()
    assert got == [{"n": 668, "s": sum(truth.column("id").to_pylist()) + 3000 + 3003}]


def test_create_table_as_select_with_rows_commits_as_alice(engine, catalog, scratch):
    audit_mark = len(catalog.access_log_lines())
    run(
        engine,
        "alice",
        f"CREATE TABLE {scratch} AS SELECT id, employee, id * 2 AS twice FROM lake.demo.c WHERE id <= 100",
    )
    written = catalog.pyiceberg(catalog.token("alice")).load_table(scratch.removeprefix("lake.")).scan().to_arrow()
    source = catalog.pyiceberg(catalog.token("sqe-admin")).load_table("demo.c").scan(row_filter="id <= 100").to_arrow()
    assert written.num_rows == source.num_rows > 0
    assert sorted(written.column("id").to_pylist()) == sorted(source.column("id").to_pylist())
    assert sorted(written.column("twice").to_pylist()) == sorted(2 * i for i in source.column("id").to_pylist())

    # The create and the append both reached the catalog as alice, and only as alice.
    table = scratch.rsplit(".", 1)[1]
    lines = [l for l in catalog.access_log_lines()[audit_mark:] if table in l]
    assert any("POST" in l for l in lines), lines
    assert lines and all("principal=alice" in l for l in lines), lines


def test_bob_cannot_create_tables_in_alices_namespace(engine):
    err = denied(engine, "bob", f"CREATE TABLE lake.alice_ws.t_{uuid.uuid4().hex[:8]} AS SELECT 1 AS x")
    assert_denied(err)


def test_time_travel_reads_the_snapshots_the_catalog_keeps(engine, catalog, scratch):
    """Nessie keeps only a table's current snapshot in its Iceberg metadata (its history lives in
    Nessie commits: projectnessie/nessie#8991), so a replaced snapshot is gone for every Iceberg
    client. Reading older snapshots is covered by the unit tests of `time_travel::resolve`; here,
    what the real catalog allows: the current snapshot by id, by branch and by time, and a clear
    NOT_FOUND for one it no longer has."""
    run(engine, "alice", f"CREATE TABLE {scratch} (id BIGINT, v VARCHAR)")
    run(engine, "alice", f"INSERT INTO {scratch} VALUES (1, 'one'), (2, 'two')")
    ident = scratch.removeprefix("lake.")
    replaced = catalog.pyiceberg(catalog.token("alice")).load_table(ident).current_snapshot().snapshot_id
    run(engine, "alice", f"INSERT INTO {scratch} VALUES (3, 'three')")
    current = catalog.pyiceberg(catalog.token("alice")).load_table(ident).current_snapshot()
    assert current.snapshot_id != replaced

    def ids(sql: str) -> list[int]:
        return sorted(query(engine, "alice", sql).column("id").to_pylist())

    assert ids(f"SELECT id FROM {scratch}") == [1, 2, 3]
    assert ids(f"SELECT id FROM {scratch} FOR VERSION AS OF {current.snapshot_id}") == [1, 2, 3]
    assert ids(f"SELECT id FROM {scratch} FOR VERSION AS OF 'main'") == [1, 2, 3]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert ids(f"SELECT id FROM {scratch} FOR TIMESTAMP AS OF TIMESTAMP '{now}'") == [1, 2, 3]
    err = denied(engine, "alice", f"SELECT id FROM {scratch} FOR VERSION AS OF {replaced}")
    assert err.status_code.name == "NOT_FOUND" and f"has no snapshot {replaced}" in str(err), err

    # The snapshot ids are visible to the user through the metadata table.
    listed = query(engine, "alice", f'SELECT snapshot_id FROM lake.alice_ws."{scratch.rsplit(".", 1)[1]}$snapshots"')
    assert listed.column("snapshot_id").to_pylist() == [current.snapshot_id]


def test_time_travel_mistakes_get_clear_errors(engine, scratch):
    run(engine, "alice", f"CREATE TABLE {scratch} AS SELECT 1 AS id")
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        for sql, code, text in [
            (f"SELECT * FROM {scratch} FOR VERSION AS OF 12345", "NOT_FOUND", "has no snapshot 12345"),
            (f"SELECT * FROM {scratch} FOR VERSION AS OF 'nope'", "NOT_FOUND", "no branch or tag 'nope'"),
            (f"SELECT * FROM {scratch} FOR TIMESTAMP AS OF TIMESTAMP '2000-01-01 00:00:00'", "NOT_FOUND",
             "no snapshot at or before 2000-01-01"),
            (f"SELECT * FROM {scratch} FOR TIMESTAMP AS OF 'last tuesday'", "INVALID_ARGUMENT", "needs a timestamp"),
            (f"INSERT INTO {scratch} FOR VERSION AS OF 'main' VALUES (2)", "INVALID_ARGUMENT", "read-only"),
        ]:
            with pytest.raises(adbc.Error) as e:
                cur.execute(sql)
                cur.fetchall()
            assert e.value.status_code.name == code, (sql, e.value)
            assert text in str(e.value), (sql, e.value)


def test_time_travel_does_not_widen_access(engine, catalog):
    c = catalog.pyiceberg(catalog.token("sqe-admin")).load_table("demo.c")
    snapshot = c.current_snapshot().snapshot_id
    assert_denied(denied(engine, "bob", f"SELECT count(*) FROM lake.demo.c FOR VERSION AS OF {snapshot}"))
    n = query(engine, "alice", f"SELECT count(*) AS n FROM lake.demo.c FOR VERSION AS OF {snapshot}")
    assert n.column("n").to_pylist() == [len(c.scan().to_arrow())]
