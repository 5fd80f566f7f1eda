"""The Iceberg REST catalog of the local stack (Project Nessie 0.99.0, standing in for Polaris) is
real: it authenticates Keycloak JWTs, authorizes per user with its CEL rules, vends table-scoped
MinIO STS credentials per call, and records the principal of every call.

Runs against the processes started by e2e/local/up, with tokens from Keycloak's password grant.
"""

import base64
import io
import json
import re
import sys
import time
import uuid

import boto3
import pyarrow.parquet as pq
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ROOT, jwt_claims

sys.path.insert(0, str(ROOT / "e2e" / "local"))
import seed  # noqa: E402  (the seeding script: what the demo tables hold)

CFG = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
VENDED = ("s3.access-key-id", "s3.secret-access-key", "s3.session-token")


def _s3(stack, cfg: dict):
    return boto3.client(
        "s3",
        endpoint_url=stack["SQE_S3_ENDPOINT"],
        aws_access_key_id=cfg["s3.access-key-id"],
        aws_secret_access_key=cfg["s3.secret-access-key"],
        aws_session_token=cfg["s3.session-token"],
        region_name=stack["SQE_S3_REGION"],
        config=CFG,
    )


def _key_of(location: str, bucket: str) -> str:
    prefix = f"s3://{bucket}/"
    assert location.startswith(prefix), location
    return location[len(prefix):].rstrip("/")


def _data_files(s3, bucket: str, table_location: str) -> list[str]:
    """Data files of a table, listed with the vended credentials themselves (ListBucket is
    allowed only under the table's own prefix)."""
    prefix = _key_of(table_location, bucket) + "/data/"
    objs = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in objs if o["Key"].endswith(".parquet")]


def _assert_denied(r: requests.Response, user: str, path: str) -> None:
    """Nessie 0.99 answers an authorization failure on the Iceberg REST API with HTTP 500 and
    error type AccessCheckException: IcebergErrorMapper has no analyzer for AccessCheckException
    (catalog/service/rest/.../IcebergErrorMapper.java and servers/quarkus-catalog/.../
    CatalogProducers.java; unchanged up to 0.108.4), unlike Polaris's 403. Whoever calls the
    catalog must treat this response as "permission denied"."""
    assert r.status_code == 500, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["type"] == "AccessCheckException"
    assert f"role '{user}'" in err["message"] and f"'{path}'" in err["message"], err
    assert "s3." not in r.text  # no configuration, let alone credentials


# --- Authentication -------------------------------------------------------------------------

def test_calls_without_a_valid_keycloak_token_are_refused_with_401(catalog, keycloak):
    r = requests.get(f"{catalog.uri}/v1/config", params={"warehouse": catalog.warehouse}, timeout=30)
    assert r.status_code == 401
    assert catalog.load_table(None, "demo", "a").status_code == 401
    assert catalog.load_table("not.a.jwt", "demo", "a").status_code == 401
    # A real Keycloak token whose signature no longer matches (payload altered) is refused too.
    header, payload, sig = catalog.token("alice").split(".")
    claims = jwt_claims(f"{header}.{payload}.{sig}")
    claims["preferred_username"] = "sqe-admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert catalog.load_table(f"{header}.{forged}.{sig}", "demo", "c").status_code == 401
    # A valid token of another issuer (Keycloak's master realm) is not accepted either.
    assert catalog.load_table(keycloak.admin_token(), "demo", "a").status_code == 401


