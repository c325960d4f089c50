"""Deployment artefacts: Kubernetes manifests validated against the Kubernetes schemas, the ACI YAML
and Bicep checked for structure, the scripts linted, and all of them checked against the service."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template

import kubernetes_validate
import pytest
import yaml

from bench.processes import PROJECT_ROOT, authenticated_settings
from service.app import create_app
from service.settings import Settings

DEPLOY = PROJECT_ROOT / "deploy"
K8S_VERSION = "1.37.0"
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
IDENTITY_VARIABLES = {"AZURE_CLIENT_ID"}  # read by azure-identity's DefaultAzureCredential
APP_ROUTES = set(create_app(authenticated_settings()).openapi()["paths"])


def kustomize_resources(folder: Path) -> list[Path]:
    """The manifest files a kustomization pulls in, following bases (what `kubectl apply -k` reads)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    files = []
    for entry in kustomization["resources"]:
        path = (folder / entry).resolve()
        files.extend(kustomize_resources(path) if path.is_dir() else [path])
    return files


MANIFESTS = kustomize_resources(DEPLOY / "k8s" / "overlays" / "production")


def documents() -> dict[str, dict]:
    return {doc["kind"]: doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(documents()["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_probes_resources_and_security_fit_the_service() -> None:
    docs = documents()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["ports"][0]["containerPort"] == Settings().port
    assert container["livenessProbe"]["httpGet"]["path"] == "/" and "/" in APP_ROUTES
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready" and "/ready" in APP_ROUTES
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"--uid {pod['securityContext']['runAsUser']}" in (PROJECT_ROOT / "Dockerfile").read_text()
    assert {mount["mountPath"] for mount in container["volumeMounts"]} >= {"/tmp"}
    # Graceful shutdown (60 s in the service) fits in the pod's termination grace period.
    assert pod["terminationGracePeriodSeconds"] > 60
    assert set(docs["ConfigMap"]["data"]) <= SETTING_NAMES
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert docs["Service"]["spec"]["selector"].items() <= pod_labels(docs).items()


def pod_labels(docs: dict[str, dict]) -> dict[str, str]:
    return docs["Deployment"]["spec"]["template"]["metadata"]["labels"]


def test_secret_example_names_only_settings() -> None:
    example = DEPLOY / "k8s" / "overlays" / "production" / "secret.env.example"
    names = {line.split("=", 1)[0] for line in example.read_text().splitlines() if line and not line.startswith("#")}
    assert names and names <= SETTING_NAMES


def test_aci_yaml_is_a_container_group_for_this_service() -> None:
    text = Template((DEPLOY / "aci" / "aci.yaml").read_text()).safe_substitute(
        LOCATION="westeurope", IDENTITY_ID="/subscriptions/0/resourceGroups/rg/providers/id", REGISTRY="acr",
        STORAGE_ACCOUNT="keys", CLIENT_ID="00000000-0000-0000-0000-000000000000", DNS_LABEL="scoring",
        API_KEYS="client=a-long-random-key")
    group = yaml.safe_load(text)
    assert "${" not in str(group), "every placeholder of the file is listed in its header"
    assert group["type"] == "Microsoft.ContainerInstance/containerGroups"
    properties = group["properties"]
    container = properties["containers"][0]["properties"]
    assert properties["osType"] == "Linux"
    assert container["ports"][0]["port"] == properties["ipAddress"]["ports"][0]["port"] == Settings().port
    assert container["livenessProbe"]["httpGet"]["path"] in APP_ROUTES
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["requests"]["cpu"] == 1.0
    names = {variable["name"] for variable in container["environmentVariables"]}
    assert names <= SETTING_NAMES | IDENTITY_VARIABLES
    assert all(("value" in v) != ("secureValue" in v) for v in container["environmentVariables"])
    assert properties["imageRegistryCredentials"][0]["identity"] == next(iter(group["identity"]["userAssignedIdentities"]))


def test_bicep_declares_the_same_container() -> None:
    bicep = (DEPLOY / "aci" / "main.bicep").read_text()
    assert "Microsoft.ContainerInstance/containerGroups@" in bicep
    names = set(re.findall(r"name: '([A-Z_]+)'", bicep))
    assert names and names <= SETTING_NAMES | IDENTITY_VARIABLES
    aci = yaml.safe_load(Template((DEPLOY / "aci" / "aci.yaml").read_text()).safe_substitute())
    yaml_names = {v["name"] for v in aci["properties"]["containers"][0]["properties"]["environmentVariables"]}
    assert names == yaml_names
    assert set(re.findall(r"path: '([^']+)'", bicep)) == {"/", "/ready"}
    assert bicep.count("{") == bicep.count("}") and bicep.count("[") == bicep.count("]")


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: install the test extra (pip install -e '.[test]')"
    scripts = [*sorted((DEPLOY / "aci").glob("*.sh")), PROJECT_ROOT / "scripts" / "run-local.sh",
               PROJECT_ROOT / ".ci" / "run"]
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
