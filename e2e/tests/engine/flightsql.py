"""A minimal Flight SQL client over `pyarrow.flight`: the raw protocol, message by message, with
the Flight SQL commands encoded by hand (protobuf `Any`)."""

import base64
import json

import pyarrow as pa
import pyarrow.flight as flight


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def pack_any(message: str, body: bytes) -> bytes:
    url = f"type.googleapis.com/arrow.flight.protocol.sql.{message}".encode()
    return _field(1, url) + _field(2, body)


def statement_query(sql: str) -> bytes:
    return pack_any("CommandStatementQuery", _field(1, sql.encode()))


class SqlClient:
    def __init__(self, uri: str):
        self.client = flight.FlightClient(uri)
        self.headers: list[tuple[bytes, bytes]] = []

    def login(self, user: str, password: str, headers=()) -> str:
        """Handshake with Basic credentials; returns the session handle."""
        opts = flight.FlightCallOptions(headers=list(headers))
        key, value = self.client.authenticate_basic_token(user, password, opts)
        assert key.lower() == b"authorization"
        self.headers = [(key, value)]
        scheme, handle = value.decode().split(" ", 1)
        assert scheme == "Bearer"
        return handle

    def use(self, authorization: str) -> "SqlClient":
        self.headers = [(b"authorization", authorization.encode())]
        return self

    def options(self) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(headers=self.headers)

    def flight_info(self, sql: str) -> flight.FlightInfo:
        return self.client.get_flight_info(flight.FlightDescriptor.for_command(statement_query(sql)), self.options())

    def query(self, sql: str) -> pa.Table:
        info = self.flight_info(sql)
        return self.client.do_get(info.endpoints[0].ticket, self.options()).read_all()

    def cancel(self, info: flight.FlightInfo) -> str:
        """CancelFlightInfo (a Flight action; pyarrow has no wrapper): returns the CancelStatus name."""
        body = _field(1, info.serialize())
        (result,) = list(self.client.do_action(flight.Action("CancelFlightInfo", body), self.options()))
        raw = result.body.to_pybytes()
        status = raw[1] if raw[:1] == b"\x08" else 0
        return {0: "UNSPECIFIED", 1: "CANCELLED", 2: "CANCELLING", 3: "NOT_CANCELLABLE"}[status]

    def close_session(self) -> list:
        return list(self.client.do_action(flight.Action("CloseSession", b""), self.options()))

    def close(self):
        self.client.close()


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))
