"""Logging in to the engine as the user, through real Flight SQL clients and the real IdP."""

import base64
import json
import time
import uuid

import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from flightsql import SqlClient, jwt_claims

GENERIC = "authentication failed"


def adbc_connect(engine, **db_kwargs):
    return adbc.connect(engine.uri, db_kwargs=db_kwargs)


def test_alice_logs_in_through_adbc_and_queries(engine, keycloak):
    since = int(time.time() * 1000) - 1000
    engine.remember_secret("alice-pw")
    with adbc_connect(engine, username="alice", password="alice-pw") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS one, 'x' AS s")
            assert cur.fetch_arrow_table().to_pylist() == [{"one": 1, "s": "x"}]
            # A result larger than one batch streams back completely.
            cur.execute("SELECT value FROM generate_series(1, 200000) AS t(value)")
            assert cur.fetch_arrow_table().num_rows == 200000
    # The engine logged alice in at the IdP with *her* password grant.
    logins = keycloak.events(types=["LOGIN"], user="alice", since_ms=since)
    assert logins, "no LOGIN event for alice at Keycloak"
    assert logins[0]["details"].get("grant_type") == "password"
    ok = engine.events("login", user="alice", outcome="ok", mode="password")
    assert ok and all(len(e["fp"]) == 16 for e in ok)
    # ADBC closes with CloseSession.
    assert engine.events("session_end", user="alice", reason="closed")


def test_alice_logs_in_through_pyarrow_flight_handshake(engine):
    c = SqlClient(engine.uri)
    handle = c.login("alice", "alice-pw")
    engine.remember_secret(handle)
    assert handle.startswith("sqe_") and len(handle) >= 4 + 43  # ≥ 256 random bits
    table = c.query("SELECT 40 + 2 AS answer")
    assert table.to_pylist() == [{"answer": 42}]
    # The handle works across calls and until the session is closed.
    assert c.query("SELECT 'again' AS s").to_pylist() == [{"s": "again"}]
    c.close_session()
    with pytest.raises(flight.FlightUnauthenticatedError):
        c.query("SELECT 1")


def test_basic_header_on_the_first_call_logs_in_and_returns_a_handle(engine):
    c = SqlClient(engine.uri)
    # Unpadded base64, as ADBC sends it.
    creds = base64.b64encode(b"bob:bob-pw").decode().rstrip("=")
    c.use(f"Basic {creds}")
    assert c.query("SELECT 7 AS n").to_pylist() == [{"n": 7}]


@pytest.mark.parametrize(
    "user,password",
    [("alice", "wrong-password"), ("nobody-" + uuid.uuid4().hex[:6], "whatever"), ("dave", "dave-pw")],
    ids=["wrong-password", "unknown-user", "disabled-user"],
)
def test_bad_credentials_are_unauthenticated_with_one_generic_message(engine, user, password):
    engine.remember_secret(password)
    with pytest.raises(flight.FlightUnauthenticatedError) as raised:
        SqlClient(engine.uri).login(user, password)
    assert GENERIC in str(raised.value)
    assert password not in str(raised.value)
    with pytest.raises(adbc.Error) as raised:
        adbc_connect(engine, username=user, password=password)
    assert raised.value.status_code == AdbcStatusCode.UNAUTHENTICATED
    assert GENERIC in str(raised.value)


def test_repeated_failures_for_one_user_are_throttled(engine):
    user = "mallory-" + uuid.uuid4().hex[:6]
    c = SqlClient(engine.uri)
    for _ in range(4):
        with pytest.raises(flight.FlightUnauthenticatedError):
            c.login(user, "guess")
    # RESOURCE_EXHAUSTED (pyarrow surfaces it as ArrowInvalid), without asking the IdP.
    with pytest.raises(Exception, match="resource exhausted.*too many failed logins"):
        c.login(user, "guess")
    # Another user from the same address is not affected.
    assert SqlClient(engine.uri).login("carol", "carol-pw")


def test_max_sessions_is_resource_exhausted(start_engine):
    e = start_engine(session={"max_sessions": 2})
    a, b = SqlClient(e.uri), SqlClient(e.uri)
    a.login("alice", "alice-pw")
    b.login("bob", "bob-pw")
    with pytest.raises(Exception, match="resource exhausted.*too many sessions"):
        SqlClient(e.uri).login("carol", "carol-pw")
    a.close_session()
    SqlClient(e.uri).login("carol", "carol-pw")


# --- bearer mode ------------------------------------------------------------------------------

def test_bearer_mode_accepts_a_valid_idp_token_through_adbc(engine, keycloak):
    token = keycloak.password_grant("alice", "alice-pw")["access_token"]
    engine.remember_secret(token)
    with adbc_connect(engine, **{"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 5 AS five")
            assert cur.fetch_arrow_table().to_pylist() == [{"five": 5}]
    assert engine.events("login", mode="bearer", user="alice", outcome="ok")


def test_bearer_mode_accepts_a_valid_token_through_pyarrow(engine, keycloak):
    token = keycloak.password_grant("bob", "bob-pw")["access_token"]
    engine.remember_secret(token)
    c = SqlClient(engine.uri).use(f"Bearer {token}")
    assert c.query("SELECT 1 AS x").num_rows == 1
    assert c.query("SELECT 2 AS x").num_rows == 1
    # One session for the token, not one per call.
    assert len(engine.events("login", mode="bearer", user="bob", outcome="ok")) == 1


def _tamper(token: str) -> str:
    header, payload, sig = token.split(".")
    claims = jwt_claims(token)
    claims["preferred_username"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{sig}"


def test_bearer_mode_refuses_tampered_and_wrong_audience_tokens(engine, keycloak, stack):
    good = keycloak.password_grant("alice", "alice-pw")["access_token"]
    # Same user, same realm, but issued to another client: `sqe` is not in its audience.
    r = keycloak.grant(grant_type="password", username="alice", password="alice-pw", client_id="admin-cli")
    r.raise_for_status()
    other_client = r.json()["access_token"]
    assert "sqe" not in (jwt_claims(other_client).get("aud") or [])
    for bad in (_tamper(good), other_client, good[:-4] + "AAAA", "not.a.jwt"):
        engine.remember_secret(bad)
        with pytest.raises(flight.FlightUnauthenticatedError) as raised:
            SqlClient(engine.uri).use(f"Bearer {bad}").query("SELECT 1")
        assert GENERIC in str(raised.value)
    reasons = {e.get("reason") for e in engine.events("login", mode="bearer", outcome="rejected")}
    assert {"bad signature", "missing required claim"} <= reasons or {"bad signature", "wrong audience"} <= reasons, reasons


def test_bearer_mode_refuses_a_token_for_another_audience(start_engine, keycloak):
    e = start_engine(oidc={"audience": "some-other-service"})
    token = keycloak.password_grant("alice", "alice-pw")["access_token"]
    e.remember_secret(token)
    with pytest.raises(flight.FlightUnauthenticatedError):
        SqlClient(e.uri).use(f"Bearer {token}").query("SELECT 1")
    assert e.events("login", mode="bearer", outcome="rejected", reason="wrong audience")


def test_a_session_handle_is_never_accepted_as_a_jwt_and_garbage_is_refused(engine):
    for value in ["Bearer sqe_" + "A" * 43, "Bearer", "Token abc", "Basic !!!"]:
        with pytest.raises(flight.FlightUnauthenticatedError):
            SqlClient(engine.uri).use(value).query("SELECT 1")
    with pytest.raises(flight.FlightUnauthenticatedError):
        SqlClient(engine.uri).query("SELECT 1")
