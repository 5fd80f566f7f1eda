"""TPC-H through SQE, side by side with DataFusion in-process, DuckDB and Trino, in one run.

    cargo build --workspace --bins                      # sqe-engine and sqe-bench (add --release)
    "$(e2e/bench/venv)" e2e/bench/tpch.py --sf 0.1 --runs 3
    "$(e2e/bench/venv)" e2e/bench/tpch.py --smoke       # SF 0.01, one warm run, exit 1 on any
                                                        # wrong answer or failed query (CI)

The local stack must be up (`e2e/local/up`; --smoke runs it). Data: e2e/bench/data.py (generated
and loaded when missing). Systems (--systems), each connected once, then the queries interleaved:
for each query, a cold run of every system, then N warm rounds over every system.

- sqe: a sqe-engine of its own (--engine-bin; ports 50071/8097) against the stack, through ADBC
  Flight SQL as alice (one login, Basic handshake), every result fetched whole as Arrow. Tables
  are named lake.tpch_sf<N>.<table> (the query files' names, qualified here).
- datafusion-s3 / datafusion-local: sqe-bench (bench/), DataFusion in-process with the engine's
  version and settings, over the same Parquet files in MinIO (static root keys) / on local disk.
- duckdb: DuckDB with its Iceberg extension (the duckdb-extension-* wheels from PyPI) on the same
  REST catalog as the machine client sqe-etl (OAuth2 client credentials), data read with the
  credentials the catalog vends; duckdb-local (not in the default set): DuckDB over the local files.
- trino: one Trino 476 node (e2e/bench/trino_server.py) with its Iceberg connector on the same
  catalog as sqe-etl, vended credentials; started for the run and stopped after it.

Answers: every run's row count and column checksums (sums of numbers and dates, sums of string
hashes: bench/src/checksum.rs) are compared across systems; the answer most systems agree on is
the reference. Numbers match within 0.005 per row (Trino rounds avg() over decimal(15,2) to 2
places) or 1e-9 relative. A system whose answer differs, or that fails, is reported for that
query and its time is left out of totals and ratios.

Output: the table on stdout; JSON (+ PNG chart, log scale) in --out, by default
$SQE_CACHE/bench-results/ (smoke runs: $SQE_CACHE/bench-results/smoke/), outside the clone.
"""

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "e2e" / "local"))

TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]
ALL_SYSTEMS = ["sqe", "datafusion-s3", "datafusion-local", "duckdb", "duckdb-local", "trino"]
DEFAULT_SYSTEMS = ["sqe", "datafusion-s3", "datafusion-local", "duckdb", "trino"]
RATIOS = [("datafusion-s3", "SQE/DF-S3"), ("datafusion-local", "SQE/DF-local"),
          ("duckdb", "SQE/DuckDB"), ("trino", "SQE/Trino")]
ENGINE_FLIGHT_PORT, ENGINE_HTTP_PORT = 50071, 8097
ETL_CLIENT = ("sqe-etl", "sqe-etl-secret")  # the realm's machine client (local dev secret)


def log(msg: str) -> None:
    print(f"[tpch] {msg}", file=sys.stderr, flush=True)


def stack_env() -> None:
    """The local stack's endpoints (e2e/local/env), unless already in the environment."""
    if "SQE_CATALOG_URI" in os.environ:
        return
    out = subprocess.run(["bash", str(ROOT / "e2e/local/env")], check=True, capture_output=True,
                         text=True).stdout
    for m in re.finditer(r"^export (\w+)='(.*)'$", out, re.M):
        os.environ[m.group(1)] = m.group(2)


def results_dir() -> Path:
    """Where the harness writes raw results unless --out is given: outside the clone."""
    return Path(os.environ.get("SQE_CACHE") or Path.home() / ".cache" / "sqe") / "bench-results"


# --- Queries ----------------------------------------------------------------------------------

def load_queries(only: list[str]) -> dict[str, str]:
    out = {}
    for f in sorted((HERE / "queries").glob("q*.sql")):
        sql = "\n".join(l for l in f.read_text().splitlines() if not l.lstrip().startswith("--"))
        out[f.stem] = sql.strip().rstrip(";")
    if only:
        want = {f"q{int(q.lower().lstrip('q')):02d}" for q in only}
        out = {k: v for k, v in out.items() if k in want}
    return out


