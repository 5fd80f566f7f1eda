"""SQL over the real Iceberg REST catalog of the local stack (Nessie), as each user.

The engine talks to the catalog with the session's own Keycloak token and reads data with the
credentials the catalog vends for that user: alice reads demo.a/b/c and writes in alice_ws, bob
reads demo.a/b, carol nothing. Everything goes through real clients (ADBC and pyarrow.flight).
"""

import re
import sys
import uuid

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest

from conftest import ROOT
from flightsql import SqlClient

sys.path.insert(0, str(ROOT / "e2e" / "local"))
import seed  # noqa: E402  (what the demo tables hold)

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def assert_denied(err: adbc.Error, sql: str = "") -> None:
    """A denial (gRPC PERMISSION_DENIED, which ADBC calls UNAUTHORIZED, or NOT_FOUND), with the
    gRPC code in the driver's message, never an internal error or an outage."""
    msg = str(err)
    assert err.status_code.name in {"UNAUTHORIZED", "NOT_FOUND"}, (sql, err.status_code, msg)
    assert re.search(r"\((PermissionDenied|NotFound); ", msg), (sql, msg)


@pytest.fixture(scope="module")
def wh(stack) -> str:
    return stack.get("SQE_CATALOG_WAREHOUSE", "lake")


pytestmark = pytest.mark.usefixtures("needs_catalog")


def connect(engine, user: str):
    return adbc.connect(
        engine.uri, db_kwargs={"username": user, "password": PASSWORDS[user]}, autocommit=True
    )


def query(engine, user: str, sql: str) -> pa.Table:
    with connect(engine, user) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def denied(engine, user: str, sql: str) -> adbc.Error:
    with connect(engine, user) as conn, conn.cursor() as cur:
        with pytest.raises(adbc.Error) as raised:
            cur.execute(sql)
            cur.fetch_arrow_table()
    return raised.value


def tables_in(t: pa.Table, wh: str, schema: str) -> set[str]:
    rows = t.to_pylist()
    return {r["table_name"] for r in rows if r["table_catalog"] == wh and r["table_schema"] == schema}


@pytest.mark.parametrize(
    "user,expected", [("alice", {"a", "b", "c"}), ("bob", {"a", "b"}), ("carol", set())]
)
def test_show_tables_and_information_schema_list_what_the_user_may_load(engine, wh, user, expected):
    assert tables_in(query(engine, user, "SHOW TABLES"), wh, "demo") == expected
    info = query(engine, user, f"SELECT * FROM {wh}.information_schema.tables")
    assert tables_in(info, wh, "demo") == expected
    # No table of the warehouse outside what the catalog lets the user load, in any namespace.
    listed = {(r["table_schema"], r["table_name"]) for r in info.to_pylist() if r["table_schema"] != "information_schema"}
    if user != "alice":
        assert {s for s, _ in listed} <= {"demo"}, listed
    columns = query(
        engine, user,
        f"SELECT DISTINCT table_name FROM {wh}.information_schema.columns WHERE table_schema = 'demo'",
    )
    assert set(columns.column("table_name").to_pylist()) == expected


def test_namespaces_follow_the_catalogs_view(engine, wh):
    def schemas(user):
        t = query(
            engine, user,
            f"SELECT schema_name FROM {wh}.information_schema.schemata WHERE catalog_name = '{wh}'",
        )
        return set(t.column("schema_name").to_pylist()) - {"information_schema"}

    assert {"demo", "alice_ws"} <= schemas("alice")
    assert schemas("bob") == {"demo"}
    assert schemas("carol") == set()


def test_show_catalogs_and_schemas_list_the_users_own_view(engine, wh):
    catalogs = query(engine, "bob", "SHOW CATALOGS").column("Catalog").to_pylist()
    assert catalogs == sorted({wh, "datafusion"})

    def shown(user, sql):
        return query(engine, user, sql).column("Schema").to_pylist()

    assert shown("bob", "SHOW SCHEMAS") == ["demo"]
    assert shown("bob", f"SHOW SCHEMAS FROM {wh} LIKE 'de%'") == ["demo"]
    assert {"demo", "alice_ws"} <= set(shown("alice", f"SHOW SCHEMAS IN {wh}"))
    assert shown("carol", "SHOW SCHEMAS") == []
    assert shown("bob", "SHOW SCHEMAS FROM datafusion") == ["public"]


