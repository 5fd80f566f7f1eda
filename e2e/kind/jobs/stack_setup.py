"""Set up and seed the kind suite's stack with the local stack's own code (run in a Job).

usage: stack_setup.py polaris|nessie

The same steps as e2e/local/up, against the in-cluster endpoints the Job's environment names
(the SQE_* variables of e2e/local/env): the realm and bucket (e2e/local/setup.py), then the demo
tables through the catalog as sqe-admin (e2e/local/seed.py). For Polaris, its principals and
roles come first (the seeding identity must exist there) and the per-table grants last (a grant
names a table that must exist).
"""

import sys

import seed
import setup


def main() -> None:
    catalog = sys.argv[1]
    setup.setup_keycloak()
    setup.setup_minio()
    if catalog == "polaris":
        import polaris_setup

        polaris_setup.principals()
        seed.seed()
        polaris_setup.grants()
    elif catalog == "nessie":
        seed.seed()
    else:
        sys.exit(f"unknown catalog {catalog!r} (polaris or nessie)")
    print(f"[sqe-kind] stack set up and seeded ({catalog})", file=sys.stderr)


if __name__ == "__main__":
    main()