QUALIFY = re.compile(r"(?i)(\bfrom\b|\bjoin\b|,)(\s+)(" + "|".join(TABLES) + r")\b(?!\s*\()")


def qualify(sql: str, prefix: str) -> str:
    """Table names after FROM, JOIN or a FROM list's comma get `prefix.` (the files name tables
    bare; column names never equal a table name in TPC-H)."""
    return QUALIFY.sub(lambda m: f"{m.group(1)}{m.group(2)}{prefix}.{m.group(3)}", sql)


# --- Checksums (same as bench/src/checksum.rs) ---------------------------------------------------

M64 = (1 << 64) - 1
EPOCH = dt.date(1970, 1, 1)


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def checksum_columns(columns: list[list]) -> list:
    out = []
    for col in columns:
        kind, num, hsum = None, 0.0, 0
        for v in col:
            if v is None:
                continue
            if isinstance(v, bool):
                kind, num = "n", num + int(v)
            elif isinstance(v, (int, float, Decimal)):
                kind, num = "n", num + float(v)
            elif isinstance(v, dt.datetime):
                kind = "t"
            elif isinstance(v, dt.date):
                kind, num = "n", num + (v - EPOCH).days
            elif isinstance(v, str):
                kind, hsum = "s", (hsum + fnv1a64(v)) & M64
            else:
                kind = "t"
        out.append({"n": num} if kind == "n" else {"s": f"{hsum:016x}"} if kind == "s"
                   else {"t": "other"} if kind == "t" else None)
    return out


def arrow_answer(table) -> tuple[int, list]:
    return table.num_rows, checksum_columns([c.to_pylist() for c in table.columns])


def rows_answer(rows: list, ncols: int) -> tuple[int, list]:
    cols = [[r[i] for r in rows] for i in range(ncols)]
    return len(rows), checksum_columns(cols)


def differs(a: dict, b: dict) -> str | None:
    """Why two answers differ, or None."""
    if a["rows"] != b["rows"]:
        return f"{a['rows']} rows vs {b['rows']}"
    rows = a["rows"]
    if rows == 0:
        return None
    ca, cb = a["checksum"], b["checksum"]
    if len(ca) != len(cb):
        return f"{len(ca)} columns vs {len(cb)}"
    for i, (x, y) in enumerate(zip(ca, cb)):
        if x is None or y is None or "t" in x or "t" in y:
            continue
        if "n" in x and "n" in y:
            tol = max(1e-9 * max(abs(x["n"]), abs(y["n"])), 0.005 * rows + 1e-9)
            if abs(x["n"] - y["n"]) > tol:
                return f"column {i + 1}: sum {x['n']!r} vs {y['n']!r}"
        elif "s" in x and "s" in y:
            if x["s"] != y["s"]:
                return f"column {i + 1}: string hash {x['s']} vs {y['s']}"
        else:
            return f"column {i + 1}: {x} vs {y} (types differ)"
    return None


# --- Systems ------------------------------------------------------------------------------------

class System:
    name = "?"
    info: dict

    def __init__(self):
        self.info = {}

    def start(self) -> None: ...

    def run(self, query: str, sql: str) -> dict:
        """{"ms", "rows", "checksum"}; raises on failure."""
        raise NotImplementedError

    def stop(self) -> None: ...


def cargo_bin(name: str, given: str | None) -> Path:
    if given:
        return Path(given)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or Path(os.environ["SQE_CACHE"]) / "cargo-target")
    return target / "debug" / name


def profile_of(binary: Path) -> str:
    parts = binary.resolve().parts
    return "release" if "release" in parts else "debug" if "debug" in parts else "unknown"


