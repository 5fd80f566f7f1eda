"""Seed the catalog through its own Iceberg REST API, as the catalog admin. Idempotent.

- namespace `demo`: Iceberg tables a, b, c with deterministic rows (seeded RNG; the same rows on
  every fresh state dir, so tests can compare results); b is partitioned by `region`.
- namespace `alice_ws`: empty; alice may create tables in it.

Written with pyiceberg as the Keycloak user sqe-admin; data files go to MinIO with the STS
credentials the catalog vends for each table (X-Iceberg-Access-Delegation: vended-credentials).
The `rows_*` functions are imported by the tests to know what the tables hold.
"""

import datetime as dt
import os
import random
import sys
from decimal import Decimal

import pyarrow as pa
import requests

E = os.environ

ROWS = {"a": 3000, "b": 2000, "c": 1500}
EPOCH = dt.datetime(2024, 1, 1)
REGIONS = ["emea", "amer", "apac"]

SCHEMA_A = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("amount", pa.decimal128(12, 2)),
        pa.field("score", pa.float64()),
        pa.field("active", pa.bool_()),
        pa.field("created_at", pa.timestamp("us")),
        pa.field("day", pa.date32()),
    ]
)
SCHEMA_B = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        pa.field("customer_id", pa.int64()),
        pa.field("region", pa.string()),
        pa.field("qty", pa.int32()),
        pa.field("price", pa.decimal128(10, 2)),
        pa.field("ordered_at", pa.timestamp("us", tz="UTC")),
    ]
)
SCHEMA_C = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("employee", pa.string()),
        pa.field("salary", pa.decimal128(12, 2)),
        pa.field("updated_at", pa.timestamp("us")),
    ]
)


def rows_a() -> pa.Table:
    rng = random.Random(1001)
    n = ROWS["a"]
    ts = [EPOCH + dt.timedelta(seconds=rng.randrange(0, 365 * 86400)) for _ in range(n)]
    return pa.Table.from_pydict(
        {
            "id": list(range(1, n + 1)),
            "name": [f"name-{rng.randrange(0, 500):03d}" for _ in range(n)],
            "amount": [Decimal(rng.randrange(0, 10_000_000)) / 100 for _ in range(n)],
            "score": [round(rng.random() * 100, 6) for _ in range(n)],
            "active": [rng.random() < 0.7 for _ in range(n)],
            "created_at": ts,
            "day": [t.date() for t in ts],
        },
        schema=SCHEMA_A,
    )


def rows_b() -> pa.Table:
    rng = random.Random(2002)
    n = ROWS["b"]
    utc = dt.timezone.utc
    return pa.Table.from_pydict(
        {
            "order_id": list(range(1, n + 1)),
            "customer_id": [rng.randrange(1, 300) for _ in range(n)],
            "region": [rng.choice(REGIONS) for _ in range(n)],
            "qty": [rng.randrange(1, 20) for _ in range(n)],
            "price": [Decimal(rng.randrange(100, 100_000)) / 100 for _ in range(n)],
            "ordered_at": [
                EPOCH.replace(tzinfo=utc) + dt.timedelta(minutes=rng.randrange(0, 180 * 1440))
                for _ in range(n)
            ],
        },
        schema=SCHEMA_B,
    )


def rows_c() -> pa.Table:
    rng = random.Random(3003)
    n = ROWS["c"]
    return pa.Table.from_pydict(
        {
            "id": list(range(1, n + 1)),
            "employee": [f"employee-{i:05d}" for i in range(1, n + 1)],
            "salary": [Decimal(rng.randrange(3_000_000, 25_000_000)) / 100 for _ in range(n)],
            "updated_at": [
                EPOCH + dt.timedelta(seconds=rng.randrange(0, 365 * 86400)) for _ in range(n)
            ],
        },
        schema=SCHEMA_C,
    )


TABLES = {"a": (rows_a, None), "b": (rows_b, "region"), "c": (rows_c, None)}


def user_token(user: str, password: str) -> str:
    r = requests.post(
        f"{E['SQE_OIDC_ISSUER']}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": E["SQE_OIDC_CLIENT_ID"],
            "client_secret": E["SQE_OIDC_CLIENT_SECRET"],
            "username": user,
            "password": password,
        },
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["access_token"]


def catalog(token: str):
    from pyiceberg.catalog.rest import RestCatalog

    return RestCatalog(
        "sqe",
        **{
            "uri": E["SQE_CATALOG_URI"],
            "warehouse": E["SQE_CATALOG_WAREHOUSE"],
            "token": token,
            "header.X-Iceberg-Access-Delegation": "vended-credentials",
        },
    )


def seed() -> None:
    from pyiceberg.exceptions import NoSuchTableError

    cat = catalog(user_token(E["SQE_CATALOG_ADMIN"], E["SQE_CATALOG_ADMIN_PASSWORD"]))
    for ns in ("demo", "alice_ws"):
        cat.create_namespace_if_not_exists(ns)
    for name, (rows, part_col) in TABLES.items():
        ident = f"demo.{name}"
        data = rows()
        try:
            table = cat.load_table(ident)
        except NoSuchTableError:
            table = cat.create_table(ident, schema=data.schema)
            if part_col:
                with table.update_spec() as upd:
                    upd.add_identity(part_col)
        if table.current_snapshot() is None:
            table.append(data)
            print(f"[sqe-local] seeded {ident}: {data.num_rows} rows", file=sys.stderr)


if __name__ == "__main__":
    seed()
