"""What SQE's path costs on top of the query itself, measured in one run.

    cargo build --release --workspace --bins     # or debug builds: say which when quoting
    "$(e2e/bench/venv)" e2e/bench/overhead.py --engine-bin $T/sqe-engine --bench-bin $T/sqe-bench

The local stack must be up and TPC-H SF 0.01 and 0.1 loaded (e2e/bench/data.py --sf N; this
script loads them when missing). One sqe-engine of its own (tpch.py's, ports 50071/8097), with
client-credentials logins enabled and room for --sessions sessions. Every figure is a ratio or
difference against a reference measured in the same run:

1. tiny queries: N times `SELECT * FROM region` (5 rows, SF 0.01) through ADBC as alice, back to
   back, vs the same query N times in-process (sqe-bench over the same file in MinIO); and
   `SELECT 1` both ways. p50/p99; added cost = SQE p50 - in-process p50.
2. the catalog's share: the same query paced (one every 0.4 s, so no load is reused: the
   engine reuses a session's load for 250 ms) vs back to back; Nessie's own time per loadTable
   (its access log) and MinIO's time for the STS AssumeRole calls made meanwhile (its audit log:
   the credential vending).
3. handshake: pyarrow.flight Basic handshakes (password grant for alice) vs the same password
   grant sent straight to Keycloak, interleaved: engine cost = handshake - IdP.
4. streaming: `SELECT *` of a session table (datafusion.public, in the engine's memory: no
   storage on the way) through Flight, MB/s of Arrow received, vs reading the same batches as an
   Arrow IPC stream in-process (pyarrow), from memory (no copy) and from a file (one copy); and `SELECT * FROM lineitem` (SF 0.1)
   through SQE vs in-process DataFusion over the same MinIO file.
5. start-to-ready: exec of sqe-engine until /readyz answers 200 (5 starts).
6. sessions: --sessions client-credentials logins (sqe-etl) left idle; the engine's RSS before
   and after (per session), then its CPU time over --idle-seconds with nothing due (the refresh
   scheduler sleeps until the first refresh, minutes away).

Output: the table on stdout, JSON in <--out>/overhead-<time>.json (default --out:
$SQE_CACHE/bench-results, outside the clone).

--smoke (CI): every measurement once at a small size (50 queries, 200 sessions, ...), written to
$SQE_CACHE/bench-results/smoke/, and the TPC-H namespaces dropped again at the end (the catalog
suites list what alice sees). It checks the harness runs, not the figures.
"""

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tpch  # noqa: E402

ETL_CLIENT, ETL_SECRET = tpch.ETL_CLIENT


def log(msg: str) -> None:
    print(f"[overhead] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": round(pct(xs, 50), 3), "p99_ms": round(pct(xs, 99), 3),
            "mean_ms": round(statistics.fmean(xs), 3)}


def proc_stat(pid: int) -> dict:
    """RSS (bytes) and CPU seconds (user + system) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss": rss, "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


def lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def nessie_ms(line: str) -> int | None:
    """The request time at the end of a line of Nessie's access log (`... 200 4885 24ms`)."""
    m = re.search(r"(\d+)ms$", line)
    return int(m.group(1)) if m else None


class Engine(tpch.Sqe):
    """tpch.py's engine, with client-credentials logins and room for many sessions."""

    def __init__(self, args, sessions: int):
        limits = (f"session: {{ max_sessions: {sessions + 100}, "
                  f"max_sessions_per_user: {sessions + 100} }}\n")
        super().__init__(args, "tpch_sf0_01", extra_config=limits,
                         modes="[password, client_credentials]")


def sqe_times(cur, sql: str, n: int, pause: float = 0.0) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        cur.execute(sql)
        cur.fetch_arrow_table()
        out.append((time.perf_counter() - t0) * 1e3)
        if pause:
            time.sleep(pause)
    return out


def bench_times(df: tpch.DataFusion, sql_file: Path, n: int) -> list[float]:
    return [r["ms"] for r in df.run_file(sql_file, n)]