class Sqe(System):
    name = "sqe"

    def __init__(self, args, ns: str, extra_config: str = "", modes: str = ""):
        """For overhead.py: `extra_config`, more top-level YAML lines for the engine's config;
        `modes`, its oidc.modes (a YAML list) instead of the default."""
        super().__init__()
        self.extra_config = extra_config
        self.modes = f", modes: {modes}" if modes else ""
        self.poll_s = 0.1  # /readyz polling while starting (overhead.py measures start-up finer)
        self.bin = cargo_bin("sqe-engine", args.engine_bin)
        self.ns, self.user, self.password = ns, args.sqe_user, args.sqe_password
        self.proc = self.conn = self.cur = None
        self.prefix = f"{os.environ['SQE_CATALOG_WAREHOUSE']}.{ns}"

    def start(self) -> None:
        import adbc_driver_flightsql.dbapi as flightsql
        import requests

        e = os.environ
        if not self.bin.exists():
            raise RuntimeError(f"{self.bin} missing: cargo build --workspace --bins")
        state = Path(e["SQE_STATE"])
        config = state / f"bench-engine-{ENGINE_FLIGHT_PORT}.yaml"
        config.write_text(
            f'listen: {{ flight: "127.0.0.1:{ENGINE_FLIGHT_PORT}", http: "127.0.0.1:{ENGINE_HTTP_PORT}" }}\n'
            f'oidc: {{ keycloak: {{ url: "{e["SQE_KEYCLOAK_URL"]}", realm: {e["SQE_KEYCLOAK_REALM"]} }}, '
            f'client_id: {e["SQE_OIDC_CLIENT_ID"]}{self.modes} }}\n'
            f'catalog: {{ uri: "{e["SQE_CATALOG_URI"]}", warehouse: {e["SQE_CATALOG_WAREHOUSE"]} }}\n'
            "query: { shutdown_grace_seconds: 5, timeout_seconds: 3600 }\n" + self.extra_config
        )
        self.log_path = state / f"bench-engine-{ENGINE_FLIGHT_PORT}.log"
        t0 = time.monotonic()
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen([str(self.bin), "serve", "--config", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sqe-engine exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if requests.get(f"http://127.0.0.1:{ENGINE_HTTP_PORT}/readyz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sqe-engine not ready after 60s; see {self.log_path}")
            time.sleep(self.poll_s)
        ready_s = time.monotonic() - t0
        t1 = time.monotonic()
        self.conn = flightsql.connect(f"grpc://127.0.0.1:{ENGINE_FLIGHT_PORT}",
                                      db_kwargs={"username": self.user, "password": self.password},
                                      autocommit=True)
        self.cur = self.conn.cursor()
        self.cur.execute("SELECT 1")
        self.cur.fetch_arrow_table()
        self.info = {"binary": str(self.bin), "build": profile_of(self.bin), "user": self.user,
                     "start_to_ready_s": round(ready_s, 3),
                     "login_and_first_query_ms": round((time.monotonic() - t1) * 1e3, 1),
                     "tables": f"{self.prefix}.<table>", "log": str(self.log_path)}

    def run(self, query: str, sql: str) -> dict:
        sql = qualify(sql, self.prefix)
        t0 = time.perf_counter()
        self.cur.execute(sql)
        table = self.cur.fetch_arrow_table()
        ms = (time.perf_counter() - t0) * 1e3
        rows, checksum = arrow_answer(table)
        return {"ms": ms, "rows": rows, "checksum": checksum}

    def stop(self) -> None:
        for c in (self.cur, self.conn):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001 — closing after a failure
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DataFusion(System):
    def __init__(self, args, source: str, lake_dir: Path):
        super().__init__()
        self.name = f"datafusion-{source}"
        self.bin = cargo_bin("sqe-bench", args.bench_bin)
        self.source, self.lake_dir = source, lake_dir
        self.proc = None

    def start(self) -> None:
        if not self.bin.exists():
            raise RuntimeError(f"{self.bin} missing: cargo build --workspace --bins")
        self.proc = subprocess.Popen(
            [str(self.bin), "--lake", str(self.lake_dir), "--source", self.source, "--serve",
             "--queries", str(HERE / "queries")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = json.loads(self.proc.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"sqe-bench did not start: {ready}")
        self.info = {"binary": str(self.bin), "build": profile_of(self.bin),
                     "datafusion": ready["datafusion"], "target_partitions": ready["target_partitions"],
                     "setup_ms": round(ready["setup_ms"], 1)}

    def run(self, query: str, sql: str) -> dict:
        # sqe-bench reads the file itself (the same text, comments stripped there by DataFusion).
        (r,) = self.run_file(HERE / "queries" / f"{query}.sql", 1)
        return {"ms": r["ms"], "rows": r["rows"], "checksum": r["checksum"]}

    def run_file(self, sql_file: Path, runs: int) -> list[dict]:
        """`runs` runs of the query in `sql_file`, back to back in sqe-bench: one answer each."""
        self.proc.stdin.write(json.dumps({"query": sql_file.stem, "file": str(sql_file),
                                          "runs": runs}) + "\n")
        self.proc.stdin.flush()
        out = []
        for _ in range(runs):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"sqe-bench exited ({self.proc.poll()})")
            r = json.loads(line)
            if "error" in r:
                raise RuntimeError(r["error"])
            out.append(r)
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(30)


def duckdb_extension(module) -> str:
    return str(next(Path(module.__file__).parent.glob("extensions/*/*.duckdb_extension")))


class DuckDB(System):
    def __init__(self, args, ns: str, lake: dict, local: bool):
        super().__init__()
        self.name = "duckdb-local" if local else "duckdb"
        self.ns, self.lake, self.local = ns, lake, local
        self.con = None

    def start(self) -> None:
        import duckdb

        threads = os.cpu_count() or 1
        self.con = duckdb.connect(config={"threads": threads, "autoinstall_known_extensions": False,
                                          "autoload_known_extensions": False})
        self.info = {"duckdb": duckdb.__version__, "threads": threads}
        if self.local:
            for t in TABLES:
                path = self.lake["tables"][t]["local_file"]
                self.con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path}')")
            self.info["source"] = "local Parquet files (read_parquet views)"
            return
        import duckdb_extension_avro
        import duckdb_extension_httpfs
        import duckdb_extension_iceberg

        for m in (duckdb_extension_httpfs, duckdb_extension_avro, duckdb_extension_iceberg):
            self.con.execute(f"LOAD '{duckdb_extension(m)}'")
        e = os.environ
        token = e.get("SQE_BENCH_CATALOG_TOKEN")
        if token:  # another identity's bearer token (not refreshed: short runs only)
            self.con.execute(f"CREATE SECRET lake_oauth (TYPE iceberg, TOKEN '{token}')")
        else:
            self.con.execute(
                f"CREATE SECRET lake_oauth (TYPE iceberg, CLIENT_ID '{ETL_CLIENT[0]}', "
                f"CLIENT_SECRET '{ETL_CLIENT[1]}', "
                f"OAUTH2_SERVER_URI '{e['SQE_OIDC_ISSUER']}/protocol/openid-connect/token', "
                "OAUTH2_SCOPE 'openid')")
        who = "the given bearer token" if token else ETL_CLIENT[0]
        self.con.execute(f"ATTACH '{e['SQE_CATALOG_WAREHOUSE']}' AS lake (TYPE iceberg, "
                         f"ENDPOINT '{e['SQE_CATALOG_URI']}', SECRET lake_oauth)")
        self.con.execute(f"USE lake.{self.ns}")
        self.info["source"] = (f"Iceberg REST catalog (extension from PyPI duckdb-extension-iceberg "
                               f"{duckdb.__version__}), as {who}, vended credentials")

    def run(self, query: str, sql: str) -> dict:
        t0 = time.perf_counter()
        table = self.con.execute(sql).to_arrow_table()
        ms = (time.perf_counter() - t0) * 1e3
        rows, checksum = arrow_answer(table)
        return {"ms": ms, "rows": rows, "checksum": checksum}

    def stop(self) -> None:
        if self.con is not None:
            self.con.close()


class Trino(System):
    name = "trino"

    def __init__(self, args, ns: str):
        super().__init__()
        self.ns = ns
        self.server = self.conn = None

    def start(self) -> None:
        import trino_server

        self.server = trino_server.Trino()
        self.server.start()
        self.conn = self.server.connect(self.ns)
        # The node takes a few seconds after start to accept splits (NO_NODES_AVAILABLE).
        deadline = time.monotonic() + 120
        while True:
            try:
                cur = self.conn.cursor()
                cur.execute("SELECT count(*) FROM region")
                cur.fetchall()
                break
            except Exception as e:  # noqa: BLE001
                if "NO_NODES_AVAILABLE" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(2)
        self.info = {"trino": trino_server.VERSION, "heap": trino_server.HEAP,
                     "query_max_memory": trino_server.QUERY_MEMORY,
                     "start_to_ready_s": round(self.server.start_s or 0, 1),
                     "identity": "SQE_BENCH_CATALOG_TOKEN" if trino_server.TOKEN
                     else f"{ETL_CLIENT[0]} (OAuth2 client credentials)",
                     "data_credentials": "vended by the catalog",
                     "log": str(self.server.log_file)}

    def run(self, query: str, sql: str) -> dict:
        cur = self.conn.cursor()
        t0 = time.perf_counter()
        cur.execute(sql)
        rows = cur.fetchall()
        ms = (time.perf_counter() - t0) * 1e3
        n, checksum = rows_answer(rows, len(cur.description or []))
        return {"ms": ms, "rows": n, "checksum": checksum}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


# --- Report -------------------------------------------------------------------------------------

def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt_ms(x) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def fmt_ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def summarize(results: dict, systems: list[str], queries: list[str]) -> dict:
    """Per query warm medians and ratios; totals and geometric means over the queries every
    compared system answered right."""
    summary = {"per_query": {}, "totals": {}, "geomean": {}, "ratios": {}}
    for q in queries:
        row = {}
        for s in systems:
            r = results[q].get(s, {})
            row[s] = {"cold_ms": r.get("cold_ms"), "warm_median_ms": r.get("warm_median_ms"),
                      "ok": r.get("ok", False)}
        summary["per_query"][q] = row
    valid = {s: [q for q in queries if results[q].get(s, {}).get("ok")] for s in systems}
    for s in systems:
        ms = [results[q][s]["warm_median_ms"] for q in valid[s]]
        summary["totals"][s] = {"warm_ms": sum(ms) if ms else None, "queries": len(ms),
                                "cold_ms": sum(results[q][s]["cold_ms"] for q in valid[s]) if ms else None}
        summary["geomean"][s] = geomean(ms)
    if "sqe" in systems:
        for other, label in RATIOS:
            if other not in systems:
                continue
            both = [q for q in queries if q in valid["sqe"] and q in valid[other]]
            per_q = {q: results[q]["sqe"]["warm_median_ms"] / results[q][other]["warm_median_ms"]
                     for q in both}
            tot_s = sum(results[q]["sqe"]["warm_median_ms"] for q in both)
            tot_o = sum(results[q][other]["warm_median_ms"] for q in both)
            summary["ratios"][label] = {
                "per_query": per_q, "queries": len(both),
                "total": tot_s / tot_o if both else None,
                "geomean": geomean(list(per_q.values())),
            }
    return summary


def print_table(results: dict, summary: dict, systems: list[str], queries: list[str]) -> str:
    ratio_cols = [label for other, label in RATIOS if label in summary["ratios"]]
    head = (["query", "sqe cold"] if "sqe" in systems else ["query"]) + \
        [f"{s} warm" for s in systems] + ratio_cols
    lines = []
    for q in queries:
        cells = [q]
        if "sqe" in systems:
            cells.append(fmt_ms(results[q].get("sqe", {}).get("cold_ms")))
        for s in systems:
            r = results[q].get(s, {})
            cells.append(fmt_ms(r.get("warm_median_ms")) if r.get("ok") else
                         ("WRONG" if r.get("answer_differs") else "FAIL"))
        for label in ratio_cols:
            cells.append(fmt_ratio(summary["ratios"][label]["per_query"].get(q)))
        lines.append(cells)
    tot = ["total"] + ([fmt_ms(summary["totals"]["sqe"]["cold_ms"])] if "sqe" in systems else []) + \
        [fmt_ms(summary["totals"][s]["warm_ms"]) for s in systems] + \
        [fmt_ratio(summary["ratios"][label]["total"]) for label in ratio_cols]
    geo = ["geomean"] + (["-"] if "sqe" in systems else []) + \
        [fmt_ms(summary["geomean"][s]) for s in systems] + \
        [fmt_ratio(summary["ratios"][label]["geomean"]) for label in ratio_cols]
    lines += [tot, geo]
    widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]
    out = [" | ".join(h.rjust(w) for h, w in zip(head, widths)),
           "-|-".join("-" * w for w in widths)]
    out += [" | ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in lines]
    return "\n".join(out)


def chart(results: dict, systems: list[str], queries: list[str], path: Path, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no chart: {e}"
    fig, ax = plt.subplots(figsize=(max(10, len(queries) * 0.8), 5))
    width = 0.8 / max(1, len(systems))
    for i, s in enumerate(systems):
        xs, ys = [], []
        for j, q in enumerate(queries):
            r = results[q].get(s, {})
            if r.get("ok"):
                xs.append(j + i * width)
                ys.append(r["warm_median_ms"])
        ax.bar(xs, ys, width, label=s)
    ax.set_yscale("log")
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(queries))])
    ax.set_xticklabels(queries, rotation=0, fontsize=8)
    ax.set_ylabel("warm median, ms (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        mem = next(l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version(), "git_commit": commit,
            "load_average_at_start": os.getloadavg()}


