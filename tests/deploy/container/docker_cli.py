"""The Docker command line as the container tests use it: what a user types, with bounded waits.

The tests drive `docker` and `docker compose` as subprocesses rather than through an SDK, so what
they prove is what the README tells a user to run.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from bench.processes import wait_until

# Generous bounds for a loaded 2-core machine; a wait ends as soon as its state is reached.
COMMAND_TIMEOUT_S = 600


class DockerError(RuntimeError):
    """A docker command failed; the message has its output."""


def docker(*args: str, timeout_s: float = COMMAND_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
    """Run `docker ARGS`; raise DockerError with its output if it fails and `check`."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def engine_problem() -> str | None:
    """Why no container can be run here (one line), or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no docker command (scripts/container-env.sh installs and starts an engine)"
    try:
        result = docker("info", "--format", "{{.ServerVersion}}", timeout_s=60, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 60 s"
    if result.returncode != 0 or not result.stdout.strip():
        reason = (result.stderr.strip().splitlines() or ["no server version"])[-1]
        return f"no Docker engine answers ({reason}); scripts/container-env.sh starts one"
    return None


def compose_command() -> list[str]:
    """`docker compose` (v2) where present, else `docker-compose` (v1.29 reads the same file)."""
    if docker("compose", "version", timeout_s=60, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise DockerError("neither `docker compose` nor `docker-compose` is installed")


def inspect(name: str) -> dict:
    """`docker inspect` of one container or image, as a dict."""
    return json.loads(docker("inspect", name).stdout)[0]


def wait_healthy(container: str, timeout_s: float = 300) -> None:
    """Wait for the image's HEALTHCHECK to report healthy; fail early if the container stops or turns unhealthy."""

    def healthy() -> bool:
        state = inspect(container)["State"]
        status = state.get("Health", {}).get("Status")
        if not state["Running"] or status == "unhealthy":
            logs = docker("logs", "--tail", "50", container, check=False)
            raise DockerError(f"{container} is {state['Status']}/{status}:\n{logs.stdout}{logs.stderr}")
        return status == "healthy"

    wait_until(healthy, timeout_s, f"{container} healthy")


def published_url(container: str, port: int) -> str:
    """http://127.0.0.1:<host port> where `port` of the container is published."""
    mapping = docker("port", container, f"{port}/tcp").stdout.split()[0]
    return f"http://{mapping}"


def remove_container(name: str) -> None:
    docker("rm", "--force", "--volumes", name, check=False)
