"""No SSRF, no client credentials needed: requests may only name allowed accounts, never hosts."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from service.errors import BadRequest, Forbidden
from service.settings import Settings
from service.storage.accounts import StorageAccess, account_of
from bench.processes import AZURITE_KEY
from tests.expectations import assert_matches_sklearn


@pytest.mark.parametrize("conn_str, account", [
    ("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;EndpointSuffix=core.windows.net", "acme"),
    ("BlobEndpoint=https://other.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x", "other"),
    ("BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;SharedAccessSignature=sv=1", "devstoreaccount1"),
    ("accountname=lower;accountkey=a2V5", "lower"),
])
def test_account_is_read_from_the_connection_string(conn_str: str, account: str) -> None:
    assert account_of(conn_str) == account


@pytest.mark.parametrize("conn_str", ["garbage", "BlobEndpoint=http://127.0.0.2/", ";;"])
def test_connection_strings_naming_no_account_are_refused(conn_str: str) -> None:
    with pytest.raises(BadRequest):
        account_of(conn_str)


def test_allowlist_defaults_to_the_own_account_and_other_accounts_use_their_official_endpoint() -> None:
    access = StorageAccess(Settings(allowed_storage_accounts="devstoreaccount1, partner"))
    assert access.allowed == {"devstoreaccount1", "partner"}
    own = access.client_for("AccountName=devstoreaccount1;AccountKey=x;BlobEndpoint=http://127.0.0.1:1/x")
    assert own is access.own_client
    partner = access.client_for("AccountName=partner;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/partner")
    assert partner.primary_hostname == "partner.blob.core.windows.net"
    with pytest.raises(Forbidden, match="'intruder' is not allowed"):
        access.client_for("AccountName=intruder;AccountKey=a2V5")
    assert StorageAccess(Settings()).allowed == {"devstoreaccount1"}


def test_managed_identity_settings_name_the_own_account() -> None:
    access = StorageAccess(Settings(azure_storage_account_url="https://keysacct.blob.core.windows.net"))
    assert access.own_account == "keysacct" and access.allowed == {"keysacct"}


class Listener:
    """A loopback port that records whether anything connected to it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.socket.setblocking(False)
        self.port = self.socket.getsockname()[1]

    def was_contacted(self) -> bool:
        try:
            connection, _ = self.socket.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True


@pytest.fixture()
def listener():
    trap = Listener()
    yield trap
    trap.socket.close()


def test_a_foreign_account_is_refused_without_any_connection(service, azureml_session, listener: Listener) -> None:
    body = json.loads(azureml_session.request_body(np.zeros(784)))
    body["conn_str"] = (f"DefaultEndpointsProtocol=http;AccountName=attacker;AccountKey={AZURITE_KEY};"
                        f"BlobEndpoint=http://127.0.0.1:{listener.port}/attacker;")
    response = service.http.post("/score", json=body, timeout=60)
    assert response.status_code == 403
    assert "'attacker' is not allowed" in response.json()["message"]
    assert not listener.was_contacted()


def test_the_own_account_is_read_with_the_services_own_client(service, azureml_session, bundled_estimator,
                                                               listener: Listener) -> None:
    """A request naming the service's account but another endpoint is served from the real endpoint."""
    features = np.linspace(0, 1, 784)
    body = json.loads(azureml_session.request_body(features))
    body["conn_str"] = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=bm9wZQ==;"
                        f"BlobEndpoint=http://127.0.0.1:{listener.port}/devstoreaccount1;")
    response = service.http.post("/score", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert_matches_sklearn(bundled_estimator, features, azureml_session.encryptor.decrypt(response.json()))
    assert not listener.was_contacted()


def test_requests_may_leave_credentials_out(service, azureml_session, bundled_estimator) -> None:
    features = np.linspace(0, 1, 784)
    body = json.loads(azureml_session.request_body(features))
    del body["conn_str"]
    response = service.http.post("/score", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert_matches_sklearn(bundled_estimator, features, azureml_session.encryptor.decrypt(response.json()))
