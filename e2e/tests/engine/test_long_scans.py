"""A scan may outlive both the user's access token and the storage keys the catalog vended for
it. Through the real Keycloak, catalog (Nessie) and MinIO:

- the engine asks the catalog for fresh keys before the old ones run out, as the user and with
  the session's refreshed token (the catalog logs alice for every loadTable; a renewal after the
  first token expired still succeeds);
- the rest of the scan is signed with the new keys, all vended to alice;
- the answer is complete and exact;
- keys the store refuses (revoked: MinIO answers InvalidAccessKeyId, or AccessDenied to requests
  that arrive during the revocation) are renewed once; keys that never covered a file are
  refused again after that one renewal, and the query fails with PERMISSION_DENIED.

Vended keys here live 15 minutes (MinIO's STS minimum), so the engine is told to assume 8 s and
to renew 4 s ahead; the client reads slowly so the scan lasts about half a minute.
"""

import re
import time
import uuid

import pytest
import requests
from pyarrow import flight
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from flightsql import SqlClient
from test_isolation import fingerprint
from test_catalog_queries import assert_denied, connect, denied

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


def _reads(minio_audit, start: int, prefix: str) -> list[dict]:
    # Give MinIO's asynchronous audit delivery time to bring in the last reads too.
    time.sleep(2)
    return minio_audit.wait_for(minio_audit.object_read(prefix), since=start)


def _table_reads(minio_audit, start: int, name: str) -> list[dict]:
    return _reads(minio_audit, start, f"alice_ws/{name}_")


def _why_the_scan_failed(engine, log_mark: int, minio_audit, audit_mark: int) -> str:
    """What the engine and the store did about keys, so a failure says why and not only that."""
    seen = [
        {k: ev.get(k) for k in ("event", "generation", "marker", "renewing", "reason", "access_key_fp")}
        for ev in engine.logs()[log_mark:]
        if str(ev.get("event", "")).startswith("storage_credentials")
    ]
    time.sleep(2)  # the store's audit arrives asynchronously
    refusals = [
        (fingerprint(a.get("accessKey", "")), a["api"].get("name"), a["api"].get("statusCode"), a.get("time"))
        for a in minio_audit.entries()[audit_mark:]
        if a.get("api", {}).get("statusCode", 200) >= 400
    ]
    return f"engine: {seen}\nstore refusals: {refusals}"


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
    log_mark = len(engine.logs())

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
        except flight.FlightError as e:
            why = _why_the_scan_failed(engine, log_mark, minio_audit, audit_mark)
            pytest.fail(f"scan failed after the revocation: {e}\n{why}")
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


def test_a_file_the_vended_keys_do_not_cover_is_refused_after_one_renewal(
    engine, stack, catalog, minio_audit
):
    """A data file outside the table's location (added by another writer) is beyond the keys the
    catalog vends for the table. The store refuses them; the engine asks the catalog once more,
    is refused again and fails with PERMISSION_DENIED naming the file. It never reads the file
    with any key the catalog did not vend to alice for this table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.table.snapshots import Operation
    from pyiceberg.table.update.snapshot import _FastAppendFiles
    from pyiceberg.typedef import Record

    name = f"foreign_{uuid.uuid4().hex[:8]}"
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE lake.alice_ws.{name} (id BIGINT)")
        cur.fetchall()
    try:
        # Written with the store's root key, outside s3://warehouse/alice_ws/<table>.
        key = f"elsewhere/{name}.parquet"
        root = fs.S3FileSystem(
            access_key=stack["SQE_MINIO_ROOT_USER"], secret_key=stack["SQE_MINIO_ROOT_PASSWORD"],
            endpoint_override=stack["SQE_S3_ENDPOINT"], region=stack["SQE_S3_REGION"],
        )
        pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64())}), f"warehouse/{key}", filesystem=root)
        size = root.get_file_info(f"warehouse/{key}").size

        table = catalog.pyiceberg(catalog.token("alice")).load_table(f"alice_ws.{name}")
        data_file = DataFile.from_args(
            content=DataFileContent.DATA, file_path=f"s3://warehouse/{key}", file_format=FileFormat.PARQUET,
            partition=Record(), record_count=3, file_size_in_bytes=size,
        )
        data_file.spec_id = table.spec().spec_id
        with table.transaction() as tx:
            append = _FastAppendFiles(operation=Operation.APPEND, transaction=tx, io=table.io)
            append.append_data_file(data_file)
            append.commit()

        renewed_before = len(engine.events("storage_credentials_renewed"))
        audit_mark = len(minio_audit.entries())
        sql = f"SELECT sum(id) AS s FROM lake.alice_ws.{name}"
        err = denied(engine, "alice", sql)
        assert_denied(err, sql)
        assert "PermissionDenied" in str(err) and key in str(err), str(err)
        renewals = engine.events("storage_credentials_renewed")[renewed_before:]
        assert [r["reason"] for r in renewals] == ["Refused"], renewals

        # Two refused reads of the file, one per key: the first vended and the renewed one.
        reads = _reads(minio_audit, audit_mark, key)
        assert len(reads) == 2, reads
        assert all(e["api"]["statusCode"] == 403 for e in reads), reads
    finally:
        with connect(engine, "alice") as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE lake.alice_ws.{name}")
            cur.fetchall()
