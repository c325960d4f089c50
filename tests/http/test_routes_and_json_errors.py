"""The HTTP contract over real HTTP: routes, and a JSON `{"message"}` with the right status for every error."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.azureml.seal_format import HEADER
from bench.processes import (PROJECT_ROOT, AZURITE_KEY, TEST_AUTH_ENV, TEST_HEADERS, authenticated_settings,
                             wait_until)
from tests.expectations import assert_matches_sklearn


def post_score(url: str, body: object, **kwargs) -> httpx.Response:
    content = json.dumps(body) if isinstance(body, (dict, list)) else body
    return httpx.post(f"{url}/score", content=content,
                      headers={"Content-Type": "application/json", **TEST_HEADERS},
                      timeout=120, **kwargs)


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["message"]
    assert fragment in message, message
    assert "Traceback" not in message


@pytest.fixture(scope="module")
def valid_body(azureml_session) -> dict:
    return json.loads(azureml_session.request_body(np.zeros(784)))


@pytest.fixture(autouse=True)
def then_the_same_process_still_scores(request: pytest.FixtureRequest):
    """After each test against the service: same process, and a valid request is still scored right."""
    if "service" not in request.fixturenames:
        yield
        return
    service = request.getfixturevalue("service")
    session = request.getfixturevalue("azureml_session")
    estimator = request.getfixturevalue("bundled_estimator")
    pid = service.process.pid
    yield
    assert service.process.poll() is None and service.process.pid == pid
    features = np.linspace(0, 1, 784)
    assert_matches_sklearn(estimator, features, session.scores(features))


def test_liveness_readiness_and_openapi(service) -> None:
    live = httpx.get(f"{service.url}/")
    assert live.status_code == 200 and live.text == "Healthy"
    assert httpx.get(f"{service.url}/ready").json() == {"status": "ready", "workers": 2}
    spec = service.http.get("/swagger.json").json()
    assert {"/", "/ready", "/score"} <= set(spec["paths"])
    assert "ScoreRequest" in json.dumps(spec["paths"]["/score"])


def test_body_that_is_not_json_is_a_400(service) -> None:
    assert_error(post_score(service.url, b"{not json"), 400, "not valid JSON")


@pytest.mark.parametrize("field", ["data", "key_id"])
def test_missing_field_is_a_422_naming_it(service, valid_body: dict, field: str) -> None:
    body = {k: v for k, v in valid_body.items() if k != field}
    assert_error(post_score(service.url, body), 422, field)


@pytest.mark.parametrize("patch, fragment", [
    ({"data": "abc"}, "data"),
    ({"data": [1]}, "data.0"),
    ({"data": []}, "data"),
    ({"key_id": 5}, "key_id"),
    ({"key_id": "../etc/passwd"}, "key_id"),
    ({"container": "UPPER_case"}, "container"),
    ({"data": ["%%%not base64"]}, "base64"),
    ({"data": [base64.b64encode(b"hello world, not a ciphertext").decode()]}, "not a SEAL object"),
])
def test_ill_typed_or_malformed_fields_are_a_422(service, valid_body: dict, patch: dict, fragment: str) -> None:
    assert_error(post_score(service.url, {**valid_body, **patch}), 422, fragment)


def test_decompression_bomb_ciphertext_is_a_422(service, valid_body: dict) -> None:
    payload = zlib.compress(b"\x00" * (32 * 1024 * 1024))
    bomb = HEADER.pack(0xA15E, 16, 3, 5, 1, 0, 16 + len(payload)) + payload
    assert_error(post_score(service.url, {**valid_body, "data": [base64.b64encode(bomb).decode()]}),
                 422, "beyond the limit")


def test_ciphertext_with_valid_framing_but_corrupted_fields_is_a_422(service, valid_body: dict) -> None:
    """A field changed inside a well-formed zlib stream: caught by parsing, before any native code."""
    raw = base64.b64decode(valid_body["data"][0])
    inner = bytearray(zlib.decompress(raw[HEADER.size:]))
    inner[40] ^= 0xFF  # inside the polynomial count
    payload = zlib.compress(bytes(inner))
    corrupted = HEADER.pack(0xA15E, 16, 3, 5, 1, 0, HEADER.size + len(payload)) + payload
    assert_error(post_score(service.url, {**valid_body, "data": [base64.b64encode(corrupted).decode()]}),
                 422, "not supported")


def test_oversized_body_is_a_413(service, valid_body: dict) -> None:
    huge = {**valid_body, "padding": "x" * (5 * 1024 * 1024)}
    assert_error(post_score(service.url, huge), 413, "limit")


def test_oversized_chunked_body_is_a_413(service, valid_body: dict) -> None:
    def chunks():
        yield json.dumps(valid_body)[:-1].encode() + b', "padding": "'
        for _ in range(6):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    assert_error(post_score(service.url, chunks()), 413, "limit")


def test_unknown_key_id_is_a_404(service, valid_body: dict) -> None:
    assert_error(post_score(service.url, {**valid_body, "key_id": "no-such-keys"}), 404, "no-such-keys")


def test_unknown_container_is_a_404(service, valid_body: dict) -> None:
    assert_error(post_score(service.url, {**valid_body, "container": "no-such-container"}), 404,
                 "no-such-container")


def test_malformed_connection_string_is_a_400(service, valid_body: dict) -> None:
    assert_error(post_score(service.url, {**valid_body, "conn_str": "not a connection string"}), 400, "conn_str")


def test_wrong_number_of_ciphertexts_is_a_422(service, valid_body: dict) -> None:
    body = {**valid_body, "data": valid_body["data"] * 2}
    assert_error(post_score(service.url, body), 422, "1 ciphertext(s)")


def test_malformed_key_blob_is_a_404_like_a_missing_one(service, valid_body: dict, azurite: str) -> None:
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(azurite).get_container_client("public-keys")
    blobs.upload_blob("garbage-keys", b"\x00" * 4096, overwrite=True)
    assert_error(post_score(service.url, {**valid_body, "key_id": "garbage-keys"}), 404, "no usable public keys")


def test_credentials_never_reach_the_log(service, valid_body: dict) -> None:
    post_score(service.url, {**valid_body, "key_id": "absent-for-log-check"})
    assert AZURITE_KEY not in service.log()
    assert "AccountKey" not in service.log()


def test_not_ready_until_the_model_is_loaded(seed_ciphertext: str) -> None:
    # Without entering the client's context the lifespan has not run: no worker has loaded the model yet.
    client = TestClient(create_app(authenticated_settings()), headers=TEST_HEADERS)
    assert client.get("/").text == "Healthy"
    assert_error(client.get("/ready"), 503, "still loading")
    assert_error(client.post("/score", json={"data": [seed_ciphertext], "key_id": "k"}), 503, "still loading")


def test_model_that_fails_to_load_keeps_the_service_unready_with_the_reason(tmp_path) -> None:
    (tmp_path / "broken.pkl").write_bytes(b"not a pickle")
    settings = authenticated_settings(azureml_model_dir=tmp_path, model_file="broken.pkl", worker_count=1)
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: "could not be loaded" in client.get("/ready").text, 300, "the load failure")
        response = client.get("/ready")
        assert_error(response, 503, "cannot unpickle")
        assert response.headers["retry-after"]


def test_python_m_service_refuses_an_invalid_setting_without_echoing_its_value() -> None:
    uri = "rediz://scorer:a-redis-password@127.0.0.1:6379"
    result = subprocess.run([sys.executable, "-m", "service"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env={**__import__("os").environ, **TEST_AUTH_ENV, "RATE_LIMIT_STORAGE_URI": uri},
                            timeout=60)
    assert result.returncode == 2
    assert "RATE_LIMIT_STORAGE_URI" in result.stderr and "unknown scheme 'rediz'" in result.stderr
    assert "a-redis-password" not in result.stderr + result.stdout


def test_python_m_service_exits_with_the_reason_when_the_model_is_missing(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "service"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env={**__import__("os").environ, **TEST_AUTH_ENV, "AZUREML_MODEL_DIR": str(tmp_path)},
                            timeout=60)
    assert result.returncode == 2
    assert "model file not found" in result.stderr
