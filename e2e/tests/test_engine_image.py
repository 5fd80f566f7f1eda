"""The engine image runs the way the operator's Deployment runs it.

e2e/images/build makes the image (the runtime stage of engine/Dockerfile, assembled locally); umoci
unpacks it into an OCI runtime bundle, and the pod spec `sqe-operator render` produces for
crds/examples/local-stack.yaml is translated into that bundle's runtime config the way a kubelet
would: the image's ENTRYPOINT with the container's args, its env with the client secret taken from
the Secret it references, the ConfigMap mounted read-only, an emptyDir as a tmpfs, its
securityContext (UID/GID 65532, read-only root filesystem, every capability dropped, no privilege
escalation) and memory limit. runc runs it; alice counts a seeded table through ADBC and bob is
refused it.

The container shares the host's network namespace so the engine reaches the stack on 127.0.0.1
(a pod reaches it through Services) and the test reaches the engine there. Not translated: the
RuntimeDefault seccomp profile (runc has none of its own), probes (polled here instead).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e" / "local"))
sys.path.insert(0, str(ROOT / "e2e" / "tests"))
import seed  # noqa: E402  (what the demo tables hold)
from operator_render import LOCAL_STACK_EXAMPLE, binary, documents, one, render  # noqa: E402
from oci_runtime import CAPABILITY_SETS, NONROOT, needs_runc, run_checked  # noqa: E402

ENTRYPOINT = ["/usr/local/bin/sqe-engine"]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    """The engine image built from the binary under test (a cache hit after e2e/run-tests' build
    step), unpacked: its OCI config and a runtime bundle (`rootfs/`, `config.json`)."""
    env = {**os.environ, "SQE_BIN_DIR": str(binary("sqe-engine").parent)}
    run_checked(ROOT / "e2e/images/build", "engine", env=env)
    archive = Path(os.environ.get("SQE_CACHE", Path.home() / ".cache/sqe")) / "images/sqe-engine.oci.tar"
    work = tmp_path_factory.mktemp("engine-image")
    layout = work / "layout"
    layout.mkdir()
    run_checked("tar", "-xf", archive, "-C", layout)
    index = json.loads((layout / "index.json").read_text())
    (manifest,) = index["manifests"]
    manifest = json.loads((layout / "blobs" / manifest["digest"].replace(":", "/")).read_text())
    config = json.loads((layout / "blobs" / manifest["config"]["digest"].replace(":", "/")).read_text())
    run_checked("umoci", "unpack", "--image", f"{layout}:dev", work / "bundle")
    return {"config": config["config"], "bundle": work / "bundle"}


@needs_runc
def test_the_image_runs_the_engine_as_nonroot_and_holds_nothing_else(image):
    cfg = image["config"]
    assert cfg["Entrypoint"] == ENTRYPOINT and not cfg.get("Cmd")
    assert cfg["User"] == f"{NONROOT}:{NONROOT}"
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/sqe-io/sqe"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert re.fullmatch(r"\d+\.\d+\.\d+", labels["org.opencontainers.image.version"])

    rootfs = image["bundle"] / "rootfs"
    files = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if not p.is_dir())
    allowed = re.compile(
        r"usr/local/bin/sqe-engine|lib/x86_64-linux-gnu/lib(c|m|gcc_s)\.so\.\d+|lib64/ld-linux-x86-64\.so\.2"
        r"|etc/(passwd|group|nsswitch\.conf)|etc/ssl/certs/ca-certificates\.crt|usr/share/zoneinfo/.+"
    )
    assert [f for f in files if not allowed.fullmatch(f)] == [], "unexpected files in the image"
    assert not (rootfs / "bin").exists() and not (rootfs / "usr/bin").exists(), "a shell could hide there"
    assert f"nonroot:x:{NONROOT}:{NONROOT}:" in (rootfs / "etc/passwd").read_text()


def _final_stage(path: Path) -> dict:
    """Instructions of a Dockerfile's last stage: {"USER": [...], "LABEL": [...], ...}."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    last_from = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
    stage: dict = {}
    for line in lines[last_from + 1 :]:
        word, _, rest = line.partition(" ")
        stage.setdefault(word.upper(), []).append(rest.strip())
    return stage


