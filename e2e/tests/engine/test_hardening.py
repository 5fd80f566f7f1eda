"""Engine hardening, through the real stack and real clients: a stranger cannot lock a user out,
one user cannot starve another, settings that protect the process are the operator's, the
process has one memory pool, and tokens that are not access tokens are not sessions.

Some tests reach the engine from two loopback addresses, 127.0.0.1 and ::1 (the engine listens
dual-stack for them), so the engine sees two different clients. Traffic stays on loopback."""

import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as flight
import pytest

from flightsql import SqlClient

STRANGER = "[::1]"


def grpc_code(exc: BaseException) -> str:
    """The gRPC status pyarrow reports, as in its message ('… returned <code> error …')."""
    m = re.search(r"returned ([a-z ]+?) error", str(exc))
    assert m, f"no gRPC status in {exc!r}"
    return m.group(1).upper().replace(" ", "_")


def refused(fn) -> BaseException:
    with pytest.raises(Exception) as raised:
        fn()
    return raised.value


def login(uri: str, user: str, password: str) -> SqlClient:
    c = SqlClient(uri)
    c.login(user, password)
    return c


# --- logins ---------------------------------------------------------------------------------

def test_a_stranger_guessing_alices_password_does_not_lock_her_out(start_engine):
    e = start_engine(listen_all=True)
    stranger = e.uri_from(STRANGER)
    for _ in range(4):
        with pytest.raises(flight.FlightUnauthenticatedError):
            login(stranger, "alice", "guess")
    # The stranger is now slowed down at alice's name ...
    err = refused(lambda: login(stranger, "alice", "guess"))
    assert grpc_code(err) == "RESOURCE_EXHAUSTED" and "too many failed logins" in str(err)
    # ... and alice, from her own address, logs in at once and queries.
    assert login(e.uri, "alice", "alice-pw").query("SELECT 1 AS x").num_rows == 1


def test_one_address_guessing_many_users_is_paced_and_correct_passwords_still_log_in(start_engine):
    """Behind a load balancer every client can share one address: a flood of bad passwords from
    it delays that address's logins (one at a time), never refuses a password the IdP accepts."""
    e = start_engine(listen_all=True)
    stranger = e.uri_from(STRANGER)
    for i in range(22):  # past the per-address allowance (many users can share a NAT)
        with pytest.raises(flight.FlightUnauthenticatedError):
            login(stranger, f"nobody-{i}", "guess")
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        logins = [pool.submit(login, stranger, user, f"{user}-pw") for user in ("carol", "bob", "alice")]
        clients = [f.result(timeout=60) for f in logins]
    took = time.monotonic() - started
    assert all(c.query("SELECT 1 AS x").num_rows == 1 for c in clients)
    assert took >= 1.5, f"three logins from a paced address took turns ({took:.2f} s)"
    # Another address is not paced at all.
    assert login(e.uri, "carol", "carol-pw").query("SELECT 1 AS x").num_rows == 1


def test_bad_bearer_tokens_from_anyone_do_not_lock_out_bearer_logins(start_engine, keycloak):
    e = start_engine(listen_all=True)
    alice = keycloak.password_grant("alice", "alice-pw")["access_token"]
    stranger = e.uri_from(STRANGER)
    forged = [alice[:-8] + f"{i:08d}" for i in range(8)]  # signatures that do not verify
    for token in forged:
        with pytest.raises(flight.FlightUnauthenticatedError):
            SqlClient(stranger).use(f"Bearer {token}").query("SELECT 1")
    # Twice the old shared allowance later, valid tokens still log in, from anywhere.
    assert SqlClient(e.uri).use(f"Bearer {alice}").query("SELECT 1 AS x").num_rows == 1
    bob = keycloak.password_grant("bob", "bob-pw")["access_token"]
    assert SqlClient(stranger).use(f"Bearer {bob}").query("SELECT 1 AS x").num_rows == 1
    # One bad token tried again and again waits, before the engine validates it again.
    with pytest.raises(flight.FlightUnauthenticatedError):
        SqlClient(e.uri).use(f"Bearer {forged[0]}").query("SELECT 1")
    err = refused(lambda: SqlClient(e.uri).use(f"Bearer {forged[0]}").query("SELECT 1"))
    assert grpc_code(err) == "RESOURCE_EXHAUSTED", err


