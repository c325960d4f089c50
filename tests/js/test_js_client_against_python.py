"""The JavaScript client (web/) against the Python side: one secret shared between the two clients,
each decrypting replies to the other's requests, and `ScoringClient.predict` in Node 20 against the
running service. Node's own unit tests are in tests/js/ (`node --test tests/js/`, run by make test)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.processes import TEST_API_KEY, ServiceProcess
from model.loading import linear_model_from_estimator
from bfv.inputs import InputEncoding
from bfv.encryption import ClientKeys
from bfv.evaluation import Evaluator
from bfv.plan import build_plan
from bfv.wire import Kind, read_request, request_size
from tests.expectations import assert_within_weight_rounding, served_v1_plan, v1_exact_scores
from tests.real_parts import missing_part

JS_TESTS = Path(__file__).resolve().parent
if shutil.which("node") is None:
    missing_part("Node.js is not installed", whole_module=True)


def _node(script: str, payload: dict) -> dict:
    done = subprocess.run(["node", str(JS_TESTS / script)], input=json.dumps(payload), capture_output=True,
                          text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_python_and_javascript_decrypt_each_others_requests(bundled_estimator, mnist_test_images) -> None:
    plan = build_plan(linear_model_from_estimator(bundled_estimator), InputEncoding.pixels(784))
    params = plan.public.params
    evaluator = Evaluator(plan, mask_pool_size=4)
    keys = ClientKeys(plan.public)
    key = evaluator.prepare_key(keys.public_key)
    images = mnist_test_images[0][:3].reshape(3, -1).astype(np.int64)
    expected = plan.model.scores(images)

    def single(request: bytes) -> bytes:
        return evaluator.score_single(read_request(request, Kind.SINGLE, 1, 1, params), key)

    def batch(request: bytes) -> bytes:
        return evaluator.score_batch(read_request(request, Kind.BATCH, 784, params.degree, params), key)

    js = _node("cross_client.mjs", {
        "model": plan.public.describe(), "secret": keys._secret.tolist(), "key_id": keys.key_id,
        "images": images.tolist(),
        "replies": {"single": single(keys.encrypt_single(images[0])).hex(),
                    "batch": batch(keys.encrypt_batch(images)).hex()},
    })
    # JavaScript decrypts replies to Python's requests ...
    assert js["scores"]["single"] == expected[0].tolist()
    assert js["scores"]["batch"] == expected.tolist()
    # ... and the service scores JavaScript's requests, which Python decrypts.
    assert keys.decrypt_single(single(bytes.fromhex(js["requests"]["single"]))).tolist() == expected[0].tolist()
    assert keys.decrypt_batch(batch(bytes.fromhex(js["requests"]["batch"]))).tolist() == expected.tolist()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_javascript_client_predicts_as_scikit_learn(service: ServiceProcess, batch_size: int, bundled_estimator,
                                                   mnist_test_images) -> None:
    images = mnist_test_images[0][:3].reshape(3, -1)
    result = _node("predict.mjs", {"url": service.url, "api_key": TEST_API_KEY, "images": images.tolist(),
                                   "batch_size": batch_size})
    plan = served_v1_plan(bundled_estimator)
    scores = np.array(result["scores"])
    np.testing.assert_array_equal(scores, v1_exact_scores(plan, images))  # exact: the quantized model's scores
    assert_within_weight_rounding(plan, bundled_estimator, images, scores)
    assert result["labels"] == bundled_estimator.predict(images / 255.0).tolist()
    assert result["request_bytes"] == request_size(1 if batch_size == 1 else plan.public.n_features,
                                                   plan.public.params)


def test_javascript_client_scores_the_square_network_exactly_in_its_rounds(service: ServiceProcess,
                                                                           mnist_test_images) -> None:
    from bfv.network_plan import build_network_plan
    from bfv.network_rounds import round_request_size
    from model import BUNDLED_NETWORK_DIR, BUNDLED_NETWORK_FILE
    from model.description import ModelDescription
    from model.onnx_graphs import read_network

    images = mnist_test_images[0][:3].reshape(3, -1) / 255.0  # the ONNX network's inputs, encoded by the client
    result = _node("predict.mjs", {"url": service.url, "api_key": TEST_API_KEY, "model": "mnist-square",
                                   "features": images.tolist(), "batch_size": 1})
    description = ModelDescription.load(BUNDLED_NETWORK_DIR)
    plan = build_network_plan(read_network(BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE), description.inputs,
                              "compact", description.weight_bits)
    expected = np.asarray(plan.quantized_scores(images), dtype=np.float64) / plan.public.score_scale
    np.testing.assert_array_equal(np.array(result["scores"]), expected)
    assert result["labels"] == expected.argmax(axis=1).tolist()
    assert result["rounds"] == 2 and result["request_bytes"] == sum(round_request_size(plan.public, index)
                                                                   for index in range(2))
