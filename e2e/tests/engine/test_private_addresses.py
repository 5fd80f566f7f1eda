"""An engine that reaches Keycloak and the object store by other addresses than the public ones.

In a cluster the engine's pods reach Keycloak through a Service while tokens carry Keycloak's
public URL (`oidc.keycloak.frontend_url`), and the catalog may vend an object-store endpoint the
pods cannot use (`catalog.storage_endpoint`). Here `localhost` plays the private address and
127.0.0.1 the public one: the local Keycloak pins its issuer to 127.0.0.1 and resolves
backchannel URLs per request (`hostname-backchannel-dynamic`), as such a deployment needs.
The pods of e2e/tests/k8s_node use the same two settings for real.
"""

import sys
from urllib.parse import urlsplit

import adbc_driver_flightsql.dbapi as adbc
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "e2e" / "local"))
import seed  # noqa: E402

pytestmark = pytest.mark.usefixtures("needs_catalog")


def as_localhost(url: str) -> str:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", url
    return url.replace("127.0.0.1", "localhost", 1)


def count_c(engine, user="alice", password="alice-pw") -> int:
    with adbc.connect(engine.uri, db_kwargs={"username": user, "password": password}) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) AS n FROM {engine.warehouse}.demo.c")
            return cur.fetch_arrow_table().column("n")[0].as_py()


@pytest.fixture(scope="module")
def keycloak_split(stack) -> dict:
    return {
        "keycloak": {
            "url": as_localhost(stack["SQE_KEYCLOAK_URL"]),
            "realm": stack["SQE_KEYCLOAK_REALM"],
            "frontend_url": stack["SQE_KEYCLOAK_URL"],
        }
    }


def test_keycloak_reached_at_a_private_address_issues_tokens_for_its_public_url(
    start_engine, stack, keycloak_split, keycloak
):
    engine = start_engine(oidc=keycloak_split)
    engine.warehouse = stack.get("SQE_CATALOG_WAREHOUSE", "lake")
    assert count_c(engine) == seed.rows_c().num_rows
    # Bearer mode checks `iss` against the public URL: a token the client got itself works.
    token = keycloak.password_grant("alice", "alice-pw")["access_token"]
    engine.remember_secret(token)
    with adbc.connect(engine.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS one")
            assert cur.fetch_arrow_table().to_pylist() == [{"one": 1}]
    assert engine.events("login", mode="bearer", user="alice", outcome="ok")


def test_a_frontend_url_the_idp_does_not_issue_for_is_refused_at_discovery(start_engine, stack):
    # The document fetched at 127.0.0.1 names 127.0.0.1 as issuer, not the configured localhost.
    wrong = {
        "keycloak": {
            "url": stack["SQE_KEYCLOAK_URL"],
            "realm": stack["SQE_KEYCLOAK_REALM"],
            "frontend_url": as_localhost(stack["SQE_KEYCLOAK_URL"]),
        }
    }
    engine = start_engine(oidc=wrong, wait_ready=False)
    with pytest.raises(adbc.Error) as raised:
        with adbc.connect(engine.uri, db_kwargs={"username": "alice", "password": "alice-pw"}) as conn:
            conn.cursor().execute("SELECT 1")
    # The engine's own misconfiguration: INTERNAL with a message for the user, details in its log.
    assert raised.value.status_code.name == "INTERNAL", raised.value
    assert "misconfigured" in str(raised.value)
    assert any("names issuer" in line for line in engine.logs_text().splitlines()), engine.logs_text()[-2000:]


def test_reads_go_to_the_configured_storage_endpoint_with_the_users_vended_keys(start_engine, stack):
    via_localhost = start_engine(catalog={"storage_endpoint": as_localhost(stack["SQE_S3_ENDPOINT"])})
    via_localhost.warehouse = stack.get("SQE_CATALOG_WAREHOUSE", "lake")
    assert count_c(via_localhost) == seed.rows_c().num_rows

    # Nothing listens at port 1: if the vended endpoint were used instead, this would succeed.
    nowhere = start_engine(catalog={"storage_endpoint": "http://127.0.0.1:1"})
    nowhere.warehouse = via_localhost.warehouse
    with pytest.raises(adbc.Error) as raised:
        count_c(nowhere)
    # An outage of storage (gRPC UNAVAILABLE, which ADBC calls IO), not a denial of the user.
    assert raised.value.status_code.name == "IO", raised.value
    assert "(Unavailable;" in str(raised.value) and "object store unreachable" in str(raised.value)