def raw_flight_times(sql: str, n: int) -> list[float]:
    """GetFlightInfo + DoGet with pyarrow.flight (2 calls; ADBC makes 4: it prepares, executes,
    fetches and closes the prepared statement)."""
    sys.path.insert(0, str(HERE.parent / "tests" / "engine"))
    from flightsql import SqlClient

    c = SqlClient(f"grpc://127.0.0.1:{tpch.ENGINE_FLIGHT_PORT}")
    c.login("alice", "alice-pw")
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.query(sql)
        out.append((time.perf_counter() - t0) * 1e3)
    c.close()
    return out


def tiny_queries(engine: Engine, df: tpch.DataFusion, n: int, work: Path) -> dict:
    region = work / "region.sql"
    region.write_text("SELECT * FROM region")
    one = work / "one.sql"
    one.write_text("SELECT 1")
    table = f"{engine.prefix}.region"
    cur = engine.cur
    sqe_times(cur, f"SELECT * FROM {table}", 20)  # warm: footers, connections
    bench_times(df, region, 20)
    out = {}
    for name, sqe_sql, file in [("select_1", "SELECT 1", one), ("region", f"SELECT * FROM {table}", region)]:
        s = sqe_times(cur, sqe_sql, n)
        d = bench_times(df, file, n)
        out[name] = {"sqe": summary(s), "in_process": summary(d),
                     "added_p50_ms": round(pct(s, 50) - pct(d, 50), 3),
                     "added_p99_ms": round(pct(s, 99) - pct(d, 99), 3)}
        log(f"{name}: SQE p50 {pct(s, 50):.2f} ms p99 {pct(s, 99):.2f}; in-process p50 "
            f"{pct(d, 50):.2f} p99 {pct(d, 99):.2f}")
    raw = raw_flight_times("SELECT 1", n)
    out["select_1"]["raw_flight"] = summary(raw)
    log(f"SELECT 1 over raw Flight SQL: p50 {pct(raw, 50):.2f} ms p99 {pct(raw, 99):.2f}")
    return out


def catalog_share(engine: Engine, paced: int) -> dict:
    state = Path(os.environ["SQE_STATE"])
    nessie, audit = state / "nessie-access.log", state / "minio-audit.jsonl"
    table = f"{engine.prefix}.region"
    mark_n, mark_a = len(lines(nessie)), len(lines(audit))
    s = sqe_times(engine.cur, f"SELECT * FROM {table}", paced, pause=0.4)
    time.sleep(1.5)  # the audit webhook delivers a moment later
    loads = [l for l in lines(nessie)[mark_n:]
             if "principal=alice" in l and re.search(r'"GET \S+/tables/region ', l)]
    load_ms = [ms for l in loads if (ms := nessie_ms(l)) is not None]
    sts = [json.loads(l) for l in lines(audit)[mark_a:]]
    sts = [int(a["api"]["timeToResponseInNS"]) / 1e6 for a in sts
           if a.get("api", {}).get("name", "").startswith("AssumeRole")]
    back_to_back = sqe_times(engine.cur, f"SELECT * FROM {table}", paced)
    out = {"paced_queries": summary(s), "back_to_back": summary(back_to_back),
           "loads": len(load_ms), "nessie_load_ms": summary(load_ms) if load_ms else None,
           "sts_calls_per_load": round(len(sts) / max(1, len(load_ms)), 2),
           "sts_ms_per_load": round(sum(sts) / max(1, len(load_ms)), 3)}
    log(f"catalog: paced p50 {pct(s, 50):.2f} ms vs back to back {pct(back_to_back, 50):.2f}; "
        f"{len(load_ms)} loads, Nessie p50 {pct(load_ms, 50) if load_ms else 0} ms, "
        f"STS {out['sts_ms_per_load']} ms/load")
    return out


