"""Sessions any replica serves: engine processes sharing a real Redis and a cluster key list. A
session opened on one replica is served by the others, through token refreshes, a replica's
death, a logout, a key rotation and the store's own outage, with the same handle and no new
login. Runs with real clients (ADBC, pyarrow.flight) against the real Keycloak and catalog."""

import base64
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from urllib.parse import urlparse

import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as flight
import pytest

from flightsql import SqlClient

pytestmark = pytest.mark.usefixtures("needs_catalog")

OLD_KEY = base64.b64encode(os.urandom(32)).decode()
NEW_KEY = base64.b64encode(os.urandom(32)).decode()
COUNT_A = "SELECT count(*) AS n FROM lake.demo.a"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def replica(start_engine, stack, tmp_path_factory):
    """Factory: an engine sharing sessions through `url` (the stack's Redis by default) with the
    cluster keys given, first sealing."""

    def start(*keys: str, url: str | None = None, password: str | None = None):
        path = tmp_path_factory.mktemp("keys") / "session-keys"
        path.write_text("# cluster keys, first seals\n" + "\n".join(keys or (OLD_KEY,)) + "\n")
        password = password or stack["SQE_REDIS_PASSWORD"]
        e = start_engine(
            session={"store": {"url": url or stack["SQE_REDIS_URL"], "keys_file": str(path)}},
            env={"SQE_SESSION_STORE_PASSWORD": password},
        )
        e.remember_secret(password)
        for key in keys:
            e.remember_secret(key)
        return e

    return start


@pytest.fixture(scope="module")
def pair(replica):
    return replica(), replica()


def login(engine, user: str = "alice", password: str | None = None) -> str:
    handle = SqlClient(engine.uri).login(user, password or f"{user}-pw")
    engine.remember_secret(handle)
    return handle


def on(engine, handle: str) -> SqlClient:
    engine.remember_secret(handle)
    return SqlClient(engine.uri).use(f"Bearer {handle}")


