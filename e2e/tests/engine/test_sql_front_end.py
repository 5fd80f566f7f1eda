"""The SQL front end through ADBC, against the real catalog (Nessie) and object store (MinIO):
the SHOW forms as each user sees them, `?` placeholders next to quotes, statements the engine
does not take, and a prepared INSERT with many rows as one Iceberg commit. Expected values come
from pyiceberg reading the same catalog, or from the seed data, never from the engine.
"""

import time
import uuid

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pytest

from test_catalog_queries import assert_denied, connect, denied, query, seed, wh  # noqa: F401 (wh: a fixture)


pytestmark = pytest.mark.usefixtures("needs_catalog")

# What each user may load in demo, by the catalog's rules.
LOADABLE = {"alice": {"a", "b", "c"}, "bob": {"a", "b"}, "carol": set()}


@pytest.fixture
def scratch(engine):
    """Unique table names in alice's writable namespace, dropped afterwards."""
    names = []

    def new() -> str:
        names.append(f"lake.alice_ws.t_{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield new
    for name in names:
        try:
            with connect(engine, "alice") as conn, conn.cursor() as cur:
                cur.execute(f"DROP TABLE {name}")
                cur.fetchall()
        except adbc.Error:
            pass


def column(t: pa.Table, name: str) -> list:
    return t.column(name).to_pylist()


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_show_lists_only_what_the_user_may_load(engine, wh, user):
    assert set(column(query(engine, user, "SHOW CATALOGS"), "Catalog")) == {wh, "datafusion"}
    assert column(query(engine, user, f"SHOW CATALOGS LIKE '{wh[:2]}%'"), "Catalog") == [wh]

    schemas = set(column(query(engine, user, f"SHOW SCHEMAS FROM {wh}"), "Schema"))
    assert ("demo" in schemas) == bool(LOADABLE[user]), schemas

    tables = query(engine, user, f"SHOW TABLES FROM {wh}.demo")
    assert set(column(tables, "table_name")) == LOADABLE[user]
    assert set(column(tables, "table_schema")) <= {"demo"}
    # The current catalog is the warehouse: a schema alone names one of its schemas.
    like = query(engine, user, "SHOW TABLES IN demo LIKE '_'")
    assert set(column(like, "table_name")) == LOADABLE[user]


def test_show_columns_and_describe_read_the_table_as_the_user(engine, wh):
    for sql in (f"SHOW COLUMNS FROM {wh}.demo.a", f"DESCRIBE {wh}.demo.a"):
        for user in ("alice", "bob"):
            assert column(query(engine, user, sql), "column_name") == seed.SCHEMA_A.names, (sql, user)
    first = seed.SCHEMA_A.names[0]
    shown = query(engine, "alice", f"SHOW COLUMNS IN {wh}.demo.a LIKE '{first}'")
    assert column(shown, "column_name") == [first]
    for user, table in (("bob", "c"), ("carol", "a")):
        for sql in (f"SHOW COLUMNS FROM {wh}.demo.{table}", f"SHOW CREATE TABLE {wh}.demo.{table}"):
            assert_denied(denied(engine, user, sql), sql)


def test_show_create_table_is_the_iceberg_table_as_the_catalog_has_it(engine, catalog, wh):
    table = catalog.pyiceberg(catalog.token("alice")).load_table("demo.a")
    [text] = column(query(engine, "alice", f"SHOW CREATE TABLE {wh}.demo.a"), "Create Table")
    assert text.startswith(f"CREATE TABLE {wh}.demo.a (\n"), text
    for field in table.schema().fields:
        assert f"\n   {field.name} " in text, (field.name, text)
    assert f"location = '{table.metadata.location}'" in text, text
    assert f"format_version = {table.metadata.format_version}" in text, text
    for key, value in table.properties.items():
        assert f'"{key}" = \'{value}\'' in text, (key, text)


def test_question_marks_are_placeholders_only_outside_quotes_and_comments(engine):
    with connect(engine, "bob") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ? AS a, '?' AS b, 'it''s ?' AS c /* ? */, ? AS \"d?\" -- ?\n",
            parameters=(41, "x' OR '1'='1"),
        )
        assert cur.fetch_arrow_table().to_pylist() == [
            {"a": 41, "b": "?", "c": "it's ?", "d?": "x' OR '1'='1"}
        ]
        with pytest.raises(adbc.Error) as mixed:
            cur.execute("SELECT ? AS a, $1 AS b", parameters=(1,))
            cur.fetchall()
        assert mixed.value.status_code.name == "INVALID_ARGUMENT", mixed.value
        assert "not both" in str(mixed.value)


def test_a_statement_the_engine_does_not_take_is_invalid_and_named(engine, wh):
    for sql, form in [
        (f"GRANT SELECT ON {wh}.demo.a TO bob", "GRANT SELECT ON"),
        ("SHOW VIEWS", "SHOW VIEWS"),
        ("SHOW CREATE VIEW v", "SHOW CREATE VIEW"),
        ("SELECT 1; SELECT 2", "one statement"),
    ]:
        err = denied(engine, "alice", sql)
        assert err.status_code.name == "INVALID_ARGUMENT", (sql, err)
        assert form in str(err), (sql, err)


