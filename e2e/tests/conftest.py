"""Fixtures for tests that run against the real local stack (e2e/local/up).

The stack is started by e2e/run-tests before pytest; these fixtures only talk to it.
"""

import base64
import json
import os
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def _stack_env() -> dict:
    required = ["SQE_KEYCLOAK_URL", "SQE_KEYCLOAK_REALM", "SQE_OIDC_CLIENT_ID", "SQE_S3_ENDPOINT"]
    missing = [k for k in required if k not in os.environ]
    if missing:
        pytest.exit(
            f"local stack variables missing ({', '.join(missing)}): run `eval \"$(e2e/local/env)\"` "
            "after `e2e/local/up`, or use e2e/run-tests",
            returncode=2,
        )
    return dict(os.environ)


@pytest.fixture(scope="session")
def stack() -> dict:
    return _stack_env()


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


class Keycloak:
    """Thin client for the real Keycloak: user grants and the admin REST API."""

    def __init__(self, env: dict):
        self.url = env["SQE_KEYCLOAK_URL"]
        self.realm = env["SQE_KEYCLOAK_REALM"]
        self.client_id = env["SQE_OIDC_CLIENT_ID"]
        self.client_secret = env["SQE_OIDC_CLIENT_SECRET"]
        self.admin_user = env["SQE_KEYCLOAK_ADMIN"]
        self.admin_password = env["SQE_KEYCLOAK_ADMIN_PASSWORD"]

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{self.realm}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    def grant(self, **form) -> requests.Response:
        form = {"client_id": self.client_id, "client_secret": self.client_secret, **form}
        return requests.post(self.token_endpoint, data=form, timeout=30)

    def password_grant(self, user: str, password: str) -> dict:
        r = self.grant(grant_type="password", username=user, password=password)
        r.raise_for_status()
        return r.json()

    def admin_token(self) -> str:
        r = requests.post(
            f"{self.url}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": self.admin_user,
                "password": self.admin_password,
            },
            timeout=30,
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def admin(self, method: str, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.admin_token()}"}
        return requests.request(
            method, f"{self.url}/admin/realms/{self.realm}{path}", headers=headers, timeout=30, **kw
        )

    def user_id(self, username: str) -> str:
        r = self.admin("GET", "/users", params={"username": username, "exact": "true"})
        r.raise_for_status()
        (user,) = [u for u in r.json() if u["username"] == username]
        return user["id"]

    def events(self, *, types: list[str], user: str | None = None, since_ms: int = 0) -> list[dict]:
        params = [("type", t) for t in types] + [("max", "500"), ("client", self.client_id)]
        if user:
            params.append(("user", self.user_id(user)))
        r = self.admin("GET", "/events", params=params)
        r.raise_for_status()
        return [e for e in r.json() if e["time"] >= since_ms]

    def set_access_token_lifespan(self, seconds: int) -> None:
        r = self.admin("PUT", "", json={"accessTokenLifespan": seconds})
        r.raise_for_status()


@pytest.fixture(scope="session")
def keycloak(stack) -> Keycloak:
    return Keycloak(stack)


class MinioAudit:
    """Reads the JSON lines our audit receiver appends for every MinIO request."""

    def __init__(self, path: str):
        self.path = Path(path)

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def wait_for(self, predicate, timeout: float = 15.0, since: int = 0) -> list[dict]:
        """Delivery is asynchronous: poll until some entry (from index `since` on) matches."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.entries()[since:] if predicate(e)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.25)


    @staticmethod
    def object_read(prefix: str):
        """Predicate: a GET or HEAD of an object whose bucket-relative key starts with `prefix`."""

        def match(e: dict) -> bool:
            api = e.get("api", {})
            return api.get("name") in {"GetObject", "HeadObject"} and api.get("object", "").startswith(prefix)

        return match


@pytest.fixture(scope="session")
def minio_audit(stack) -> MinioAudit:
    return MinioAudit(stack["SQE_AUDIT_LOG"])


class CatalogRest:
    """Thin client for the real Iceberg REST catalog (Nessie) of the local stack, as a user."""

    def __init__(self, env: dict, keycloak: Keycloak):
        self.uri = env["SQE_CATALOG_URI"].rstrip("/")
        self.warehouse = env["SQE_CATALOG_WAREHOUSE"]
        self.keycloak = keycloak
        self.access_log = Path(env["SQE_CATALOG_AUDIT_LOG"])
        self._prefix = None

    PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

    def token(self, user: str) -> str:
        if user == "sqe-admin":
            return self.keycloak.password_grant(user, "sqe-admin-pw")["access_token"]
        return self.keycloak.password_grant(user, self.PASSWORDS[user])["access_token"]

    def headers(self, token: str | None, vended: bool = True) -> dict:
        h = {"X-Iceberg-Access-Delegation": "vended-credentials"} if vended else {}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return h

    @property
    def prefix(self) -> str:
        """The URL prefix the catalog's /v1/config hands out for the warehouse (e.g. main%7Clake)."""
        if self._prefix is None:
            r = requests.get(
                f"{self.uri}/v1/config",
                params={"warehouse": self.warehouse},
                headers=self.headers(self.token("alice")),
                timeout=30,
            )
            r.raise_for_status()
            body = r.json()
            self._prefix = {**body.get("defaults", {}), **body.get("overrides", {})}["prefix"]
        return self._prefix

    def request(self, method: str, path: str, token: str | None, **kw) -> requests.Response:
        headers = {**self.headers(token), **kw.pop("headers", {})}
        return requests.request(
            method, f"{self.uri}/v1/{self.prefix}{path}", headers=headers, timeout=60, **kw
        )

    def load_table(self, token: str | None, namespace: str, table: str, **kw) -> requests.Response:
        return self.request("GET", f"/namespaces/{namespace}/tables/{table}", token, **kw)

    def pyiceberg(self, token: str):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(
            "sqe",
            **{
                "uri": self.uri,
                "warehouse": self.warehouse,
                "token": token,
                "header.X-Iceberg-Access-Delegation": "vended-credentials",
            },
        )

    def access_log_lines(self) -> list[str]:
        if not self.access_log.exists():
            return []
        return self.access_log.read_text(encoding="utf-8").splitlines()

    def wait_for_lines(self, predicate, since: int = 0, timeout: float = 10.0) -> list[str]:
        """Nessie writes its access log asynchronously: poll until some line (from index `since`
        on) matches, then give every matching line."""
        deadline = time.monotonic() + timeout
        while True:
            found = [l for l in self.access_log_lines()[since:] if predicate(l)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


@pytest.fixture(scope="session")
def catalog(stack, keycloak) -> CatalogRest:
    if "SQE_CATALOG_URI" not in stack:
        pytest.exit("SQE_CATALOG_URI missing: re-run `eval \"$(e2e/local/env)\"`", returncode=2)
    return CatalogRest(stack, keycloak)
