"""Sessions outlive their access tokens: the engine refreshes the user's tokens in the
background, and a revoked or expired credential ends the session. Runs with 20 s tokens."""

import threading
import time

import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as flight
import pytest

from flightsql import SqlClient


def test_a_session_stays_usable_across_three_refreshes_with_queries_running(engine, keycloak, short_tokens):
    since = int(time.time() * 1000) - 1000
    refreshes_before = engine.metric("sqe_token_refreshes_total", outcome="ok")
    failures, done = [], 0
    with adbc.connect(engine.uri, db_kwargs={"username": "alice", "password": "alice-pw"}) as conn:
        start = time.monotonic()
        alice_refreshes = 0
        with conn.cursor() as cur:
            # Session state the user set up before the refreshes, expected to survive them.
            for sql in ["SET datafusion.execution.batch_size = 777",
                        "CREATE TABLE datafusion.public.kept AS VALUES (1), (2)"]:
                cur.execute(sql)
                cur.fetchall()
            # Continuously, from one ADBC connection, until Keycloak saw ≥3 refreshes.
            while time.monotonic() - start < 80:
                try:
                    cur.execute("SELECT count(*) AS n FROM generate_series(1, 1000)")
                    assert cur.fetch_arrow_table().to_pylist() == [{"n": 1000}]
                    done += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failures.append(repr(e))
                time.sleep(0.2)
                if done % 25 == 0:
                    alice_refreshes = len(keycloak.events(types=["REFRESH_TOKEN"], user="alice", since_ms=since))
                    if alice_refreshes >= 3 and time.monotonic() - start > 35:
                        break
            # After the refreshes: the SET and the session table are still there, and the
            # catalog answers with the current token.
            after = {}
            for name, sql in [
                ("batch_size", "SELECT value FROM information_schema.df_settings "
                               "WHERE name = 'datafusion.execution.batch_size'"),
                ("kept", "SELECT count(*) FROM datafusion.public.kept"),
                ("demo_a", "SELECT count(*) FROM lake.demo.a"),
            ]:
                cur.execute(sql)
                after[name] = cur.fetchall()[0][0]
    elapsed = time.monotonic() - start
    print(f"\n{done} queries in {elapsed:.1f}s, {len(failures)} failures, {alice_refreshes} Keycloak refreshes")
    assert failures == []
    assert after == {"batch_size": "777", "kept": 2, "demo_a": 3000}, after
    assert alice_refreshes >= 3, f"only {alice_refreshes} refreshes in {time.monotonic() - start:.0f}s"
    assert done > 100
    # The engine saw them too, and so does /metrics.
    refreshed = engine.events("refresh", user="alice", outcome="ok")
    assert len(refreshed) >= 3
    assert len({e["fp"] for e in refreshed}) == len(refreshed), "every refresh changes the fingerprint"
    assert engine.metric("sqe_token_refreshes_total", outcome="ok") - refreshes_before >= 3
    lag_n = engine.metric("sqe_token_refresh_lag_seconds_count")
    assert lag_n >= 3
    print(f"mean refresh lag {engine.metric('sqe_token_refresh_lag_seconds_sum') / lag_n * 1000:.1f} ms over {lag_n:.0f}")


def test_a_revoked_refresh_token_expires_the_session(engine, keycloak, short_tokens):
    c = SqlClient(engine.uri)
    engine.remember_secret(c.login("bob", "bob-pw"))
    assert c.query("SELECT 1 AS x").num_rows == 1
    rejected_before = engine.metric("sqe_token_refreshes_total", outcome="rejected")
    # The administrator ends bob's sessions at the IdP: his refresh token is dead.
    r = keycloak.admin("POST", f"/users/{keycloak.user_id('bob')}/logout")
    assert r.status_code == 204
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c.query("SELECT 1 AS x")
        except flight.FlightUnauthenticatedError as e:
            assert "session expired" in str(e)
            break
        time.sleep(0.5)
    else:
        pytest.fail("session still usable 30 s after the refresh token was revoked")
    assert engine.metric("sqe_token_refreshes_total", outcome="rejected") - rejected_before >= 1
    assert engine.events("session_end", user="bob", reason="refresh_rejected")
    # Logging in again works: only that session was affected.
    assert SqlClient(engine.uri).login("bob", "bob-pw")


def test_an_expired_bearer_token_is_refused_and_its_session_ends_with_it(engine, keycloak, short_tokens):
    token = keycloak.password_grant("carol", "carol-pw")["access_token"]
    engine.remember_secret(token)
    c = SqlClient(engine.uri).use(f"Bearer {token}")
    assert c.query("SELECT 1 AS x").num_rows == 1  # valid now
    time.sleep(20 + 6)  # lifetime + the engine's 5 s leeway
    with pytest.raises(flight.FlightUnauthenticatedError):
        c.query("SELECT 1")
    # A fresh client presenting the same expired token is refused at validation.
    with pytest.raises(flight.FlightUnauthenticatedError):
        SqlClient(engine.uri).use(f"Bearer {token}").query("SELECT 1")
    assert engine.events("session_end", user="carol", reason="token_expired")


def test_concurrent_queries_during_refreshes_all_succeed(engine, short_tokens):
    c = SqlClient(engine.uri)
    engine.remember_secret(c.login("carol", "carol-pw"))
    errors, counts = [], [0] * 4

    def worker(i):
        end = time.monotonic() + 25
        while time.monotonic() < end:
            try:
                assert c.query(f"SELECT {i} AS w").to_pylist() == [{"w": i}]
                counts[i] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert min(counts) > 10
    assert engine.events("refresh", user="carol", outcome="ok")


def test_a_session_view_over_the_warehouse_reads_with_the_sessions_current_token(
        engine, keycloak, needs_catalog, short_tokens):
    """A view keeps the plan it was made with; its tables still load with the session's token as
    it is now, not the one the view was created under (20 s tokens: that one has long expired)."""
    c = SqlClient(engine.uri)
    engine.remember_secret(c.login("alice", "alice-pw"))
    since = int(time.time() * 1000) - 1000
    c.query("CREATE VIEW datafusion.public.a_count AS SELECT count(*) AS n FROM lake.demo.a")
    before = c.query("SELECT n FROM datafusion.public.a_count").to_pylist()
    assert before == [{"n": 3000}]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not keycloak.events(types=["REFRESH_TOKEN"], user="alice", since_ms=since):
        time.sleep(1)
    time.sleep(20 + 6)  # the token the view was made under is past its lifetime and leeway
    assert c.query("SELECT n FROM datafusion.public.a_count").to_pylist() == before
