"""The config the operator renders really runs the engine: take the ConfigMap that
`sqe-operator render` produces for crds/examples/local-stack.yaml, start `sqe-engine serve` with
exactly that file (and the client secret as the pod would get it, from env), log in as alice
through ADBC against the real Keycloak and count a seeded table through the real Iceberg REST
catalog (Nessie) the rendered config points at."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]

sys.path.insert(0, str(ROOT / "e2e" / "local"))
sys.path.insert(0, str(ROOT / "e2e" / "tests"))
import seed  # noqa: E402  (what the demo tables hold)
from operator_render import binary, configmap_engine_yaml, render  # noqa: E402


def test_rendered_local_stack_config_runs_the_engine_for_alice(stack, tmp_path):
    config = configmap_engine_yaml(render())
    assert "secret" not in config.lower(), "a secret leaked into the ConfigMap"
    assert "flight: 0.0.0.0:50051" in config and "http: 0.0.0.0:8080" in config
    assert "uri: http://127.0.0.1:18181/iceberg" in config and "warehouse: lake" in config
    assert stack["SQE_CATALOG_URI"] == "http://127.0.0.1:18181/iceberg", "the example is out of step with the stack"
    path = tmp_path / "engine.yaml"
    path.write_text(config)
    for port in (50051, 8080):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"127.0.0.1:{port}, which the rendered config binds, is taken (a demo engine? `e2e/local/demo stop`)")

    log = (tmp_path / "engine.log").open("w")
    proc = subprocess.Popen(
        [binary("sqe-engine"), "serve", "--config", path],
        env={**os.environ, "SQE_OIDC_CLIENT_SECRET": stack["SQE_OIDC_CLIENT_SECRET"]},
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()[-2000:]
            try:
                if requests.get("http://127.0.0.1:8080/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "engine never became healthy"
            time.sleep(0.5)
        with adbc.connect(
            "grpc://127.0.0.1:50051", db_kwargs={"username": "alice", "password": "alice-pw"},
            autocommit=True,
        ) as conn, conn.cursor() as cur:
            cur.execute("SELECT 40 + 2 AS answer")
            assert cur.fetch_arrow_table().to_pylist() == [{"answer": 42}]
            # Through the catalog of the rendered config, as alice, with the keys vended for her.
            cur.execute("SELECT count(*) AS n FROM lake.demo.a")
            assert cur.fetch_arrow_table().to_pylist() == [{"n": seed.ROWS["a"]}]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    text = (tmp_path / "engine.log").read_text()
    assert '"user":"alice"' in text or '"user": "alice"' in text
    assert "alice-pw" not in text and stack["SQE_OIDC_CLIENT_SECRET"] not in text
