"""Running the engine: CLI, health and metrics endpoints, IdP outages, graceful shutdown, and
that no credential ever shows up in its logs."""

import json
import re
import signal
import subprocess
import threading
import time

import pyarrow.flight as flight
import pytest
import requests

from conftest import Engine, free_port
from flightsql import SqlClient


def test_version_and_check_config(engine_bin, engine, tmp_path):
    out = subprocess.run([engine_bin, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("sqe-engine ")
    ok = subprocess.run([engine_bin, "check-config", engine.config_path], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    config = json.loads(engine.config_path.read_text())
    config["session"]["idle_timeout_secs"] = 5  # typo of idle_timeout_seconds
    bad.write_text(json.dumps(config))
    res = subprocess.run([engine_bin, "check-config", bad], capture_output=True, text=True)
    assert res.returncode == 2
    assert "idle_timeout_secs" in res.stderr
    del config["catalog"]["warehouse"]
    bad.write_text(json.dumps(config))
    res = subprocess.run([engine_bin, "check-config", bad], capture_output=True, text=True)
    assert res.returncode == 2 and "warehouse" in res.stderr


def test_serve_without_a_config_says_how_to_give_one(engine_bin):
    res = subprocess.run([engine_bin, "serve"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 2
    assert "SQE_CONFIG" in res.stderr


def test_health_readiness_and_metrics(engine):
    assert requests.get(f"{engine.http}/healthz", timeout=5).status_code == 200
    r = requests.get(f"{engine.http}/readyz", timeout=5)
    body = r.json()
    assert body["idp_discovered"] is True and body["catalog_reachable"] is True
    assert r.status_code == 200 and body["ready"] is True
    c = SqlClient(engine.uri)
    c.login("alice", "alice-pw")
    c.query("SELECT 1")
    text = engine.metrics()
    for name in ["sqe_sessions_active", "sqe_logins", "sqe_queries", "sqe_token_refreshes",
                 "sqe_token_refresh_lag_seconds", "sqe_query_duration_seconds", "sqe_session_ends"]:
        assert f"# TYPE {name} " in text, name
    assert engine.metric("sqe_queries_total", status="ok") >= 1
    assert engine.metric("sqe_query_duration_seconds_count", status="ok") >= 1
    assert engine.metric("sqe_logins_total", mode="password", outcome="ok") >= 1


def test_every_line_of_a_call_says_whose_call_and_which_statement_it_is(engine):
    c = SqlClient(engine.uri)
    c.login("alice", "alice-pw")
    marker = f"span_probe_{time.time_ns()}"
    c.query(f"SELECT '{marker}' AS m")
    with pytest.raises(KeyError, match="not found"):  # pyarrow's NOT_FOUND
        c.query("SELECT * FROM no_such_table_anywhere")
    deadline = time.time() + 10
    while True:
        lines = [e for e in engine.events("query", user="alice") if "span" in e]
        ok = [e for e in lines if e.get("outcome") == "ok" and e["span"].get("rpc") == "DoGet"]
        failed = [e for e in lines if e.get("outcome") != "ok" and e["span"].get("rpc") == "GetFlightInfo"]
        if (ok and failed) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert ok and failed, engine.logs_text()[-3000:]
    for line in (ok[-1], failed[-1]):
        span = line["span"]
        # The call's span names the caller and the statement the line is about.
        assert span["name"] == "rpc"
        assert span["user"] == "alice" and span["session"] == line["session"]
        assert span["statement"] == line["statement"] and re.fullmatch(r"[0-9a-f]{16}", line["statement"])
        assert span.get("fp") == line["fp"]
    # Nothing of the statement's text is logged, only its kind.
    assert marker not in engine.logs_text()


def test_an_unreachable_idp_gives_unavailable_and_not_ready(engine_bin, stack, catalog_uri, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    e = Engine(engine_bin, tmp_path, stack, catalog_uri, wait_ready=False, oidc={"keycloak": {"url": dead, "realm": "sqe"}})
    try:
        r = requests.get(f"{e.http}/readyz", timeout=5)
        assert r.status_code == 503 and r.json()["idp_discovered"] is False
        with pytest.raises(flight.FlightUnavailableError):
            SqlClient(e.uri).login("alice", "alice-pw")
        with pytest.raises(flight.FlightUnavailableError):
            SqlClient(e.uri).login("alice", "wrong")
    finally:
        assert e.stop() == 0
    assert not e.leaked_secrets()


def test_an_unreachable_catalog_makes_the_engine_not_ready(engine_bin, stack, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/iceberg"
    e = Engine(engine_bin, tmp_path, stack, dead, wait_ready=True)
    try:
        r = requests.get(f"{e.http}/readyz", timeout=5)
        body = r.json()
        assert r.status_code == 503, body
        assert body["catalog_reachable"] is False and body["idp_discovered"] is True, body
        # Logging in still works (the IdP is up); a query over the catalog is UNAVAILABLE.
        c = SqlClient(e.uri)
        c.login("alice", "alice-pw")
        with pytest.raises(flight.FlightUnavailableError):
            c.query("SELECT count(*) FROM lake.demo.a")
    finally:
        assert e.stop() == 0


def test_sigterm_lets_a_running_query_finish_then_exits(start_engine):
    e = start_engine()
    c = SqlClient(e.uri)
    c.login("alice", "alice-pw")
    sql = "SELECT count(*) AS n FROM generate_series(1, 10000000) a JOIN generate_series(1, 1) b ON true"
    result = {}

    def run():
        t0 = time.monotonic()
        try:
            result["rows"] = c.query(sql).to_pylist()
        except Exception as exc:  # noqa: BLE001
            result["error"] = repr(exc)
        result["secs"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    e.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # New calls are refused while draining.
    with pytest.raises(flight.FlightError):
        SqlClient(e.uri).login("bob", "bob-pw")
    t.join(timeout=60)
    assert e.proc.wait(timeout=30) == 0
    assert result.get("rows") == [{"n": 10000000}], result
    shutdown = e.events("shutdown")
    assert shutdown[0]["phase"] == "draining" and shutdown[0]["active_calls"] >= 1, "query was running"
    assert shutdown[-1]["phase"] == "done" and shutdown[-1]["clean"] is True


def test_no_credential_appears_in_logs_or_errors(start_engine, keycloak):
    e = start_engine()
    secrets = ["alice-pw", "bob-pw", "wrong-pw-7f3a", "sqe-dev-secret"]
    errors = []
    c = SqlClient(e.uri)
    handle = c.login("alice", "alice-pw")
    secrets.append(handle)
    c.query("SELECT 1")
    try:
        SqlClient(e.uri).login("alice", "wrong-pw-7f3a")
    except flight.FlightError as exc:
        errors.append(str(exc))
    tokens = keycloak.password_grant("bob", "bob-pw")
    secrets += [tokens["access_token"], tokens["refresh_token"]]
    SqlClient(e.uri).use(f"Bearer {tokens['access_token']}").query("SELECT 2")
    for bad in [tokens["access_token"][:-3] + "xyz", "sqe_" + handle[4:-2] + "zz"]:
        secrets.append(bad)
        try:
            SqlClient(e.uri).use(f"Bearer {bad}").query("SELECT 3")
        except flight.FlightError as exc:
            errors.append(str(exc))
    c.close_session()
    try:
        c.query("SELECT 4")
    except flight.FlightError as exc:
        errors.append(str(exc))
    assert len(errors) == 4
    assert e.stop() == 0
    text = e.logs_text() + "\n".join(errors)
    for s in secrets:
        assert s not in text, f"secret {s[:6]}… leaked"
        # No recognisable slice of a token either.
        assert s[-16:] not in text
    assert '"event":"login"' in text


def test_no_vended_storage_key_appears_in_logs_or_errors(start_engine, needs_catalog, minio_audit, stack):
    """The keys the catalog vends for alice's reads (seen by MinIO) never reach a log line or an
    error message, even when reads and loads fail."""
    e = start_engine()
    mark = len(minio_audit.entries())
    c = SqlClient(e.uri)
    c.login("alice", "alice-pw")
    assert c.query("SELECT count(*) AS n FROM lake.demo.a").to_pylist() == [{"n": 3000}]
    errors = []
    bob = SqlClient(e.uri)
    bob.login("bob", "bob-pw")
    for client, sql in [
        (bob, "SELECT * FROM lake.demo.c"),
        (c, "SELECT * FROM lake.demo.missing_table"),
        (c, "SELECT no_such_column FROM lake.demo.b"),
    ]:
        try:
            client.query(sql)
        except flight.FlightError as exc:
            errors.append(str(exc))
        except Exception as exc:  # INVALID_ARGUMENT / NOT_FOUND surface as Arrow errors
            errors.append(str(exc))
    assert len(errors) == 3, errors
    reads = minio_audit.wait_for(minio_audit.object_read("demo/a_"), since=mark)
    vended = {r["accessKey"] for r in reads if r.get("accessKey")}
    assert vended and stack["SQE_MINIO_ROOT_USER"] not in vended
    assert e.stop() == 0
    text = e.logs_text() + "\n".join(errors)
    for key in vended:
        assert key not in text, f"vended key {key[:4]}… in the engine's logs or errors"
    assert not re.search(r"(secret-access-key|session-token)\W+[A-Za-z0-9/+]{12,}", text), "a credential property"
