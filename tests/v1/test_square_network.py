"""The bundled square network over real HTTP (uvicorn, Azurite, real encryption), beside the linear model.

Its encrypted predictions are compared with the quantized network the service plans (exactly) and
with the float network (labels), on real MNIST images; every refusal a round can meet is checked
from the wire.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.processes import TEST_API_KEY, ServiceProcess
from bfv.inputs import InputRangeError
from bfv.network_plan import NetworkPublicPlan, build_network_plan
from bfv.network_rounds import TOKEN_BYTES, NetworkKeys
from client import EncryptedModel
from model import BUNDLED_NETWORK_DIR, BUNDLED_NETWORK_FILE
from model.description import ModelDescription
from model.onnx_graphs import read_network

NETWORK = "mnist-square"
PREFIX = f"/v1/models/{NETWORK}"
OCTETS = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def quantized():
    """The plan the service makes of the bundled network, made here from the same files."""
    description = ModelDescription.load(BUNDLED_NETWORK_DIR)
    network = read_network(BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE)
    return network, build_network_plan(network, description.inputs, "compact", description.weight_bits)


def test_the_network_is_served_beside_the_linear_model_with_one_public_key_and_no_evaluation_key(
        service: ServiceProcess) -> None:
    listed = {model["name"]: model for model in service.http.get("/v1/models").json()["models"]}
    assert listed["mnist"]["default"] and not listed[NETWORK]["default"]
    assert listed[NETWORK]["model_kind"] == "square-network"
    described = service.http.get(PREFIX).json()
    assert described["model_kind"] == "square-network" and described["security_bits"] == 128
    assert len(described["rounds"]) == 2 and len(described["plain_moduli"]) >= 1
    plan = NetworkPublicPlan.from_description(described)  # checks 128-bit security and reply widths
    keys = NetworkKeys(plan)
    stored = service.http.post(f"{PREFIX}/keys", content=keys.public_key, headers=OCTETS)
    assert stored.status_code == 201, stored.text
    assert stored.json()["bytes"] == len(keys.public_key) <= 64 * 1024


def test_encrypted_predictions_equal_the_quantized_network_exactly(service: ServiceProcess, quantized,
                                                                   mnist_test_images) -> None:
    network, plan = quantized
    images, labels, _ = mnist_test_images
    images, labels = images[:16], labels[:16]
    with EncryptedModel(service.url, api_key=TEST_API_KEY, model=NETWORK) as model:
        scores = model.linear_scores(images / 255.0)
        probabilities = model.predict_proba(images / 255.0)
        predicted = model.predict(images / 255.0)
        traffic = model.traffic
    expected = np.asarray(plan.quantized_scores(images / 255.0), dtype=np.float64) / plan.public.score_scale
    np.testing.assert_array_equal(scores, expected)  # the integers are exact, so their scaled values are equal
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities.argmax(axis=1) == predicted).all()
    assert np.mean(predicted == network.scores(images / 255.0).argmax(axis=1)) >= 15 / 16
    assert np.mean(predicted == labels) >= 14 / 16
    assert traffic.requests == 2 * traffic.samples == 6 * len(images)  # three calls, two rounds per sample


def test_uint8_images_are_refused_with_the_scale_the_network_takes(service: ServiceProcess, mnist_test_images) -> None:
    """The network takes pixels / 255 on its own levels, not the pixels: uint8 images get the reason, not scores."""
    from client.scoring import ScoringClient, model_prefix

    images = mnist_test_images[0][:2]
    with ScoringClient(service.url, api_key=TEST_API_KEY, prefix=model_prefix(NETWORK)) as client:
        with pytest.raises(InputRangeError, match=r"images / 255\.0"):
            client.predict(images)
        with pytest.raises(InputRangeError, match=r"images / 255\.0"):  # clip would make every ink pixel 1.0
            client.integer_inputs(images.reshape(2, -1), clip=True)
        assert client.traffic.requests == 0
        labels, _ = client.predict(images / 255.0)
    assert labels.shape == (2,)


def test_the_cli_scores_the_network_and_compares_with_its_onnx_file(service: ServiceProcess, tmp_path: Path,
                                                                    mnist_test_images) -> None:
    from typer.testing import CliRunner

    from client.__main__ import app

    images, _, _ = mnist_test_images
    np.save(tmp_path / "x.npy", (images[16:26] / 255.0).astype(np.float32))
    result = CliRunner().invoke(app, [
        "predict", "--url", service.url, "--model", NETWORK, "--input", str(tmp_path / "x.npy"), "--json",
        "--compare-with", str(BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE)],
        env={"SCORING_API_KEY": TEST_API_KEY, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["estimator"] == "SquareNetwork" and report["n"] == 10
    assert report["agreement_with_plaintext_model"] >= 0.9
    assert report["request_bytes_per_sample"] > 0 and report["server_ms_per_sample"] > 0


def test_a_batch_of_4096_through_the_cli_equals_the_quantized_network_exactly(service: ServiceProcess, tmp_path: Path,
                                                                               quantized, mnist_test_images) -> None:
    """The batch layout: 4,096 samples in one request per round, in blocks of the ring's N (2,048), a sample
    per slot of every ciphertext."""
    from typer.testing import CliRunner

    from client.__main__ import app

    network, plan = quantized
    images = mnist_test_images[0][:4096]
    np.save(tmp_path / "x.npy", (images / 255.0).astype(np.float32))  # the ONNX network's inputs
    out = tmp_path / "predictions.txt"
    result = CliRunner().invoke(app, [
        "predict", "--url", service.url, "--model", NETWORK, "--input", str(tmp_path / "x.npy"), "--json",
        "--batch", "4096", "--predictions-out", str(out)],
        env={"SCORING_API_KEY": TEST_API_KEY, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["n"] == 4096 and report["batch"] == 4096
    assert report["requests"] == 2  # one per round, each of two blocks of 2,048
    # round 0's ciphertexts (one per input sent) and round 1's, per block
    assert report["request_bytes_per_sample"] < 32 * 1024
    predicted = np.loadtxt(out, dtype=np.int64)
    expected = np.asarray(plan.quantized_scores(images / 255.0), dtype=object).argmax(axis=1)
    assert (predicted == expected.astype(np.int64)).all()


def test_batches_of_the_network_through_encrypted_model_equal_single_requests_exactly(
        service: ServiceProcess, quantized, mnist_test_images) -> None:
    network, plan = quantized
    images = mnist_test_images[0][:40] / 255.0
    with EncryptedModel(service.url, api_key=TEST_API_KEY, model=NETWORK, batch_size=16) as model:
        batched = model.linear_scores(images)
        traffic = model.traffic
    expected = np.asarray(plan.quantized_scores(images), dtype=np.float64)
    np.testing.assert_array_equal(batched, expected / plan.public.score_scale)
    assert traffic.requests == 6 and traffic.samples == 40  # batches of 16, 16 and 8, two rounds each


def _round_zero(service: ServiceProcess) -> tuple[NetworkKeys, bytes]:
    keys = NetworkKeys(NetworkPublicPlan.from_description(service.http.get(PREFIX).json()))
    assert service.http.post(f"{PREFIX}/keys", content=keys.public_key, headers=OCTETS).status_code == 201
    return keys, keys.first_request(np.zeros(784, dtype=np.int64))


def test_a_round_refuses_what_it_cannot_score_with_the_reason(service: ServiceProcess) -> None:
    keys, body = _round_zero(service)
    linear = service.http.post(f"{PREFIX}/score", content=b"EIQ1" + bytes(76), headers=OCTETS)
    assert linear.status_code == 409 and "rounds" in linear.json()["message"]
    rounds_of_linear = service.http.post("/v1/models/mnist/score/rounds/0", content=body, headers=OCTETS)
    assert rounds_of_linear.status_code == 409 and "linear" in rounds_of_linear.json()["message"]
    beyond = service.http.post(f"{PREFIX}/score/rounds/2", content=body, headers=OCTETS)
    assert beyond.status_code == 404 and "2 rounds" in beyond.json()["message"]
    short = service.http.post(f"{PREFIX}/score/rounds/0", content=body[:-8], headers=OCTETS)
    assert short.status_code in (413, 422)
    first = service.http.post(f"{PREFIX}/score/rounds/0", content=body, headers=OCTETS)
    assert first.status_code == 200, first.text
    second = keys.next_request(0, first.content)
    forged = second[:-1] + bytes([second[-1] ^ 1])
    refused = service.http.post(f"{PREFIX}/score/rounds/1", content=forged, headers=OCTETS)
    assert refused.status_code == 422 and "not issued" in refused.json()["message"]
    # A token is bound to the key that began the round: another key's round 1 with it is refused.
    other, _ = _round_zero(service)
    borrowed = other.next_request(0, first.content[:TOKEN_BYTES] + first.content[TOKEN_BYTES:])
    assert service.http.post(f"{PREFIX}/score/rounds/1", content=borrowed, headers=OCTETS).status_code == 422
    answered = service.http.post(f"{PREFIX}/score/rounds/1", content=second, headers=OCTETS)
    assert answered.status_code == 200 and len(keys.scores(answered.content)) == 10
    # The batch layout's rounds: a single round's body is refused by its size, a linear model's by its kind,
    # and a single round's token does not open a batch round (the token is bound to the layout).
    assert service.http.post(f"{PREFIX}/score/batch/rounds/0", content=body,
                             headers=OCTETS).status_code in (413, 422)
    batch_of_linear = service.http.post("/v1/models/mnist/score/batch/rounds/0", content=body, headers=OCTETS)
    assert batch_of_linear.status_code == 409 and "linear" in batch_of_linear.json()["message"]
    batch = keys.first_batch_request(np.zeros((3, 784), dtype=np.int64))
    started = service.http.post(f"{PREFIX}/score/batch/rounds/0", content=batch, headers=OCTETS)
    assert started.status_code == 200, started.text
    crossed = keys.next_request(0, started.content, batch=True)
    crossed = crossed[:-TOKEN_BYTES] + first.content[:TOKEN_BYTES]  # a single round 0's token
    mixed = service.http.post(f"{PREFIX}/score/batch/rounds/1", content=crossed, headers=OCTETS)
    assert mixed.status_code == 422 and "not issued" in mixed.json()["message"]
    # A batch of two blocks: the first must hold N samples (what the quota charges is all blocks' samples).
    degree = keys.plan.degree
    two = bytearray(keys.first_batch_request(np.zeros((degree + 1, 784), dtype=np.int64)))
    two[8:12] = (degree - 1).to_bytes(4, "little")  # the first block's image count (after magic, kind, profile)
    short_block = service.http.post(f"{PREFIX}/score/batch/rounds/0", content=bytes(two), headers=OCTETS)
    assert short_block.status_code == 422 and "every block" in short_block.json()["message"]


def test_a_service_whose_only_model_is_a_network_starts_and_refuses_score_with_the_reason(
        azurite: str, tmp_path_factory: pytest.TempPathFactory, mnist_test_images) -> None:
    import shutil

    import httpx

    from bench.processes import running_service

    root = tmp_path_factory.mktemp("network-only")
    shutil.copytree(BUNDLED_NETWORK_DIR, root / NETWORK / "1")
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "AZUREML_MODEL_DIR": str(root), "WORKER_COUNT": "1"}
    with running_service(env, root / "service.log") as service:
        listed = service.http.get("/v1/models").json()["models"]
        assert [(model["name"], model["default"]) for model in listed] == [(NETWORK, True)]
        refused = httpx.post(f"{service.url}/score", headers=service.headers, timeout=30,
                             json={"data": ["x"], "key_id": "k"})
        assert refused.status_code == 409 and "square network" in refused.json()["message"]
        images = mnist_test_images[0][:2]
        with EncryptedModel(service.url, api_key=TEST_API_KEY) as model:  # the default model: the network
            assert model.predict(images / 255.0).shape == (2,)
            assert model.traffic.requests == 4
