"""One Trino node for the benchmark: io.trino:trino-server from Maven Central, run on Temurin 25,
bound to 127.0.0.1, with its Iceberg connector on the local stack's REST catalog (Nessie).

    python e2e/bench/trino_server.py check    # start, list the tpch namespaces, stop

- Download: `mvn dependency:get io.trino:trino-server:476:tar.gz` (checksum-verified, ~820 MB)
  into $SQE_CACHE/m2/repository, unpacked once into $SQE_CACHE/trino/476/.
- Identity towards the catalog: the machine client sqe-etl (Keycloak client-credentials grant,
  `iceberg.rest-catalog.security=OAUTH2` with `oauth2.credential` and `oauth2.server-uri`,
  token refreshed by Trino); Nessie's rule `bench_read_tpch` lets it read the tpch namespaces.
  Trino's REST client cannot do the password grant, so it cannot log in as alice for longer than
  one access token lives (5 min in this realm). SQE_BENCH_CATALOG_TOKEN=<bearer token> makes it
  use that token instead (not refreshed: short runs only).
- Data: S3 credentials vended by the catalog per table (`vended-credentials-enabled=true`, the
  native S3 file system); no static key is configured.
- JVM: heap `TRINO_HEAP` (default 4G of this machine's 24 GiB; queries may use 2 GB), G1.
- Config, data and log under $SQE_STATE/bench-trino/ (the stack's run state).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

VERSION = "476"
PORT = int(os.environ.get("SQE_BENCH_TRINO_PORT", "18480"))
HEAP = os.environ.get("TRINO_HEAP", "4G")
QUERY_MEMORY = os.environ.get("TRINO_QUERY_MEMORY", "2GB")
JAVA_HOME = os.environ.get("SQE_JAVA_HOME", "/usr/lib/jvm/temurin-25-jdk-amd64")
# The realm's machine client (e2e/local/keycloak/sqe-realm.json); a dev secret of the local stack.
CLIENT = ("sqe-etl", "sqe-etl-secret")
# A bearer token to use instead (another identity; not refreshed, so only for short runs).
TOKEN = os.environ.get("SQE_BENCH_CATALOG_TOKEN", "")


def log(msg: str) -> None:
    print(f"[trino] {msg}", file=sys.stderr, flush=True)


def cache() -> Path:
    return Path(os.environ.get("SQE_CACHE") or Path.home() / ".cache" / "sqe")


def install() -> Path:
    home = cache() / "trino" / VERSION / f"trino-server-{VERSION}"
    if (home.parent / ".extracted").exists():
        return home
    repo = cache() / "m2" / "repository"
    tgz = repo / "io" / "trino" / "trino-server" / VERSION / f"trino-server-{VERSION}.tar.gz"
    if not tgz.exists():
        log(f"downloading io.trino:trino-server:{VERSION}:tar.gz from Maven Central (~820 MB)")
        subprocess.run(
            ["mvn", "-B", "-q", "--strict-checksums", f"-Dmaven.repo.local={repo}",
             "dependency:get", f"-Dartifact=io.trino:trino-server:{VERSION}:tar.gz",
             "-Dtransitive=false"],
            check=True, cwd="/tmp",
        )
    shutil.rmtree(home.parent, ignore_errors=True)
    home.parent.mkdir(parents=True)
    subprocess.run(["tar", "xzf", str(tgz), "-C", str(home.parent)], check=True)
    (home.parent / ".extracted").touch()
    return home


def write_config(etc: Path, data: Path) -> None:
    e = os.environ
    shutil.rmtree(etc, ignore_errors=True)
    (etc / "catalog").mkdir(parents=True)
    (etc / "node.properties").write_text(
        "node.environment=sqe_bench\n"
        "node.id=sqe-bench-1\n"
        f"node.data-dir={data}\n"
        # Loopback only: the HTTP server binds node.bind-ip.
        "node.bind-ip=127.0.0.1\n"
        "node.internal-address=127.0.0.1\n"
    )
    (etc / "config.properties").write_text(
        "coordinator=true\n"
        "node-scheduler.include-coordinator=true\n"
        f"http-server.http.port={PORT}\n"
        f"discovery.uri=http://127.0.0.1:{PORT}\n"
        f"query.max-memory={QUERY_MEMORY}\n"
        f"query.max-memory-per-node={QUERY_MEMORY}\n"
    )
    (etc / "jvm.properties").write_text("")
    (etc / "jvm.config").write_text("\n".join([
        "-server",
        f"-Xmx{HEAP}",
        "-XX:+UseG1GC",
        "-XX:G1HeapRegionSize=32M",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-OmitStackTraceInFastThrow",
        "-XX:ReservedCodeCacheSize=256M",
        "-XX:PerMethodRecompilationCutoff=10000",
        "-XX:PerBytecodeRecompilationCutoff=10000",
        "-Djdk.attach.allowAttachSelf=true",
        "-Djdk.nio.maxCachedBufferSize=2000000",
        "-Dfile.encoding=UTF-8",
        "-XX:+EnableDynamicAgentLoading",
        f"-Djava.io.tmpdir={data}/tmp",
    ]) + "\n")
    (etc / "log.properties").write_text("io.trino=WARN\nio.airlift=WARN\n")
    if TOKEN:
        auth = f"iceberg.rest-catalog.oauth2.token={TOKEN}\n"
    else:
        auth = (
            f"iceberg.rest-catalog.oauth2.credential={CLIENT[0]}:{CLIENT[1]}\n"
            f"iceberg.rest-catalog.oauth2.server-uri={e['SQE_OIDC_ISSUER']}/protocol/openid-connect/token\n"
            "iceberg.rest-catalog.oauth2.scope=openid\n"
            "iceberg.rest-catalog.oauth2.token-refresh-enabled=true\n"
        )
    (etc / "catalog" / "iceberg.properties").write_text(
        "connector.name=iceberg\n"
        "iceberg.catalog.type=rest\n"
        f"iceberg.rest-catalog.uri={e['SQE_CATALOG_URI']}\n"
        f"iceberg.rest-catalog.warehouse={e['SQE_CATALOG_WAREHOUSE']}\n"
        "iceberg.rest-catalog.security=OAUTH2\n"
        + auth
        + "iceberg.rest-catalog.vended-credentials-enabled=true\n"
        "fs.native-s3.enabled=true\n"
        f"s3.endpoint={e['SQE_S3_ENDPOINT']}\n"
        f"s3.region={e['SQE_S3_REGION']}\n"
        "s3.path-style-access=true\n"
    )


class Trino:
    """Start with `with Trino() as t:`; `t.connect(schema)` gives a DB-API connection."""

    def __init__(self):
        state = Path(os.environ.get("SQE_STATE", "/tmp/sqe-local")) / "bench-trino"
        self.etc, self.data, self.log_file = state / "etc", state / "data", state / "server.log"
        self.proc = None
        self.start_s = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        home = install()
        (self.data / "tmp").mkdir(parents=True, exist_ok=True)
        write_config(self.etc, self.data)
        env = dict(os.environ, JAVA_HOME=JAVA_HOME,
                   PATH=f"{JAVA_HOME}/bin:{os.environ.get('PATH', '')}")
        t0 = time.monotonic()
        with open(self.log_file, "w") as out:
            self.proc = subprocess.Popen(
                [str(home / "bin" / "launcher"), "run", f"--etc-dir={self.etc}",
                 f"--data-dir={self.data}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Trino exited ({self.proc.returncode}); log: "
                                   f"{self.log_file}\n{self.tail()}")
            try:
                info = requests.get(f"http://127.0.0.1:{PORT}/v1/info", timeout=2).json()
                if not info.get("starting", True) and self.answers():
                    self.start_s = time.monotonic() - t0
                    log(f"Trino {info.get('nodeVersion', {}).get('version')} ready on "
                        f"127.0.0.1:{PORT} in {self.start_s:.0f}s (heap {HEAP})")
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"Trino not ready after 300s; log: {self.log_file}\n{self.tail()}")

    def answers(self) -> bool:
        """Whether a query runs (the node must have announced itself to the scheduler)."""
        try:
            cur = self.connect("information_schema").cursor()
            cur.execute("SELECT 1")
            return cur.fetchall() == [[1]]
        except Exception:  # noqa: BLE001 — NO_NODES_AVAILABLE until the node is announced
            return False

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        log("Trino stopped")

    def connect(self, schema: str):
        import trino

        return trino.dbapi.connect(host="127.0.0.1", port=PORT, user="bench",
                                   catalog="iceberg", schema=schema)


if __name__ == "__main__":
    if sys.argv[1:2] != ["check"]:
        sys.exit("usage: trino_server.py check [SQL ...]")
    with Trino() as t:
        cur = t.connect("information_schema").cursor()
        cur.execute("SHOW SCHEMAS FROM iceberg")
        print(cur.fetchall())
        for q in sys.argv[2:]:
            cur.execute(q)
            print(cur.fetchall())
