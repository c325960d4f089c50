"""API-key authentication over real HTTP: every route but the health probes needs a valid
`Authorization: Bearer` key, checked before the body is read; keys never reach the log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.processes import PROJECT_ROOT, TEST_API_KEY, TEST_HEADERS, authenticated_settings
from service.app import create_app
from service.settings import Settings
from tests.expectations import assert_matches_sklearn
from tests.http.unsent_body import send_without_body, status_of

PROTECTED = [("GET", "/metrics"), ("GET", "/swagger.json"), ("GET", "/docs"), ("POST", "/score"),
             ("GET", "/v1/model"), ("POST", "/v1/keys"), ("DELETE", "/v1/keys/" + "ab" * 32),
             ("POST", "/v1/score"), ("POST", "/v1/score/batch"), ("GET", "/no-such-route")]
WRONG_CREDENTIALS = {"missing": {}, "wrong key": {"Authorization": "Bearer not-the-key"},
                     "other scheme": {"Authorization": f"Basic {TEST_API_KEY}"},
                     "empty bearer": {"Authorization": "Bearer"}}


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["message"]


@pytest.mark.parametrize("method, path", PROTECTED)
@pytest.mark.parametrize("credentials", WRONG_CREDENTIALS.values(), ids=WRONG_CREDENTIALS.keys())
def test_every_non_health_route_refuses_missing_and_wrong_keys_with_401(service, method: str, path: str,
                                                                          credentials: dict) -> None:
    assert_401(httpx.request(method, f"{service.url}{path}", headers=credentials, content=b"{}", timeout=30))


def test_health_probes_stay_open(service) -> None:
    assert httpx.get(f"{service.url}/").text == "Healthy"
    assert httpx.get(f"{service.url}/ready").status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "endless-chunked"])
@pytest.mark.parametrize("path", ["/score", "/v1/keys", "/v1/score/batch"])
def test_unauthenticated_request_is_refused_before_its_body_is_read(service, path: str, chunked: bool) -> None:
    answer = send_without_body(service.url, "POST", path, {"Authorization": "Bearer wrong"}, chunked)
    assert status_of(answer) == 401, answer[:300]
    assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")


def test_a_valid_key_is_served(service) -> None:
    assert service.http.get("/v1/model").status_code == 200
    assert service.http.get("/metrics").status_code == 200


def test_keys_never_reach_the_log(service) -> None:
    httpx.get(f"{service.url}/v1/model", headers={"Authorization": "Bearer guessed-key-123"})
    service.http.get("/v1/model")
    log = service.log()
    assert TEST_API_KEY not in log and "guessed-key-123" not in log


@pytest.mark.parametrize("key_id", [".", "..", "-leading-dash", "_x"])
def test_key_ids_that_do_not_start_with_a_letter_or_digit_are_a_422(service, azureml_session, key_id: str) -> None:
    body = {**json.loads(azureml_session.request_body([0.0] * 784)), "key_id": key_id}
    response = service.http.post("/score", json=body)
    assert response.status_code == 422 and "key_id" in response.json()["message"]


def test_service_refuses_to_start_without_keys_and_says_how() -> None:
    env = {name: value for name, value in os.environ.items()
           if name not in {"API_KEYS", "API_KEYS_FILE", "AUTH_MODE"}}
    result = subprocess.run([sys.executable, "-m", "service"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2
    assert "API_KEYS='identity=key" in result.stderr and "API_KEYS_FILE" in result.stderr


def test_keys_come_from_a_file_with_several_keys_per_identity(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# identity=key, one per line\nops=old-key-0001\nops=new-key-0002\n")
    with TestClient(create_app(Settings(api_keys_file=keys))) as client:
        for key in ("old-key-0001", "new-key-0002"):
            assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer ops"}).status_code == 401


def test_a_malformed_key_entry_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="entry 2 is not of the form identity=key") as error:
        create_app(Settings(api_keys="a=key-one,secret-without-identity"))
    assert "secret-without-identity" not in str(error.value)


def test_auth_mode_none_is_explicit_and_warned_about(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        client = TestClient(create_app(Settings(auth_mode="none")))
    assert "AUTH_MODE=none" in caplog.text
    assert client.get("/v1/model").status_code == 503  # not loaded (no lifespan), but not refused


@pytest.mark.parametrize("docs, anonymous, authenticated", [("open", 200, 200), ("protected", 401, 200),
                                                            ("off", 401, 404)])
def test_api_docs_can_be_open_protected_or_off(docs: str, anonymous: int, authenticated: int) -> None:
    client = TestClient(create_app(authenticated_settings(api_docs=docs)))
    for path in ("/swagger.json", "/docs"):
        assert client.get(path).status_code == anonymous
        assert client.get(path, headers=TEST_HEADERS).status_code == authenticated


def test_the_unmodified_seed_client_flow_works_with_a_key_and_is_refused_without(service, seed_client, azurite: str,
                                                                                   bundled_estimator) -> None:
    """The README's notebook flow: the tutorial's client encrypts, the caller's own HTTP call adds the header."""
    from azure.storage.blob import BlobServiceClient

    edp, key_id, public_keys = seed_client
    blobs = BlobServiceClient.from_connection_string(azurite).get_container_client("readme-flow")
    if not blobs.exists():
        blobs.create_container()
    blobs.upload_blob(key_id, public_keys, overwrite=True)
    features = [0.5] * 784
    data = json.dumps({"data": edp.encrypt(features), "key_id": key_id, "conn_str": azurite,
                       "container": "readme-flow"})
    refused = httpx.post(f"{service.url}/score", content=data, headers={"Content-Type": "application/json"})
    assert_401(refused)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TEST_API_KEY}"}
    eresult = httpx.post(f"{service.url}/score", content=data, headers=headers, timeout=600).json()
    assert_matches_sklearn(bundled_estimator, features, edp.decrypt(eresult))


@pytest.mark.parametrize("how", ["option", "environment"])
def test_python_m_client_predict_sends_the_api_key(service, how: str) -> None:
    command = [sys.executable, "-m", "client", "predict", "--url", service.url, "--limit", "3", "--json"]
    env = {name: value for name, value in os.environ.items() if name != "SCORING_API_KEY"}
    if how == "option":
        command += ["--api-key", TEST_API_KEY]
    else:
        env["SCORING_API_KEY"] = TEST_API_KEY
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["agreement_with_plaintext_model"] == 1.0
    assert TEST_API_KEY not in result.stdout + result.stderr


def test_python_m_client_predict_without_a_key_reports_the_401(service) -> None:
    env = {name: value for name, value in os.environ.items() if name != "SCORING_API_KEY"}
    result = subprocess.run([sys.executable, "-m", "client", "predict", "--url", service.url, "--limit", "1"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, env={**env, "COLUMNS": "200"},
                            timeout=300)
    assert result.returncode == 1 and "401" in result.stdout
