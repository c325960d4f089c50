"""The image built from the Dockerfile: lean, compiled loops, read-only root, non-root user, healthy, JSON logs."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from bench.processes import TEST_HEADERS, wait_until
from tests.deploy.container.conftest import IMAGE, MB, Container
from tests.deploy.container.docker_cli import docker, inspect

pytestmark = pytest.mark.container

# The runtime stage on top of python:3.11-slim: the service's environment only (README, Deploy).
ABOVE_BASE_BUDGET = 320 * MB

# What the image's own interpreter finds: its prefix, installers it can import, test suites shipped,
# and whether the v1 protocol's compiled loops load.
PROBE = """
import importlib.util, json, pathlib, sys
from bfv import kernels
site = pathlib.Path(sys.prefix, "lib", "python3.11", "site-packages")
print(json.dumps({"prefix": sys.prefix,
                  "installers": [m for m in ("pip", "setuptools", "wheel") if importlib.util.find_spec(m)],
                  "test_suites": [str(p) for p in site.rglob("tests") if p.is_dir()],
                  "loops": kernels.STATUS}))
"""


def test_image_has_no_installers_nor_test_suites_and_fits_its_size_budget(built_image: dict[str, int]) -> None:
    found = json.loads(docker("run", "--rm", "--read-only", IMAGE, "python", "-c", PROBE).stdout)
    assert found == {"prefix": "/opt/venv", "installers": [], "test_suites": [], "loops": "compiled"}
    assert built_image["image"] - built_image["base"] <= ABOVE_BASE_BUDGET


def test_runs_read_only_as_a_non_root_user_and_turns_healthy(scoring_container: Container) -> None:
    details = inspect(scoring_container.name)
    user = details["Config"]["User"]
    assert user not in ("", "0", "root")
    assert docker("exec", scoring_container.name, "id", "-u").stdout.strip() == user
    assert details["HostConfig"]["ReadonlyRootfs"] is True
    assert details["State"]["Health"]["Status"] == "healthy"
    assert docker("exec", scoring_container.name, "touch", "/opt/venv/written", check=False).returncode != 0
    docker("exec", scoring_container.name, "touch", "/tmp/written")


def test_logs_are_json_lines_with_the_request_id(scoring_container: Container) -> None:
    request_id = f"container-logs-{uuid.uuid4()}"
    response = httpx.get(f"{scoring_container.url}/ready", headers={**TEST_HEADERS, "x-request-id": request_id})
    assert response.status_code == 200

    def logs() -> str:
        result = docker("logs", scoring_container.name)
        return result.stdout + result.stderr

    wait_until(lambda: request_id in logs(), 60, "the request's access line logged")
    records = [json.loads(line) for line in logs().splitlines() if line.strip()]
    access = [record for record in records if record.get("request_id") == request_id]
    assert [(record["path"], record["status"]) for record in access] == [("/ready", 200)]
