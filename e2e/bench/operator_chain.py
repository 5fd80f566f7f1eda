"""Benchmark: planning time of an operator chain (`SELECT 1+1+…+1`) against a 10-term reference,
in the same engine and run, alternating. It is what sets the engine's limit of 1000 chained
operators (engine/src/policy.rs): the time grows with the square of the chain's length.

    eval "$(e2e/local/env)"
    $SQE_PYTHON e2e/bench/operator_chain.py grpc://127.0.0.1:50051 [terms] [runs]

`terms` must stay within the limit (at most 1001 terms); the engine refuses longer chains.
"""

import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as adbc


def timed(cur, terms: int) -> float:
    sql = "SELECT " + "+".join(["1"] * terms) + " AS x"
    t0 = time.monotonic()
    cur.execute(sql)
    assert cur.fetch_arrow_table().to_pylist() == [{"x": terms}]
    return time.monotonic() - t0


def main() -> None:
    uri = sys.argv[1]
    terms = int(sys.argv[2]) if len(sys.argv) > 2 else 1001
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    ref, long = [], []
    with adbc.connect(uri, db_kwargs={"username": "alice", "password": "alice-pw"}, autocommit=True) as conn:
        with conn.cursor() as cur:
            for _ in range(runs):
                ref.append(timed(cur, 10))
                long.append(timed(cur, terms))
    r, l = statistics.median(ref), statistics.median(long)
    print(f"10 terms: median {r * 1000:.1f} ms; {terms} terms: median {l * 1000:.1f} ms; ratio {l / r:.0f}x ({runs} alternating runs)")


if __name__ == "__main__":
    main()