def test_an_id_token_is_not_a_bearer_credential(engine, keycloak):
    tokens = keycloak.grant(
        grant_type="password", username="alice", password="alice-pw", scope="openid"
    ).json()
    # Same issuer, same audience (the client), valid signature: only its type says "ID".
    with pytest.raises(flight.FlightUnauthenticatedError):
        SqlClient(engine.uri).use(f"Bearer {tokens['id_token']}").query("SELECT 1")
    assert SqlClient(engine.uri).use(f"Bearer {tokens['access_token']}").query("SELECT 1").num_rows == 1
    [rejected] = engine.events("login", mode="bearer", outcome="rejected")[-1:]
    assert rejected["reason"] == "not an access token"


# --- one user cannot starve another ---------------------------------------------------------

def test_one_user_at_the_session_cap_does_not_stop_another(start_engine):
    e = start_engine(session={"max_sessions_per_user": 2})
    held = [login(e.uri, "alice", "alice-pw") for _ in range(2)]
    err = refused(lambda: login(e.uri, "alice", "alice-pw"))
    assert grpc_code(err) == "RESOURCE_EXHAUSTED" and "too many sessions for this user" in str(err)
    assert login(e.uri, "bob", "bob-pw").query("SELECT 1 AS x").num_rows == 1
    held[0].close_session()
    assert login(e.uri, "alice", "alice-pw").query("SELECT 1 AS x").num_rows == 1


def test_a_user_holding_unread_streams_at_his_limit_does_not_stop_another(start_engine):
    e = start_engine(query={"max_concurrent_per_user": 1, "max_queued_per_user": 0, "max_concurrent": 8,
                            "shutdown_grace_seconds": 5})
    alice = login(e.uri, "alice", "alice-pw")
    info = alice.flight_info("SELECT * FROM generate_series(1, 100000000)")
    reader = alice.client.do_get(info.endpoints[0].ticket, alice.options())
    reader.read_chunk()  # the query runs and holds its slot while unread
    err = refused(lambda: alice.query("SELECT 1"))
    assert grpc_code(err) == "RESOURCE_EXHAUSTED" and "your limit of 1" in str(err)
    assert login(e.uri, "bob", "bob-pw").query("SELECT 1 AS x").num_rows == 1
    reader.cancel()
    del reader


def test_repeated_basic_calls_from_one_client_reuse_its_session(engine):
    """A client that sends Basic on every call (no handshake) gets one session, not one per call."""
    import base64

    before = len(engine.events("login", user="bob", outcome="ok"))
    c = SqlClient(engine.uri).use("Basic " + base64.b64encode(b"bob:bob-pw").decode())
    for _ in range(3):
        assert c.query("SELECT 1 AS x").num_rows == 1  # GetFlightInfo + DoGet, each with Basic
    assert len(engine.events("login", user="bob", outcome="ok")) - before == 1
    # A handshake is a new connection: it gets a session of its own.
    login(engine.uri, "bob", "bob-pw")
    assert len(engine.events("login", user="bob", outcome="ok")) - before == 2


# --- settings and memory ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "sql",
    [
        "SET datafusion.runtime.memory_limit = '100G'",
        "RESET datafusion.runtime.memory_limit",
        "SET datafusion.runtime.temp_directory = '/tmp/elsewhere'",
        "SET datafusion.catalog.location = '/etc'",
    ],
)
def test_process_settings_cannot_be_changed_from_a_session(engine, sql):
    c = login(engine.uri, "alice", "alice-pw")
    err = refused(lambda: c.query(sql))
    assert grpc_code(err) == "INVALID_ARGUMENT", err
    assert "cannot be set from a session" in str(err)
    # The session's own settings still work.
    c.query("SET datafusion.execution.batch_size = 1000")


