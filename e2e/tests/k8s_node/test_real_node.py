"""SQE's own pods on a real kubelet (e2e/k8s/node), served through a Service.

The chart installs the operator, which runs as a pod with the chart's ServiceAccount and talks to
the API server through the `kubernetes` Service. A SqeCluster points at the local stack, which pods
reach at the node's bridge address (a DNAT to the host's loopback services): the engine reaches
Keycloak at that address while tokens carry Keycloak's public URL (`frontendUrl`), and reads
MinIO there (`storageEndpoint`) with the credentials the catalog vends to each user. The engine
pods start from the operator's pod spec, their probes run, and real clients (ADBC from the host
through the ClusterIP, and from a client pod through the Service's DNS name) query as alice, bob
and carol. Then a rolling update (config change and client secret rotation) and a killed pod,
which the users' sessions outlive: the operator runs a session store for the cluster, and any
engine pod serves any session.

The tests run in file order and share one installation (module fixtures).
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import adbc_driver_flightsql.dbapi as adbc
import pytest

import jdbc

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "e2e" / "local"))
import seed  # noqa: E402

NODE_IP = os.environ.get("SQE_K8S_NODE_IP", "10.245.0.1")
NODE_NAME = os.environ.get("SQE_K8S_NODE_NAME", "sqe-node-1")
OP_NS = "sqe-system"
NS = "sqe-node"
NAME = "lake"
ENGINE_SELECTOR = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/name=sqe-engine"
STORE_SELECTOR = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/name=sqe-session-store"
TOLERATION = {"key": "sqe.io/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"}
ON_REAL_NODE = {"type": "real"}
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
REPORT: dict = {}


def on_node(url: str) -> str:
    """The same service at the node's bridge address, as pods reach it."""
    p = urlsplit(url)
    assert p.hostname == "127.0.0.1", url
    return urlunsplit(p._replace(netloc=f"{NODE_IP}:{p.port}"))


def fingerprint(access_key: str) -> str:
    return hashlib.sha256(access_key.encode()).hexdigest()[:16]


def ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def cluster_manifest(stack: dict, *, client_secret: str, idle_timeout: int = 900) -> str:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sqe-oidc"},
              "stringData": {"client-secret": client_secret}}
    cluster = {
        "apiVersion": "sqe.io/v1alpha1", "kind": "SqeCluster", "metadata": {"name": NAME},
        "spec": {
            "oidc": {
                "keycloak": {"url": on_node(stack["SQE_KEYCLOAK_URL"]), "realm": stack["SQE_KEYCLOAK_REALM"],
                             "frontendUrl": stack["SQE_KEYCLOAK_URL"]},
                "clientId": stack["SQE_OIDC_CLIENT_ID"],
                "clientSecretRef": {"name": "sqe-oidc", "key": "client-secret"},
                "modes": ["password", "bearer"],
            },
            "polaris": {"uri": on_node(stack["SQE_CATALOG_URI"]), "warehouse": stack.get("SQE_CATALOG_WAREHOUSE", "lake"),
                        "storageEndpoint": on_node(stack["SQE_S3_ENDPOINT"])},
            "engine": {
                "image": "localhost/sqe-engine:dev", "imagePullPolicy": "Never", "replicas": 2,
                # Small requests: the node has 2 CPUs, and a rolling update runs a third pod.
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                "session": {"idleTimeoutSeconds": idle_timeout},
                "query": {"memoryLimit": "256Mi"},
                "podOverrides": {"nodeSelector": ON_REAL_NODE, "tolerations": [TOLERATION]},
            },
            "disruption": {"maxUnavailable": 1},
            # Sessions any engine pod serves, through a store the operator runs.
            "sessionStore": {"managed": {
                "image": "localhost/sqe-session-store:dev", "imagePullPolicy": "Never",
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}}},
        },
    }
    return json.dumps(secret) + "\n---\n" + json.dumps(cluster)