# --- Main ---------------------------------------------------------------------------------------

def make_system(name: str, args, ns: str, lake: dict, lake_dir: Path) -> System:
    if name == "sqe":
        return Sqe(args, ns)
    if name in ("datafusion-s3", "datafusion-local"):
        return DataFusion(args, name.split("-", 1)[1], lake_dir)
    if name in ("duckdb", "duckdb-local"):
        return DuckDB(args, ns, lake, local=name == "duckdb-local")
    if name == "trino":
        return Trino(args, ns)
    raise SystemExit(f"unknown system {name}; known: {', '.join(ALL_SYSTEMS)}")


def run_one(system: System, q: str, sql: str) -> dict:
    try:
        return system.run(q, sql)
    except Exception as e:  # noqa: BLE001 — every failure is reported per query
        return {"error": (str(e).strip().splitlines() or [type(e).__name__])[0][:500]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", default="0.1", help="scale factor (default 0.1)")
    ap.add_argument("--runs", type=int, default=3, help="warm runs per query and system (default 3)")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                    help=f"comma-separated, from {', '.join(ALL_SYSTEMS)}")
    ap.add_argument("--query", action="append", default=[], help="only these queries (repeatable)")
    ap.add_argument("--smoke", action="store_true",
                    help="SF 0.01, 1 warm run, every system; exit 1 on any failure or wrong answer")
    ap.add_argument("--engine-bin", help="sqe-engine (default $CARGO_TARGET_DIR or $SQE_CACHE/cargo-target, debug)")
    ap.add_argument("--bench-bin", help="sqe-bench (default next to sqe-engine's default)")
    ap.add_argument("--sqe-user", default="alice")
    ap.add_argument("--sqe-password", default="alice-pw")
    ap.add_argument("--up", action="store_true", help="run e2e/local/up first (implied by --smoke)")
    ap.add_argument("--out", help="results directory (default $SQE_CACHE/bench-results[/smoke])")
    ap.add_argument("--keep-data", action="store_true",
                    help="--smoke: keep the namespace in the catalog (default: dropped at the end, "
                         "so later tests on the same stack see only their own namespaces)")
    args = ap.parse_args()
    if args.smoke:
        args.sf, args.runs, args.up = "0.01", 1, True
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.up:
        subprocess.run([str(ROOT / "e2e/local/up")], check=True)
    stack_env()
    os.environ.setdefault("SQE_CACHE", str(Path.home() / ".cache" / "sqe"))

    import data

    t0 = time.monotonic()
    lake = data.ensure(args.sf)
    lake_dir = data.sf_dir(args.sf)
    ns = lake["namespace"]
    log(f"data SF {args.sf}: namespace {ns}, {lake_dir} ({time.monotonic() - t0:.1f}s)")
    queries = load_queries(args.query)

    results: dict = {q: {} for q in queries}
    live: list[System] = []
    infos, start_errors = {}, {}
    for name in systems:
        s = make_system(name, args, ns, lake, lake_dir)
        try:
            t1 = time.monotonic()
            s.start()
            live.append(s)
            infos[name] = s.info
            log(f"{name} ready ({time.monotonic() - t1:.1f}s): {json.dumps(s.info)}")
        except Exception as e:  # noqa: BLE001 — reported for every query
            start_errors[name] = (str(e).strip().splitlines() or [type(e).__name__])[0][:500]
            log(f"{name} FAILED to start: {start_errors[name]}")
            s.stop()
    try:
        for q, sql in queries.items():
            runs: dict = {s.name: [] for s in live}
            for rnd in range(1 + args.runs):
                for s in live:
                    runs[s.name].append(run_one(s, q, sql))
            for name, rs in runs.items():
                errs = [r["error"] for r in rs if "error" in r]
                entry = {"runs": rs}
                if errs:
                    entry.update(ok=False, error=errs[0])
                else:
                    first = rs[0]
                    unstable = next((d for r in rs[1:] if (d := differs(first, r))), None)
                    entry.update(ok=unstable is None, cold_ms=first["ms"],
                                 warm_median_ms=statistics.median(r["ms"] for r in rs[1:]) if len(rs) > 1 else first["ms"],
                                 warm_ms=[r["ms"] for r in rs[1:]], rows=first["rows"],
                                 checksum=first["checksum"])
                    if unstable:
                        entry["error"] = f"answers differ between runs: {unstable}"
                results[q][name] = entry
            for name, err in start_errors.items():
                results[q][name] = {"ok": False, "error": f"did not start: {err}"}
            check_answers(results[q])
            line = "  ".join(f"{n}={fmt_ms(r.get('warm_median_ms')) if r.get('ok') else 'X'}"
                             for n, r in results[q].items())
            log(f"{q}: {line}")
    finally:
        for s in live:
            s.stop()
        if args.smoke and not args.keep_data:
            data.drop(args.sf, data.admin_catalog())

    summary = summarize(results, systems, list(queries))
    table = print_table(results, summary, systems, list(queries))
    problems = [f"{q} {s}: {r.get('error', '?')}" for q in queries for s, r in results[q].items()
                if not r.get("ok")]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out) if args.out else results_dir() / ("smoke" if args.smoke else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"tpch-sf{data.sf_tag(args.sf)}-{stamp}"
    builds = sorted({i.get("build") for i in infos.values() if i.get("build")})
    title = (f"TPC-H SF {args.sf}, warm median of {args.runs} ({', '.join(builds) or '?'} build), "
             f"{os.cpu_count()} cores")
    doc = {"scale_factor": args.sf, "runs": args.runs, "smoke": args.smoke, "systems": systems,
           "started": stamp, "machine": machine(), "system_info": infos, "start_errors": start_errors,
           "data": {t: {k: v for k, v in d.items() if k in ("rows", "bytes", "data_files")}
                    for t, d in lake["tables"].items()},
           "command": " ".join([Path(sys.executable).name] + sys.argv),
           "results": results, "summary": summary, "table": table, "problems": problems}
    base.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    note = chart(results, systems, list(queries), base.with_suffix(".png"), title)
    print(title)
    print(table)
    print(f"\nresults: {base.with_suffix('.json')}" + (f" ({note})" if note else f", {base.with_suffix('.png')}"))
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print(f"  {p}")
    return 1 if problems and args.smoke else 0


def check_answers(per_system: dict) -> None:
    """Marks systems whose answer differs from the one most systems agree on."""
    answered = [(n, r) for n, r in per_system.items() if r.get("ok")]
    groups: list[list[str]] = []
    for n, r in answered:
        for g in groups:
            if differs(per_system[g[0]], r) is None:
                g.append(n)
                break
        else:
            groups.append([n])
    if len(groups) <= 1:
        return
    groups.sort(key=lambda g: (-len(g), "datafusion-local" not in g))
    ref = groups[0][0]
    for g in groups[1:]:
        for n in g:
            r = per_system[n]
            r.update(ok=False, answer_differs=True,
                     error=f"answer differs from {', '.join(groups[0])}: {differs(per_system[ref], r)}")


if __name__ == "__main__":
    sys.exit(main())