def handshakes(n: int) -> dict:
    import pyarrow.flight as flight
    import requests

    e = os.environ
    token_url = f"{e['SQE_KEYCLOAK_URL']}/realms/{e['SQE_KEYCLOAK_REALM']}/protocol/openid-connect/token"
    http = requests.Session()
    client = flight.FlightClient(f"grpc://127.0.0.1:{tpch.ENGINE_FLIGHT_PORT}")
    hs, idp = [], []
    for i in range(n + 3):
        t0 = time.perf_counter()
        client.authenticate_basic_token("alice", "alice-pw")
        t1 = time.perf_counter()
        r = http.post(token_url, data={"grant_type": "password", "client_id": e["SQE_OIDC_CLIENT_ID"],
                                       "client_secret": e["SQE_OIDC_CLIENT_SECRET"],
                                       "username": "alice", "password": "alice-pw"}, timeout=30)
        t2 = time.perf_counter()
        r.raise_for_status()
        if i >= 3:  # the first ones open connections
            hs.append((t1 - t0) * 1e3)
            idp.append((t2 - t1) * 1e3)
    client.close()
    out = {"handshake": summary(hs), "idp_password_grant": summary(idp),
           "engine_p50_ms": round(pct(hs, 50) - pct(idp, 50), 3)}
    log(f"handshake p50 {pct(hs, 50):.1f} ms, IdP alone {pct(idp, 50):.1f} ms")
    return out