def test_the_catalog_accepts_the_issuer_its_tokens_carry(catalog, keycloak, stack):
    token = catalog.token("alice")
    assert jwt_claims(token)["iss"] == stack["SQE_OIDC_ISSUER"] == keycloak.issuer
    r = requests.get(
        f"{catalog.uri}/v1/config",
        params={"warehouse": catalog.warehouse},
        headers=catalog.headers(token),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    merged = {**r.json()["defaults"], **r.json()["overrides"]}
    assert merged["prefix"] == catalog.prefix
    assert "s3.access-key-id" not in merged  # credentials are vended per table, never globally


# --- Authorization and vended credentials ---------------------------------------------------

@pytest.mark.parametrize("table", ["a", "b", "c"])
def test_alice_loads_every_demo_table_with_vended_sts_credentials(catalog, stack, table):
    r = catalog.load_table(catalog.token("alice"), "demo", table)
    assert r.status_code == 200, r.text[:300]
    cfg = r.json()["config"]
    for k in VENDED:
        assert cfg.get(k), f"{k} not vended"
    assert cfg["s3.access-key-id"] != stack["SQE_MINIO_ROOT_USER"]
    assert cfg["s3.remote-signing-enabled"] == "false"


def test_alice_credentials_read_a_data_file_of_c_and_minio_audits_the_temporary_key(
    catalog, stack, minio_audit
):
    bucket = stack["SQE_S3_BUCKET"]
    body = catalog.load_table(catalog.token("alice"), "demo", "c").json()
    cfg = body["config"]
    s3 = _s3(stack, cfg)
    files = _data_files(s3, bucket, body["metadata"]["location"])
    assert files
    data = s3.get_object(Bucket=bucket, Key=files[0])["Body"].read()
    table = pq.read_table(io.BytesIO(data))
    expected = seed.rows_c()
    assert table.num_rows == expected.num_rows
    assert table.column("employee").to_pylist() == expected.column("employee").to_pylist()
    assert table.column("salary").to_pylist() == expected.column("salary").to_pylist()

    temp_key = cfg["s3.access-key-id"]
    reads = minio_audit.wait_for(
        lambda e: e.get("api", {}).get("name") == "GetObject"
        and e.get("api", {}).get("object") == files[0]
        and e.get("accessKey") == temp_key
    )
    assert reads, "MinIO audit has no GetObject signed by the vended key"
    assert {e.get("parentUser") for e in reads} == {stack["SQE_MINIO_ROOT_USER"]}
    assert all(e["accessKey"] != stack["SQE_MINIO_ROOT_USER"] for e in reads)


def test_vended_credentials_are_scoped_to_the_table_and_read_only_for_readers(catalog, stack):
    bucket = stack["SQE_S3_BUCKET"]
    token = catalog.token("alice")
    c = catalog.load_table(token, "demo", "c").json()
    a = catalog.load_table(token, "demo", "a").json()
    c_s3 = _s3(stack, c["config"])
    a_files = _data_files(_s3(stack, a["config"]), bucket, a["metadata"]["location"])
    with pytest.raises(ClientError) as other_table:
        c_s3.get_object(Bucket=bucket, Key=a_files[0])
    assert other_table.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as listing:
        c_s3.list_objects_v2(Bucket=bucket, Prefix=_key_of(a["metadata"]["location"], bucket))
    assert listing.value.response["Error"]["Code"] == "AccessDenied"
    c_key = _key_of(c["metadata"]["location"], bucket)
    with pytest.raises(ClientError) as write:
        c_s3.put_object(Bucket=bucket, Key=f"{c_key}/data/injected.parquet", Body=b"x")
    assert write.value.response["Error"]["Code"] == "AccessDenied"


def test_vended_credentials_are_short_lived(catalog):
    cfg = catalog.load_table(catalog.token("bob"), "demo", "a").json()["config"]
    # MinIO's session token is a JWT; its exp is the credentials' expiry (15 min, MinIO's minimum).
    lifetime = jwt_claims(cfg["s3.session-token"])["exp"] - time.time()
    assert 800 < lifetime <= 900, lifetime


def test_bob_reads_a_and_b_but_is_denied_c(catalog):
    token = catalog.token("bob")
    for table in ("a", "b"):
        r = catalog.load_table(token, "demo", table)
        assert r.status_code == 200, r.text[:300]
        assert all(r.json()["config"].get(k) for k in VENDED)
    _assert_denied(catalog.load_table(token, "demo", "c"), "bob", "demo.c")


def test_carol_authenticates_but_reads_nothing(catalog):
    token = catalog.token("carol")
    for table in ("a", "b", "c"):
        _assert_denied(catalog.load_table(token, "demo", table), "carol", f"demo.{table}")
    r = catalog.request("GET", "/namespaces", token)
    assert r.status_code == 200 and r.json()["namespaces"] == []
    r = catalog.request("GET", "/namespaces/demo/tables", token)
    assert r.status_code == 200 and r.json()["identifiers"] == []


def test_listings_are_filtered_by_privilege(catalog):
    """Unlike Polaris, Nessie filters listings: an entry is listed only if the caller passes
    READ_CONTENT_KEY on it (TreeApiImpl.getEntries wraps the keys in AuthzPaginationIterator,
    which drops entries whose check fails)."""

    def names(user):
        token = catalog.token(user)
        ns = catalog.request("GET", "/namespaces", token).json()["namespaces"]
        tables = catalog.request("GET", "/namespaces/demo/tables", token).json()["identifiers"]
        return sorted(".".join(n) for n in ns), sorted(t["name"] for t in tables)

    assert names("alice") == (["alice_ws", "demo"], ["a", "b", "c"])
    assert names("bob") == (["demo"], ["a", "b"])


def test_every_load_vends_fresh_credentials_so_users_never_share_a_key(catalog):
    alice, bob = catalog.token("alice"), catalog.token("bob")
    keys = [
        catalog.load_table(tok, "demo", "a").json()["config"]["s3.access-key-id"]
        for tok in (alice, bob, alice, bob)
    ]
    assert len(set(keys)) == 4, "a vended key was handed out twice"


def test_seeded_tables_read_back_through_pyiceberg_with_bobs_vended_credentials(catalog):
    cat = catalog.pyiceberg(catalog.token("bob"))
    b = cat.load_table("demo.b")
    assert [f.name for f in b.spec().fields] == ["region"]
    got = b.scan().to_arrow().sort_by("order_id")
    assert got.equals(seed.rows_b().cast(got.schema)), "demo.b differs from the seeded rows"
    a = cat.load_table("demo.a").scan(row_filter="id <= 10").to_arrow().sort_by("id")
    assert a.column("amount").to_pylist() == seed.rows_a().slice(0, 10).column("amount").to_pylist()


def test_alice_creates_and_writes_a_table_in_her_namespace_and_bob_cannot(catalog):
    import pyarrow as pa

    name = f"t_{uuid.uuid4().hex[:8]}"
    rows = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "v": ["x", "y", "z"]})
    alice = catalog.pyiceberg(catalog.token("alice"))
    table = alice.create_table(f"alice_ws.{name}", schema=rows.schema)
    try:
        table.append(rows)
        assert alice.load_table(f"alice_ws.{name}").scan().to_arrow().sort_by("id").equals(rows)

        bob_token = catalog.token("bob")
        body = {
            "name": f"{name}_bob",
            "schema": {
                "type": "struct",
                "schema-id": 0,
                "fields": [{"id": 1, "name": "id", "type": "long", "required": False}],
            },
            "stage-create": False,
            "properties": {},
        }
        _assert_denied(
            catalog.request("POST", "/namespaces/alice_ws/tables", bob_token, json=body),
            "bob",
            f"alice_ws.{name}_bob",
        )
        # bob cannot even see alice's table, and alice cannot create tables in demo.
        _assert_denied(catalog.load_table(bob_token, "alice_ws", name), "bob", f"alice_ws.{name}")
        _assert_denied(
            catalog.request(
                "POST",
                "/namespaces/demo/tables",
                catalog.token("alice"),
                json={**body, "name": f"{name}_alice"},
            ),
            "alice",
            f"demo.{name}_alice",
        )
    finally:
        alice.drop_table(f"alice_ws.{name}")


# --- Catalog audit --------------------------------------------------------------------------

def test_the_catalog_access_log_names_the_principal_of_every_call(catalog):
    marks = {user: uuid.uuid4().hex for user in ("alice", "bob")}
    for user, mark in marks.items():
        r = catalog.load_table(catalog.token(user), "demo", "a", params={"sqe-audit": mark})
        assert r.status_code == 200
    anon = uuid.uuid4().hex
    assert catalog.load_table(None, "demo", "a", params={"sqe-audit": anon}).status_code == 401

    def principal_of(mark):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = [line for line in catalog.access_log_lines() if mark in line]
            if lines:
                (line,) = lines
                return re.search(r"principal=(\S+)", line).group(1)
            time.sleep(0.25)
        raise AssertionError(f"no access-log line for {mark}")

    assert principal_of(marks["alice"]) == "alice"
    assert principal_of(marks["bob"]) == "bob"
    assert principal_of(anon) == "-"
    assert not any("Bearer" in line or "eyJ" in line for line in catalog.access_log_lines())