def _labels(stage: dict) -> dict:
    return dict(re.findall(r'([\w.]+)="([^"]*)"', " ".join(stage["LABEL"])))


@pytest.mark.parametrize("name", ["engine", "operator"])
def test_the_local_build_has_the_runtime_layout_of_the_dockerfile(name):
    """The image CI runs here and the one users build from <name>/Dockerfile differ only in
    where the base and the binary come from."""
    release = _final_stage(ROOT / name / "Dockerfile")
    local = _final_stage(ROOT / "e2e/images" / f"{name}.Containerfile")
    for instruction in ("USER", "ENTRYPOINT", "EXPOSE"):
        assert release[instruction] == local[instruction], instruction
    binary_path = f"/usr/local/bin/sqe-{name}"
    assert release["ENTRYPOINT"] == [f'["{binary_path}"]']
    assert any(c.endswith(f" {binary_path}") for c in release["COPY"])
    assert any(c.endswith(f" {binary_path}") for c in local["COPY"])
    release_labels = _labels(release)
    release_labels.pop("org.opencontainers.image.revision")  # a commit: only the release build knows it
    assert release_labels == _labels(local)


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def runtime_config(bundle_config: dict, image_config: dict, pod: dict, secrets: dict, configmaps: dict) -> dict:
    """What a kubelet would ask of the runtime for the pod's one container, as an OCI runtime
    config built on umoci's translation of the image config. `configmaps` maps a ConfigMap name
    to a host directory holding its keys."""
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    spec = json.loads(json.dumps(bundle_config))
    proc = spec["process"]

    assert "command" not in container, "the pod is meant to run the image's ENTRYPOINT"
    proc["args"] = image_config["Entrypoint"] + container["args"]
    proc["terminal"] = False
    for e in container["env"]:
        if "value" in e:
            value = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]]
        proc["env"].append(f"{e['name']}={value}")

    sc = container["securityContext"]
    assert sc["runAsNonRoot"] == "true"
    proc["user"] = {
        "uid": int(sc["runAsUser"]),
        "gid": int(sc["runAsGroup"]),
        "additionalGids": [int(pod["securityContext"]["fsGroup"])],
    }
    assert sc["capabilities"] == {"drop": ["ALL"]}
    proc["capabilities"] = {s: [] for s in CAPABILITY_SETS}
    proc["noNewPrivileges"] = sc["allowPrivilegeEscalation"] == "false"
    spec["root"]["readonly"] = sc["readOnlyRootFilesystem"] == "true"

    for m in container["volumeMounts"]:
        volume = volumes[m["name"]]
        if "configMap" in volume:
            source = configmaps[volume["configMap"]["name"]]
            options = ["rbind", "nosuid", "nodev", "noexec"] + (["ro"] if m.get("readOnly") == "true" else [])
            spec["mounts"].append({"destination": m["mountPath"], "type": "bind", "source": str(source), "options": options})
        elif "emptyDir" in volume:
            spec["mounts"].append({
                "destination": m["mountPath"], "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=256m"],
            })
        else:
            raise AssertionError(f"volume {m['name']}: no translation for {sorted(volume)}")

    limits = container["resources"]["limits"]
    spec["linux"].setdefault("resources", {})["memory"] = {"limit": _bytes(limits["memory"])}
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    return spec


def _proc_status(pid: int) -> dict:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(l.split(":\t", 1) for l in lines if ":\t" in l)


def _mount_options(pid: int) -> dict:
    """mount point -> (filesystem type, options) as the container's process sees them."""
    mounts = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        mounts[fields[4]] = (tail[0], set(fields[5].split(",")))
    return mounts


