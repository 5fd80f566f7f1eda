"""README command 1, `e2e/local/demo`, as a user runs it: it starts an engine against the local
stack (on free ports here, so it never meets a demo someone left running), shows alice's and bob's
views through ADBC, prints how to connect, and exits 0; `e2e/local/demo stop` stops that engine
only, leaving the shared stack up."""

import os
import re
import socket
import subprocess
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "e2e/local/demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_shows_alice_and_bob_and_stops_its_engine_only(stack):
    flight, http = free_port(), free_port()
    env = {**os.environ, "SQE_DEMO_FLIGHT_PORT": str(flight), "SQE_DEMO_HTTP_PORT": str(http)}
    pid_file = Path(stack["SQE_STATE"]) / f"demo-engine-{flight}.pid"
    try:
        run = subprocess.run([DEMO], env=env, capture_output=True, text=True, timeout=900)
        out = run.stdout
        assert run.returncode == 0, f"exit {run.returncode}\n{out}\n{run.stderr[-4000:]}"
        assert pid_file.exists()
        assert re.search(r"^alice +tables in lake\.demo: a, b, c$", out, re.M), out
        assert re.search(r"^alice +SELECT count\(\*\) FROM lake\.demo\.c +-> +1500 rows$", out, re.M), out
        assert re.search(r"^bob +tables in lake\.demo: a, b$", out, re.M), out
        assert re.search(r"^bob +SELECT count\(\*\) FROM lake\.demo\.c +-> +PERMISSION_DENIED: .*'demo\.c'", out, re.M), out
        assert "Traceback" not in out + run.stderr
        assert f'connect("grpc://127.0.0.1:{flight}"' in out, out
        assert '"username": "alice", "password": "alice-pw"' in out and "autocommit=True" in out
        assert "e2e/local/down" in out
        assert requests.get(f"http://127.0.0.1:{http}/readyz", timeout=5).status_code == 200
    finally:
        stop = subprocess.run([DEMO, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert not pid_file.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", flight)) != 0, "the demo engine still listens"
    # The stack is untouched: the catalog still answers.
    assert requests.get(f"{stack['SQE_CATALOG_URI']}/v1/config", timeout=10).status_code in (200, 401)
    pid_file.with_suffix(".log").unlink(missing_ok=True)
