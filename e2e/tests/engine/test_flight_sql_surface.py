"""The Flight SQL surface beyond plain statements, through ADBC and raw pyarrow.flight against
the real IdP: metadata (GetCatalogs/GetDbSchemas/GetTables/GetTableTypes/GetSqlInfo/
GetXdbcTypeInfo), prepared statements with bound parameters, updates, and the per-query limits."""

import threading
import time

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql import SqlClient, _field, _varint, pack_any

# A scratch table in the session's in-memory catalog: metadata must list what the session sees.
SCRATCH = "datafusion.public.surface_t"
# Long enough to outlive any limit below, cheap to stop (a streaming scan).
ENDLESS = "SELECT count(*) FROM generate_series(1, 100000000000)"


def connect(engine, user="alice", password="alice-pw"):
    return adbc.connect(engine.uri, db_kwargs={"username": user, "password": password}, autocommit=True)


def test_bound_parameters_reach_the_query_and_mismatches_are_invalid_argument(engine):
    with connect(engine) as conn, conn.cursor() as cur:
        cur.execute("SELECT CAST(? AS BIGINT) + 1 AS n, ? AS s", (41, "x"))
        assert cur.fetch_arrow_table().to_pylist() == [{"n": 42, "s": "x"}]
        # The same statement re-bound gets the new values, not the old ones.
        cur.execute("SELECT CAST(? AS BIGINT) + 1 AS n, ? AS s", (1, "y"))
        assert cur.fetch_arrow_table().to_pylist() == [{"n": 2, "s": "y"}]
        # A `?` inside a string literal is text, not a placeholder.
        cur.execute("SELECT '?' AS q, ? AS p", ("v",))
        assert cur.fetch_arrow_table().to_pylist() == [{"q": "?", "p": "v"}]
        with pytest.raises(adbc.Error) as raised:
            cur.execute("SELECT ? AS a, ? AS b", (1,))
            cur.fetch_arrow_table()
        assert "2 parameter(s) but 1 value(s)" in str(raised.value)
        assert raised.value.status_code.name == "INVALID_ARGUMENT"


