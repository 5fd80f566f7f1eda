"""The kind suite's end-to-end checks, through the engine's Service with ADBC (run in a Job).

usage: check.py grpc://NAME.NAMESPACE.svc:50051 WAREHOUSE

- alice lists demo.a, b, c and counts demo.c: exactly the rows e2e/local/seed.py wrote;
- bob lists demo.a, b and is refused demo.c (a permission denial, not an error);
- carol lists no table of demo and is refused demo.a.
Prints one line per check; exits 1 if any fails.
"""

import re
import sys

import adbc_driver_flightsql.dbapi as flightsql

from seed import ROWS

URI, WH = sys.argv[1], sys.argv[2]
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
LISTS = {"alice": ["a", "b", "c"], "bob": ["a", "b"], "carol": []}
DENIED = re.compile(r"\((PermissionDenied|NotFound); ")  # the gRPC code in the driver's message


def run(user: str, sql: str):
    """(rows, None) or (None, error) for one query as `user`."""
    with flightsql.connect(
        URI, db_kwargs={"username": user, "password": PASSWORDS[user]}, autocommit=True
    ) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql)
            return cur.fetchall(), None
        except flightsql.Error as err:
            return None, err


def main() -> int:
    failures = []

    def check(ok: bool, what: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    for user, expected in LISTS.items():
        rows, err = run(
            user,
            f"SELECT table_name FROM {WH}.information_schema.tables "
            "WHERE table_schema = 'demo' ORDER BY 1",
        )
        seen = [r[0] for r in rows] if rows is not None else f"error: {err}"
        check(seen == expected, f"{user} lists demo tables {expected} (got {seen})")

    rows, err = run("alice", f"SELECT count(*) FROM {WH}.demo.c")
    count = rows[0][0] if rows else f"error: {err}"
    check(count == ROWS["c"], f"alice counts {WH}.demo.c = {ROWS['c']} (got {count})")

    for user, table in (("bob", "c"), ("carol", "a")):
        rows, err = run(user, f"SELECT count(*) FROM {WH}.demo.{table}")
        refused = err is not None and bool(DENIED.search(str(err)))
        check(refused, f"{user} is refused {WH}.demo.{table} (got {err or rows})")

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