def test_path_access_is_refused_even_inside_explain_analyze(engine, tmp_path):
    target = tmp_path / "out.csv"
    c = login(engine.uri, "alice", "alice-pw")
    for sql in [
        f"COPY (SELECT 1 AS x) TO '{target}' STORED AS CSV",
        f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{target}' STORED AS CSV",
    ]:
        err = refused(lambda: c.query(sql))
        assert isinstance(err, flight.FlightUnauthorizedError), (sql, err)
    assert not target.exists()


def test_views_live_in_the_session_not_in_the_warehouse(engine, needs_catalog):
    with adbc.connect(engine.uri, db_kwargs={"username": "alice", "password": "alice-pw"}, autocommit=True) as conn:
        with conn.cursor() as cur:
            with pytest.raises(adbc.Error) as raised:
                cur.execute(f"CREATE VIEW lake.alice_ws.v_{uuid.uuid4().hex[:8]} AS SELECT 1 AS x")
                cur.fetchall()
            assert raised.value.status_code.name == "NOT_IMPLEMENTED", raised.value
            assert "does not create Iceberg views" in str(raised.value)
            cur.execute("CREATE VIEW datafusion.public.v AS SELECT 41 + 1 AS x")
            cur.fetchall()
            cur.execute("SELECT x FROM datafusion.public.v")
            assert cur.fetch_arrow_table().to_pylist() == [{"x": 42}]


def test_sessions_draw_from_one_shared_memory_pool(start_engine):
    # 48 MiB per session, 64 MiB for the whole process: two sessions cannot both hold 40 MB.
    e = start_engine(
        query={"memory_limit_bytes": 48 << 20, "memory_pool_bytes": 64 << 20, "shutdown_grace_seconds": 5}
    )
    alice, bob = login(e.uri, "alice", "alice-pw"), login(e.uri, "bob", "bob-pw")
    big = "CREATE TABLE datafusion.public.big AS SELECT * FROM generate_series(1, 5000000)"
    alice.query(big)
    err = refused(lambda: bob.query(big))
    assert grpc_code(err) == "RESOURCE_EXHAUSTED" and "shared memory pool is full" in str(err), err
    # Within the pool, a session is also held to its own share.
    err = refused(lambda: alice.query("INSERT INTO datafusion.public.big SELECT * FROM generate_series(1, 3000000)"))
    assert grpc_code(err) == "RESOURCE_EXHAUSTED" and "session's memory limit" in str(err), err
    assert alice.query("SELECT count(*) AS n FROM datafusion.public.big").to_pylist() == [{"n": 5000000}]
    # What alice frees, bob can use; both sessions carried on after their refusals.
    alice.query("DROP TABLE datafusion.public.big")
    bob.query(big)
    assert bob.query("SELECT count(*) AS n FROM datafusion.public.big").to_pylist() == [{"n": 5000000}]


# --- literals ---------------------------------------------------------------------------------

def test_quoted_literals_keep_their_meaning_next_to_placeholders(engine):
    with adbc.connect(engine.uri, db_kwargs={"username": "alice", "password": "alice-pw"}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE datafusion.public.lit (id BIGINT, s VARCHAR)")
            cur.fetchall()
            # ADBC runs a statement's DoGet lazily: fetching makes each insert happen now.
            cur.execute("INSERT INTO datafusion.public.lit VALUES (?, 'it''s')", (1,))
            cur.fetchall()
            cur.execute("INSERT INTO datafusion.public.lit VALUES (?, 'a'' OR ''1''=''1')", (2,))
            cur.fetchall()
            cur.execute("SELECT id, s FROM datafusion.public.lit WHERE s = ? ORDER BY id", ("it's",))
            assert cur.fetch_arrow_table().to_pylist() == [{"id": 1, "s": "it's"}]
            cur.execute("SELECT s FROM datafusion.public.lit WHERE id = ?", (2,))
            assert cur.fetch_arrow_table().to_pylist() == [{"s": "a' OR '1'='1"}]