def streaming(engine: Engine, df: tpch.DataFusion, work: Path, runs: int) -> dict:
    import pyarrow as pa

    cur = engine.cur
    src = f"{engine.prefix[:-len('tpch_sf0_01')]}tpch_sf0_1.lineitem"
    cur.execute(f"CREATE TABLE datafusion.public.li AS SELECT * FROM {src}")
    cur.fetch_arrow_table()
    flight_s, ipc_s, file_s, nbytes = [], [], [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        cur.execute("SELECT * FROM datafusion.public.li")
        table = cur.fetch_arrow_table()
        flight_s.append(time.perf_counter() - t0)
        nbytes = table.nbytes
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        buf = sink.getvalue()
        t0 = time.perf_counter()
        back = pa.ipc.open_stream(buf).read_all()
        back.validate(full=True)
        ipc_s.append(time.perf_counter() - t0)
        # The same stream as a file read with plain reads (one copy, as a socket's receiver makes).
        path = work / "li.arrows"
        path.write_bytes(buf.to_pybytes())
        t0 = time.perf_counter()
        with pa.OSFile(str(path)) as f:
            back = pa.ipc.open_stream(f).read_all()
        back.validate(full=True)
        file_s.append(time.perf_counter() - t0)
        path.unlink()
        del table, back, buf
    cur.execute("DROP TABLE datafusion.public.li")
    cur.fetch_arrow_table()
    mb = nbytes / 1e6
    # End to end from MinIO: SQE vs DataFusion in-process on the same file.
    li = work / "lineitem.sql"
    li.write_text("SELECT * FROM lineitem")
    e2e = sqe_times(cur, f"SELECT * FROM {src}", runs)
    out = {"arrow_mb": round(mb, 1),
           "flight_from_memory_mb_s": round(mb / statistics.median(flight_s), 1),
           "ipc_in_process_mb_s": round(mb / statistics.median(ipc_s), 1),
           "ipc_file_in_process_mb_s": round(mb / statistics.median(file_s), 1),
           "sqe_lineitem_sf0_1_ms": summary(e2e)}
    out["flight_over_ipc"] = round(out["flight_from_memory_mb_s"] / out["ipc_in_process_mb_s"], 3)
    out["flight_over_ipc_file"] = round(out["flight_from_memory_mb_s"] / out["ipc_file_in_process_mb_s"], 3)
    out["sqe_lineitem_sf0_1_mb_s"] = round(mb / (pct(e2e, 50) / 1e3), 1)
    out["_df_file"] = str(li)
    log(f"streaming {mb:.0f} MB: Flight {out['flight_from_memory_mb_s']} MB/s, in-process IPC "
        f"{out['ipc_in_process_mb_s']} MB/s; SQE lineitem SF 0.1 {out['sqe_lineitem_sf0_1_mb_s']} MB/s")
    return out


def df_lineitem(df: tpch.DataFusion, file: Path, runs: int, mb: float) -> dict:
    d = bench_times(df, file, runs + 1)[1:]
    return {"in_process_ms": summary(d), "in_process_mb_s": round(mb / (pct(d, 50) / 1e3), 1)}


def start_to_ready(args, runs: int) -> dict:
    out = []
    for _ in range(runs):
        e = tpch.Sqe(args, "tpch_sf0_01")
        e.poll_s = 0.005
        e.start()
        out.append(e.info["start_to_ready_s"] * 1e3)
        e.stop()
    log(f"start to ready p50 {pct(out, 50):.0f} ms")
    return {"ms": [round(x, 1) for x in out], "p50_ms": round(pct(out, 50), 1),
            "note": "exec until /readyz answers 200, polled every 5 ms"}


def active_sessions() -> int:
    import requests

    text = requests.get(f"http://127.0.0.1:{tpch.ENGINE_HTTP_PORT}/metrics", timeout=5).text
    m = re.search(r"^sqe_sessions_active (\d+)", text, re.M)
    return int(m.group(1)) if m else -1


def idle_sessions(engine: Engine, n: int, idle_s: float, workers: int) -> dict:
    """On an engine that has served only its start-up `SELECT 1` (its heap holds no freed query
    memory that new sessions could reuse unseen)."""
    import pyarrow.flight as flight

    pid = engine.proc.pid
    opts = flight.FlightCallOptions(headers=[(b"x-sqe-auth-mode", b"client_credentials")])
    time.sleep(2)
    before = proc_stat(pid)

    def login_many(count: int) -> int:
        c = flight.FlightClient(f"grpc://127.0.0.1:{tpch.ENGINE_FLIGHT_PORT}")
        for _ in range(count):
            c.authenticate_basic_token(ETL_CLIENT, ETL_SECRET, opts)
        c.close()
        return count

    t0 = time.monotonic()
    share = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    with cf.ThreadPoolExecutor(workers) as pool:
        done = sum(pool.map(login_many, share))
    login_s = time.monotonic() - t0
    time.sleep(2)
    after = proc_stat(pid)
    t1 = time.monotonic()
    time.sleep(idle_s)
    idle = proc_stat(pid)
    wall = time.monotonic() - t1
    out = {"sessions": done, "active_sessions_metric": active_sessions(), "login_s": round(login_s, 1),
           "rss_before_mb": round(before["rss"] / 2**20, 1), "rss_after_mb": round(after["rss"] / 2**20, 1),
           "bytes_per_session": round((after["rss"] - before["rss"]) / done),
           "idle_s": round(wall, 1), "idle_cpu_s": round(idle["cpu_s"] - after["cpu_s"], 3),
           "idle_cpu_percent": round(100 * (idle["cpu_s"] - after["cpu_s"]) / wall, 3),
           "rss_after_idle_mb": round(idle["rss"] / 2**20, 1)}
    log(f"{done} sessions in {login_s:.0f} s: RSS {out['rss_before_mb']} -> {out['rss_after_mb']} MiB, "
        f"{out['bytes_per_session']} B/session; idle {wall:.0f} s: CPU {out['idle_cpu_s']} s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine-bin")
    ap.add_argument("--bench-bin")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--paced", type=int, default=50)
    ap.add_argument("--handshakes", type=int, default=50)
    ap.add_argument("--stream-runs", type=int, default=5)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--login-workers", type=int, default=4)
    ap.add_argument("--out", default=None, help="default: $SQE_CACHE/bench-results (smoke: .../smoke)")
    ap.add_argument("--smoke", action="store_true", help="small sizes, data dropped at the end (CI)")
    args = ap.parse_args()
    if args.smoke:
        args.queries, args.paced, args.handshakes, args.stream_runs = 50, 5, 5, 1
        args.starts, args.sessions, args.idle_seconds = 1, 200, 2
    args.out = args.out or str(tpch.results_dir() / ("smoke" if args.smoke else ""))
    tpch.stack_env()
    os.environ.setdefault("SQE_CACHE", str(Path.home() / ".cache" / "sqe"))
    data = [sys.executable, str(HERE / "data.py"), "--sf", "0.01", "--sf", "0.1"]
    subprocess.run(data, check=True, stdout=subprocess.DEVNULL)
    try:
        return measure(args)
    finally:
        if args.smoke:
            subprocess.run(data + ["--drop"], check=True, stdout=subprocess.DEVNULL)


def measure(args) -> int:
    cache = Path(os.environ["SQE_CACHE"]) / "tpch"
    run_args = types.SimpleNamespace(engine_bin=args.engine_bin, bench_bin=args.bench_bin,
                                     sqe_user="alice", sqe_password="alice-pw")
    work = Path(os.environ["SQE_STATE"]) / "overhead"
    work.mkdir(exist_ok=True)
    result = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "machine": tpch.machine()}
    result["start_to_ready"] = start_to_ready(run_args, args.starts)
    engine = Engine(run_args, args.sessions)
    df_small = tpch.DataFusion(run_args, "s3", cache / "sf0_01")
    df_big = tpch.DataFusion(run_args, "s3", cache / "sf0_1")
    try:
        engine.start()
        df_small.start()
        df_big.start()
        result["engine"] = {k: engine.info[k] for k in ("binary", "build")}
        result["tiny_queries"] = tiny_queries(engine, df_small, args.queries, work)
        result["catalog"] = catalog_share(engine, args.paced)
        result["handshake"] = handshakes(args.handshakes)
        s = streaming(engine, df_big, work, args.stream_runs)
        s.update(df_lineitem(df_big, Path(s.pop("_df_file")), args.stream_runs, s["arrow_mb"]))
        s["sqe_over_in_process_lineitem"] = round(s["sqe_lineitem_sf0_1_mb_s"] / s["in_process_mb_s"], 3)
        result["streaming"] = s
    finally:
        engine.stop()
        df_small.stop()
        df_big.stop()
    fresh = Engine(run_args, args.sessions)
    try:
        fresh.start()
        result["idle_sessions"] = idle_sessions(fresh, args.sessions, args.idle_seconds, args.login_workers)
    finally:
        fresh.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"overhead-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    log(f"wrote {path}")
    return 0


