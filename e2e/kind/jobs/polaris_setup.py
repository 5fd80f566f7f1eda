"""Give Apache Polaris the local stack's access rules (e2e/local/nessie/application.properties).

The rules, as Polaris RBAC (management API, as the bootstrap principal `root`):
- sqe-admin (seeding) manages the whole catalog `lake`;
- alice reads demo.a, demo.b, demo.c and creates, writes and drops tables in alice_ws;
- bob reads demo.a and demo.b;
- carol is a principal with a principal role that has no grants: she reads nothing.
Keycloak users are Polaris principals of the same name (preferred_username); their realm roles
`PRINCIPAL_ROLE:<role>` (e2e/local/keycloak/sqe-realm.json) activate the principal roles. sqe-admin
has no such realm role in the shared realm file, so it is given one here through the admin API.

Differences that stay (Polaris's, not the rules'): listings are not filtered (bob's listTables
shows demo.c; loading it is refused with 403) and the namespace list is catalog-wide.

Environment: the SQE_* variables of e2e/local/env, plus SQE_POLARIS_URL (http://host:8181),
SQE_POLARIS_ROOT_SECRET (the bootstrap credentials' secret of principal root).
"""

import os
import sys

import requests

import setup

E = os.environ
CATALOG = E.get("SQE_CATALOG_WAREHOUSE", "lake")
ADMIN_ROLE = "sqe_admin_role"
USERS = {"alice": "alice_role", "bob": "bob_role", "carol": "carol_role", "sqe-admin": ADMIN_ROLE}


class Polaris:
    def __init__(self) -> None:
        base = E["SQE_POLARIS_URL"].rstrip("/")
        self.mgmt = f"{base}/api/management/v1"
        r = requests.post(
            f"{base}/api/catalog/v1/oauth/tokens",
            data={
                "grant_type": "client_credentials",
                "client_id": "root",
                "client_secret": E["SQE_POLARIS_ROOT_SECRET"],
                "scope": "PRINCIPAL_ROLE:ALL",
            },
            timeout=30,
        )
        r.raise_for_status()
        self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def call(self, method: str, path: str, body: dict) -> None:
        """One idempotent management call: 409 (already exists) counts as done."""
        r = requests.request(method, f"{self.mgmt}{path}", json=body, headers=self.headers, timeout=30)
        if r.status_code not in (200, 201, 204, 409):
            sys.exit(f"Polaris {method} {path} failed: HTTP {r.status_code} {r.text[:500]}")

    def grant(self, catalog_role: str, grant: dict) -> None:
        self.call("PUT", f"/catalogs/{CATALOG}/catalog-roles/{catalog_role}/grants", {"grant": grant})

    def catalog_role(self, name: str, principal_role: str) -> None:
        self.call("POST", f"/catalogs/{CATALOG}/catalog-roles", {"catalogRole": {"name": name}})
        self.call(
            "PUT", f"/principal-roles/{principal_role}/catalog-roles/{CATALOG}",
            {"catalogRole": {"name": name}},
        )


def keycloak_admin_role() -> None:
    """Realm role PRINCIPAL_ROLE:sqe_admin_role for the seeding user (tokens name it)."""
    base, realm = E["SQE_KEYCLOAK_URL"], E["SQE_KEYCLOAK_REALM"]
    h = {"Authorization": f"Bearer {setup.kc_admin_token()}"}
    name = f"PRINCIPAL_ROLE:{ADMIN_ROLE}"
    r = requests.post(f"{base}/admin/realms/{realm}/roles", json={"name": name}, headers=h, timeout=30)
    if r.status_code not in (201, 409):
        sys.exit(f"creating Keycloak role {name} failed: HTTP {r.status_code} {r.text[:300]}")
    role = requests.get(f"{base}/admin/realms/{realm}/roles/{name}", headers=h, timeout=30).json()
    users = requests.get(
        f"{base}/admin/realms/{realm}/users", params={"username": E["SQE_CATALOG_ADMIN"], "exact": "true"},
        headers=h, timeout=30,
    ).json()
    if len(users) != 1:
        sys.exit(f"Keycloak user {E['SQE_CATALOG_ADMIN']} not found")
    r = requests.post(
        f"{base}/admin/realms/{realm}/users/{users[0]['id']}/role-mappings/realm",
        json=[role], headers=h, timeout=30,
    )
    if r.status_code not in (200, 204):
        sys.exit(f"assigning {name} failed: HTTP {r.status_code} {r.text[:300]}")


def principals() -> None:
    """Catalog, principals, principal roles and the admin's rights; before seeding."""
    keycloak_admin_role()
    p = Polaris()
    endpoint = E["SQE_S3_ENDPOINT"]
    location = f"s3://{E['SQE_S3_BUCKET']}/"
    p.call("POST", "/catalogs", {"catalog": {
        "name": CATALOG, "type": "INTERNAL",
        "properties": {"default-base-location": location},
        # No roleArn: with one (and a region) Polaris adds a KMS statement MinIO's STS rejects.
        "storageConfigInfo": {
            "storageType": "S3", "allowedLocations": [location], "endpoint": endpoint,
            "stsEndpoint": endpoint, "pathStyleAccess": True, "region": E["SQE_S3_REGION"],
        },
    }})
    for user, role in USERS.items():
        p.call("POST", "/principals", {"principal": {"name": user}, "credentialRotationRequired": False})
        p.call("POST", "/principal-roles", {"principalRole": {"name": role}})
        p.call("PUT", f"/principals/{user}/principal-roles", {"principalRole": {"name": role}})
    # catalog_admin (created with the catalog) may manage grants and metadata, not data: add data.
    p.grant("catalog_admin", {"type": "catalog", "privilege": "CATALOG_MANAGE_CONTENT"})
    p.call(
        "PUT", f"/principal-roles/{ADMIN_ROLE}/catalog-roles/{CATALOG}",
        {"catalogRole": {"name": "catalog_admin"}},
    )
    print("[sqe-kind] Polaris catalog, principals and roles set up", file=sys.stderr)


def grants() -> None:
    """The per-table rules; after seeding, since a table grant names an existing table."""
    p = Polaris()
    readers = {"alice_reader": ("alice_role", ["a", "b", "c"]), "bob_reader": ("bob_role", ["a", "b"])}
    for catalog_role, (principal_role, tables) in readers.items():
        p.catalog_role(catalog_role, principal_role)
        p.grant(catalog_role, {"type": "catalog", "privilege": "NAMESPACE_LIST"})
        for priv in ("TABLE_LIST", "NAMESPACE_READ_PROPERTIES"):
            p.grant(catalog_role, {"type": "namespace", "namespace": ["demo"], "privilege": priv})
        for t in tables:
            p.grant(catalog_role, {
                "type": "table", "namespace": ["demo"], "tableName": t, "privilege": "TABLE_READ_DATA",
            })
    # alice owns alice_ws: create, list, read, write and drop its tables.
    p.catalog_role("alice_ws_owner", "alice_role")
    for priv in (
        "NAMESPACE_READ_PROPERTIES", "TABLE_LIST", "TABLE_CREATE", "TABLE_DROP", "TABLE_READ_PROPERTIES",
        "TABLE_WRITE_PROPERTIES", "TABLE_READ_DATA", "TABLE_WRITE_DATA",
    ):
        p.grant("alice_ws_owner", {"type": "namespace", "namespace": ["alice_ws"], "privilege": priv})
    print("[sqe-kind] Polaris grants set up (alice: demo.a/b/c + alice_ws, bob: demo.a/b)", file=sys.stderr)
