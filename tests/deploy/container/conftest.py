"""Fixtures of the container tests: the image built once per session from the project's Dockerfile,
and containers started from it the way a user starts them.

Every test here needs a Docker engine (`scripts/container-env.sh` installs and starts one, and makes
stand-in base images where no registry is reachable); without one they all skip with the reason
(fail under CI, `tests.real_parts`).
Containers are named after this process and published on 127.0.0.1 only; each is removed at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import yaml

from bench.processes import PROJECT_ROOT, TEST_AUTH_ENV, azurite_connection_string, wait_until
from tests.deploy.container.docker_cli import (docker, engine_problem, inspect, published_url, remove_container,
                                               wait_healthy)
from tests.real_parts import missing_part

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
# The tag compose runs: built here once, `docker compose up --no-build` then uses the same image.
IMAGE = COMPOSE["services"]["service"]["image"]
AZURITE_IMAGE = COMPOSE["services"]["azurite"]["image"]
BASE_IMAGE = "python:3.11-slim"
# As in compose: the service reaches Azurite by the network alias `azurite`, port 10000.
SERVICE_CONNECTION_STRING = COMPOSE["services"]["service"]["environment"]["AZURE_STORAGE_CONNECTION_STRING"]
KEY_CONTAINER = "public-keys"

# Every container of the service accepts the tests' API key (bench.processes), allowed batches.
SERVICE_ENV = {**TEST_AUTH_ENV, "AZURE_STORAGE_CONNECTION_STRING": SERVICE_CONNECTION_STRING}

IMAGE_REPORT = pytest.StashKey[str]()
MB = 1_000_000  # as `docker images` counts


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine_problem()
    if problem:
        missing_part(f"container tests: {problem}")


@pytest.fixture(scope="session")
def built_image(docker_engine: None, request: pytest.FixtureRequest) -> dict[str, int]:
    """Build the project's Dockerfile (once per session) and return the image's and its base's size in bytes."""
    started = time.monotonic()
    # Host network for the build: pip reaches the package index as the host does, whatever the
    # engine's own networking (scripts/container-env.sh starts it without NAT).
    docker("build", "--network", "host", "--tag", IMAGE, str(PROJECT_ROOT), timeout_s=1800)
    build_s = time.monotonic() - started
    image, base = inspect(IMAGE), inspect(BASE_IMAGE)
    origin = "stand-in" if "stand-in" in base.get("Comment", "") else "pulled"
    request.config.stash[IMAGE_REPORT] = (
        f"{IMAGE}: {image['Size'] / MB:.0f} MB, {(image['Size'] - base['Size']) / MB:.0f} MB above "
        f"{BASE_IMAGE} ({origin}, {base['Size'] / MB:.0f} MB); docker build took {build_s:.0f} s")
    return {"image": image["Size"], "base": base["Size"]}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    report = config.stash.get(IMAGE_REPORT, None)
    if report:
        terminalreporter.write_sep("-", "container image")
        terminalreporter.write_line(report)


@pytest.fixture(scope="session")
def network(docker_engine: None) -> Iterator[str]:
    """A user-defined bridge network, as compose makes one: containers find each other by name."""
    name = f"scoring-tests-{os.getpid()}"
    docker("network", "create", name)
    yield name
    docker("network", "rm", name, check=False)


def http_answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=5)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture(scope="session")
def azurite_container(network: str) -> Iterator[str]:
    """Azurite from compose's image on the network as `azurite`; yields the host's connection string."""
    name = f"{network}-azurite"
    try:
        docker("run", "--detach", "--name", name, "--network", network, "--network-alias", "azurite",
               "--publish", "127.0.0.1::10000", AZURITE_IMAGE, "azurite-blob", "--blobHost", "0.0.0.0",
               "--blobPort", "10000", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose")
        url = published_url(name, 10000)
        wait_until(lambda: http_answers(url), 120, "Azurite answering")
        yield azurite_connection_string(int(url.rsplit(":", 1)[1]))
    finally:
        remove_container(name)


@dataclass(frozen=True)
class Container:
    name: str
    url: str


@contextmanager
def service_container(name: str, network: str, env: dict[str, str]) -> Iterator[Container]:
    """The image run as the README's Deploy section runs it: read-only root, /tmp as tmpfs, port 8000
    published on 127.0.0.1; yielded once the image's HEALTHCHECK reports healthy."""
    settings = [f"--env={key}={value}" for key, value in {**SERVICE_ENV, **env}.items()]
    try:
        docker("run", "--detach", "--name", name, "--network", network, "--read-only", "--tmpfs", "/tmp",
               "--publish", "127.0.0.1::8000", *settings, IMAGE)
        wait_healthy(name)
        yield Container(name, published_url(name, 8000))
    finally:
        remove_container(name)


@pytest.fixture(scope="session")
def scoring_container(built_image: dict[str, int], network: str, azurite_container: str) -> Iterator[Container]:
    """The image with two workers (fast engine), keys in the Azurite container; healthy."""
    with service_container(f"{network}-service", network, {"WORKER_COUNT": "2"}) as container:
        yield container