def engine_pods(kube, *, live_only: bool = True) -> list[dict]:
    pods = kube.get("pods", "-n", NS, "-l", ENGINE_SELECTOR)["items"]
    if live_only:
        pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return pods


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def condition(obj: dict, kind: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def pod_events(kube, pod: str) -> list[dict]:
    out = []
    for line in kube.kubectl("logs", "-n", NS, pod, check=False).splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def service_uri(kube) -> str:
    svc = kube.get("service", NAME, "-n", NS)
    return f"grpc://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


def connect(uri: str, user: str):
    return adbc.connect(uri, db_kwargs={"username": user, "password": PASSWORDS[user]}, autocommit=True)


def query(uri: str, user: str, sql: str):
    with connect(uri, user) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def error_of(uri: str, user: str, sql: str) -> adbc.Error:
    with pytest.raises(adbc.Error) as raised:
        query(uri, user, sql)
    return raised.value


# --- installation ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def operator(kube, tmp_path_factory):
    values = {
        "image": {"repository": "localhost/sqe-operator", "tag": "dev", "pullPolicy": "Never"},
        "replicaCount": 1,
        "nodeSelector": ON_REAL_NODE,
        "tolerations": [TOLERATION],
    }
    path = tmp_path_factory.mktemp("helm") / "values.json"
    path.write_text(json.dumps(values))
    t0 = time.monotonic()
    kube.helm("install", "sqe-operator", ROOT / "charts/sqe-operator", "-n", OP_NS, "--create-namespace",
              "-f", path, "--wait", "--timeout", "180s")
    REPORT["operator_install_to_available_s"] = round(time.monotonic() - t0, 1)
    yield
    kube.helm("uninstall", "sqe-operator", "-n", OP_NS, "--wait", "--timeout", "120s")
    kube.kubectl("delete", "namespace", OP_NS, "--wait=true", timeout=180)


@pytest.fixture(scope="module")
def cluster(kube, operator, stack):
    kube.kubectl("create", "namespace", NS)
    t0 = time.monotonic()
    kube.apply(cluster_manifest(stack, client_secret=stack["SQE_OIDC_CLIENT_SECRET"]), NS)

    def ready():
        c = kube.get("sqecluster", NAME, "-n", NS)
        return c if condition(c, "Ready").get("status") == "True" else None

    kube.wait_until("the SqeCluster to be Ready", ready, timeout=300)
    REPORT["sqecluster_apply_to_ready_s"] = round(time.monotonic() - t0, 1)
    yield
    kube.kubectl("delete", "namespace", NS, "--wait=true", timeout=180)


ROTATION_PROFILE = {
    "name": "sqe-node-test-rotation",
    "executors": [{"executor": "secret-rotation", "configuration": {
        # A regenerated secret leaves the old one valid for 10 minutes: time for the pods to roll.
        "expiration-period": 30 * 86400, "rotated-expiration-period": 600, "remaining-rotation-period": 86400}}],
}
ROTATION_POLICY = {
    "name": "sqe-node-test-rotation", "enabled": True,
    "conditions": [{"condition": "any-client", "configuration": {}}],
    "profiles": [ROTATION_PROFILE["name"]],
}


@pytest.fixture(scope="module")
def idp_client(keycloak, stack):
    """The engine's client at Keycloak, with Keycloak's secret rotation policy on (a regenerated
    secret leaves the old one valid for a while) for this module only. At the end the policy goes,
    the old secret is invalidated and the stack's secret is put back for the other suites."""
    client = keycloak.admin("GET", f"/clients?clientId={stack['SQE_OIDC_CLIENT_ID']}").json()[0]
    profiles = keycloak.admin("GET", "/client-policies/profiles").json().get("profiles", [])
    policies = keycloak.admin("GET", "/client-policies/policies").json().get("policies", [])
    for path, body in (("/client-policies/profiles", {"profiles": [*profiles, ROTATION_PROFILE]}),
                       ("/client-policies/policies", {"policies": [*policies, ROTATION_POLICY]})):
        r = keycloak.admin("PUT", path, json=body)
        assert r.status_code == 204, (path, r.status_code, r.text)
    yield client
    problems = []
    for path, body in (("/client-policies/policies", {"policies": policies}),
                       ("/client-policies/profiles", {"profiles": profiles})):
        r = keycloak.admin("PUT", path, json=body)
        if r.status_code != 204:
            problems.append((path, r.status_code, r.text))
    keycloak.admin("DELETE", f"/clients/{client['id']}/client-secret/rotated")
    current = keycloak.admin("GET", f"/clients/{client['id']}").json()
    r = keycloak.admin("PUT", f"/clients/{client['id']}", json={**current, "secret": stack["SQE_OIDC_CLIENT_SECRET"]})
    if r.status_code != 204:
        problems.append(("restore secret", r.status_code, r.text))
    assert not problems, problems


@pytest.fixture(scope="module")
def uri(kube, cluster) -> str:
    return service_uri(kube)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    REPORT["images_compressed_bytes"] = {
        p.name: p.stat().st_size
        for p in sorted((Path(os.environ.get("SQE_CACHE", Path.home() / ".cache/sqe")) / "images").glob("*.oci.tar"))
    }
    node_up = Path(os.environ.get("SQE_K8S_STATE", "/nonexistent")) / "node-up-seconds"
    if node_up.exists():
        REPORT["node_up_s"] = int(node_up.read_text())
    out = Path(os.environ.get("SQE_K8S_STATE", "/tmp")) / "node-report.json"
    out.write_text(json.dumps(REPORT, indent=2))
    print("\n[real node] " + json.dumps(REPORT))


# --- 1. the operator as a pod -----------------------------------------------------------------

def test_the_operator_runs_as_a_pod_with_the_charts_service_account(kube, operator):
    pods = kube.get("pods", "-n", OP_NS, "-l", "app.kubernetes.io/name=sqe-operator")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["spec"]["serviceAccountName"] == "sqe-operator"
    assert pod["spec"]["containers"][0]["image"] == "localhost/sqe-operator:dev"
    assert is_ready(pod), pod["status"]
    # It reached the API server from inside the pod (the `kubernetes` Service) and leads.
    logs = kube.wait_until(
        "the operator pod to take the lease",
        lambda: (l := kube.kubectl("logs", "-n", OP_NS, pod["metadata"]["name"])) and "acquired leadership" in l and l,
        timeout=60,
    )
    assert "error" not in logs.lower() or "acquired leadership" in logs


# --- 2. engine pods from the operator's pod spec --------------------------------------------

def test_engine_pods_start_from_the_operators_pod_spec_and_turn_ready(kube, cluster, stack):
    c = kube.get("sqecluster", NAME, "-n", NS)
    assert c["status"].get("readyReplicas") == 2, c["status"]
    pods = engine_pods(kube)
    assert len(pods) == 2 and all(is_ready(p) for p in pods), [p["status"] for p in pods]
    start_to_ready = []
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE_NAME
        container = pod["spec"]["containers"][0]
        sc = {**pod["spec"].get("securityContext", {}), **container.get("securityContext", {})}
        assert sc.get("readOnlyRootFilesystem") is True and sc.get("runAsNonRoot") is True, sc
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # Ready means the kubelet's readiness probe got an answer from the engine's /readyz.
        ready_at = ts(condition(pod, "Ready")["lastTransitionTime"])
        start_to_ready.append(ready_at - ts(pod["status"]["startTime"]))
        listening = [e for e in pod_events(kube, pod["metadata"]["name"]) if e.get("event") == "listening"]
        # Tokens are checked against Keycloak's public URL, reached at the node's address.
        assert listening and listening[0]["issuer"].startswith(stack["SQE_KEYCLOAK_URL"]), listening
        # Sessions go through the store the operator runs, with its generated password.
        assert listening[0]["session_store"] == f"redis://{NAME}-session-store:6379/", listening
        env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
        assert env["SQE_SESSION_STORE_PASSWORD"] == {"name": f"{NAME}-session-store", "key": "password",
                                                     "optional": False}, env
    REPORT["engine_pod_start_to_ready_s"] = sorted(round(s, 1) for s in start_to_ready)


def test_the_operator_runs_the_session_store_with_secrets_it_generated(kube, cluster):
    (store,) = kube.get("pods", "-n", NS, "-l", STORE_SELECTOR)["items"]
    assert store["spec"]["nodeName"] == NODE_NAME and is_ready(store), store["status"]
    container = store["spec"]["containers"][0]
    sc = {**store["spec"].get("securityContext", {}), **container.get("securityContext", {})}
    assert sc.get("readOnlyRootFilesystem") is True and sc.get("runAsNonRoot") is True, sc
    # Its password is in its configuration file, never in its arguments; its memory bound is
    # three quarters of its limit (256Mi), and a full store refuses writes rather than evict.
    secret = kube.get("secret", f"{NAME}-session-store", "-n", NS)
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert container["args"] == ["/etc/redis/redis.conf", "--maxmemory", str(256 * 1024 * 1024 // 4 * 3),
                                 "--maxmemory-policy", "noeviction"], container["args"]
    assert password not in json.dumps(store)
    policy = kube.get("networkpolicy", f"{NAME}-session-store", "-n", NS)["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "sqe-session-store"
    assert policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "sqe-engine"
    owner = kube.get("sqecluster", NAME, "-n", NS)["metadata"]["uid"]
    for name, keys in ((f"{NAME}-session-store", {"password", "redis.conf"}), (f"{NAME}-session-keys", {"keys"})):
        generated = kube.get("secret", name, "-n", NS)
        assert set(generated["data"]) == keys, (name, set(generated["data"]))
        assert [o["uid"] for o in generated["metadata"]["ownerReferences"]] == [owner], name


# --- 3. real clients through the Service ----------------------------------------------------

def test_users_query_as_themselves_through_the_cluster_ip(kube, uri, catalog, minio_audit, stack):
    wh = "lake"
    catalog_mark = len(catalog.access_log_lines())
    audit_mark = len(minio_audit.entries())
    nonce = uuid.uuid4().hex
    n = query(uri, "alice", f"SELECT count(*) AS n, '{nonce}' AS nonce FROM {wh}.demo.c").column("n").to_pylist()
    assert n == [seed.rows_c().num_rows]

    alice_reads = minio_audit.wait_for(minio_audit.object_read("demo/c_"), since=audit_mark)
    denied = error_of(uri, "bob", f"SELECT count(*) FROM {wh}.demo.c")
    assert denied.status_code.name in {"UNAUTHORIZED", "NOT_FOUND"}, denied
    bob_mark = len(minio_audit.entries())
    assert query(uri, "bob", f"SELECT count(*) AS n, '{nonce}' AS nonce FROM {wh}.demo.a").column("n").to_pylist() == [
        seed.rows_a().num_rows]
    bob_reads = minio_audit.wait_for(minio_audit.object_read("demo/a_"), since=bob_mark)
    assert query(uri, "carol", f"SHOW TABLES FROM {wh}.demo").num_rows == 0

    # The catalog saw each user's own token: alice loaded demo.c, bob was refused it.
    lines = catalog.access_log_lines()[catalog_mark:]
    loads_c = [l for l in lines if re.search(r'"GET \S*/namespaces/demo/tables/c\b', l)]
    assert {re.search(r"principal=(\S+)", l).group(1) for l in loads_c} == {"alice", "bob"}, loads_c

    # MinIO saw each user's reads signed with keys vended to that user (as the engine pods logged
    # them), never the other's and never MinIO's root key.
    assert alice_reads and bob_reads, "no S3 read recorded"
    vended = {}
    for pod in engine_pods(kube):
        for e in pod_events(kube, pod["metadata"]["name"]):
            if e.get("event") == "storage_credentials":
                vended.setdefault(e["user"], set()).add(e["access_key_fp"])
    for user, reads, other in (("alice", alice_reads, "bob"), ("bob", bob_reads, "alice")):
        used = {fingerprint(e["accessKey"]) for e in reads}
        assert used <= vended.get(user, set()), (user, used, vended)
        assert not (used & vended.get(other, set())), (user, used, vended)
        assert all(e["accessKey"] != stack["SQE_MINIO_ROOT_USER"] for e in reads)


def test_a_client_pod_queries_through_the_service_name(kube, uri):
    port = uri.rsplit(":", 1)[1]
    kube.apply(json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "client-passwords"},
                           "stringData": PASSWORDS}), NS)

    def job(user: str, sql: str) -> dict:
        name = f"client-{user}-{uuid.uuid4().hex[:6]}"
        kube.apply(json.dumps({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "nodeSelector": ON_REAL_NODE, "tolerations": [TOLERATION],
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                "containers": [{
                    "name": "client", "image": "localhost/sqe-client:dev", "imagePullPolicy": "Never",
                    "env": [
                        {"name": "SQE_URI", "value": f"grpc://{NAME}.{NS}.svc.cluster.local:{port}"},
                        {"name": "SQE_USER", "value": user},
                        {"name": "SQE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "client-passwords", "key": user}}},
                        {"name": "SQE_SQL", "value": sql},
                    ],
                }],
            }}},
        }), NS)
        kube.kubectl("wait", "-n", NS, f"job/{name}", "--for=condition=Complete", "--timeout=120s", timeout=150)
        out = kube.kubectl("logs", "-n", NS, f"job/{name}").strip().splitlines()
        return json.loads(out[-1])

    alice = job("alice", "SELECT count(*) AS n FROM lake.demo.c")
    assert alice["ok"] and alice["rows"] == [{"n": seed.rows_c().num_rows}], alice
    bob = job("bob", "SELECT count(*) AS n FROM lake.demo.c")
    assert not bob["ok"] and bob["code"] in {"PERMISSION_DENIED", "NOT_FOUND"}, bob


