"""The client image (e2e/images/build-client) runs as a pod would run it and queries a real engine.

`e2e/images/build client` makes the image (a Debian root filesystem with python3 and the e2e
suites' ADBC driver and pyarrow, entrypoint sqe-query); umoci unpacks it into an OCI runtime
bundle and runc runs it the way a restricted pod's container runs: UID/GID 65532, read-only root
filesystem, every capability dropped, no privilege escalation. It must hold the same driver and
pyarrow versions as this suite's venv and import them; and, pointed at an sqe-engine serving the
local stack, alice's count of a seeded table must succeed, bob must be refused it
(PERMISSION_DENIED), and a repeated query must report each run and a summary.

The container shares the host's network namespace so it reaches the engine on 127.0.0.1 (a pod
reaches it through a Service).
"""

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e" / "local"))
sys.path.insert(0, str(ROOT / "e2e" / "tests"))
import seed  # noqa: E402  (what the demo tables hold)
from operator_render import binary  # noqa: E402
from oci_runtime import CAPABILITY_SETS, NONROOT, needs_runc, run_checked  # noqa: E402

ENTRYPOINT = ["python3", "/usr/local/bin/sqe-query"]
PACKAGES = ("adbc-driver-flightsql", "adbc-driver-manager", "pyarrow")
COUNT_C = "SELECT count(*) AS n FROM lake.demo.c"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    """The client image (built now unless its inputs are unchanged), unpacked: its OCI config and
    a runtime bundle (`rootfs/`, `config.json` as umoci translated the image config)."""
    build = subprocess.run([ROOT / "e2e/images/build", "client"], capture_output=True, text=True)
    assert build.returncode == 0, f"e2e/images/build client failed:\n{build.stderr[-4000:]}"
    archive = Path(os.environ.get("SQE_CACHE", Path.home() / ".cache/sqe")) / "images/sqe-client.oci.tar"
    work = tmp_path_factory.mktemp("client-image")
    layout = work / "layout"
    layout.mkdir()
    run_checked("tar", "-xf", archive, "-C", layout)
    (manifest,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads((layout / "blobs" / manifest["digest"].replace(":", "/")).read_text())
    config = json.loads((layout / "blobs" / manifest["config"]["digest"].replace(":", "/")).read_text())
    run_checked("umoci", "unpack", "--image", f"{layout}:dev", work / "bundle")
    return {
        "config": config["config"],
        "bundle": work / "bundle",
        "base": json.loads((work / "bundle/config.json").read_text()),
    }


def run_container(image: dict, tmp_path: Path, env: dict | None = None, args: list | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the image once to completion, as a restricted pod's container: the image's
    ENTRYPOINT (or `args` as a pod's `command`), its env plus `env`, UID/GID 65532, no
    capabilities, no new privileges, read-only root, the host's network namespace."""
    spec = json.loads(json.dumps(image["base"]))
    proc = spec["process"]
    proc["args"] = args or image["config"]["Entrypoint"]
    proc["terminal"] = False
    proc["env"] = proc["env"] + [f"{k}={v}" for k, v in (env or {}).items()]
    proc["user"] = {"uid": NONROOT, "gid": NONROOT}
    proc["capabilities"] = {s: [] for s in CAPABILITY_SETS}
    proc["noNewPrivileges"] = True
    spec["root"]["readonly"] = True
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    bundle = image["bundle"]
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))
    state = tmp_path / "runc-state"
    name = f"sqe-client-{os.getpid()}-{time.monotonic_ns()}"
    try:
        return subprocess.run(
            ["runc", "--root", str(state), "run", "--bundle", str(bundle), name],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", name], capture_output=True)


@needs_runc
def test_the_image_runs_sqe_query_as_nonroot_with_the_suites_driver(image, tmp_path):
    cfg = image["config"]
    assert cfg["Entrypoint"] == ENTRYPOINT and not cfg.get("Cmd")
    assert cfg["User"] == f"{NONROOT}:{NONROOT}"
    assert cfg["WorkingDir"] == "/tmp"
    assert cfg["Labels"]["org.opencontainers.image.title"] == "sqe-client"
    rootfs = image["bundle"] / "rootfs"
    assert (rootfs / "usr/local/bin/sqe-query").read_bytes() == (ROOT / "e2e/images/sqe-query").read_bytes()
    assert f"nonroot:x:{NONROOT}:{NONROOT}:" in (rootfs / "etc/passwd").read_text()
    assert not (rootfs / "usr/share/doc/python3/changelog.Debian.gz").exists(), "docs were not left out"
    assert not list((rootfs / "var/lib/apt/lists").glob("*_Packages*")), "apt lists were not removed"

    probe = (
        "import importlib.metadata as m, json, os, sys, adbc_driver_flightsql.dbapi, pyarrow; "
        f"print(json.dumps({{'uid': os.getuid(), 'gid': os.getgid(), 'cwd': os.getcwd(), "
        f"'python': '%d.%d' % sys.version_info[:2], 'pyarrow': pyarrow.__version__, "
        f"'versions': {{p: m.version(p) for p in {list(PACKAGES)!r}}}}}))"
    )
    run = run_container(image, tmp_path, args=["python3", "-c", probe])
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    got = json.loads(run.stdout)
    assert (got["uid"], got["gid"], got["cwd"]) == (NONROOT, NONROOT, "/tmp")
    assert got["python"] == "%d.%d" % sys.version_info[:2] == "3.11"
    # The same versions this suite's venv runs (e2e/local/requirements.txt pins them).
    assert got["versions"] == {p: importlib.metadata.version(p) for p in PACKAGES}
    assert got["pyarrow"] == importlib.metadata.version("pyarrow")

    # Without its environment the entrypoint says what is missing, in JSON, and exits 2.
    run = run_container(image, tmp_path)
    assert run.returncode == 2, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert json.loads(run.stdout) == {
        "ok": False, "code": "USAGE", "message": "SQE_URI, SQE_USER, SQE_PASSWORD, SQE_SQL not set",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def engine(stack, tmp_path):
    """An sqe-engine (the binary under test) serving the local stack on free loopback ports."""
    flight, http = _free_port(), _free_port()
    config = {
        "listen": {"flight": f"127.0.0.1:{flight}", "http": f"127.0.0.1:{http}"},
        "oidc": {
            "keycloak": {"url": stack["SQE_KEYCLOAK_URL"], "realm": stack["SQE_KEYCLOAK_REALM"]},
            "client_id": stack["SQE_OIDC_CLIENT_ID"],
        },
        "catalog": {"uri": stack["SQE_CATALOG_URI"], "warehouse": stack["SQE_CATALOG_WAREHOUSE"]},
        "query": {"shutdown_grace_seconds": 5},
        "log": {"level": "info", "format": "json"},
    }
    path = tmp_path / "engine.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    log_path = tmp_path / "engine.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary("sqe-engine"), "serve", "--config", path], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "SQE_OIDC_CLIENT_SECRET": stack["SQE_OIDC_CLIENT_SECRET"]},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"engine exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            try:
                if requests.get(f"http://127.0.0.1:{http}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"engine never became ready:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.25)
        yield {"uri": f"grpc://127.0.0.1:{flight}", "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lines(run: subprocess.CompletedProcess) -> list[dict]:
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    return [json.loads(line) for line in run.stdout.splitlines()]


@needs_runc
def test_sqe_query_in_the_image_counts_for_alice_and_is_refused_for_bob(image, engine, tmp_path):
    env = {"SQE_URI": engine["uri"], "SQE_SQL": COUNT_C}

    alice = run_container(image, tmp_path, {**env, "SQE_USER": "alice", "SQE_PASSWORD": "alice-pw"})
    (line,) = _lines(alice)
    assert line["ok"] is True and line["rows"] == [{"n": seed.ROWS["c"]}], line

    bob = run_container(image, tmp_path, {**env, "SQE_USER": "bob", "SQE_PASSWORD": "bob-pw"})
    (line,) = _lines(bob)
    assert line["ok"] is False and line["code"] == "PERMISSION_DENIED", line
    assert "demo.c" in line["message"], line

    wrong = run_container(image, tmp_path, {**env, "SQE_USER": "alice", "SQE_PASSWORD": "not-alices-pw"})
    (line,) = _lines(wrong)
    assert line["ok"] is False and line["code"] == "UNAUTHENTICATED", line

    # Repeated: one line per run, each on a new connection, then a summary.
    repeat = run_container(image, tmp_path, {
        **env, "SQE_USER": "alice", "SQE_PASSWORD": "alice-pw", "SQE_REPEAT": "3", "SQE_INTERVAL": "1",
    })
    *runs, summary = _lines(repeat)
    assert [r["seq"] for r in runs] == [0, 1, 2], runs
    assert all(r["ok"] and r["rows"] == [{"n": seed.ROWS["c"]}] for r in runs), runs
    assert summary["summary"]["runs"] == 3 and summary["summary"]["ok"] == 3, summary

    for run in (alice, bob, wrong, repeat):
        assert "alice-pw" not in run.stdout + run.stderr and "bob-pw" not in run.stdout + run.stderr
        assert "not-alices-pw" not in run.stdout + run.stderr
    log = engine["log"].read_text()
    assert '"user":"alice"' in log or '"user": "alice"' in log, "the engine saw no query as alice"
