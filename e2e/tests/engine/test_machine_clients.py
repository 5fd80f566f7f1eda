"""Machine clients log in as themselves: in client-credentials mode, Basic `client_id:secret`
(with `x-sqe-auth-mode: client_credentials`) runs the OAuth client-credentials grant at the IdP
*as that client*, and the session acts as the client's service account — never as the engine.

The stack's machine client is `sqe-etl` (secret `sqe-etl-secret`); Keycloak names its service
account `service-account-sqe-etl`, and Nessie lets that principal read `demo.a` only. The
engine's own client (`sqe`) is refused in this mode: its secret is for the engine, and a session
must never run with the engine's own identity (`service-account-sqe`).
"""

import base64
import re
import time

import pyarrow.flight as flight
import pytest

from flightsql import SqlClient

pytestmark = pytest.mark.usefixtures("needs_catalog")

ETL_CLIENT = "sqe-etl"
ETL_SECRET = "sqe-etl-secret"
ETL_PRINCIPAL = "service-account-sqe-etl"
ENGINE_PRINCIPAL = "service-account-sqe"
CLIENT_CREDENTIALS = [(b"x-sqe-auth-mode", b"client_credentials")]


@pytest.fixture(scope="module")
def cc_engine(start_engine, stack):
    """An engine that offers password and client-credentials logins (no bearer mode)."""
    e = start_engine(oidc={"modes": ["password", "client_credentials"]})
    e.remember_secret(ETL_SECRET)
    e.remember_secret(stack["SQE_OIDC_CLIENT_SECRET"])
    return e


@pytest.fixture(scope="module")
def started_ms() -> int:
    """When this module's first test began: from then on no session may act as the engine."""
    return int(time.time() * 1000) - 1000


@pytest.fixture(scope="module")
def catalog_mark(catalog) -> int:
    """The Nessie access log's length before this module's first catalog call."""
    return len(catalog.access_log_lines())


def machine_login(engine, client_id: str, secret: str) -> SqlClient:
    c = SqlClient(engine.uri)
    c.login(client_id, secret, headers=CLIENT_CREDENTIALS)
    return c


def principals(lines: list[str]) -> set[str]:
    return {m.group(1) for line in lines if (m := re.search(r"principal=(\S+)", line))}


def test_a_machine_client_logs_in_as_its_own_service_account_and_reads_what_the_catalog_grants_it(
    cc_engine, catalog, keycloak, started_ms, catalog_mark
):
    """sqe-etl:sqe-etl-secret logs in through the client-credentials grant of sqe-etl; its session
    counts lake.demo.a exactly as alice does, is PERMISSION_DENIED on lake.demo.c, the engine
    logs the login as `service-account-sqe-etl`, Keycloak records sqe-etl's CLIENT_LOGIN, and
    Nessie records every catalog call of the session under that principal."""
    mark = len(catalog.access_log_lines())
    etl = machine_login(cc_engine, ETL_CLIENT, ETL_SECRET)
    got = etl.query("SELECT count(*) AS n FROM lake.demo.a").to_pylist()

    alice = SqlClient(cc_engine.uri)
    alice.login("alice", "alice-pw")
    expected = alice.query("SELECT count(*) AS n FROM lake.demo.a").to_pylist()
    assert got == expected == [{"n": 3000}]

    with pytest.raises(flight.FlightUnauthorizedError) as denied:
        etl.query("SELECT count(*) AS n FROM lake.demo.c")
    assert "demo.c" in str(denied.value)

    [login] = cc_engine.events("login", mode="client_credentials", outcome="ok")
    assert login["user"] == ETL_PRINCIPAL, login

    r = keycloak.admin(
        "GET", "/events", params=[("type", "CLIENT_LOGIN"), ("client", ETL_CLIENT), ("max", "100")]
    )
    r.raise_for_status()
    assert [e for e in r.json() if e["time"] >= started_ms], "no CLIENT_LOGIN of sqe-etl at Keycloak"

    # Nessie: the machine client's loadTable of demo.a (and its refused demo.c) ran as itself.
    lines = catalog.access_log_lines()[mark:]
    loads = [l for l in lines if re.search(r'"GET \S*/namespaces/demo/tables/[ac]\b', l)]
    etl_loads = [l for l in loads if f"principal={ETL_PRINCIPAL} " in l]
    assert any("/tables/a" in l for l in etl_loads), lines
    assert any("/tables/c" in l for l in etl_loads), lines
    assert principals(loads) <= {ETL_PRINCIPAL, "alice"}, loads