def test_storage_is_reached_only_through_the_catalog(engine, tmp_path):
    target = tmp_path / "copied.csv"
    for sql in [
        "CREATE EXTERNAL TABLE datafusion.public.pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE EXTERNAL TABLE datafusion.public.raw (x INT) STORED AS PARQUET LOCATION 's3://warehouse/demo/'",
        f"COPY (SELECT 1 AS x) TO '{target}' STORED AS CSV",
    ]:
        err = denied(engine, "alice", sql)
        assert err.status_code.name == "UNAUTHORIZED", (sql, err)
        assert "only through the catalog" in str(err), (sql, err)
    assert not target.exists()


def test_bob_is_denied_c_by_every_sql_path(engine, wh):
    for sql in (
        f"SELECT * FROM {wh}.demo.c",
        f"SELECT count(*) FROM {wh}.demo.c",
        f"DESCRIBE {wh}.demo.c",
        f"EXPLAIN SELECT * FROM {wh}.demo.c",
        f"SELECT * FROM {wh}.demo.a JOIN {wh}.demo.c USING (id)",
    ):
        err = denied(engine, "bob", sql)
        assert_denied(err, sql)
        assert "demo.c" in str(err), str(err)
    # The same through raw Flight: the gRPC status is a denial, not an internal error.
    c = SqlClient(engine.uri)
    c.login("bob", "bob-pw")
    with pytest.raises((flight.FlightUnauthorizedError, flight.FlightError)) as raised:
        c.query(f"SELECT * FROM {wh}.demo.c")
    assert not isinstance(raised.value, flight.FlightInternalError), raised.value
    assert "demo.c" in str(raised.value)
    # And carol, who may load nothing, is denied a too.
    assert_denied(denied(engine, "carol", f"SELECT * FROM {wh}.demo.a"))


def test_a_query_result_equals_the_table_read_with_pyiceberg(engine, catalog, wh):
    got = query(engine, "alice", f"SELECT * FROM {wh}.demo.b ORDER BY order_id")
    ref = catalog.pyiceberg(catalog.token("alice")).load_table("demo.b").scan().to_arrow().sort_by("order_id")
    assert got.num_rows == ref.num_rows == seed.ROWS["b"]
    assert got.column_names == ref.column_names
    for name in ref.column_names:
        assert got.column(name).cast(ref.schema.field(name).type).to_pylist() == ref.column(name).to_pylist(), name
    # The seed's own rows, independently of pyiceberg.
    a = query(engine, "bob", f"SELECT id, name, amount FROM {wh}.demo.a WHERE id <= 10 ORDER BY id")
    assert a.column("amount").to_pylist() == seed.rows_a().slice(0, 10).column("amount").to_pylist()


def test_joins_aggregates_windows_and_ctes_over_the_catalog(engine, wh):
    sql = f"""
        WITH orders AS (
            SELECT region, customer_id, qty,
                   row_number() OVER (PARTITION BY region ORDER BY order_id) AS rn
            FROM {wh}.demo.b
        )
        SELECT o.region, count(*) AS n, sum(o.qty) AS qty, max(o.rn) AS last_rn,
               count(a.id) AS matched
        FROM orders o LEFT JOIN {wh}.demo.a a ON a.id = o.customer_id
        GROUP BY o.region ORDER BY o.region
    """
    got = query(engine, "bob", sql).to_pylist()
    b = seed.rows_b()
    a_ids = set(seed.rows_a().column("id").to_pylist())
    expected = []
    for region in sorted(set(b.column("region").to_pylist())):
        rows = b.filter(pc.equal(b.column("region"), region))
        customers = rows.column("customer_id").to_pylist()
        expected.append({
            "region": region,
            "n": rows.num_rows,
            "qty": sum(q for q in rows.column("qty").to_pylist() if q is not None),
            "last_rn": rows.num_rows,
            "matched": sum(1 for c in customers if c in a_ids),
        })
    assert got == expected


