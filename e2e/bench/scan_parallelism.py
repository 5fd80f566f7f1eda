"""Benchmark: the engine's parallel Iceberg scan against the same scan in one partition.

Runs against a started engine and the local stack (through ADBC, as alice). It builds a table of
N rows in `lake.alice_ws` from several INSERTs (so it has several data files), then times the
same aggregate query with `datafusion.execution.target_partitions` = 1 (the reference: one scan
partition, as iceberg-datafusion's own scan) and = the engine's default, alternating runs so
noise hits both alike. Prints the median times and their ratio; the table is dropped at the end.

    eval "$(e2e/local/env)"
    $SQE_PYTHON e2e/bench/scan_parallelism.py grpc://127.0.0.1:50051 [rows] [inserts] [runs]
"""

import os
import statistics
import sys
import time
import uuid

import adbc_driver_flightsql.dbapi as adbc
import requests


def data_files(table: str) -> int:
    """How many data files iceberg plans for the table (pyiceberg as alice, from the stack env)."""
    from pyiceberg.catalog.rest import RestCatalog

    env = os.environ
    token = requests.post(
        f"{env['SQE_KEYCLOAK_URL']}/realms/sqe/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "sqe", "client_secret": env["SQE_OIDC_CLIENT_SECRET"],
              "username": "alice", "password": "alice-pw"},
        timeout=30,
    ).json()["access_token"]
    catalog = RestCatalog("sqe", uri=env["SQE_CATALOG_URI"], warehouse=env.get("SQE_CATALOG_WAREHOUSE", "lake"),
                          token=token, **{"header.X-Iceberg-Access-Delegation": "vended-credentials"})
    return len(list(catalog.load_table(table.removeprefix("lake.")).scan().plan_files()))


def main() -> None:
    uri = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:50051"
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
    inserts = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 7
    table = f"lake.alice_ws.bench_{uuid.uuid4().hex[:8]}"
    conn = adbc.connect(uri, db_kwargs={"username": "alice", "password": "alice-pw"}, autocommit=True)
    cur = conn.cursor()

    def run(sql: str):
        cur.execute(sql)
        return cur.fetchall()

    run(f"CREATE TABLE {table} (id BIGINT, k BIGINT, v DOUBLE, s VARCHAR)")
    try:
        per = rows // inserts
        for i in range(inserts):
            lo = i * per
            run(f"INSERT INTO {table} SELECT value, value % 1000, value * 0.5, 'row-' || value "
                f"FROM generate_series({lo}, {lo + per - 1})")
        query = f"SELECT k, count(*), sum(v), max(s) FROM {table} WHERE id % 3 <> 0 GROUP BY k"
        default = int(run("SELECT value FROM information_schema.df_settings "
                          "WHERE name = 'datafusion.execution.target_partitions'")[0][0])
        times = {1: [], default: []}
        for _ in range(runs):
            for parts in (1, default):
                run(f"SET datafusion.execution.target_partitions = {parts}")
                t0 = time.perf_counter()
                out = run(query)
                times[parts].append(time.perf_counter() - t0)
                assert len(out) == 1000, len(out)
        one, many = statistics.median(times[1]), statistics.median(times[default])
        files = data_files(table)
        print(f"table: {rows} rows in {files} Parquet files from {inserts} inserts")
        print(f"query: {query}")
        print(f"median of {runs}: 1 partition {one * 1000:.0f} ms, {default} partitions {many * 1000:.0f} ms")
        print(f"ratio (1 partition / {default} partitions): {one / many:.2f}x")
    finally:
        run(f"DROP TABLE {table}")
        conn.close()


if __name__ == "__main__":
    main()