def print_table(r: dict) -> None:
    t, c, h, s, i = r["tiny_queries"], r["catalog"], r["handshake"], r["streaming"], r["idle_sessions"]
    rows = [
        ("SELECT 1, p50 / p99 (SQE vs in-process)",
         f"{t['select_1']['sqe']['p50_ms']} / {t['select_1']['sqe']['p99_ms']} ms vs "
         f"{t['select_1']['in_process']['p50_ms']} / {t['select_1']['in_process']['p99_ms']} ms"),
        ("SELECT 1 over raw Flight SQL (2 calls), p50 / p99",
         f"{t['select_1']['raw_flight']['p50_ms']} / {t['select_1']['raw_flight']['p99_ms']} ms"),
        ("tiny table (region), p50 / p99",
         f"{t['region']['sqe']['p50_ms']} / {t['region']['sqe']['p99_ms']} ms vs "
         f"{t['region']['in_process']['p50_ms']} / {t['region']['in_process']['p99_ms']} ms: "
         f"+{t['region']['added_p50_ms']} ms p50"),
        ("same, one query every 0.4 s (a loadTable each)",
         f"p50 {c['paced_queries']['p50_ms']} ms; Nessie loadTable p50 "
         f"{(c['nessie_load_ms'] or {}).get('p50_ms')} ms, of which MinIO STS {c['sts_ms_per_load']} ms"),
        ("handshake (Basic, password grant)",
         f"p50 {h['handshake']['p50_ms']} ms, IdP alone {h['idp_password_grant']['p50_ms']} ms: "
         f"engine {h['engine_p50_ms']} ms"),
        ("streaming from engine memory vs IPC in-process (from memory; from a file)",
         f"{s['flight_from_memory_mb_s']} vs {s['ipc_in_process_mb_s']} MB/s ({s['flight_over_ipc']}); "
         f"vs {s['ipc_file_in_process_mb_s']} MB/s ({s['flight_over_ipc_file']})"),
        ("SELECT * lineitem SF 0.1 from MinIO, SQE vs in-process",
         f"{s['sqe_lineitem_sf0_1_mb_s']} vs {s['in_process_mb_s']} MB/s ({s['sqe_over_in_process_lineitem']})"),
        ("start to ready", f"p50 {r['start_to_ready']['p50_ms']} ms"),
        (f"{i['sessions']} idle sessions",
         f"{i['bytes_per_session']} B each (RSS {i['rss_before_mb']} -> {i['rss_after_mb']} MiB); "
         f"CPU idle {i['idle_cpu_s']} s in {i['idle_s']} s"),
    ]
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{w}}  {b}")


if __name__ == "__main__":
    sys.exit(main())
