"""the tutorial notebook's flow, end to end on real parts: the unmodified EILinearRegressionClient, keys in
Azurite, real homomorphic scoring over HTTP, compared with the plaintext scikit-learn model and with
the tutorial's own engine (EIServer) on real MNIST images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pytest

from bench.processes import PROJECT_ROOT, TEST_API_KEY, running_service
from model import DEFAULT_MODEL_FILE
from tests.expectations import CKKS_ATOL, assert_matches_sklearn


def score_concurrently(session, images: np.ndarray, url: str | None = None) -> np.ndarray:
    """Encrypt each image, post them all at once, decrypt the replies."""
    bodies = [session.request_body(image / 255.0) for image in images]
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda body: session.post(body, url), bodies))
    return np.array([session.encryptor.decrypt(reply) for reply in replies])


def test_seed_client_predictions_equal_sklearn_on_real_mnist(azureml_session, bundled_estimator,
                                                             mnist_test_images) -> None:
    images, _, _ = mnist_test_images
    sample = images[:8]
    assert_matches_sklearn(bundled_estimator, sample / 255.0, score_concurrently(azureml_session, sample))


@pytest.mark.slow
def test_fast_engine_answers_equal_eiserver_for_the_same_ciphertexts(azureml_session, eiserver_service,
                                                                     bundled_estimator, mnist_test_images) -> None:
    images, _, _ = mnist_test_images
    bodies = [azureml_session.request_body(image / 255.0) for image in images[8:10]]
    with ThreadPoolExecutor(2) as pool:
        reference = list(pool.map(lambda body: azureml_session.post(body, eiserver_service.url), bodies))
    fast = [azureml_session.post(body) for body in bodies]
    decrypt = azureml_session.encryptor.decrypt
    for image, fast_reply, reference_reply in zip(images[8:10], fast, reference):
        np.testing.assert_allclose(decrypt(fast_reply), decrypt(reference_reply), atol=CKKS_ATOL, rtol=0)
        assert_matches_sklearn(bundled_estimator, image / 255.0, decrypt(reference_reply))
        assert sum(map(len, fast_reply)) < sum(map(len, reference_reply))


def test_demo_cli_runs_the_notebook_flow(service, azurite: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client", "demo", "--url", service.url, "--count", "3", "--container", "demo-keys"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite, "COLUMNS": "120",
             "SCORING_API_KEY": TEST_API_KEY})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3/3 agree" in result.stdout


@pytest.mark.parametrize("engine", ["seal", pytest.param("eiserver", marks=pytest.mark.slow)])
def test_contract_works_as_an_azureml_entry_script(engine: str, azureml_session, azurite: str, bundled_estimator,
                                                   mnist_test_images, monkeypatch) -> None:
    """`init()` then `run(raw_data)` in-process, as Azure ML's inference server calls them."""
    from service.azureml import contract
    from service.settings import Settings

    monkeypatch.setattr(contract, "_scorer", None)  # the engine is released when the test ends
    contract.init(Settings(azure_storage_connection_string=azurite, scoring_engine=engine))
    images, _, _ = mnist_test_images
    reply = contract.run(azureml_session.request_body(images[3] / 255.0))
    assert json.loads(json.dumps(reply)) == reply
    assert_matches_sklearn(bundled_estimator, images[3] / 255.0, azureml_session.encryptor.decrypt(reply))


def test_seed_tutorial_model_through_azureml_model_dir(azurite: str, mnist_test_images, seed_model_dir: Path,
                                                       tmp_path: Path) -> None:
    from client.azureml import AzureMLSession

    estimator = joblib.load(seed_model_dir / DEFAULT_MODEL_FILE)
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "2", "AZUREML_MODEL_DIR": str(seed_model_dir)}
    with running_service(env, tmp_path / "seed-model.log") as service:
        assert "was pickled by scikit-learn 0.22" in service.log()
        with AzureMLSession(url=service.url, conn_str=azurite, container="seed-model-keys",
                         api_key=TEST_API_KEY) as session:
            images, _, _ = mnist_test_images
            assert_matches_sklearn(estimator, images[:4] / 255.0, score_concurrently(session, images[:4]))