def test_batch_inserts_bind_many_rows_and_report_the_row_count(engine):
    with connect(engine) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {SCRATCH}_ins (id BIGINT, name VARCHAR)")
        cur.executemany(f"INSERT INTO {SCRATCH}_ins VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
        assert cur.rowcount == 3
        cur.execute(f"SELECT id, name FROM {SCRATCH}_ins ORDER BY id")
        assert cur.fetch_arrow_table().to_pylist() == [
            {"id": 1, "name": "a"},
            {"id": 2, "name": "b"},
            {"id": 3, "name": "c"},
        ]


def test_statement_update_over_raw_flight_returns_the_affected_rows(engine):
    c = SqlClient(engine.uri)
    c.login("alice", "alice-pw")

    def update(sql: str) -> int:
        cmd = pack_any("CommandStatementUpdate", _field(1, sql.encode()))
        writer, reader = c.client.do_put(flight.FlightDescriptor.for_command(cmd), pa.schema([]), c.options())
        writer.done_writing()
        meta = reader.read()
        writer.close()
        # DoPutUpdateResult { int64 record_count = 1 }; protobuf leaves a zero count out.
        assert meta is not None
        raw = meta.to_pybytes()
        if not raw:
            return 0
        assert raw[0] == 0x08
        n, shift = 0, 0
        for b in raw[1:]:
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return n

    assert update(f"CREATE TABLE {SCRATCH}_upd (x INT)") == 0
    assert update(f"INSERT INTO {SCRATCH}_upd VALUES (1), (2)") == 2
    assert c.query(f"SELECT sum(x) AS s FROM {SCRATCH}_upd").to_pylist() == [{"s": 3}]


def test_metadata_lists_exactly_what_the_session_sees(engine):
    with connect(engine) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {SCRATCH} (id BIGINT NOT NULL, name VARCHAR, at TIMESTAMP)")
        cur.execute(
            "SELECT table_catalog, table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema <> 'information_schema'"
        )
        visible = {tuple(r.values()) for r in cur.fetch_arrow_table().to_pylist()}
        assert ("datafusion", "public", "surface_t") in visible

        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        listed = {
            (c["catalog_name"], s["db_schema_name"], t["table_name"])
            for c in objects
            for s in c["catalog_db_schemas"] or []
            for t in s["db_schema_tables"] or []
        }
        assert listed == visible

        columns = {
            col["column_name"]
            for c in objects
            for s in c["catalog_db_schemas"] or []
            for t in s["db_schema_tables"] or []
            if t["table_name"] == "surface_t"
            for col in t["table_columns"] or []
        }
        assert columns == {"id", "name", "at"}

        schema = conn.adbc_get_table_schema("surface_t", catalog_filter="datafusion", db_schema_filter="public")
        assert schema.names == ["id", "name", "at"]
        assert schema.field("id").type == pa.int64() and not schema.field("id").nullable

        assert set(conn.adbc_get_table_types()) == {"TABLE", "VIEW", "LOCAL TEMPORARY"}
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "SQE"
        assert info["vendor_version"]


def get_tables(c: SqlClient, catalog=None, schema_pattern=None, table_pattern=None, types=(), include_schema=False):
    body = b""
    if catalog is not None:
        body += _field(1, catalog.encode())
    if schema_pattern is not None:
        body += _field(2, schema_pattern.encode())
    if table_pattern is not None:
        body += _field(3, table_pattern.encode())
    for t in types:
        body += _field(4, t.encode())
    if include_schema:
        body += _varint(5 << 3) + _varint(1)
    info = c.client.get_flight_info(
        flight.FlightDescriptor.for_command(pack_any("CommandGetTables", body)), c.options()
    )
    return c.client.do_get(info.endpoints[0].ticket, c.options()).read_all()


def test_get_tables_over_raw_flight_filters_by_pattern_and_type(engine):
    c = SqlClient(engine.uri)
    c.login("alice", "alice-pw")
    for name in ("pat_one", "pat_two", "other"):
        c.query(f"CREATE TABLE datafusion.public.{name} (x INT)")

    names = get_tables(c, schema_pattern="pub%", table_pattern="pat%").column("table_name").to_pylist()
    assert names == ["pat_one", "pat_two"]
    assert get_tables(c, table_pattern="pat_one", types=["VIEW"]).num_rows == 0
    assert get_tables(c, catalog="no_such_catalog").num_rows == 0

    with_schema = get_tables(c, table_pattern="other", include_schema=True)
    assert with_schema.schema.names[-1] == "table_schema"
    ipc = with_schema.column("table_schema")[0].as_py()
    assert pa.ipc.read_schema(pa.py_buffer(ipc)).names == ["x"]

    # Another user's session does not see alice's tables.
    b = SqlClient(engine.uri)
    b.login("bob", "bob-pw")
    assert get_tables(b, table_pattern="pat%").num_rows == 0


def test_a_query_past_the_time_limit_is_deadline_exceeded(start_engine):
    e = start_engine(query={"timeout_seconds": 2, "max_concurrent": 4, "shutdown_grace_seconds": 5})
    c = SqlClient(e.uri)
    c.login("alice", "alice-pw")
    started = time.monotonic()
    with pytest.raises(flight.FlightError) as raised:
        c.query(ENDLESS)
    assert time.monotonic() - started < 15
    assert "time limit of 2 s" in str(raised.value)
    assert isinstance(raised.value, flight.FlightTimedOutError), type(raised.value)
    # The slot was released: the next query runs.
    assert c.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    assert e.metric("sqe_queries_total", status="deadline_exceeded") >= 1


def test_a_full_server_queues_one_waiting_statement_per_slot_and_refuses_more(start_engine):
    e = start_engine(query={"timeout_seconds": 4, "max_concurrent": 1, "shutdown_grace_seconds": 5})
    long_running = SqlClient(e.uri)
    long_running.login("alice", "alice-pw")
    outcome = {}

    def run(name, client, sql):
        try:
            outcome[name] = client.query(sql).to_pylist()
        except (flight.FlightError, pa.ArrowException) as err:
            outcome[name] = err

    running = threading.Thread(target=run, args=("alice", long_running, ENDLESS))
    running.start()
    time.sleep(1.0)
    bob = SqlClient(e.uri)
    bob.login("bob", "bob-pw")
    waiting = threading.Thread(target=run, args=("bob", bob, "SELECT 2 AS two"))
    waiting.start()
    time.sleep(0.5)
    carol = SqlClient(e.uri)
    carol.login("carol", "carol-pw")
    # pyarrow has no Flight class for RESOURCE_EXHAUSTED; it raises ArrowInvalid naming it.
    with pytest.raises(pa.ArrowException) as raised:
        carol.query("SELECT 1")
    assert "resource exhausted" in str(raised.value)
    assert "limit of 1 concurrent statements with 1 more waiting" in str(raised.value)
    running.join(30)
    waiting.join(30)
    assert isinstance(outcome.get("alice"), flight.FlightTimedOutError), outcome
    # bob waited for alice's slot and ran when her query hit its time limit.
    assert outcome.get("bob") == [{"two": 2}], outcome
    assert carol.query("SELECT 3 AS three").to_pylist() == [{"three": 3}]


def test_cancel_flight_info_stops_the_callers_running_query_and_frees_its_slot(start_engine):
    e = start_engine(query={"timeout_seconds": 120, "max_concurrent": 1, "shutdown_grace_seconds": 5})
    alice = SqlClient(e.uri)
    alice.login("alice", "alice-pw")
    bob = SqlClient(e.uri)
    bob.login("bob", "bob-pw")
    info = alice.flight_info(ENDLESS)
    steps = {}

    def cancel_later():
        time.sleep(1.5)
        bob.cancel(info)  # bob holding alice's FlightInfo cannot stop her query
        time.sleep(1.0)
        steps["cancelled_at"] = time.monotonic()
        steps["status"] = alice.cancel(info)

    t = threading.Thread(target=cancel_later)
    t.start()
    # read_chunk, not read_all: pyarrow's read_all turns a CANCELLED status (ArrowCancelled)
    # into a simulated Ctrl-C, a KeyboardInterrupt of the main thread.
    reader = alice.client.do_get(info.endpoints[0].ticket, alice.options())
    with pytest.raises(flight.FlightCancelledError) as raised:
        while True:
            reader.read_chunk()
    ended = time.monotonic()
    t.join(10)
    assert steps.get("status") == "CANCELLED", steps
    # It ran until alice's cancel (not bob's), then stopped at once.
    assert 0 <= ended - steps["cancelled_at"] < 5, (ended, steps)
    assert "the query was cancelled" in str(raised.value)
    # Its slot is free (the server allows one query at a time) and it is over for good.
    assert alice.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    assert alice.cancel(info) == "NOT_CANCELLABLE"
    assert e.metric("sqe_queries_total", status="cancelled") >= 1


def test_a_query_cancelled_before_its_doget_does_not_run(engine):
    c = SqlClient(engine.uri)
    c.login("alice", "alice-pw")
    info = c.flight_info("SELECT 42 AS answer")
    assert c.cancel(info) == "CANCELLED"
    with pytest.raises(flight.FlightCancelledError):
        c.client.do_get(info.endpoints[0].ticket, c.options()).read_all()
    # A new FlightInfo for the same SQL is a new query with its own ticket.
    assert c.query("SELECT 42 AS answer").to_pylist() == [{"answer": 42}]


def test_get_sql_info_says_the_server_can_cancel_and_is_not_read_only(engine):
    c = SqlClient(engine.uri)
    c.login("alice", "alice-pw")
    # FLIGHT_SQL_SERVER_READ_ONLY = 3, FLIGHT_SQL_SERVER_CANCEL = 9 (packed repeated uint32).
    cmd = pack_any("CommandGetSqlInfo", _field(1, _varint(3) + _varint(9)))
    info = c.client.get_flight_info(flight.FlightDescriptor.for_command(cmd), c.options())
    got = c.client.do_get(info.endpoints[0].ticket, c.options()).read_all().to_pylist()
    assert {r["info_name"]: r["value"] for r in got} == {3: False, 9: True}


def test_a_query_over_the_memory_limit_is_resource_exhausted_and_the_session_goes_on(start_engine):
    e = start_engine(query={"memory_limit_bytes": 32 << 20, "timeout_seconds": 60, "shutdown_grace_seconds": 5})
    c = SqlClient(e.uri)
    c.login("alice", "alice-pw")
    # array_agg cannot spill: ~400 MB of values against a 32 MiB pool.
    with pytest.raises(pa.ArrowException) as raised:
        c.query("SELECT array_agg(value) FROM generate_series(1, 50000000)")
    assert "resource exhausted" in str(raised.value).lower(), raised.value
    assert "memory" in str(raised.value).lower(), raised.value
    assert c.query("SELECT 3 AS three").to_pylist() == [{"three": 3}]
    assert e.metric("sqe_queries_total", status="resource_exhausted") >= 1


def test_results_stream_batch_by_batch_and_a_dropped_stream_stops_the_query(start_engine):
    e = start_engine(query={"timeout_seconds": 120, "max_concurrent": 1, "shutdown_grace_seconds": 5})
    c = SqlClient(e.uri)
    c.login("alice", "alice-pw")
    # 10^11 rows: materialising them before the first batch would never finish.
    info = c.flight_info("SELECT value FROM generate_series(1, 100000000000)")
    started = time.monotonic()
    reader = c.client.do_get(info.endpoints[0].ticket, c.options())
    first = reader.read_chunk().data
    assert first.num_rows > 0 and first.column(0)[0].as_py() == 1
    assert time.monotonic() - started < 10
    del reader  # the client goes away mid-stream
    # The server noticed and freed the only slot.
    deadline = time.monotonic() + 15
    while True:
        try:
            assert c.query("SELECT 5 AS five").to_pylist() == [{"five": 5}]
            break
        except pa.ArrowException:
            assert time.monotonic() < deadline, "the abandoned query still holds its slot"
            time.sleep(0.5)
