"""Bad input through real clients: whatever a client sends, the engine answers with a clear gRPC
status for that input and keeps serving everyone else.

One engine per module, with a canary session (alice) opened first. Each case of the corpus sends
one malformed, forged, oversized or unauthenticated request — through `pyarrow.flight` where it
can say it, through raw gRPC (`rawflight`) where it cannot — and asserts:

- the status code a demanding client expects for that input (never INTERNAL, never UNKNOWN, never
  a dropped connection);
- the engine process is still running, and the canary still answers `SELECT 1`.

An engine that died on a case is reported by that case; the next case starts a fresh engine, so
each case stands on its own.
"""

import base64
import json
import subprocess
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import rawflight as raw
from conftest import Engine
from flightsql import SqlClient

class Target:
    """The engine under test, its canary session and a second session of alice's that sends
    the bad input. A case that broke the engine retires it; the next case gets a fresh one.
    Engines are started here rather than by `start_engine`: one killed by a case is reported by
    that case, not again at the end of the whole session."""

    def __init__(self, start):
        self._start = start
        self.engine = None
        self.engines = []

    def ensure(self) -> "Target":
        if self.engine is None or self.engine.proc.poll() is not None:
            self.engine = self._start()
            self.engines.append(self.engine)
            self.canary = SqlClient(self.engine.uri)
            self.engine.remember_secret(self.canary.login("alice", "alice-pw"))
            sender = SqlClient(self.engine.uri)
            handle = sender.login("alice", "alice-pw")
            self.engine.remember_secret(handle)
            self.auth = [(b"authorization", f"Bearer {handle}".encode())]
            self.pyflight = flight.FlightClient(self.engine.uri)
            self.raw = raw.RawFlight(self.engine.uri)
        return self

    def exit_code(self, wait: float) -> int | None:
        """The engine's exit code if it has gone within `wait` seconds (dying takes a moment)."""
        try:
            return self.engine.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def retire(self):
        self.engine.stop()
        self.engine = None

    def options(self, **kw) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(headers=self.auth, **kw)

    def call(self, rpc: str, request, timeout: float = 60, auth: bool = True):
        return self.raw.call(rpc, request, metadata=self.auth if auth else (), timeout=timeout)

    def prepare(self, sql: str) -> bytes:
        """CreatePreparedStatement through Flight SQL; returns the engine's handle."""
        body = raw.sql_any("ActionCreatePreparedStatementRequest", raw.field(1, sql.encode()))
        (result,) = self.call("DoAction", raw.action("CreatePreparedStatement", body))
        any_msg = raw.parse(raw.parse(result)[1][0])  # Result.body → Any
        return raw.parse(any_msg[2][0])[1][0]  # Any.value → ActionCreatePreparedStatementResult


@pytest.fixture(scope="module")
def target_holder(engine_bin, stack, catalog_uri, tmp_path_factory):
    holder = Target(lambda: Engine(engine_bin, tmp_path_factory.mktemp("engine"), stack, catalog_uri))
    yield holder
    leaked = []
    for e in holder.engines:
        e.stop()
        leaked += e.leaked_secrets()
    assert not leaked, leaked


@pytest.fixture
def target(target_holder) -> Target:
    return target_holder.ensure()


@dataclass
class Case:
    id: str
    send: Callable[[Target], object]
    expect: set[str]
    note: str = ""


# --- building blocks -------------------------------------------------------------------------

def select_one_descriptor() -> bytes:
    return raw.descriptor(raw.statement_query(b"SELECT 1"))


def statement_ticket(handle: bytes) -> bytes:
    return raw.sql_any("TicketStatementQuery", raw.field(1, handle))


def prepared_query(handle: bytes) -> bytes:
    return raw.sql_any("CommandPreparedStatementQuery", raw.field(1, handle))


def prepared_update(handle: bytes) -> bytes:
    return raw.sql_any("CommandPreparedStatementUpdate", raw.field(1, handle))


