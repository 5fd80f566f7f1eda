"""The Flight SQL result contract through real clients: the schema GetFlightInfo announces is the
schema DoGet streams — names, types, nullability — for statements whose executed plan reshapes
the planned one (nullability, dictionaries, unions of different widths, large lists, untyped
NULLs). ADBC refuses a result that breaks it; pyarrow shows both schemas; the JDBC driver
describes the columns from the announcement and reads the stream with it."""

import json
import subprocess
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pytest

import jdbc
from flightsql import SqlClient

HERE = Path(__file__).parent

# (statement, rows as ADBC returns them)
RESHAPED = [
    ("SELECT CASE WHEN 1 > 0 THEN 'a' END AS y", [{"y": "a"}]),
    ("SELECT NULLIF(1, 3) AS n", [{"n": 1}]),
    ("SELECT arrow_cast('x', 'Dictionary(Int32, Utf8)') AS d", [{"d": "x"}]),
    (
        "SELECT arrow_cast(column1, 'Dictionary(Int8, Utf8)') AS d FROM (VALUES ('a'), (NULL)) ORDER BY d",
        [{"d": "a"}, {"d": None}],
    ),
    ("SELECT CAST(1 AS INT) AS u UNION ALL SELECT CAST(2 AS BIGINT) ORDER BY u", [{"u": 1}, {"u": 2}]),
    ("SELECT NULL AS a UNION ALL SELECT 12 ORDER BY a", [{"a": 12}, {"a": None}]),
    (
        "SELECT CASE WHEN true THEN arrow_cast(make_array(1, 2), 'LargeList(Int64)') ELSE make_array(3) END AS l",
        [{"l": [1, 2]}],
    ),
    ("SELECT named_struct('k', arrow_cast('x', 'Dictionary(Int32, Utf8)')) AS s", [{"s": {"k": "x"}}]),
    (
        "SELECT a, b FROM (VALUES (1, 'a'), (2, NULL)) AS t(a, b) WHERE a IS NOT NULL ORDER BY a",
        [{"a": 1, "b": "a"}, {"a": 2, "b": None}],
    ),
    ("SELECT count(*) AS c, max(x) AS m FROM (VALUES (1), (2)) AS t(x) WHERE x > 5", [{"c": 0, "m": None}]),
]

IDS = [sql[:60] for sql, _ in RESHAPED]



@pytest.mark.parametrize("sql,rows", RESHAPED, ids=IDS)
def test_adbc_reads_every_reshaped_result(engine, sql, rows):
    with adbc.connect(engine.uri, db_kwargs={"username": "alice", "password": "alice-pw"}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(sql)
            assert cur.fetch_arrow_table().to_pylist() == rows


@pytest.mark.parametrize("sql,rows", RESHAPED, ids=IDS)
def test_the_stream_is_the_announcement_over_raw_flight(engine, sql, rows):
    c = SqlClient(engine.uri)
    c.login("alice", "alice-pw")
    info = c.flight_info(sql)
    reader = c.client.do_get(info.endpoints[0].ticket, c.options())
    table = reader.read_all()
    assert reader.schema.equals(info.schema, check_metadata=True), (info.schema, reader.schema)
    assert table.schema.equals(info.schema, check_metadata=True)
    assert table.to_pylist() == rows


@pytest.fixture(scope="module")
def jdbc_driver() -> Path:
    return jdbc.driver_jar()


def jdbc_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "VARCHAR"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "ARRAY"
    if pa.types.is_struct(t):
        return "JAVA_OBJECT"
    return str(t)


def java() -> str:
    return jdbc.java()


def test_jdbc_describes_and_reads_what_is_streamed(engine, jdbc_driver):
    port = engine.uri.rsplit(":", 1)[1]
    url = f"jdbc:arrow-flight-sql://127.0.0.1:{port}/?useEncryption=false"
    statements = "\n".join(sql for sql, _ in RESHAPED) + "\n"
    run = subprocess.run(
        [java(), "--add-opens=java.base/java.nio=ALL-UNNAMED", "-cp", str(jdbc_driver),
         str(HERE / "jdbc" / "ResultContract.java"), url, "alice", "alice-pw"],
        input=statements, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    answers = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [a["sql"] for a in answers] == [sql for sql, _ in RESHAPED]
    c = SqlClient(engine.uri)
    c.login("alice", "alice-pw")
    for (sql, rows), answer in zip(RESHAPED, answers):
        assert "error" not in answer, answer
        announced = c.flight_info(sql).schema
        assert [col["name"] for col in answer["columns"]] == announced.names, answer
        # The driver (18.3.0) reports every column as columnNoNulls whatever the schema says, so
        # nullability is checked through ADBC and pyarrow above; here the types it describes.
        assert [col["type"] for col in answer["columns"]] == [jdbc_type(f.type) for f in announced], (answer, announced)
        assert len(answer["rows"]) == len(rows), answer
        # Scalars read as their values; NULLs as NULL.
        for got, want in zip(answer["rows"], rows):
            for cell, value in zip(got, want.values()):
                if value is None:
                    assert cell is None, answer
                elif isinstance(value, (int, str)):
                    assert cell == str(value), answer
