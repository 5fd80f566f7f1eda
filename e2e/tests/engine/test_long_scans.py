"""A scan may outlive both the user's access token and the storage keys the catalog vended for
it. Through the real Keycloak, catalog (Nessie) and MinIO:

- the engine asks the catalog for fresh keys before the old ones run out, as the user and with
  the session's refreshed token (the catalog logs alice for every loadTable; a renewal after the
  first token expired still succeeds);
- the rest of the scan is signed with the new keys, all vended to alice;
- the answer is complete and exact.

Vended keys here live 15 minutes (MinIO's STS minimum), so the engine is told to assume 8 s and
to renew 4 s ahead; the client reads slowly so the scan lasts about half a minute.
"""

import re
import time
import uuid

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from flightsql import SqlClient
from test_isolation import fingerprint
from test_catalog_queries import connect

FILES = 24
ROWS_PER_FILE = 100_000


pytestmark = pytest.mark.usefixtures("needs_catalog")


@pytest.fixture(scope="module")
def quick_renewals(start_engine):
    return start_engine(
        catalog={"vended_credentials": {"assumed_lifetime_seconds": 8, "refresh_margin_seconds": 4}},
        query={"timeout_seconds": 180, "shutdown_grace_seconds": 5},
    )


@pytest.fixture(scope="module")
def many_files(engine):
    """alice's table written by FILES inserts (a few data files each), ids 1..FILES*ROWS_PER_FILE."""
    name = f"long_{uuid.uuid4().hex[:8]}"
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE lake.alice_ws.{name} (id BIGINT, label VARCHAR)")
        cur.fetchall()
        for i in range(FILES):
            cur.execute(
                f"INSERT INTO lake.alice_ws.{name} "
                f"SELECT value + {i * ROWS_PER_FILE}, concat('row-', CAST(value AS VARCHAR)) "
                f"FROM generate_series(1, {ROWS_PER_FILE})"
            )
            assert cur.fetchall() == [(ROWS_PER_FILE,)]
    yield name
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE lake.alice_ws.{name}")
        cur.fetchall()


def revoke_all_vended_keys(stack) -> None:
    """MinIO's admin API: revoke every STS credential whose parent is the root user — all the
    keys the catalog has vended (it assumes roles as root). Signed with the root key."""
    url = f"{stack['SQE_S3_ENDPOINT']}/minio/admin/v3/revoke-tokens/builtin?fullRevoke=true"
    req = AWSRequest(method="POST", url=url, data=b"")
    root = Credentials(stack["SQE_MINIO_ROOT_USER"], stack["SQE_MINIO_ROOT_PASSWORD"])
    S3SigV4Auth(root, "s3", stack["SQE_S3_REGION"]).add_auth(req)
    r = requests.post(url, headers=dict(req.headers), data=b"", timeout=10)
    assert r.status_code == 204, (r.status_code, r.text)


def _table_reads(minio_audit, start: int, name: str) -> list[dict]:
    # Give MinIO's asynchronous audit delivery time to bring in the last reads too.
    time.sleep(2)
    return minio_audit.wait_for(minio_audit.object_read(f"alice_ws/{name}_"), since=start)


