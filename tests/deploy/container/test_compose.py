"""`docker compose` with the project's docker-compose.yml: up healthy, the demo client, down clean."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.processes import PROJECT_ROOT, azurite_connection_string, free_port
from tests.deploy.container.conftest import COMPOSE
from tests.deploy.container.docker_cli import compose_command, docker, wait_healthy

pytestmark = pytest.mark.container

DEMO_IMAGES = 3
# The development key that docker-compose.yml configures (`identity=key`), as a user would send it.
DEV_API_KEY = COMPOSE["services"]["service"]["environment"]["API_KEYS"].split("=", 1)[1]


def project_resources(project: str) -> dict[str, list[str]]:
    """The containers, networks and volumes that compose labelled as the project's."""
    label = f"label=com.docker.compose.project={project}"
    return {kind: docker(kind, "ls", "--quiet", *(["--all"] if kind == "container" else []), "--filter",
                         label).stdout.split()
            for kind in ("container", "network", "volume")}


def test_compose_up_serves_the_seed_demo_and_down_leaves_nothing(built_image: dict) -> None:
    project = f"scoring-compose-{os.getpid()}"
    # Free host ports, so that the test runs beside a `make run` on the default ones.
    ports = {"SERVICE_PORT": free_port(), "AZURITE_PORT": free_port()}
    env = {**os.environ, **{name: str(port) for name, port in ports.items()}}

    def compose(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*compose_command(), "--file", str(PROJECT_ROOT / "docker-compose.yml"),
                               "--project-name", project, *args],
                              cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)

    try:
        # The image is the session's build of the Dockerfile, under the tag compose names.
        up = compose("up", "--detach", "--no-build")
        assert up.returncode == 0, up.stdout + up.stderr
        running = project_resources(project)
        assert [len(running[kind]) for kind in ("container", "network", "volume")] == [2, 1, 1]
        for container in running["container"]:
            wait_healthy(container)
        demo = subprocess.run(
            [sys.executable, "-m", "client", "demo", "--url", f"http://127.0.0.1:{ports['SERVICE_PORT']}",
             "--count", str(DEMO_IMAGES), "--no-send-conn-str",
             "--conn-str", azurite_connection_string(ports["AZURITE_PORT"]), "--api-key", DEV_API_KEY],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert f"{DEMO_IMAGES}/{DEMO_IMAGES} agree" in demo.stdout
    finally:
        down = compose("down", "--volumes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert project_resources(project) == {"container": [], "network": [], "volume": []}
