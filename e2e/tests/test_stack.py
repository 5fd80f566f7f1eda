"""The local stack is real: Keycloak issues, refreshes and refuses tokens; MinIO vends scoped
STS credentials and its audit log names the key that signed each request.

These run against the processes started by e2e/local/up, through the services' own APIs.
"""

import json
import time
import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import jwt_claims


# --- Keycloak -------------------------------------------------------------------------------

def test_password_grant_gives_alice_a_token_with_her_identity_and_catalog_roles(keycloak):
    tokens = keycloak.password_grant("alice", "alice-pw")
    claims = jwt_claims(tokens["access_token"])
    assert claims["iss"] == keycloak.issuer  # pinned --hostname: stable issuer
    assert claims["preferred_username"] == "alice"
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert "sqe" in aud
    assert "PRINCIPAL_ROLE:alice_role" in claims["realm_access"]["roles"]
    assert tokens["refresh_token"]


def test_tokens_are_rs256_signed_by_a_key_published_in_jwks(keycloak):
    token = keycloak.password_grant("bob", "bob-pw")["access_token"]
    import base64

    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "RS256"
    conf = requests.get(f"{keycloak.issuer}/.well-known/openid-configuration", timeout=10).json()
    assert conf["issuer"] == keycloak.issuer
    keys = requests.get(conf["jwks_uri"], timeout=10).json()["keys"]
    assert header["kid"] in {k["kid"] for k in keys}


def test_refresh_tokens_rotate_and_a_replayed_one_is_refused(keycloak):
    first = keycloak.password_grant("bob", "bob-pw")
    r = keycloak.grant(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["access_token"] != first["access_token"]
    replay = keycloak.grant(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "user,password",
    [("alice", "wrong-password"), ("nobody", "whatever"), ("dave", "dave-pw")],
    ids=["wrong-password", "unknown-user", "disabled-user"],
)
def test_bad_credentials_are_refused_with_invalid_grant(keycloak, user, password):
    r = keycloak.grant(grant_type="password", username=user, password=password)
    assert r.status_code in (400, 401)
    assert r.json()["error"] == "invalid_grant"


def test_client_credentials_grant_gives_no_refresh_token(keycloak):
    r = keycloak.grant(grant_type="client_credentials")
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body
    assert jwt_claims(body["access_token"])["preferred_username"] == "service-account-sqe"


def test_admin_logout_revokes_the_refresh_token(keycloak):
    tokens = keycloak.password_grant("carol", "carol-pw")
    r = keycloak.admin("POST", f"/users/{keycloak.user_id('carol')}/logout")
    assert r.status_code == 204
    r = keycloak.grant(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_keycloak_stores_login_and_refresh_events_for_the_engine_client(keycloak):
    since = int(time.time() * 1000) - 1000
    tokens = keycloak.password_grant("alice", "alice-pw")
    keycloak.grant(grant_type="refresh_token", refresh_token=tokens["refresh_token"]).raise_for_status()
    keycloak.grant(grant_type="password", username="alice", password="nope")
    deadline = time.monotonic() + 10
    while True:
        events = keycloak.events(
            types=["LOGIN", "REFRESH_TOKEN", "LOGIN_ERROR"], user="alice", since_ms=since
        )
        kinds = {e["type"] for e in events}
        if {"LOGIN", "REFRESH_TOKEN", "LOGIN_ERROR"} <= kinds or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"LOGIN", "REFRESH_TOKEN", "LOGIN_ERROR"} <= kinds, events
    assert all(e["clientId"] == "sqe" for e in events)


# --- MinIO ----------------------------------------------------------------------------------

def _root_session(stack):
    return boto3.session.Session(
        aws_access_key_id=stack["SQE_MINIO_ROOT_USER"],
        aws_secret_access_key=stack["SQE_MINIO_ROOT_PASSWORD"],
        region_name=stack["SQE_S3_REGION"],
    )


CFG = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})


def _assume_role(stack, policy: dict, duration: int = 900) -> dict:
    sts = _root_session(stack).client("sts", endpoint_url=stack["SQE_S3_ENDPOINT"], config=CFG)
    return sts.assume_role(
        RoleArn="arn:minio:iam:::role/unused",  # MinIO ignores it; boto3 requires one
        RoleSessionName="sqe-stack-test",
        Policy=json.dumps(policy),
        DurationSeconds=duration,
    )["Credentials"]


def test_sts_credentials_are_scoped_by_session_policy_and_audited_with_their_parent(stack, minio_audit):
    bucket = stack["SQE_S3_BUCKET"]
    run = uuid.uuid4().hex[:8]
    allowed, denied = f"stack-test/{run}/allowed/data.parquet", f"stack-test/{run}/denied/data.parquet"
    root_s3 = _root_session(stack).client("s3", endpoint_url=stack["SQE_S3_ENDPOINT"], config=CFG)
    root_s3.put_object(Bucket=bucket, Key=allowed, Body=b"visible")
    root_s3.put_object(Bucket=bucket, Key=denied, Body=b"secret")

    creds = _assume_role(
        stack,
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/stack-test/{run}/allowed/*"],
                }
            ],
        },
    )
    temp_key = creds["AccessKeyId"]
    assert temp_key != stack["SQE_MINIO_ROOT_USER"] and creds["SessionToken"]
    temp_s3 = boto3.client(
        "s3",
        endpoint_url=stack["SQE_S3_ENDPOINT"],
        aws_access_key_id=temp_key,
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=stack["SQE_S3_REGION"],
        config=CFG,
    )
    assert temp_s3.get_object(Bucket=bucket, Key=allowed)["Body"].read() == b"visible"
    with pytest.raises(ClientError) as denied_err:
        temp_s3.get_object(Bucket=bucket, Key=denied)
    assert denied_err.value.response["Error"]["Code"] == "AccessDenied"

    reads = minio_audit.wait_for(
        lambda e: e.get("api", {}).get("name") == "GetObject"
        and e.get("api", {}).get("object") == allowed
    )
    assert reads, "MinIO audit has no entry for the GetObject"
    assert {e["accessKey"] for e in reads} == {temp_key}
    assert {e.get("parentUser") for e in reads} == {stack["SQE_MINIO_ROOT_USER"]}
    refused = minio_audit.wait_for(
        lambda e: e.get("api", {}).get("object") == denied and e.get("accessKey") == temp_key
    )
    assert refused and refused[0]["api"]["statusCode"] == 403

