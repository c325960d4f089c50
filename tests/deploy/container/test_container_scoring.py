"""Both protocols scored through the container on real MNIST test images, and a graceful `docker stop`.

the tutorial's client is the unmodified `EILinearRegressionClient` (keys in Azurite, as in the seed
notebook); the native client is `python -m client predict`, one image per request and in batches.
Every encrypted prediction must equal scikit-learn's. On the images used here the v1 protocol's
12-bit quantized weights agree with scikit-learn exactly (on the full test set they differ on 1 of
10,000 images, see the README).
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.processes import GENEROUS_SCORING_TIMEOUT_MS, PROJECT_ROOT, TEST_API_KEY, TEST_HEADERS, wait_until
from client.azureml import AzureMLSession
from tests.deploy.container.conftest import KEY_CONTAINER, Container, service_container
from tests.deploy.container.docker_cli import docker, inspect

pytestmark = pytest.mark.container

SEED_IMAGES = 5
# More than the service's own graceful shutdown (60 s), as the Kubernetes manifest grants it.
STOP_GRACE_S = 90


def seed_labels(url: str, conn_str: str, features: np.ndarray, estimator: object) -> list[int]:
    """Encrypt each row with the tutorial's client, score it at `url`, decrypt, argmax."""
    with AzureMLSession(url=url, conn_str=conn_str, container=KEY_CONTAINER, api_key=TEST_API_KEY) as session:
        return [int(estimator.classes_[np.argmax(session.scores(row))]) for row in features]


def test_seed_client_through_the_container_equals_sklearn(scoring_container: Container, azurite_container: str,
                                                          mnist_test_images: tuple, bundled_estimator: object) -> None:
    features = mnist_test_images[0][:SEED_IMAGES] / 255.0
    labels = seed_labels(scoring_container.url, azurite_container, features, bundled_estimator)
    assert labels == bundled_estimator.predict(features).tolist()


@pytest.mark.parametrize(("batch", "count"), [(1, 100), (500, 1000)], ids=["single", "batch"])
def test_native_client_through_the_container_equals_sklearn(scoring_container: Container, mnist_test_images: tuple,
                                                            bundled_estimator: object, batch: int, count: int,
                                                            tmp_path: Path) -> None:
    # The command line reads the same images as the fixture (the shared MNIST test set when present).
    predictions = tmp_path / "predictions.txt"
    result = subprocess.run(
        [sys.executable, "-m", "client", "predict", "--url", scoring_container.url, "--limit", str(count),
         "--batch", str(batch), "--predictions-out", str(predictions), "--json", "--api-key", TEST_API_KEY],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = bundled_estimator.predict(mnist_test_images[0][:count] / 255.0)
    assert np.loadtxt(predictions, dtype=int).tolist() == expected.tolist()


def scorings_in_flight(url: str, reply: Future) -> float:
    """The service's `scoring_in_flight` gauge; fails at once if the request ended before it was seen."""
    if reply.done():
        raise AssertionError(f"the request ended before it was seen in flight: {reply.result()!r:.200}")
    metrics = httpx.get(f"{url}/metrics", headers=TEST_HEADERS, timeout=10).text
    return next(float(line.split()[1]) for line in metrics.splitlines() if line.startswith("scoring_in_flight "))


def test_docker_stop_lets_an_in_flight_request_finish_and_exits_0(built_image: dict, network: str,
                                                                  azurite_container: str, mnist_test_images: tuple,
                                                                  bundled_estimator: object) -> None:
    # The seed's EIServer engine takes seconds per scoring: long enough to be caught in flight.
    features = mnist_test_images[0][:1] / 255.0
    env = {"SCORING_ENGINE": "eiserver", "WORKER_COUNT": "1", "SCORING_TIMEOUT_MS": str(GENEROUS_SCORING_TIMEOUT_MS)}
    with service_container(f"{network}-stop", network, env) as container, ThreadPoolExecutor(1) as pool:
        reply = pool.submit(seed_labels, container.url, azurite_container, features, bundled_estimator)
        wait_until(lambda: scorings_in_flight(container.url, reply) == 1, 600, "a scoring in flight")
        docker("stop", "--time", str(STOP_GRACE_S), container.name, timeout_s=STOP_GRACE_S + 120)
        state = inspect(container.name)["State"]
        labels = reply.result()
    # Exit code 0, not 137: the service finished on SIGTERM, before the grace period's SIGKILL.
    assert (state["ExitCode"], state["OOMKilled"]) == (0, False)
    assert labels == bundled_estimator.predict(features).tolist()