def adbc_on(engine, handle: str):
    return adbc.connect(engine.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {handle}"})


def keycloak_session(keycloak, user: str, since: int) -> str:
    """The Keycloak session of the one login `user` made since `since` (ms)."""
    logins = keycloak.events(types=["LOGIN"], user=user, since_ms=since)
    assert len(logins) == 1, logins
    return logins[0]["sessionId"]


def refreshes_of(keycloak, user: str, session: str, since: int, kind: str = "REFRESH_TOKEN") -> list:
    return [e for e in keycloak.events(types=[kind], user=user, since_ms=since) if e.get("sessionId") == session]


def store_dump(stack) -> bytes:
    """Every key and value in the stack's Redis, as bytes."""
    addr = urlparse(stack["SQE_REDIS_URL"])
    cli = ["redis-cli", "-h", addr.hostname, "-p", str(addr.port), "--no-auth-warning", "-a", stack["SQE_REDIS_PASSWORD"]]
    names = subprocess.run([*cli, "--scan"], check=True, capture_output=True).stdout.split()
    out = b""
    for name in names:
        out += name + subprocess.run([*cli, "--raw", "GET", name], check=True, capture_output=True).stdout
    return out


def test_a_session_opened_on_one_replica_queries_on_the_other_through_two_refreshes(pair, keycloak, short_tokens, stack):
    a, b = pair
    since = now_ms()
    handle = login(a)
    kc_session = keycloak_session(keycloak, "alice", since)
    failures, done = [], 0
    start = time.monotonic()
    with adbc_on(a, handle) as on_a, adbc_on(b, handle) as on_b:
        # 200 queries alternating between the replicas, paced to outlast two 20 s tokens.
        for i in range(200):
            conn = on_a if i % 2 == 0 else on_b
            try:
                with conn.cursor() as cur:
                    cur.execute(COUNT_A)
                    assert cur.fetchall() == [(3000,)]
                done += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(f"query {i} on {'AB'[i % 2]}: {e!r}")
            time.sleep(max(0.0, start + (i + 1) * 0.14 - time.monotonic()))
        dump = store_dump(stack)
    elapsed = time.monotonic() - start
    refreshed = refreshes_of(keycloak, "alice", kc_session, since)
    refused = refreshes_of(keycloak, "alice", kc_session, since, "REFRESH_TOKEN_ERROR")
    print(f"\n{done} queries in {elapsed:.1f}s over two replicas, {len(refreshed)} Keycloak refreshes")
    assert failures == []
    assert done == 200
    assert len(refreshed) >= 2, f"only {len(refreshed)} refreshes in {elapsed:.0f}s"
    assert refused == []
    # Each refresh Keycloak saw was made by exactly one replica; the other took its tokens.
    made = a.events("refresh", outcome="ok", user="alice") + b.events("refresh", outcome="ok", user="alice")
    assert len(made) == len(refreshed)
    # One session, one id, in both replicas' logs.
    (opened,) = a.events("login", outcome="ok", user="alice")
    adopted = b.events("session_adopt", user="alice")
    assert [e["session"] for e in adopted] == [opened["session"]]
    # What the store held opens with nothing it holds: no token, no handle, no user.
    assert dump, "the store held the session"
    assert b"eyJ" not in dump
    assert handle[4:].encode() not in dump
    assert b"alice" not in dump


def test_replicas_racing_at_the_refresh_spend_the_refresh_token_once(pair, keycloak, short_tokens):
    a, b = pair
    since = now_ms()
    handle = login(b, "bob")
    kc_session = keycloak_session(keycloak, "bob", since)
    logged_in = time.monotonic()
    failures, done = [], [0]
    lock = threading.Lock()
    # A client closing its connection closes the session (ADBC sends CloseSession): every
    # connection finishes its queries before any of them closes.
    finished = threading.Barrier(8)

    # Both replicas hold the session and run its queries while the 20 s token comes due
    # (about 10 s after the login, give or take a second): their schedulers and the queries
    # all race for the refresh. The next one is due about 20 s after the login.
    def worker(engine):
        with adbc_on(engine, handle) as conn:
            while time.monotonic() - logged_in < 16:
                try:
                    with conn.cursor() as cur:
                        cur.execute(COUNT_A)
                        assert cur.fetchall() == [(3000,)]
                    with lock:
                        done[0] += 1
                except Exception as e:  # noqa: BLE001
                    with lock:
                        failures.append(repr(e))
            finished.wait()

    threads = [threading.Thread(target=worker, args=(e,)) for e in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refreshed = refreshes_of(keycloak, "bob", kc_session, since)
    refused = refreshes_of(keycloak, "bob", kc_session, since, "REFRESH_TOKEN_ERROR")
    print(f"\n{done[0]} queries from 8 connections on 2 replicas, {len(refreshed)} Keycloak refresh(es)")
    assert failures == []
    assert done[0] > 40
    assert len(refreshed) == 1, refreshed
    assert refused == []


def test_a_replica_killed_mid_session_costs_its_query_not_the_session(replica, keycloak):
    a, b = replica(), replica()
    since = now_ms()
    handle = login(a, "bob")
    sql = "SELECT value FROM generate_series(1, 5000000)"
    running = on(a, handle)
    reader = running.client.do_get(running.flight_info(sql).endpoints[0].ticket, running.options())
    reader.read_chunk()
    a.kill()
    # The query that was running on A dies with A, as UNAVAILABLE: retry.
    with pytest.raises(flight.FlightUnavailableError):
        while True:
            reader.read_chunk()
    # Its retry on B, with the same handle, succeeds: no new login.
    retried = on(b, handle).query(sql)
    assert retried.num_rows == 5_000_000
    assert len(keycloak.events(types=["LOGIN"], user="bob", since_ms=since)) == 1
    assert on(b, handle).query(COUNT_A).to_pylist() == [{"n": 3000}]


def test_a_logout_on_one_replica_is_refused_on_the_other(pair):
    a, b = pair
    handle = login(a)
    assert on(b, handle).query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    on(a, handle).close_session()
    for engine in (b, a):
        with pytest.raises(flight.FlightUnauthenticatedError):
            on(engine, handle).query("SELECT 1 AS one")


def test_a_refresh_token_revoked_at_the_idp_ends_the_session_on_every_replica(pair, keycloak, short_tokens):
    a, b = pair
    handle = login(a, "carol")
    on_a, on_b = on(a, handle), on(b, handle)
    assert on_b.query("SELECT 1 AS one").num_rows == 1
    # The administrator ends carol's sessions at the IdP: the refresh token both replicas would
    # use is dead. Whichever replica refreshes first learns it, and neither serves the handle.
    r = keycloak.admin("POST", f"/users/{keycloak.user_id('carol')}/logout")
    assert r.status_code == 204
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            on_a.query("SELECT 1 AS one")
        except flight.FlightUnauthenticatedError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("session still usable on A 30 s after its refresh token was revoked")
    with pytest.raises(flight.FlightUnauthenticatedError):
        on_b.query("SELECT 1 AS one")
    ended = a.events("session_end", user="carol", reason="refresh_rejected") + b.events(
        "session_end", user="carol", reason="refresh_rejected")
    assert len(ended) == 1, ended


def test_a_rotated_cluster_key_reseals_sessions_in_use_and_retires_the_rest(replica):
    old = replica(OLD_KEY)
    rolled = replica(NEW_KEY, OLD_KEY)
    new = replica(NEW_KEY)
    in_use, left_alone = login(old), login(old, "bob")
    # The grace period: the new key first, the old one still opening records. A session used
    # then is sealed again with the new key...
    assert on(rolled, in_use).query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    assert rolled.events("session_reseal")
    # ...and keeps working once the old key is gone.
    assert on(new, in_use).query(COUNT_A).to_pylist() == [{"n": 3000}]
    # One nobody used during the grace period is refused, and says why.
    with pytest.raises(flight.FlightUnauthenticatedError, match="retired cluster key"):
        on(new, left_alone).query("SELECT 1 AS one")


@pytest.fixture
def own_store(tmp_path):
    """A Redis of this test's own, to stop and start: (url, password, control)."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    password = "own-store-pw"

    class Store:
        proc = None

        def start(self):
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--requirepass", password,
                 "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError("redis-server did not start")

        def stop(self):
            self.proc.kill()
            self.proc.wait()

        def pause(self):
            self.proc.send_signal(signal.SIGSTOP)

        def resume(self):
            self.proc.send_signal(signal.SIGCONT)

    store = Store()
    store.start()
    yield f"redis://127.0.0.1:{port}/", password, store
    store.resume()
    store.stop()


def test_while_the_store_is_away_held_sessions_serve_and_the_rest_is_unavailable(replica, own_store, keycloak):
    url, password, store = own_store
    a, b = replica(url=url, password=password), replica(url=url, password=password)
    since = now_ms()
    handle = login(a)
    assert on(a, handle).query("SELECT 1 AS one").to_pylist() == [{"one": 1}]

    # The store stops answering (paused, its data kept).
    store.pause()
    # The replica holding the session keeps serving it (its token is fresh).
    assert on(a, handle).query(COUNT_A).to_pylist() == [{"n": 3000}]
    # A replica that has not seen the handle cannot open it, and nobody can log in: both are
    # UNAVAILABLE (retry), not UNAUTHENTICATED (log in again).
    with pytest.raises(flight.FlightUnavailableError, match="session store"):
        on(b, handle).query("SELECT 1 AS one")
    with pytest.raises(flight.FlightUnavailableError, match="session store"):
        SqlClient(b.uri).login("bob", "bob-pw")

    # Back: the same session on the other replica, without a new login.
    store.resume()
    assert on(b, handle).query(COUNT_A).to_pylist() == [{"n": 3000}]
    logins = keycloak.events(types=["LOGIN"], user="alice", since_ms=since)
    assert len(logins) == 1, logins

    # Lost (it keeps nothing on disk): the sessions it held need a new login, and logins work
    # again once it is back.
    store.stop()
    with pytest.raises(flight.FlightUnavailableError, match="session store"):
        SqlClient(b.uri).login("bob", "bob-pw")
    store.start()
    with pytest.raises(flight.FlightUnauthenticatedError):
        on(b, handle).query("SELECT 1 AS one")
    again = login(b)
    assert on(a, again).query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