def test_describe_and_explain_use_the_catalog_schema(engine, wh):
    d = query(engine, "alice", f"DESCRIBE {wh}.demo.a")
    assert d.column("column_name").to_pylist() == seed.SCHEMA_A.names
    plan = query(engine, "alice", f"EXPLAIN SELECT id FROM {wh}.demo.a WHERE id < 5")
    text = "\n".join(plan.column("plan").to_pylist())
    # iceberg planned the files; DataFusion's Parquet source reads them with the predicate for
    # row-group and page pruning.
    assert "DataSourceExec" in text and "file_type=parquet" in text, text
    assert "projection=[id]" in text and "predicate=id@0 < 5" in text, text


def test_reads_are_signed_with_keys_the_catalog_vended(engine, stack, wh, minio_audit):
    mark = uuid.uuid4().hex[:8]
    before = len(minio_audit.entries())
    query(engine, "bob", f"SELECT count(*) AS n, '{mark}' AS m FROM {wh}.demo.a")
    gets = minio_audit.wait_for(
        lambda e: e.get("api", {}).get("name") == "GetObject"
        and "/demo/a" in "/" + e.get("api", {}).get("object", "")
    )
    new = minio_audit.entries()[before:]
    reads = [e for e in new if e.get("api", {}).get("name") == "GetObject"]
    assert gets and reads, "the engine read no object of demo.a"
    for e in reads:
        assert e.get("accessKey") and e["accessKey"] != stack["SQE_MINIO_ROOT_USER"], e


def test_alice_creates_and_inserts_in_her_namespace_and_bob_cannot(engine, catalog, wh):
    name = f"q_{uuid.uuid4().hex[:8]}"
    table = f"{wh}.alice_ws.{name}"
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        # DDL and DML go through the Flight SQL update path (DoPut), as ADBC sends them.
        cur.executescript(f"CREATE TABLE {table} (id BIGINT, v VARCHAR)")
        try:
            cur.executescript(f"INSERT INTO {table} VALUES (1, 'x'), (2, 'y')")
            cur.executemany(f"INSERT INTO {table} VALUES (?, ?)", [(50, "p")])
            assert cur.rowcount == 1
            cur.executescript(f"INSERT INTO {table} SELECT id + 100, name FROM {wh}.demo.a WHERE id <= 3")
            cur.execute(f"SELECT id, v FROM {table} ORDER BY id")
            rows = cur.fetch_arrow_table().to_pylist()
            names = seed.rows_a().slice(0, 3).column("name").to_pylist()
            assert rows == [{"id": 1, "v": "x"}, {"id": 2, "v": "y"}, {"id": 50, "v": "p"}] + [
                {"id": 100 + i, "v": n} for i, n in zip((1, 2, 3), names)
            ]
            # The catalog has the commits: pyiceberg (as alice) reads the same rows.
            ref = catalog.pyiceberg(catalog.token("alice")).load_table(f"alice_ws.{name}").scan().to_arrow()
            assert sorted(ref.column("id").to_pylist()) == [r["id"] for r in rows]

            # alice sees her new table in listings.
            assert name in tables_in(query(engine, "alice", "SHOW TABLES"), wh, "alice_ws")

            # bob can neither see, write nor create there.
            assert name not in tables_in(query(engine, "bob", "SHOW TABLES"), wh, "alice_ws")
            for sql in (
                f"INSERT INTO {table} VALUES (3, 'bob')",
                f"SELECT * FROM {table}",
                f"CREATE TABLE {wh}.alice_ws.{name}_bob (id BIGINT)",
            ):
                assert_denied(denied(engine, "bob", sql), sql)
            # alice cannot create tables in demo.
            assert_denied(denied(engine, "alice", f"CREATE TABLE {wh}.demo.{name} (id BIGINT)"))
            cur.execute(f"SELECT count(*) AS n FROM {table}")
            assert cur.fetch_arrow_table().to_pylist() == [{"n": 6}]
        finally:
            cur.executescript(f"DROP TABLE {table}")
    assert name not in tables_in(query(engine, "alice", "SHOW TABLES"), wh, "alice_ws")
