"""Configure the running local stack through the services' own APIs. Idempotent.

- Keycloak: import realm `sqe` from e2e/local/keycloak/sqe-realm.json via the admin REST API
  (the same JSON `--import-realm` would read; the API lets us keep the H2 DB in the state dir).
- MinIO: create the warehouse bucket (root credentials; only the catalog's STS calls use them).
"""

import json
import os
import sys
import time

import boto3
import requests
from botocore.config import Config

E = os.environ


def kc_admin_token() -> str:
    # On its first start in a fresh state dir Keycloak can report ready while it still creates
    # the master realm and its bootstrap admin, answering 503 meanwhile: retried for a minute.
    for _ in range(60):
        r = requests.post(
            f"{E['SQE_KEYCLOAK_URL']}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": E["SQE_KEYCLOAK_ADMIN"],
                "password": E["SQE_KEYCLOAK_ADMIN_PASSWORD"],
            },
            timeout=30,
        )
        if r.status_code != 503:
            break
        time.sleep(1)
    r.raise_for_status()
    return r.json()["access_token"]


def setup_keycloak() -> None:
    base = E["SQE_KEYCLOAK_URL"]
    headers = {"Authorization": f"Bearer {kc_admin_token()}"}
    realm = E["SQE_KEYCLOAK_REALM"]
    r = requests.get(f"{base}/admin/realms/{realm}", headers=headers, timeout=30)
    if r.status_code == 200:
        return
    with open(E["SQE_REALM_FILE"], encoding="utf-8") as f:
        rep = json.load(f)
    r = requests.post(f"{base}/admin/realms", headers=headers, json=rep, timeout=60)
    if r.status_code not in (201, 409):
        sys.exit(f"importing realm {realm} failed: HTTP {r.status_code} {r.text[:500]}")
    print(f"[sqe-local] realm {realm} imported", file=sys.stderr)


def setup_minio() -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=E["SQE_S3_ENDPOINT"],
        aws_access_key_id=E["SQE_MINIO_ROOT_USER"],
        aws_secret_access_key=E["SQE_MINIO_ROOT_PASSWORD"],
        region_name=E["SQE_S3_REGION"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 10}),
    )
    bucket = E["SQE_S3_BUCKET"]
    for attempt in range(30):  # IAM can briefly report "server not initialized"
        try:
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if bucket not in existing:
                s3.create_bucket(Bucket=bucket)
                print(f"[sqe-local] bucket {bucket} created", file=sys.stderr)
            return
        except Exception as e:  # noqa: BLE001 — retried, then reported
            if attempt == 29:
                sys.exit(f"creating bucket {bucket} failed: {e}")
            time.sleep(1)


if __name__ == "__main__":
    setup_keycloak()
    setup_minio()
