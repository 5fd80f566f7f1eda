"""Engine fixtures: build `sqe-engine` once, run it on free ports with a temporary config against
the real local stack, capture its JSON logs, and talk to it through real Flight clients."""

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]

# pytest imports every conftest.py as the module `conftest`, so once this file is loaded,
# `from conftest import jwt_claims` in ../test_*.py would find this module. Re-export the
# parent's helpers so both conftests answer to that import.
_spec = importlib.util.spec_from_file_location("_sqe_tests_conftest", Path(__file__).parents[1] / "conftest.py")
_parent = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_parent)
jwt_claims = _parent.jwt_claims
Keycloak = _parent.Keycloak
MinioAudit = _parent.MinioAudit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def engine_bin() -> Path:
    """The debug binary e2e/run-tests built, or build it now (once)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/sqe/cargo-target"))
    bin_dir = Path(os.environ.get("SQE_BIN_DIR", target / "debug"))
    if not os.environ.get("SQE_BIN_DIR"):
        subprocess.run(
            ["cargo", "build", "--workspace", "--bins"],
            cwd=ROOT,
            check=True,
            env={**os.environ, "CARGO_TARGET_DIR": str(target)},
        )
    path = bin_dir / "sqe-engine"
    assert path.exists(), f"{path} missing"
    return path


class _AnyAnswer(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(401)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def catalog_uri(stack) -> str:
    """The stack's Iceberg REST catalog (queries run against it as each user); without one, a
    stand-in HTTP endpoint so /readyz's reachability check has something to reach."""
    if stack.get("SQE_CATALOG_URI"):
        return stack["SQE_CATALOG_URI"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AnyAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/api/catalog"


class Engine:
    """One `sqe-engine serve` process."""

    def __init__(self, binary: Path, workdir: Path, stack: dict, catalog_uri: str, wait_ready: bool = True,
                 env: dict | None = None, **overrides):
        self.flight_port = free_port()
        self.http_port = free_port()
        oidc = {
            "keycloak": {"url": stack["SQE_KEYCLOAK_URL"], "realm": stack["SQE_KEYCLOAK_REALM"]},
            "client_id": stack["SQE_OIDC_CLIENT_ID"],
            "modes": ["password", "client_credentials", "bearer"],
            "audience": stack["SQE_OIDC_CLIENT_ID"],
        }
        oidc.update(overrides.pop("oidc", {}))
        # `listen_all=True` binds Flight dual-stack on every address so a test can reach it from
        # two loopback sources (127.0.0.1 and ::1); test traffic still goes only to loopback.
        flight_host = "[::]" if overrides.pop("listen_all", False) else "127.0.0.1"
        config = {
            "listen": {"flight": f"{flight_host}:{self.flight_port}", "http": f"127.0.0.1:{self.http_port}"},
            "oidc": oidc,
            "catalog": {
                "uri": catalog_uri,
                "warehouse": stack.get("SQE_CATALOG_WAREHOUSE", "lake"),
                **overrides.pop("catalog", {}),
            },
            "session": overrides.pop("session", {}),
            "query": overrides.pop("query", {"shutdown_grace_seconds": 20}),
            "log": {"level": "info", "format": "json"},
        }
        assert not overrides, overrides
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "engine.yaml"
        # JSON is YAML: no YAML library needed.
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = workdir / "engine.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "SQE_OIDC_CLIENT_SECRET": stack["SQE_OIDC_CLIENT_SECRET"], **(env or {})}
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.secrets: list[str] = []
        self.killed = False
        self._wait_ready(require_idp=wait_ready)

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    def uri_from(self, loopback: str) -> str:
        """The Flight URI at another loopback address: connections to it come from that address."""
        return f"grpc://{loopback}:{self.flight_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _wait_ready(self, timeout: float = 30, require_idp: bool = True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited {self.proc.returncode}:\n{self.logs_text()}")
            try:
                r = requests.get(f"{self.http}/readyz", timeout=2)
                if r.json().get("idp_discovered") or not require_idp:
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"engine not ready:\n{self.logs_text()}")

    def logs_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def logs(self) -> list[dict]:
        out = []
        for line in self.logs_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def events(self, event: str, **fields) -> list[dict]:
        return [
            e for e in self.logs()
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def metrics(self) -> str:
        return requests.get(f"{self.http}/metrics", timeout=5).text

    def metric(self, name: str, **labels) -> float:
        """Sum of a metric's samples whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def remember_secret(self, value: str | bytes) -> None:
        if isinstance(value, bytes):
            value = value.decode()
        if value:
            self.secrets.append(value)

    def leaked_secrets(self) -> list[str]:
        text = self.logs_text()
        return [s[:12] + "…" for s in self.secrets if s in text]

    def kill(self) -> None:
        """Dies at once, as a pod whose node is lost: no drain, nothing handed over."""
        self.killed = True
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def needs_catalog(stack):
    """For modules that query Iceberg tables: `pytestmark = pytest.mark.usefixtures("needs_catalog")`."""
    if not stack.get("SQE_CATALOG_URI"):
        pytest.skip("the local stack has no Iceberg REST catalog (SQE_CATALOG_URI unset)")


@pytest.fixture(scope="session")
def start_engine(engine_bin, stack, catalog_uri, tmp_path_factory):
    """Factory: start an engine with config overrides; all are stopped (SIGTERM) at the end
    and their logs are checked for every secret the tests registered."""
    engines: list[Engine] = []

    def start(**overrides) -> Engine:
        e = Engine(engine_bin, tmp_path_factory.mktemp("engine"), stack, catalog_uri, **overrides)
        engines.append(e)
        return e

    yield start
    problems = []
    for e in engines:
        code = e.stop()
        if code != 0 and not e.killed:
            problems.append(f"engine exited {code}")
        leaked = e.leaked_secrets()
        if leaked:
            problems.append(f"secrets in {e.log_path}: {leaked}")
    assert not problems, problems


@pytest.fixture(scope="module")
def engine(start_engine) -> Engine:
    """A default engine (password, client_credentials and bearer modes) per test module."""
    return start_engine()


@pytest.fixture
def short_tokens(keycloak):
    """20 s access tokens for the duration of a test, restored afterwards."""
    keycloak.set_access_token_lifespan(20)
    try:
        yield 20
    finally:
        keycloak.set_access_token_lifespan(300)