def test_a_scan_outliving_its_keys_and_token_renews_them_as_the_user(
    quick_renewals, many_files, short_tokens, catalog, minio_audit
):
    engine, name = quick_renewals, many_files
    c = SqlClient(engine.uri)
    logged_in = time.monotonic()
    engine.remember_secret(c.login("alice", "alice-pw"))
    renewed_before = len(engine.events("storage_credentials_renewed"))
    catalog_mark = len(catalog.access_log_lines())
    audit_mark = len(minio_audit.entries())

    info = c.flight_info(f"SELECT id, label FROM lake.alice_ws.{name}")
    reader = c.client.do_get(info.endpoints[0].ticket, c.options())
    rows, total = 0, 0

    def take():
        nonlocal rows, total
        chunk = reader.read_chunk().data
        rows += chunk.num_rows
        total += sum(chunk.column("id").to_pylist())

    # Slowly past the first token's lifetime (20 s) and several key lifetimes (8 s).
    take()
    while time.monotonic() - logged_in < short_tokens + 6:
        time.sleep(1)
        take()
    renewed_after_token_expiry = len(engine.events("storage_credentials_renewed"))
    # Then the rest at full speed: these reads need keys vended after the first token expired.
    while True:
        try:
            take()
        except StopIteration:
            break

    n = FILES * ROWS_PER_FILE
    assert rows == n
    assert total == n * (n + 1) // 2

    renewals = engine.events("storage_credentials_renewed")[renewed_before:]
    assert renewals, "the scan ran on keys past their (assumed) lifetime"
    assert all(r["subject"] == f"table lake.alice_ws.{name}" for r in renewals), renewals
    assert len(engine.events("storage_credentials_renewed")) > renewed_after_token_expiry, (
        "no renewal after alice's first token expired: the catalog was not asked with her refreshed token"
    )
    assert engine.metric("sqe_token_refreshes_total", outcome="ok") >= 1

    # Every loadTable of this table (the first and each renewal) was made as alice.
    loads = [l for l in catalog.access_log_lines()[catalog_mark:]
             if re.search(rf'"GET \S*/namespaces/alice_ws/tables/{name}\b', l)]
    assert len(loads) >= 1 + len(renewals), loads
    assert {re.search(r"principal=(\S+)", l).group(1) for l in loads} == {"alice"}, loads

    # The data files were read with more than one key, each of them vended to alice.
    used = {e["accessKey"] for e in _table_reads(minio_audit, audit_mark, name)}
    vended_to_alice = {e["access_key_fp"] for e in engine.events("storage_credentials", user="alice")}
    assert len(used) >= 2, used
    assert {fingerprint(k) for k in used} <= vended_to_alice, (used, vended_to_alice)


def test_keys_revoked_mid_scan_are_replaced_and_the_scan_completes(engine, many_files, stack, minio_audit):
    """The object store refuses keys the engine still thinks valid (here: revoked by the MinIO
    administrator; elsewhere: a catalog that hands out cached, older keys). The engine asks the
    catalog for new ones once and goes on; no row is lost or repeated."""
    name = many_files
    c = SqlClient(engine.uri)
    engine.remember_secret(c.login("alice", "alice-pw"))
    renewed_before = len(engine.events("storage_credentials_renewed"))
    audit_mark = len(minio_audit.entries())

    info = c.flight_info(f"SELECT id FROM lake.alice_ws.{name}")
    reader = c.client.do_get(info.endpoints[0].ticket, c.options())
    first = reader.read_chunk().data
    rows, total = first.num_rows, sum(first.column("id").to_pylist())
    revoke_all_vended_keys(stack)
    while True:
        try:
            chunk = reader.read_chunk().data
        except StopIteration:
            break
        rows += chunk.num_rows
        total += sum(chunk.column("id").to_pylist())

    n = FILES * ROWS_PER_FILE
    assert rows == n
    assert total == n * (n + 1) // 2
    renewals = engine.events("storage_credentials_renewed")[renewed_before:]
    assert [r["reason"] for r in renewals] == ["Refused"], renewals

    reads = _table_reads(minio_audit, audit_mark, name)
    refused = [e for e in reads if e.get("api", {}).get("statusCode") == 403]
    assert refused, "the revoked key was never refused: the test did not exercise a refusal"
    vended_to_alice = {e["access_key_fp"] for e in engine.events("storage_credentials", user="alice")}
    served = [e for e in reads if e.get("api", {}).get("statusCode") == 200]
    assert served and all(e.get("accessKey") for e in served)
    assert {fingerprint(e["accessKey"]) for e in served} <= vended_to_alice