def _memory_limit(pid: int) -> int:
    """The memory limit of the cgroup a process runs in (cgroup v1 here; v2 elsewhere)."""
    groups = dict(l.split(":", 2)[1:] for l in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    if "memory" in groups:
        return int(Path(f"/sys/fs/cgroup/memory{groups['memory']}/memory.limit_in_bytes").read_text())
    return int(Path(f"/sys/fs/cgroup{groups['']}/memory.max").read_text())


@needs_runc
def test_the_engine_image_serves_alice_and_refuses_bob_under_the_rendered_pod_spec(stack, image, tmp_path):
    docs = documents(render())
    example = documents(LOCAL_STACK_EXAMPLE.read_text())
    secrets = {d["metadata"]["name"]: d["stringData"] for d in example if d["kind"] == "Secret"}
    assert secrets["sqe-local-oidc"]["client-secret"] == stack["SQE_OIDC_CLIENT_SECRET"], \
        "the example is out of step with the stack"
    configmap = one(docs, "ConfigMap")
    configmap_dir = tmp_path / "configmap"
    configmap_dir.mkdir(mode=0o755)
    configmap_dir.chmod(0o755)  # readable by UID 65532, as the kubelet's volume is
    for key, value in configmap["data"].items():
        (configmap_dir / key).write_text(value)
        (configmap_dir / key).chmod(0o644)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]

    bundle = image["bundle"]
    spec = runtime_config(
        json.loads((bundle / "config.json").read_text()), image["config"], pod, secrets,
        {configmap["metadata"]["name"]: configmap_dir},
    )
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))
    for port in (50051, 8080):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"127.0.0.1:{port}, which the rendered config binds, is taken (a demo engine? `e2e/local/demo stop`)")

    state = tmp_path / "runc-state"
    name = f"sqe-engine-image-{os.getpid()}"
    log_path = tmp_path / "container.log"
    log = log_path.open("w")
    runc = subprocess.Popen(
        ["runc", "--root", str(state), "run", "--bundle", str(bundle), name],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert runc.poll() is None, f"the container exited {runc.returncode}:\n{log_path.read_text()[-3000:]}"
            try:
                if requests.get("http://127.0.0.1:8080/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"engine never became healthy:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)

        # The engine process runs as the pod spec says.
        pid = json.loads(run_checked("runc", "--root", state, "state", name).stdout)["pid"]
        status = _proc_status(pid)
        assert status["Uid"].split() == [str(NONROOT)] * 4 and status["Gid"].split() == [str(NONROOT)] * 4
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, f"{caps} {status[caps]}"
        assert status["NoNewPrivs"] == "1"
        mounts = _mount_options(pid)
        assert "ro" in mounts["/"][1], "root filesystem writable"
        assert mounts["/tmp"][0] == "tmpfs" and "rw" in mounts["/tmp"][1]
        assert "ro" in mounts["/etc/sqe/config"][1]
        assert _memory_limit(pid) == _bytes(pod["containers"][0]["resources"]["limits"]["memory"])

        with adbc.connect(
            "grpc://127.0.0.1:50051", db_kwargs={"username": "alice", "password": "alice-pw"}, autocommit=True,
        ) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM lake.demo.c")
            assert cur.fetch_arrow_table().to_pylist() == [{"n": seed.ROWS["c"]}]
        with adbc.connect(
            "grpc://127.0.0.1:50051", db_kwargs={"username": "bob", "password": "bob-pw"}, autocommit=True,
        ) as conn, conn.cursor() as cur:
            with pytest.raises(adbc.Error) as refused:
                cur.execute("SELECT count(*) AS n FROM lake.demo.c")
                cur.fetchall()
            assert "PermissionDenied" in str(refused.value), str(refused.value)
    finally:
        subprocess.run(["runc", "--root", str(state), "kill", name, "TERM"], capture_output=True)
        try:
            runc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            subprocess.run(["runc", "--root", str(state), "kill", name, "KILL"], capture_output=True)
            runc.wait(timeout=30)
        subprocess.run(["runc", "--root", str(state), "delete", "--force", name], capture_output=True)
        log.close()
    assert not (state / name).exists(), "runc delete left the container's state"
    text = log_path.read_text()
    assert '"user":"alice"' in text or '"user": "alice"' in text
    assert "alice-pw" not in text and stack["SQE_OIDC_CLIENT_SECRET"] not in text