def ipc_stream(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def one_param(value=None, type_=pa.int64()) -> pa.Table:
    # A null first makes the validity bitmap the body's first buffer (never empty).
    return pa.table({"$1": pa.array([value, 1] if value is None else [value], type_)})


def lz4_with_huge_length(table: pa.Table) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """An LZ4-compressed IPC stream of `table` whose first body buffer claims to decompress to
    2**60 bytes (its 8-byte little-endian uncompressed-length prefix is patched). Returns the
    patched stream and its messages as (header, body)."""
    stream = bytearray(ipc_stream(table, "lz4"))
    messages = raw.ipc_messages(bytes(stream))
    body = messages[-1][1]
    start = len(stream) - 8 - len(body)  # the batch is the last message before the 8-byte EOS
    assert stream[start:start + 8] == body[:8]
    assert int.from_bytes(body[:8], "little", signed=True) in (-1, 1, 2), "not a length prefix"
    stream[start:start + 8] = (2**60).to_bytes(8, "little")
    return bytes(stream), raw.ipc_messages(bytes(stream))


def forged_handle(sql: str = "SELECT $1", **fields) -> bytes:
    return json.dumps({"sql": sql, **fields}).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def get_flight_info(cmd: bytes, timeout: float = 60):
    return lambda t: t.call("GetFlightInfo", raw.descriptor(cmd), timeout=timeout)


def run_query(sql: str):
    """GetFlightInfo and DoGet of `sql`, read to the end, through pyarrow."""
    def send(t: Target):
        info = t.pyflight.get_flight_info(
            flight.FlightDescriptor.for_command(raw.statement_query(sql.encode())), t.options())
        return t.pyflight.do_get(info.endpoints[0].ticket, t.options()).read_all()
    return send


def do_get(ticket_bytes: bytes):
    return lambda t: t.call("DoGet", raw.ticket(ticket_bytes))


def with_header(value: str):
    """GetFlightInfo for SELECT 1 through pyarrow with this `authorization` value."""
    def send(t: Target):
        c = SqlClient(t.engine.uri).use(value)
        return c.flight_info("SELECT 1")
    return send


def do_put_pyarrow(command: Callable[[Target], bytes], table: pa.Table, compression: str | None = None,
                   timeout: float = 60):
    """DoPut through pyarrow's Flight writer (compressing with `compression` if given)."""
    def send(t: Target):
        options = t.options(
            timeout=timeout,
            write_options=pa.ipc.IpcWriteOptions(compression=compression) if compression else None,
        )
        desc = flight.FlightDescriptor.for_command(command(t))
        writer, reader = t.pyflight.do_put(desc, table.schema, options)
        writer.write_table(table)
        writer.done_writing()
        reader.read()
        writer.close()
    return send


def do_put_raw(command: Callable[[Target], bytes], messages: list[tuple[bytes, bytes]]):
    """DoPut of hand-made FlightData: the first carries the descriptor and the schema."""
    def send(t: Target):
        (schema_header, _), *batches = messages
        frames = [raw.flight_data(raw.descriptor(command(t)), schema_header)]
        frames += [raw.flight_data(None, h, b) for h, b in batches]
        return t.call("DoPut", frames)
    return send


def nested_json(depth: int) -> bytes:
    return b'{"sql":"SELECT 1","nonce":' + b"[" * depth + b"]" * depth + b"}"


# --- the corpus ------------------------------------------------------------------------------

def no_auth(rpc: str, request, expect=frozenset({"UNAUTHENTICATED"}), note=""):
    return Case(f"no-auth-{rpc}", lambda t: t.call(rpc, request, auth=False), set(expect), note)


UNAUTHENTICATED = [
    no_auth("Handshake", [raw.handshake_request()]),
    no_auth("ListFlights", b""),
    no_auth("GetFlightInfo", select_one_descriptor()),
    no_auth("PollFlightInfo", select_one_descriptor()),
    no_auth("GetSchema", select_one_descriptor()),
    no_auth("DoGet", raw.ticket(statement_ticket(forged_handle("SELECT 1")))),
    no_auth("DoPut", [raw.flight_data(raw.descriptor(raw.sql_any("CommandStatementUpdate", raw.field(1, b"SELECT 1"))))]),
    no_auth("DoExchange", [raw.flight_data(select_one_descriptor())]),
    Case("no-auth-GetFlightInfo-40MiB",
         lambda t: t.call("GetFlightInfo", raw.descriptor(raw.statement_query(b"SELECT '" + b"x" * (40 << 20) + b"'")),
                          auth=False),
         {"UNAUTHENTICATED"}, "refused from the headers: the body is never read"),
    Case("no-auth-DoPut-40MiB",
         lambda t: t.call("DoPut", [raw.flight_data(raw.descriptor(raw.sql_any("CommandStatementUpdate",
                                                                               raw.field(1, b"SELECT 1"))),
                                                    b"", b"x" * (40 << 20))], auth=False),
         {"UNAUTHENTICATED"}),
    no_auth("DoAction", raw.action("CreatePreparedStatement",
                                   raw.sql_any("ActionCreatePreparedStatementRequest", raw.field(1, b"SELECT 1")))),
    # Listing the action types reveals nothing about data: it may answer without a session.
    no_auth("ListActions", b"", expect={"OK", "UNAUTHENTICATED"}),
    Case("no-auth-DoGet-garbage-ticket", lambda t: t.call("DoGet", raw.ticket(b"\xff" * 16), auth=False),
         {"UNAUTHENTICATED"}, "credentials are checked before the request is parsed"),
    Case("no-auth-DoAction-CloseSession", lambda t: t.call("DoAction", raw.action("CloseSession"), auth=False),
         {"UNAUTHENTICATED"}),
]

BAD_AUTHORIZATION = [
    Case("auth-no-scheme", with_header("alice-pw"), {"UNAUTHENTICATED"}),
    Case("auth-unknown-scheme", with_header("Digest username=alice"), {"UNAUTHENTICATED"}),
    Case("auth-basic-not-base64", with_header("Basic !!!"), {"UNAUTHENTICATED"}),
    Case("auth-basic-without-colon", with_header("Basic " + b64(b"alice")), {"UNAUTHENTICATED"}),
    Case("auth-basic-not-utf8", with_header("Basic " + b64(b"\xff\xfe:\xfd")), {"UNAUTHENTICATED"}),
    Case("auth-bearer-empty", with_header("Bearer "), {"UNAUTHENTICATED"}),
    Case("auth-bearer-garbage", with_header("Bearer garbage"), {"UNAUTHENTICATED"}),
    Case("auth-bearer-forged-handle", with_header("Bearer sqe_" + "A" * 43), {"UNAUTHENTICATED"}),
    Case("auth-bearer-forged-jwt", with_header("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),
         {"UNAUTHENTICATED"}),
    Case("auth-12kB-bearer", with_header("Bearer " + "A" * 12_000), {"UNAUTHENTICATED"}),
    Case("auth-100kB-bearer", with_header("Bearer " + "A" * 100_000), {"UNAUTHENTICATED"},
         "not a GOAWAY of the whole connection, which clients read as UNAVAILABLE and retry"),
    Case("auth-100kB-basic", with_header("Basic " + b64(b"u" * 75_000 + b":pw")), {"UNAUTHENTICATED"}),
]

BAD_TICKETS = [
    Case("ticket-random-bytes", do_get(bytes(range(256)) * 4), {"INVALID_ARGUMENT"}),
    Case("ticket-empty", do_get(b""), {"INVALID_ARGUMENT"}),
    Case("ticket-any-with-unknown-type-url",
         do_get(raw.any_of("type.googleapis.com/evil.DropEverything", b"\x0a\x01x")), {"INVALID_ARGUMENT"}),
    Case("ticket-known-type-url-garbage-value",
         do_get(raw.any_of(raw.SQL + "TicketStatementQuery", b"\xff\xff\xff")), {"INVALID_ARGUMENT"}),
    Case("ticket-handle-not-json", do_get(statement_ticket(b"not json")), {"INVALID_ARGUMENT"}),
    Case("ticket-handle-sql-is-a-number", do_get(statement_ticket(b'{"sql": 42}')), {"INVALID_ARGUMENT"}),
    Case("ticket-handle-params-is-a-number", do_get(statement_ticket(b'{"sql": "SELECT $1", "params": 7}')),
         {"INVALID_ARGUMENT"}),
    Case("ticket-handle-executed-is-a-string",
         do_get(statement_ticket(b'{"sql": "SELECT 1", "executed": "yes"}')), {"INVALID_ARGUMENT"}),
    Case("ticket-handle-json-nested-100k-deep", do_get(statement_ticket(nested_json(100_000))),
         {"INVALID_ARGUMENT"}),
    Case("ticket-prepared-handle-not-json", do_get(prepared_query(b"\x00\x01garbage")), {"INVALID_ARGUMENT"}),
]

WRONG_DESCRIPTORS = [
    Case("descriptor-path", lambda t: t.call("GetFlightInfo", raw.descriptor(kind=raw.PATH, path=("demo", "a"))),
         {"UNIMPLEMENTED"}, "path descriptors are a Flight feature the engine does not offer"),
    Case("descriptor-cmd-garbage-bytes", get_flight_info(b"\xff\xfe\xfd garbage"), {"INVALID_ARGUMENT"}),
    Case("descriptor-cmd-unknown-type-url",
         get_flight_info(raw.any_of("type.googleapis.com/evil.Command", b"")), {"INVALID_ARGUMENT"}),
    Case("descriptor-cmd-known-type-url-garbage-value",
         get_flight_info(raw.sql_any("CommandStatementQuery", b"\xff\xff\xff")), {"INVALID_ARGUMENT"}),
    Case("descriptor-statement-update-to-GetFlightInfo",
         get_flight_info(raw.sql_any("CommandStatementUpdate", raw.field(1, b"SELECT 1"))), {"INVALID_ARGUMENT"},
         "an update is a DoPut command"),
    Case("descriptor-substrait-plan", get_flight_info(raw.sql_any("CommandStatementSubstraitPlan", b"")),
         {"UNIMPLEMENTED"}, "a real Flight SQL feature the engine does not offer"),
]

_BIG_STRING = "x" * (1_700_000)  # base64 of its IPC is over 2 MiB

FORGED_PARAMS = [
    Case("params-not-base64",
         get_flight_info(prepared_query(forged_handle(params="!!! not base64 !!!"))), {"INVALID_ARGUMENT"}),
    Case("params-truncated-ipc",
         get_flight_info(prepared_query(forged_handle(params=b64(ipc_stream(one_param(5))[:-40])))),
         {"INVALID_ARGUMENT"}),
    Case("params-over-2MiB-of-base64",
         get_flight_info(prepared_query(forged_handle(params=b64(ipc_stream(one_param(_BIG_STRING, pa.string())))))),
         {"INVALID_ARGUMENT"}, "bound values the engine itself would never put in a handle"),
    Case("params-lz4-claiming-2^60-bytes-GetFlightInfo",
         get_flight_info(prepared_query(forged_handle(params=b64(lz4_with_huge_length(one_param())[0])))),
         {"INVALID_ARGUMENT"}),
    Case("params-lz4-claiming-2^60-bytes-DoGet",
         do_get(statement_ticket(forged_handle(params=b64(lz4_with_huge_length(one_param())[0])))),
         {"INVALID_ARGUMENT"}),
]

_TWO_MILLION = pa.table({"$1": pa.array([1] * 2_000_000, pa.int8())})

DO_PUT = [
    Case("doput-bind-lz4", do_put_pyarrow(lambda t: prepared_query(t.prepare("SELECT $1")), one_param(), "lz4"),
         {"INVALID_ARGUMENT"}, "compressed IPC is not accepted"),
    Case("doput-bind-zstd", do_put_pyarrow(lambda t: prepared_query(t.prepare("SELECT $1")), one_param(), "zstd"),
         {"INVALID_ARGUMENT"}, "compressed IPC is not accepted"),
    Case("doput-update-lz4", do_put_pyarrow(lambda t: prepared_update(t.prepare("SELECT $1")), one_param(), "lz4"),
         {"INVALID_ARGUMENT"}, "compressed IPC is not accepted"),
    Case("doput-bind-lz4-claiming-2^60-bytes",
         do_put_raw(lambda t: prepared_query(t.prepare("SELECT $1")), lz4_with_huge_length(one_param())[1]),
         {"INVALID_ARGUMENT"}),
    Case("doput-bind-2-million-rows", do_put_pyarrow(lambda t: prepared_query(t.prepare("SELECT $1")), _TWO_MILLION),
         {"INVALID_ARGUMENT"}),
    Case("doput-update-2-million-rows",
         do_put_pyarrow(lambda t: prepared_update(t.prepare("SELECT $1")), _TWO_MILLION, timeout=30),
         {"INVALID_ARGUMENT"}, "one update per bound row: a row budget must refuse it up front"),
]

SQL_TEXT = [
    Case("sql-20MB", get_flight_info(raw.statement_query(b"SELECT length('" + b"x" * 20_000_000 + b"') AS n"),
                                     timeout=120),
         {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, "a statement-size limit (either code is clear)"),
    Case("sql-parens-5000-deep",
         get_flight_info(raw.statement_query(b"SELECT " + b"(" * 5000 + b"1" + b")" * 5000)), {"INVALID_ARGUMENT"}),
    Case("sql-parens-100k-deep",
         get_flight_info(raw.statement_query(b"SELECT " + b"(" * 100_000 + b"1" + b")" * 100_000)),
         {"INVALID_ARGUMENT"}),
    Case("sql-100k-operator-chain",
         get_flight_info(raw.statement_query(b"SELECT " + b"+".join([b"1"] * 100_000) + b" AS n"), timeout=120),
         {"INVALID_ARGUMENT"}, "refused as too deep, before planning"),
    Case("sql-case-chain",
         get_flight_info(raw.statement_query(b"SELECT " + b" + ".join([b"CASE WHEN true THEN 1 END"] * 1_100))),
         {"INVALID_ARGUMENT"}, "a chain is measured on the tree, however it is spelled"),
    Case("sql-cast-chain-1MiB",
         get_flight_info(raw.statement_query(b"SELECT 1" + b"::INT" * ((1 << 20) // 5 - 4))), {"INVALID_ARGUMENT"}),
    Case("sql-is-null-chain", get_flight_info(raw.statement_query(b"SELECT 1" + b" IS NULL" * 1_100)),
         {"INVALID_ARGUMENT"}),
    Case("sql-union-chain",
         get_flight_info(raw.statement_query(b" UNION ALL ".join([b"SELECT 1"] * 1_100))), {"INVALID_ARGUMENT"}),
    Case("sql-compound-identifier-9-parts",
         get_flight_info(raw.statement_query(b"SELECT a - b.c.d.e.f.g.h.i.j FROM (VALUES (1)) t(a)")),
         {"INVALID_ARGUMENT"}, "DataFusion 53 panics planning it (found by engine/fuzz sql_statement)"),
    Case("sql-set-recursion-limit",
         get_flight_info(raw.statement_query(b"SET datafusion.sql_parser.recursion_limit = 100000")),
         {"INVALID_ARGUMENT"}, "the parser's limit is the engine's"),
    Case("sql-repeat-1GB", run_query("SELECT length(repeat('x', 1100000000)) AS n"),
         {"RESOURCE_EXHAUSTED"}, "a result that dwarfs its arguments is refused before it is made"),
    Case("sql-invalid-utf8", get_flight_info(raw.statement_query(b"SELECT '\xff\xfe' AS x")), {"INVALID_ARGUMENT"}),
]

ACTIONS = [
    Case("action-unknown-type",
         lambda t: list(t.pyflight.do_action(flight.Action("DropEverything", b""), t.options())), {"UNIMPLEMENTED"}),
    Case("action-CancelFlightInfo-garbage-body",
         lambda t: list(t.pyflight.do_action(flight.Action("CancelFlightInfo", b"\xff\xfe\xfd"), t.options())),
         {"INVALID_ARGUMENT"}),
    Case("action-CancelQuery-garbage-info",
         lambda t: t.call("DoAction", raw.action("CancelQuery", raw.sql_any("ActionCancelQueryRequest",
                                                                           raw.field(1, b"\xff\xfe")))),
         {"INVALID_ARGUMENT"}),
    Case("action-CreatePreparedStatement-garbage-body",
         lambda t: t.call("DoAction", raw.action("CreatePreparedStatement", b"\xff\xfe\xfd")), {"INVALID_ARGUMENT"}),
    Case("action-CreatePreparedStatement-known-type-url-garbage-value",
         lambda t: t.call("DoAction", raw.action("CreatePreparedStatement",
                                                 raw.sql_any("ActionCreatePreparedStatementRequest", b"\xff\xff"))),
         {"INVALID_ARGUMENT"}),
]

CORPUS = UNAUTHENTICATED + BAD_AUTHORIZATION + BAD_TICKETS + WRONG_DESCRIPTORS + FORGED_PARAMS + DO_PUT + SQL_TEXT + ACTIONS


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_input_gets_a_clear_status_and_the_engine_keeps_serving(target, case):
    """The case's input is answered with the status code a client can act on, and afterwards the
    engine runs and the canary session still answers."""
    got = raw.status_of(lambda: case.send(target))
    canary = raw.status_of(lambda: target.canary.query("SELECT 1"))
    problems = []
    if canary != "OK":
        problems.append(f"the canary's SELECT 1 failed with {canary}")
    code = target.exit_code(wait=10 if canary != "OK" else 0.1)
    if code is not None:
        problems.append(f"the engine died (exit {code})")
    if problems:
        target.retire()
    if got not in case.expect:
        problems.append(f"answered {got}, expected {' or '.join(sorted(case.expect))}"
                        + (f" ({case.note})" if case.note else ""))
    assert not problems, f"{case.id}: " + "; ".join(problems)


def test_compressed_parameters_are_refused_with_a_message_that_says_so(target):
    """A client binding LZ4-compressed parameters learns why it was refused."""
    send = do_put_pyarrow(lambda t: prepared_query(t.prepare("SELECT $1")), one_param(), "lz4")
    with pytest.raises(pa.ArrowInvalid) as raised:
        send(target)
    assert "compress" in str(raised.value).lower(), raised.value