def snapshots(catalog, name: str) -> list[int]:
    table = catalog.pyiceberg(catalog.token("alice")).load_table(name.removeprefix("lake."))
    return [s.snapshot_id for s in table.snapshots()]


def test_a_prepared_insert_of_many_rows_is_one_commit(engine, catalog, scratch, record_property):
    """ADBC's executemany binds all rows to one prepared update: one plan, one new snapshot. The
    time is compared with one INSERT of the same rows written as a VALUES list."""
    n = 1000
    rows = [(i, f"row {i}") for i in range(n)]
    batched, literal = scratch(), scratch()
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        for name in (batched, literal):
            cur.executescript(f"CREATE TABLE {name} (id BIGINT NOT NULL, v VARCHAR)")
        assert snapshots(catalog, batched) == []

        started = time.perf_counter()
        cur.executemany(f"INSERT INTO {batched} VALUES (?, ?)", rows)
        many = time.perf_counter() - started

        values = ", ".join(f"({i}, '{v}')" for i, v in rows)
        started = time.perf_counter()
        cur.executescript(f"INSERT INTO {literal} VALUES {values}")
        single = time.perf_counter() - started

    assert len(snapshots(catalog, batched)) == 1
    table = catalog.pyiceberg(catalog.token("alice")).load_table(batched.removeprefix("lake."))
    data = table.scan().to_arrow().sort_by("id")
    assert data.column("id").to_pylist() == list(range(n))
    assert data.column("v").to_pylist() == [v for _, v in rows]
    ratio = many / single
    record_property("executemany_vs_single_insert", round(ratio, 2))
    print(f"\nexecutemany of {n} rows: {many:.3f} s; one INSERT of the same rows: {single:.3f} s; "
          f"ratio {ratio:.2f}")


def test_a_failing_row_commits_nothing(engine, catalog, scratch):
    name = scratch()
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        cur.executescript(f"CREATE TABLE {name} (id BIGINT NOT NULL, v VARCHAR)")
        cur.executemany(f"INSERT INTO {name} VALUES (?, ?)", [(1, "a"), (2, "b")])
        before = snapshots(catalog, name)
        rows = [(i, "x") for i in range(500)] + [(None, "no id")] + [(i, "y") for i in range(500)]
        with pytest.raises(adbc.Error) as raised:
            cur.executemany(f"INSERT INTO {name} VALUES (?, ?)", rows)
        assert raised.value.status_code.name == "INVALID_ARGUMENT", raised.value
    assert snapshots(catalog, name) == before
    assert query(engine, "alice", f"SELECT count(*) AS n FROM {name}").column("n").to_pylist() == [2]


def test_sql_prepare_and_flight_prepared_statements_work_side_by_side(engine):
    """SQL `PREPARE`/`EXECUTE`/`DEALLOCATE` live in the session; a Flight prepared statement with
    bound values runs next to them in the same connection."""
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        cur.execute("PREPARE plus_one(BIGINT) AS SELECT $1 + 1 AS n")
        cur.fetchall()
        cur.execute("EXECUTE plus_one(41)")
        assert cur.fetch_arrow_table().to_pylist() == [{"n": 42}]
        cur.execute("SELECT CAST(? AS BIGINT) * 2 AS m", (21,))
        assert cur.fetch_arrow_table().to_pylist() == [{"m": 42}]
        cur.execute("EXECUTE plus_one(1)")
        assert cur.fetch_arrow_table().to_pylist() == [{"n": 2}]
        cur.execute("DEALLOCATE plus_one")
        cur.fetchall()
        with pytest.raises(adbc.Error, match="plus_one"):
            cur.execute("EXECUTE plus_one(1)")
            cur.fetchall()


def test_session_tables_keep_keys_and_defaults_and_take_updates(engine):
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        for sql in [
            "CREATE TABLE datafusion.public.people (id INT PRIMARY KEY, name VARCHAR, team VARCHAR DEFAULT 'none')",
            "INSERT INTO datafusion.public.people (id, name) VALUES (1, 'ann'), (2, 'bo')",
            "UPDATE datafusion.public.people SET team = 'red' WHERE id = 2",
            "DELETE FROM datafusion.public.people WHERE id = 1",
            "INSERT INTO datafusion.public.people (id, name) VALUES (3, 'cy')",
        ]:
            cur.execute(sql)
            cur.fetchall()
        # The primary key makes `name` functionally dependent on `id`: no GROUP BY entry needed.
        cur.execute("SELECT id, name, team FROM datafusion.public.people GROUP BY id ORDER BY id")
        assert cur.fetch_arrow_table().to_pylist() == [
            {"id": 2, "name": "bo", "team": "red"},
            {"id": 3, "name": "cy", "team": "none"},
        ]
