"""The demo's client (run by e2e/local/demo): log in to the engine as alice and as bob through ADBC
Flight SQL and show what each may see. Exits 1 if anything differs from the local stack's policy
(alice sees demo.a, b, c and counts c; bob sees demo.a, b and is refused c), so the demo doubles
as a smoke test.

Usage: demo_client.py grpc://127.0.0.1:50051 lake
"""

import re
import sys

import adbc_driver_flightsql.dbapi as flightsql

URI, WH = sys.argv[1], sys.argv[2]
USERS = {"alice": ("alice-pw", ["a", "b", "c"]), "bob": ("bob-pw", ["a", "b"])}
TABLES = f"SELECT table_name FROM {WH}.information_schema.tables WHERE table_schema = 'demo' ORDER BY 1"
COUNT = f"SELECT count(*) FROM {WH}.demo.c"


def grpc_error(err: flightsql.Error) -> tuple[str, str]:
    """(gRPC code, engine message) of a driver error such as
    "UNAUTHORIZED: [FlightSQL] <message> (PermissionDenied; Prepare)"."""
    m = re.search(r"\[FlightSQL\] (.*) \((\w+); \w+\)", str(err), re.S)
    if not m:
        return "ERROR", str(err)
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", m.group(2)).upper()  # PermissionDenied -> PERMISSION_DENIED
    return code, m.group(1)


def show(user: str, password: str, expected: list[str]) -> list[str]:
    """Runs the two queries as `user`, prints the answers, returns what was unexpected."""
    problems = []
    with flightsql.connect(
        URI, db_kwargs={"username": user, "password": password}, autocommit=True
    ) as conn, conn.cursor() as cur:
        cur.execute(TABLES)
        tables = [name for (name,) in cur.fetchall()]
        print(f"{user:6} tables in {WH}.demo: {', '.join(tables) or '(none)'}")
        if tables != expected:
            problems.append(f"{user} should see {expected}, sees {tables}")
        try:
            cur.execute(COUNT)
            (count,) = cur.fetchone()
            print(f"{user:6} {COUNT}  ->  {count} rows")
            if "c" not in expected:
                problems.append(f"{user} should be refused demo.c, read {count} rows")
            elif count <= 0:
                problems.append(f"{user} counted {count} rows in demo.c")
        except flightsql.Error as err:
            code, message = grpc_error(err)
            print(f"{user:6} {COUNT}  ->  {code}: {message}")
            if "c" in expected or code != "PERMISSION_DENIED":
                problems.append(f"{user}: {code} on demo.c: {message}")
    return problems


def main() -> int:
    problems = []
    for user, (password, expected) in USERS.items():
        try:
            problems += show(user, password, expected)
        except flightsql.Error as err:
            code, message = grpc_error(err)
            problems.append(f"{user}: {code}: {message}")
    for p in problems:
        print(f"UNEXPECTED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
