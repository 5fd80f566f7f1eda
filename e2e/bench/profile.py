"""Where SQE's time goes on a TPC-H query, against DataFusion in-process on the same MinIO files.

    "$(e2e/bench/venv)" e2e/bench/profile.py --sf 1 --query 18 --query 21 --query 9 \
        --engine-bin $T/sqe-engine --bench-bin $T/sqe-bench

For each query, each system runs it --runs times (after one warm-up run) under
`perf record -g -p <pid>` (Debian's perf, 499 Hz); meanwhile the script counts the process's CPU
seconds (/proc/<pid>/stat), the catalog's requests (Nessie's access log) and the object store's
(MinIO's audit log, with MinIO's own time for them). Printed per query and system: wall time per
run, CPU per run, catalog calls and time, S3 requests, bytes and time, and the top symbols of the
profile; written to --out (default $SQE_CACHE/bench-results/profiles/): <query>-<system>.txt
(perf report) and profile-<time>.json. The difference in wall time that is not CPU is waiting:
for the catalog, for MinIO.
"""

import argparse
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tpch  # noqa: E402
from overhead import lines, nessie_ms, proc_stat  # noqa: E402


def log(msg: str) -> None:
    print(f"[profile] {msg}", file=sys.stderr, flush=True)


def measure(system, pid: int, name: str, sql: str, runs: int, perf_out: Path) -> dict:
    state = Path(os.environ["SQE_STATE"])
    nessie, audit = state / "nessie-access.log", state / "minio-audit.jsonl"
    system.run(name, sql)  # warm-up: connections, footers, JIT of nothing
    time.sleep(0.5)
    mark_n, mark_a = len(lines(nessie)), len(lines(audit))
    perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", str(perf_out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    cpu0 = proc_stat(pid)["cpu_s"]
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        system.run(name, sql)
        walls.append(time.perf_counter() - t0)
        time.sleep(0.3)  # past the engine's 250 ms reuse of a load: every run loads its tables
    cpu = proc_stat(pid)["cpu_s"] - cpu0
    perf.send_signal(signal.SIGINT)
    perf.wait(60)
    time.sleep(1.5)  # audit delivery
    loads = [l for l in lines(nessie)[mark_n:] if "/tables/" in l]
    load_ms = sum(nessie_ms(l) or 0 for l in loads)
    s3 = [json.loads(l)["api"] for l in lines(audit)[mark_a:]]
    gets = [a for a in s3 if a.get("name") == "GetObject"]
    return {
        "wall_ms": round(statistics.median(walls) * 1e3, 1),
        "cpu_ms_per_run": round(cpu / runs * 1e3, 1),
        "catalog_calls_per_run": round(len(loads) / runs, 2),
        "catalog_ms_per_run": round(load_ms / runs, 1),
        "s3_gets_per_run": round(len(gets) / runs, 1),
        "s3_mb_per_run": round(sum(int(a.get("tx", 0)) for a in gets) / runs / 1e6, 1),
        "s3_minio_ms_per_run": round(sum(int(a["timeToResponseInNS"]) for a in gets) / runs / 1e6, 1),
        "sts_calls_per_run": round(sum(1 for a in s3 if a.get("name", "").startswith("AssumeRole")) / runs, 1),
    }


def top_symbols(perf_data: Path, report: Path, n: int = 25) -> list[str]:
    text = subprocess.run(["perf", "report", "-i", str(perf_data), "--no-children", "--sort",
                           "dso,symbol", "--stdio", "-g", "none", "--percent-limit", "0.5"],
                          capture_output=True, text=True).stdout
    text = "\n".join(l.rstrip() for l in text.splitlines()) + "\n"
    report.write_text(text)
    return [l.strip() for l in text.splitlines() if re.match(r"\s+\d+\.\d+%", l)][:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", default="1")
    ap.add_argument("--query", action="append", default=[])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--engine-bin")
    ap.add_argument("--bench-bin")
    ap.add_argument("--out", help="default: $SQE_CACHE/bench-results/profiles")
    args = ap.parse_args()
    tpch.stack_env()
    os.environ.setdefault("SQE_CACHE", str(Path.home() / ".cache" / "sqe"))
    ns = f"tpch_sf{args.sf.replace('.', '_')}"
    run_args = types.SimpleNamespace(engine_bin=args.engine_bin, bench_bin=args.bench_bin,
                                     sqe_user="alice", sqe_password="alice-pw")
    out = Path(args.out) if args.out else tpch.results_dir() / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    queries = tpch.load_queries(args.query or ["18", "21", "9"])
    sqe = tpch.Sqe(run_args, ns)
    df = tpch.DataFusion(run_args, "s3", Path(os.environ["SQE_CACHE"]) / "tpch" / f"sf{args.sf.replace('.', '_')}")
    result = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "machine": tpch.machine(),
              "queries": {}}
    try:
        sqe.start()
        df.start()
        for name, sql in queries.items():
            per = {}
            for system, pid in ((sqe, sqe.proc.pid), (df, df.proc.pid)):
                perf_data = out / f"{name}-{system.name}.perf.data"
                m = measure(system, pid, name, sql, args.runs, perf_data)
                m["top"] = top_symbols(perf_data, out / f"{name}-{system.name}.txt")
                perf_data.unlink(missing_ok=True)
                per[system.name] = m
                log(f"{name} {system.name}: " + ", ".join(f"{k} {v}" for k, v in m.items() if k != "top"))
            result["queries"][name] = per
    finally:
        sqe.stop()
        df.stop()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"profile-sf{args.sf.replace('.', '_')}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for name, per in result["queries"].items():
        s, d = per["sqe"], per["datafusion-s3"]
        print(f"{name}: wall SQE {s['wall_ms']} ms vs {d['wall_ms']} ms; CPU {s['cpu_ms_per_run']} vs "
              f"{d['cpu_ms_per_run']} ms; catalog {s['catalog_calls_per_run']} calls {s['catalog_ms_per_run']} ms; "
              f"S3 GETs {s['s3_gets_per_run']} vs {d['s3_gets_per_run']}, MinIO time {s['s3_minio_ms_per_run']} vs "
              f"{d['s3_minio_ms_per_run']} ms")
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