# --- 4. a rolling update: config change and client secret rotation ---------------------------

class Timeline:
    """Queries run in a background thread, each recorded with its start, when its results were
    all fetched, its end and outcome (a statement's close after its results counts too)."""

    def __init__(self):
        self.runs: list[dict] = []
        self.stop = threading.Event()

    def loop(self, uri: str, user: str, sql: str, fresh_login: bool):
        conn = None
        while not self.stop.is_set():
            start, fetched = time.time(), None
            try:
                if conn is None:
                    conn = connect(uri, user)
                cur = conn.cursor()
                try:
                    cur.execute(sql)
                    cur.fetch_arrow_table()
                    fetched = time.time()
                finally:
                    cur.close()
                self.runs.append({"start": start, "fetched": fetched, "end": time.time(), "ok": True})
            except adbc.Error as e:
                self.runs.append({"start": start, "fetched": fetched, "end": time.time(), "ok": False,
                                  "code": e.status_code.name, "msg": str(e)[:300]})
                conn = None
                time.sleep(0.2)
            if fresh_login and conn is not None:
                conn.close()
                conn = None
        if conn is not None:
            try:
                conn.close()
            except adbc.Error:
                pass


def test_a_config_change_and_a_rotated_client_secret_roll_the_pods_one_at_a_time(kube, uri, stack, keycloak, idp_client,
                                                                                 tmp_path):
    old_pods = {p["metadata"]["name"] for p in engine_pods(kube)}
    pdb = kube.get("pdb", NAME, "-n", NS)
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["status"]["expectedPods"] == 2, pdb
    pdb_slack = []
    # A query long enough to be running when its pod is told to stop: about 3 s here.
    long_sql = "SELECT sum(v % 7) AS s FROM generate_series(1, 400000000) AS t(v)"
    t0 = time.time()
    query(uri, "alice", long_sql)
    REPORT["long_query_s"] = round(time.time() - t0, 2)

    long_runs, logins = Timeline(), Timeline()
    alice_since = int(time.time() * 1000)
    threads = [threading.Thread(target=long_runs.loop, args=(uri, "alice", long_sql, False), daemon=True),
               threading.Thread(target=logins.loop, args=(uri, "bob", "SELECT 1 AS one", True), daemon=True)]
    for t in threads:
        t.start()
    # One JDBC connection (the Arrow Flight SQL JDBC driver) querying throughout the roll too.
    stop_jdbc = tmp_path / "stop-jdbc"
    host, port = uri.removeprefix("grpc://").rsplit(":", 1)
    jdbc_run = subprocess.Popen(
        [jdbc.java(), "--add-opens=java.base/java.nio=ALL-UNNAMED", "-cp", str(jdbc.driver_jar()),
         str(Path(__file__).parent / "jdbc" / "KeepQuerying.java"),
         f"jdbc:arrow-flight-sql://{host}:{port}/?useEncryption=false", "carol", PASSWORDS["carol"],
         "SELECT 1 AS one", str(stop_jdbc)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2)

    client = idp_client
    terminating_seen: dict[str, float] = {}
    min_ready = 99
    try:
        # Rotate at the IdP (the old secret stays valid for a while), then hand the new secret and
        # a changed session setting to the cluster.
        r = keycloak.admin("POST", f"/clients/{client['id']}/client-secret")
        assert r.status_code == 200, r.text
        new_secret = r.json()["value"]
        assert new_secret != stack["SQE_OIDC_CLIENT_SECRET"]
        old_still = keycloak.grant(grant_type="password", username="carol", password="carol-pw")
        assert old_still.status_code == 200, ("the old secret must stay valid", old_still.text)
        kube.apply(cluster_manifest(stack, client_secret=new_secret, idle_timeout=600), NS)

        def rolled():
            nonlocal min_ready
            pods = kube.get("pods", "-n", NS, "-l", ENGINE_SELECTOR)["items"]
            for p in pods:
                if p["metadata"].get("deletionTimestamp") and p["metadata"]["name"] not in terminating_seen:
                    terminating_seen[p["metadata"]["name"]] = time.time()
            min_ready = min(min_ready, sum(1 for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")))
            st = kube.get("pdb", NAME, "-n", NS)["status"]
            pdb_slack.append(st.get("currentHealthy", 0) - st.get("desiredHealthy", 0))
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            names = {p["metadata"]["name"] for p in live}
            return (len(pods) == 2 and not (names & old_pods) and all(is_ready(p) for p in live)) or None

        kube.wait_until("the engine pods to roll", rolled, timeout=300, interval=0.5)
        time.sleep(3)
    finally:
        long_runs.stop.set()
        logins.stop.set()
        stop_jdbc.touch()
        for t in threads:
            t.join(timeout=60)
        jdbc_out, jdbc_err = jdbc_run.communicate(timeout=120)
    jdbc_runs = [json.loads(line) for line in jdbc_out.splitlines() if line.startswith("{")]

    REPORT["rolling_update"] = {
        "min_ready_pods": min_ready,
        "min_pdb_slack": min(pdb_slack) if pdb_slack else None,
        "long_queries": [(round(r["end"] - r["start"], 1), r.get("code", "OK"), r["fetched"] is not None)
                         for r in long_runs.runs],
        "long_query_failures": [r["msg"] for r in long_runs.runs if not r["ok"]],
        "logins": {"ok": sum(r["ok"] for r in logins.runs), "failed": sum(not r["ok"] for r in logins.runs)},
        "jdbc_queries": {"ok": sum(r["ok"] for r in jdbc_runs), "failed": sum(not r["ok"] for r in jdbc_runs)},
        "login_failures": sorted({r["msg"][:160] for r in logins.runs if not r["ok"]}),
    }
    # The Deployment keeps both pods serving while it surges a third (maxUnavailable 0): the
    # budget (maxUnavailable 1) was never used up.
    assert min_ready >= 1 and min(pdb_slack) >= 0, (min_ready, pdb_slack)
    # Sessions outlive their pods: alice's one ADBC connection and carol's one JDBC connection
    # were served by old and new pods alike, with no failed call (not even a statement's close
    # after its results) and no new login.
    assert [r for r in long_runs.runs if not r["ok"]] == []
    assert jdbc_run.returncode == 0, jdbc_err[-3000:]
    assert jdbc_runs and [r for r in jdbc_runs if not r["ok"]] == [], jdbc_runs
    alice_logins_at_idp = keycloak.events(types=["LOGIN"], user="alice", since_ms=alice_since)
    assert len(alice_logins_at_idp) == 1, alice_logins_at_idp
    # A query was running while its pod was told to stop, and delivered its results (drain).
    drained = [r for r in long_runs.runs if r["fetched"]
               and any(r["start"] < t < r["fetched"] for t in terminating_seen.values())]
    assert drained, (terminating_seen, long_runs.runs)
    # Every login worked throughout: old pods with the old secret (still valid at the IdP), new
    # pods with the new one, and no connection was refused (a stopping pod keeps accepting until
    # it has left the Service: preStop sleep).
    failed = [r for r in logins.runs if not r["ok"]]
    assert logins.runs and not failed, failed
    assert query(uri, "alice", "SELECT count(*) AS n FROM lake.demo.c").column("n").to_pylist() == [seed.rows_c().num_rows]


# --- 5. a killed pod ------------------------------------------------------------------------

def alice_logins(kube) -> dict[str, int]:
    return {p["metadata"]["name"]: sum(1 for e in pod_events(kube, p["metadata"]["name"])
                                       if e.get("event") == "login" and e.get("user") == "alice"
                                       and e.get("outcome") == "ok")
            for p in engine_pods(kube)}


def test_a_killed_engine_pod_is_replaced_and_its_sessions_carry_on_without_a_new_login(kube, uri, keycloak):
    logins_before = alice_logins(kube)
    since = int(time.time() * 1000)
    conn = connect(uri, "alice")
    with conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")
        cur.fetch_arrow_table()
    # The pod that logged this connection in (the Service keeps a client on one pod).
    grown = [pod for pod, n in alice_logins(kube).items() if n > logins_before.get(pod, 0)]
    assert len(grown) == 1, (logins_before, grown)
    holder = grown[0]
    before = {p["metadata"]["name"] for p in engine_pods(kube)}
    t0 = time.monotonic()
    kube.kubectl("delete", "pod", "-n", NS, holder, "--grace-period=0", "--force")

    def replaced():
        pods = engine_pods(kube)
        names = {p["metadata"]["name"] for p in pods}
        return (len(pods) == 2 and holder not in names and all(is_ready(p) for p in pods)) or None

    kube.wait_until("a replacement engine pod", replaced, timeout=180, interval=0.5)
    REPORT["killed_pod_replaced_ready_s"] = round(time.monotonic() - t0, 1)
    assert len(before - {holder}) == 1

    # The session did not die with its pod: the same connection's next call is served by another
    # pod with the same handle. A call caught on the dead connection fails as IO/UNAVAILABLE (retry),
    # never UNAUTHENTICATED (log in again).
    outcomes = []
    for _ in range(3):
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) AS n FROM lake.demo.c")
                outcomes.append(cur.fetch_arrow_table().column("n").to_pylist())
                break
        except adbc.Error as e:
            outcomes.append(e.status_code.name)
            time.sleep(0.5)
    REPORT["killed_pod_next_calls"] = [o if isinstance(o, str) else "OK" for o in outcomes]
    assert outcomes[-1] == [seed.rows_c().num_rows], outcomes
    assert all(o in {"IO", "UNAVAILABLE"} for o in outcomes[:-1]), outcomes
    conn.close()
    assert len(keycloak.events(types=["LOGIN"], user="alice", since_ms=since)) == 1, "no new login"
