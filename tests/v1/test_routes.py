"""v1 protocol over real HTTP (uvicorn + Azurite): the client SDK end to end, and every
malformed body answered with a 4xx JSON message."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from bench.processes import TEST_API_KEY, ServiceProcess
from client.scoring import ScoringClient
from bfv.wire import public_key_size, request_size
from bfv.plan import PublicPlan
from tests.expectations import assert_within_weight_rounding, served_v1_plan, v1_exact_scores

BINARY = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def native_client(service: ServiceProcess) -> ScoringClient:
    with ScoringClient(service.url, api_key=TEST_API_KEY) as client:
        yield client


def test_model_description_is_served(service: ServiceProcess) -> None:
    body = service.http.get("/v1/model").json()
    plan = PublicPlan.from_description(body)
    assert (body["poly_modulus_degree"], body["n_features"], body["n_outputs"]) == (4096, 784, 10)
    assert plan.params.meets_128_bit_security()


@pytest.mark.parametrize("batch", [1, 16])
def test_client_predictions_equal_the_plaintext_model(native_client: ScoringClient, mnist_test_images,
                                                      bundled_estimator, batch: int) -> None:
    images = mnist_test_images[0][:16]
    labels, scores = native_client.predict(images, batch_size=batch)
    plan = served_v1_plan(bundled_estimator)
    assert native_client.plan == plan.public  # the service planned the model as the tests do
    np.testing.assert_array_equal(scores, v1_exact_scores(plan, images))  # exact: the quantized model's scores
    assert_within_weight_rounding(plan, bundled_estimator, images, scores)
    np.testing.assert_array_equal(labels, bundled_estimator.predict(images.reshape(16, -1) / 255.0))
    assert native_client.traffic.request_bytes > 0 and native_client.traffic.server_seconds > 0


def _post(service: ServiceProcess, path: str, body: bytes) -> httpx.Response:
    return service.http.post(path, content=body, headers=BINARY, timeout=30)


def test_malformed_bodies_get_4xx_json(service: ServiceProcess, native_client: ScoringClient) -> None:
    params = native_client.plan.params
    cases = {
        ("/v1/keys", b"\x00" * public_key_size(params)): 422,
        ("/v1/keys", b"\x00" * (public_key_size(params) + 1)): 413,
        ("/v1/score", b""): 422,
        ("/v1/score", b"EIQ1" + b"\xff" * (request_size(1, params) - 4)): 422,
        ("/v1/score", b"\x00" * (request_size(1, params) + 1)): 413,
        ("/v1/score/batch", native_client._keys.encrypt_single(np.zeros(784, dtype=np.int64))): 422,
    }
    for (path, body), status in cases.items():
        response = _post(service, path, body)
        assert response.status_code == status, (path, response.text)
        assert response.json()["message"]


def test_unknown_key_is_404_and_a_tampered_request_is_refused(service: ServiceProcess,
                                                               native_client: ScoringClient) -> None:
    request = bytearray(native_client._keys.encrypt_single(np.zeros(784, dtype=np.int64)))
    request[16:48] = bytes(32)  # another key id, never uploaded
    response = _post(service, "/v1/score", bytes(request))
    assert response.status_code == 404 and "no public keys" in response.json()["message"]
    request = bytearray(native_client._keys.encrypt_single(np.zeros(784, dtype=np.int64)))
    request[-8:] = b"\xff" * 8  # a coefficient above the prime
    response = _post(service, "/v1/score", bytes(request))
    assert response.status_code == 422 and "reduced" in response.json()["message"]