def test_a_wrong_client_secret_is_unauthenticated(cc_engine):
    """sqe-etl with a wrong secret: the IdP refuses the grant, the client gets UNAUTHENTICATED
    with the one generic message, and no session is made."""
    cc_engine.remember_secret("not-the-etl-secret")
    with pytest.raises(flight.FlightUnauthenticatedError) as raised:
        machine_login(cc_engine, ETL_CLIENT, "not-the-etl-secret")
    assert "authentication failed" in str(raised.value)
    assert "not-the-etl-secret" not in str(raised.value)
    assert not [
        e for e in cc_engine.events("login", mode="client_credentials", outcome="ok")
        if e.get("user") != ETL_PRINCIPAL
    ]


@pytest.mark.parametrize(
    "client_id,secret",
    [
        ("sqe", "sqe-dev-secret"),
        ("sqe", "not-the-engine-secret"),
        ("alice", "alice-pw"),
        ("alice", "anything-at-all-7"),
        ("nightly-etl", ""),
        ("", "sqe-dev-secret"),
        ("", ""),
    ],
    ids=[
        "engine-client-with-its-real-secret",
        "engine-client-with-a-wrong-secret",
        "a-user-with-her-password",
        "a-user-with-anything",
        "a-label-without-secret",
        "no-client-id-with-the-engine-secret",
        "nothing-at-all",
    ],
)
def test_client_credentials_never_log_in_as_the_engine_or_as_a_user(
    cc_engine, catalog, started_ms, catalog_mark, client_id, secret
):
    """In client-credentials mode only a real machine client with its own secret logs in. The
    engine's own client `sqe` is refused even with its real secret, a user's password is not a
    client secret, and an empty id or secret is not a login: all UNAUTHENTICATED."""
    if secret:
        cc_engine.remember_secret(secret)
    with pytest.raises(flight.FlightUnauthenticatedError) as raised:
        machine_login(cc_engine, client_id, secret)
    assert "authentication failed" in str(raised.value)


def test_a_basic_header_on_a_query_in_client_credentials_mode_never_runs_as_the_engine(cc_engine):
    """The same refusal without a handshake: the engine's own client id and secret in a Basic
    header on a query (as ADBC sends it) is UNAUTHENTICATED, and the query does not run."""
    basic = base64.b64encode(b"sqe:sqe-dev-secret").decode().rstrip("=")
    c = SqlClient(cc_engine.uri)
    c.headers = [(b"authorization", f"Basic {basic}".encode()), *CLIENT_CREDENTIALS]
    with pytest.raises(flight.FlightUnauthenticatedError):
        c.query("SELECT 1")


def test_no_session_ever_acts_as_the_engine_itself(cc_engine, catalog, keycloak, started_ms, catalog_mark):
    """Over everything this module did: no login event names the engine's own service account
    (or a label on it), Keycloak issued no client-credentials token to the engine's client `sqe`,
    and Nessie saw no call from `service-account-sqe` since the module began. (Keycloak's events
    and Nessie's log are shared: another suite running against the same stack at the same time
    could show up here.)"""
    as_engine = [
        e for e in cc_engine.events("login")
        if re.fullmatch(rf"{ENGINE_PRINCIPAL}(\[.*\])?", str(e.get("user", "")))
    ]
    assert not as_engine, as_engine
    engine_grants = keycloak.events(types=["CLIENT_LOGIN"], since_ms=started_ms)
    assert not engine_grants, engine_grants
    lines = catalog.access_log_lines()[catalog_mark:]
    assert ENGINE_PRINCIPAL not in principals(lines), [l for l in lines if f"principal={ENGINE_PRINCIPAL} " in l]


def test_the_machine_clients_secret_never_appears_in_the_engine_log(cc_engine, stack):
    """After logins with the right and wrong secrets, neither the machine client's secret nor the
    engine's own appears anywhere in the engine's log."""
    machine_login(cc_engine, ETL_CLIENT, ETL_SECRET).query("SELECT 1")
    text = cc_engine.logs_text()
    assert ETL_SECRET not in text
    assert stack["SQE_OIDC_CLIENT_SECRET"] not in text
