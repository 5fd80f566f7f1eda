"""Raw gRPC for what `pyarrow.flight` cannot send: any bytes on any Flight RPC, with any (or no)
metadata. Flight's messages are encoded by hand (the wire format of Flight.proto and
FlightSql.proto); no generated stubs, so a request can be exactly as malformed as a test needs."""

import re

import grpc
import pyarrow as pa
import pyarrow.flight as flight

from flightsql import _field, _varint

SERVICE = "/arrow.flight.protocol.FlightService/"
SQL = "type.googleapis.com/arrow.flight.protocol.sql."

# RPC name → how it streams (request side, response side).
RPCS = {
    "Handshake": ("stream", "stream"),
    "ListFlights": ("unary", "stream"),
    "GetFlightInfo": ("unary", "unary"),
    "PollFlightInfo": ("unary", "unary"),
    "GetSchema": ("unary", "unary"),
    "DoGet": ("unary", "stream"),
    "DoPut": ("stream", "stream"),
    "DoExchange": ("stream", "stream"),
    "DoAction": ("unary", "stream"),
    "ListActions": ("unary", "stream"),
}

CODE_NAMES = {sc.value[0]: sc.name for sc in grpc.StatusCode}


# --- protobuf wire format --------------------------------------------------------------------

# Protobuf wire encoding: the same helpers the Flight SQL client uses.
varint = _varint
field = _field


def int_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def parse(buf: bytes) -> dict[int, list]:
    """Fields of a message: number → values (bytes for length-delimited, int for varints)."""
    out: dict[int, list] = {}
    i = 0

    def read_varint() -> int:
        nonlocal i
        shift = n = 0
        while True:
            b = buf[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    while i < len(buf):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = read_varint()
        elif wire == 2:
            length = read_varint()
            value, i = buf[i:i + length], i + length
        else:
            raise ValueError(f"wire type {wire} not handled")
        out.setdefault(number, []).append(value)
    return out


def any_of(type_url: str, value: bytes) -> bytes:
    return field(1, type_url.encode()) + field(2, value)


def sql_any(message: str, value: bytes) -> bytes:
    """A Flight SQL command packed in a protobuf Any."""
    return any_of(SQL + message, value)


PATH, CMD = 1, 2


def descriptor(cmd: bytes = b"", kind: int = CMD, path: tuple[str, ...] = ()) -> bytes:
    return int_field(1, kind) + field(2, cmd) + b"".join(field(3, p.encode()) for p in path)


def ticket(raw: bytes) -> bytes:
    return field(1, raw)


def action(kind: str, body: bytes = b"") -> bytes:
    return field(1, kind.encode()) + field(2, body)


def flight_data(desc: bytes | None = None, header: bytes = b"", body: bytes = b"") -> bytes:
    out = field(1, desc) if desc is not None else b""
    return out + field(2, header) + (field(1000, body) if body else b"")


def handshake_request(payload: bytes = b"") -> bytes:
    return int_field(1, 0) + field(2, payload)


def statement_query(sql: bytes) -> bytes:
    """CommandStatementQuery with the SQL field as raw bytes (it may be invalid UTF-8)."""
    return sql_any("CommandStatementQuery", field(1, sql))


def ipc_messages(stream: bytes) -> list[tuple[bytes, bytes]]:
    """An Arrow IPC stream as (flatbuffer header, body) pairs, the parts of FlightData."""
    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(stream))
    out = []
    while True:
        try:
            m = reader.read_next_message()
        except StopIteration:
            return out
        body = m.body.to_pybytes() if m.body is not None else b""
        out.append((m.metadata.to_pybytes(), body))


# --- calls -----------------------------------------------------------------------------------

class RawFlight:
    """One channel to the engine without any message-size limit on our side, so a refusal of a
    large message can only be the server's."""

    def __init__(self, uri: str):
        target = uri.removeprefix("grpc://")
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_metadata_size", 1 << 20),
            ],
        )

    def call(self, rpc: str, request: bytes | list[bytes], metadata=(), timeout: float = 60) -> list[bytes]:
        """Sends `request` (a list of messages for client-streaming RPCs) and returns every
        response message; a non-OK status raises grpc.RpcError."""
        requests, responses = RPCS[rpc]
        kind = f"{requests}_{responses}"
        method = getattr(self.channel, kind)(SERVICE + rpc, request_serializer=None, response_deserializer=None)
        metadata = [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                    for k, v in metadata]
        if requests == "stream":
            msgs = request if isinstance(request, list) else [request]
            request = iter(msgs)
        result = method(request, metadata=metadata, timeout=timeout)
        return list(result) if responses == "stream" else [result]

    def close(self):
        self.channel.close()


def status_of(call) -> str:
    """Runs `call` and returns the gRPC status it ended with, by name ("OK" if it returned).
    Understands grpc.RpcError and pyarrow's errors (see `flight_status`)."""
    try:
        call()
    except grpc.RpcError as e:
        return e.code().name
    except (flight.FlightError, pa.ArrowException, KeyError, NotImplementedError) as e:
        return flight_status(e)
    return "OK"


# pyarrow names the gRPC status in its message: "Flight returned <name> error" or "gRPC returned
# <name> error" (pyarrow 26; checked against a server answering every code).
_NAMES = {
    "cancelled": "CANCELLED",
    "invalid argument": "INVALID_ARGUMENT",
    "timeout": "DEADLINE_EXCEEDED",
    "deadline exceeded": "DEADLINE_EXCEEDED",
    "not found": "NOT_FOUND",
    "already exists": "ALREADY_EXISTS",
    "unauthorized": "PERMISSION_DENIED",
    "permission denied": "PERMISSION_DENIED",
    "resource exhausted": "RESOURCE_EXHAUSTED",
    "precondition failed": "FAILED_PRECONDITION",
    "failed precondition": "FAILED_PRECONDITION",
    "aborted": "ABORTED",
    "out-of-range": "OUT_OF_RANGE",
    "unimplemented": "UNIMPLEMENTED",
    "internal": "INTERNAL",
    "unavailable": "UNAVAILABLE",
    "data loss": "DATA_LOSS",
    "unauthenticated": "UNAUTHENTICATED",
}

_BY_TYPE = [
    (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
    (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
    (flight.FlightUnavailableError, "UNAVAILABLE"),
    (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
    (flight.FlightCancelledError, "CANCELLED"),
    (flight.FlightInternalError, "INTERNAL"),
    # UNKNOWN arrives as a bare FlightServerError ("Flight RPC failed with message: …").
    (flight.FlightServerError, "UNKNOWN"),
]


def flight_status(e: Exception) -> str:
    text = str(e)
    m = re.search(r"(?:Flight|gRPC) returned ([a-z -]+?) error", text)
    if m and m.group(1) in _NAMES:
        return _NAMES[m.group(1)]
    for cls, name in _BY_TYPE:
        if isinstance(e, cls):
            return name
    return f"UNRECOGNISED({type(e).__name__}: {text[:200]})"
