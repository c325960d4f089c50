"""Deployment artefacts: Kubernetes manifests validated against the Kubernetes schemas, the ACI YAML
and Bicep checked for structure, the scripts linted, and all of them checked against the service."""

from __future__ import annotations

import base64
import copy
import json
import os
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
from tests.real_parts import missing_part

DEPLOY = PROJECT_ROOT / "deploy"
K8S_VERSION = "1.37.0"
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
IDENTITY_VARIABLES = {"AZURE_CLIENT_ID"}  # read by azure-identity's DefaultAzureCredential
CADDY_VARIABLES = {"SITE_ADDRESS"}  # read by deploy/aci/Caddyfile
CADDYFILE = DEPLOY / "aci" / "Caddyfile"
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


def test_https_ingress_network_policy_and_disruption_budget_fit_the_deployment() -> None:
    docs = documents()
    labels = pod_labels(docs)
    ingress = docs["Ingress"]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    assert {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]} == {
        rule["host"] for rule in ingress["spec"]["rules"]}
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == docs["Service"]["metadata"]["name"]
    assert backend["port"]["name"] in {port["name"] for port in docs["Service"]["spec"]["ports"]}
    policy = docs["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    container_ports = {port["name"] for port in container["ports"]}
    assert {port["port"] for rule in policy["ingress"] for port in rule["ports"]} <= container_ports
    budget = docs["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] < docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"]


def ingress_sources(policy: dict) -> dict[str, set[str]]:
    """Namespace a NetworkPolicy admits traffic from -> the (named) pod ports it may reach."""
    sources: dict[str, set[str]] = {}
    for rule in policy["ingress"]:
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, f"only whole namespaces are admitted: {peer}"
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            sources.setdefault(namespace, set()).update(port["port"] for port in rule["ports"])
    return sources


def test_the_api_port_admits_the_ingress_controller_only_and_prometheus_reaches_the_metrics_port() -> None:
    """Prometheus scrapes METRICS_PORT (no credentials there); the API port's /metrics asks for credentials,
    so monitoring has no business on the API port."""
    docs = documents()
    pod = docs["Deployment"]["spec"]["template"]
    ports = {port["name"]: port["containerPort"] for port in pod["spec"]["containers"][0]["ports"]}
    metrics_port = int(docs["ConfigMap"]["data"]["METRICS_PORT"])
    assert ports["metrics"] == metrics_port == int(pod["metadata"]["annotations"]["prometheus.io/port"])
    assert ports["http"] == Settings().port
    assert ingress_sources(docs["NetworkPolicy"]["spec"]) == {"ingress-nginx": {"http"}, "monitoring": {"metrics"}}
    assert not {"metrics", metrics_port} & {port["targetPort"] for port in docs["Service"]["spec"]["ports"]}


def egress_ports(policy: dict) -> dict[int, list]:
    """TCP port -> the peers it may be reached at (`[]`: any address)."""
    return {port["port"]: rule.get("to", []) for rule in policy["egress"] for port in rule["ports"]
            if port["protocol"] == "TCP"}


def test_the_pods_may_reach_dns_blob_storage_and_the_quota_redis() -> None:
    """With RATE_LIMIT_STORAGE_URI=redis://..., every scoring request reads the counters: a policy that
    blocked Redis would answer every one with 503."""
    example = (DEPLOY / "k8s" / "overlays" / "production" / "secret.env.example").read_text()
    redis_port = int(re.search(r"^RATE_LIMIT_STORAGE_URI=redis://[^:]+:(\d+)$", example, re.MULTILINE).group(1))
    egress = egress_ports(documents()["NetworkPolicy"]["spec"])
    assert egress[443] == [], "Blob Storage and Entra: Azure's addresses"
    assert egress[redis_port] == [{"podSelector": {}}], "Redis: any pod of the app's own namespace"
    assert set(egress) == {53, 443, redis_port}


def test_kustomize_leaves_the_network_policy_peers_as_written() -> None:
    """kustomization.yaml's labels rewrite selectors, NetworkPolicy peers' matchLabels included: a Redis
    selected by its label would become this app's own pods. What `kubectl apply -k` sends is checked here."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # not a part .ci/run provides (Debian has no kubectl package): the raw check above stays
        pytest.skip("kubectl is not installed (its kustomize renders the manifests)")
    rendered = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s" / "base")], capture_output=True, text=True,
                              check=True).stdout
    policy = next(doc for doc in yaml.safe_load_all(rendered) if doc["kind"] == "NetworkPolicy")
    assert policy["spec"] == documents()["NetworkPolicy"]["spec"]


# Worst-case memory of a replica, in MiB: what each part was measured at (docs/operations.md). With the
# defaults this gives 1,052 MiB for one worker (ACI) and 1,636 MiB for two (Kubernetes).
WEB_PROCESS_IDLE_MIB = 200  # the web process, idle
RESOURCE_TRACKER_MIB = 12  # multiprocessing's resource tracker
WORKER_IDLE_MIB = 200  # one scoring worker, idle, model loaded
LARGEST_SCORING_MIB = 128  # a worker's peak for the largest scoring (a 24 MB batch measured +100 MiB)


def worst_case_replica_mib(workers: int) -> float:
    """Web process + every body held twice (once received, once pickled to a worker: 2 x MAX_QUEUE_BYTES)
    + the resource tracker + per worker: idle + a full key cache (KEY_CACHE_BYTES) + the largest scoring."""
    fields = Settings.model_fields  # the declared defaults, whatever the environment of the test run
    mib = 1024 * 1024
    bodies = 2 * fields["max_queue_bytes"].default / mib
    key_cache = fields["key_cache_bytes"].default / mib
    return (WEB_PROCESS_IDLE_MIB + bodies + RESOURCE_TRACKER_MIB
            + workers * (WORKER_IDLE_MIB + key_cache + LARGEST_SCORING_MIB))


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_memory_limits_are_above_the_worst_case() -> None:
    docs = documents()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    workers = int(docs["ConfigMap"]["data"]["WORKER_COUNT"])
    assert mebibytes(container["resources"]["limits"]["memory"]) > worst_case_replica_mib(workers)
    service = aci_containers()["encrypted-scoring"]
    aci_workers = int(next(v["value"] for v in service["environmentVariables"] if v["name"] == "WORKER_COUNT"))
    assert service["resources"]["requests"]["memoryInGB"] * 1000**3 / 1024**2 > worst_case_replica_mib(aci_workers)


def pod_labels(docs: dict[str, dict]) -> dict[str, str]:
    return docs["Deployment"]["spec"]["template"]["metadata"]["labels"]


def test_secret_example_names_only_settings() -> None:
    example = DEPLOY / "k8s" / "overlays" / "production" / "secret.env.example"
    names = {line.split("=", 1)[0] for line in example.read_text().splitlines() if line and not line.startswith("#")}
    assert names and names <= SETTING_NAMES


ACI_PLACEHOLDERS = {"LOCATION": "westeurope", "IDENTITY_ID": "/subscriptions/0/resourceGroups/rg/providers/id",
                    "REGISTRY": "acr", "STORAGE_ACCOUNT": "keys", "STORAGE_KEY": "a2V5",
                    "KEY_CONTAINER": "public-keys", "CLIENT_ID": "00000000-0000-0000-0000-000000000000",
                    "DNS_LABEL": "scoring", "API_KEYS": "client=a-long-random-key",
                    "CADDYFILE": base64.b64encode(CADDYFILE.read_bytes()).decode()}  # as the header says
FQDN = f"{ACI_PLACEHOLDERS['DNS_LABEL']}.{ACI_PLACEHOLDERS['LOCATION']}.azurecontainer.io"
CADDY_COMMAND = ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
CONTRIBUTOR_ROLE = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # Storage Blob Data Contributor (Azure built-in role id)


def aci_group() -> dict:
    return yaml.safe_load(Template((DEPLOY / "aci" / "aci.yaml").read_text()).safe_substitute(ACI_PLACEHOLDERS))


def aci_containers() -> dict[str, dict]:
    return {c["name"]: c["properties"] for c in aci_group()["properties"]["containers"]}


def probe_path(probe: dict) -> str:
    """The path an exec probe fetches from the service on localhost."""
    found = re.search(rf"http://127\.0\.0\.1:{Settings().port}(/[a-z]*)", " ".join(probe["exec"]["command"]))
    assert found, probe
    return found.group(1)


def test_aci_yaml_is_a_container_group_for_this_service_behind_caddy() -> None:
    group = aci_group()
    assert "${" not in str(group), "every placeholder of the file is listed in its header"
    assert group["type"] == "Microsoft.ContainerInstance/containerGroups"
    properties = group["properties"]
    containers = aci_containers()
    service, caddy = containers["encrypted-scoring"], containers["caddy"]
    assert properties["osType"] == "Linux"
    # Only Caddy is reachable from outside (80 for the ACME challenge, 443); the service is on localhost.
    assert {port["port"] for port in properties["ipAddress"]["ports"]} == {port["port"] for port in caddy["ports"]} \
        == {80, 443}
    assert "ports" not in service
    variables = {v["name"]: v.get("value") for v in service["environmentVariables"]}
    assert variables["HOST"] == "127.0.0.1"
    # Caddy runs deploy/aci/Caddyfile (its default upstream is the service's port) for the group's name.
    assert caddy["command"] == CADDY_COMMAND and f"{{$UPSTREAM:localhost:{Settings().port}}}" in CADDYFILE.read_text()
    assert caddy["environmentVariables"] == [{"name": "SITE_ADDRESS", "value": FQDN}]
    volumes = {volume["name"]: volume for volume in properties["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in caddy["volumeMounts"]}
    assert volumes[mounts["/data"]]["azureFile"]["shareName"] == "caddy-data"
    assert base64.b64decode(volumes[mounts["/etc/caddy"]]["secret"]["Caddyfile"]) == CADDYFILE.read_bytes()
    assert probe_path(service["livenessProbe"]) in APP_ROUTES
    assert probe_path(service["readinessProbe"]) == "/ready"
    assert service["resources"]["requests"]["cpu"] == 1.0
    assert set(variables) <= SETTING_NAMES | IDENTITY_VARIABLES
    assert all(("value" in v) != ("secureValue" in v) for v in service["environmentVariables"])
    [identity] = group["identity"]["userAssignedIdentities"]
    assert properties["imageRegistryCredentials"][0]["identity"] == identity


def test_bicep_declares_the_same_containers() -> None:
    bicep = (DEPLOY / "aci" / "main.bicep").read_text()
    assert "Microsoft.ContainerInstance/containerGroups@" in bicep
    names = set(re.findall(r"name: '([A-Z_]+)'", bicep)) - CADDY_VARIABLES
    assert names and names <= SETTING_NAMES | IDENTITY_VARIABLES
    yaml_names = {v["name"] for v in aci_containers()["encrypted-scoring"]["environmentVariables"]}
    assert names == yaml_names | {"AZURE_STORAGE_CONNECTION_STRING"}  # the Bicep also has AUTH=connection-string
    assert set(re.findall(rf"http://127\.0\.0\.1:{Settings().port}(/[a-z]*)", bicep)) == {"/", "/ready"}
    assert re.search(r"command: \[\s*" + r"\s*".join(f"'{word}'" for word in CADDY_COMMAND) + r"\s*\]", bicep)
    assert re.search(r"name: 'SITE_ADDRESS'\s*value: fqdn\s", bicep)
    assert "var fqdn = '${dnsNameLabel}.${location}.azurecontainer.io'" in bicep
    assert re.search(r"name: 'caddy-config'\s*secret: \{\s*Caddyfile: loadFileAsBase64\('Caddyfile'\)", bicep)
    assert re.search(r"name: 'caddy-config'\s*mountPath: '/etc/caddy'", bicep) and "azureFile" in bicep
    assert bicep.count("{") == bicep.count("}") and bicep.count("[") == bicep.count("]")


def test_the_managed_identity_may_write_the_key_container_only() -> None:
    """POST /v1/keys writes keys, so the identity needs write access, but to the key container only."""
    bicep = (DEPLOY / "aci" / "main.bicep").read_text()
    assignments = re.findall(r"resource \w+ 'Microsoft\.Authorization/roleAssignments@[^']+'.*?\n}", bicep, re.DOTALL)
    assert len(assignments) == 1
    assert "scope: keys" in assignments[0] and "storageBlobDataContributor" in assignments[0]
    assert f"var storageBlobDataContributor = '{CONTRIBUTOR_ROLE}'" in bicep
    assert re.search(r"resource keys 'Microsoft\.Storage/storageAccounts/blobServices/containers@[^']+' existing = "
                     r"\{\s*parent: blobService\s*name: keyContainer", bicep)

    script = (DEPLOY / "aci" / "deploy.sh").read_text()
    roles = re.findall(r"--role (\S+|\"[^\"]+\") --scope (\S+)", script)
    assert roles == [("AcrPull", '"$REGISTRY_ID"')], "the script itself grants nothing on storage"
    assert "--template-file \"$REPO_ROOT/deploy/aci/main.bicep\"" in script
    assert 'keyContainer="$KEY_CONTAINER"' in script and 'storageAccountName="$STORAGE_ACCOUNT"' in script

    header = (DEPLOY / "aci" / "aci.yaml").read_text()
    assert re.search(r'--role "Storage Blob Data Contributor" \\\n#\s+--scope "\$STORAGE_ID/blobServices/default/'
                     r'containers/\$\{KEY_CONTAINER\}"', header)
    key_container = next(v["value"] for v in aci_containers()["encrypted-scoring"]["environmentVariables"]
                         if v["name"] == "KEY_CONTAINER")
    assert key_container == ACI_PLACEHOLDERS["KEY_CONTAINER"]
    for text in (bicep, script, header):
        assert "Data Reader" not in text and "Storage Account Contributor" not in text


def test_aci_files_pass_api_keys_as_secrets_and_delete_expired_native_keys() -> None:
    """KEY_TTL_DAYS is enforced twice: the service refuses older keys, and storage deletes their blobs."""
    bicep = (DEPLOY / "aci" / "main.bicep").read_text()
    assert re.search(r"@secure\(\)\s*param apiKeys string", bicep)
    assert re.search(r"name: 'API_KEYS'\s*secureValue: apiKeys", bicep)
    policy = re.search(r"resource \w+ 'Microsoft\.Storage/storageAccounts/managementPolicies@[^']+'.*?\n}", bicep,
                       re.DOTALL)
    assert policy, "main.bicep declares no lifecycle-management policy"
    assert "daysAfterModificationGreaterThan: keyTtlDays" in policy.group(0)
    assert "'${keyContainer}/native-v1/'" in policy.group(0), "only native keys expire"
    script = (DEPLOY / "aci" / "deploy.sh").read_text()
    assert 'apiKeys="client=$API_KEY"' in script and 'keyTtlDays="$KEY_TTL_DAYS"' in script
    service = aci_containers()["encrypted-scoring"]["environmentVariables"]
    assert {"name": "API_KEYS", "secureValue": ACI_PLACEHOLDERS["API_KEYS"]} in service


def handlers(routes: list[dict]) -> list[dict]:
    """The handlers of Caddy JSON routes, subroutes flattened, in order."""
    found = []
    for route in routes:
        for handler in route["handle"]:
            found.extend(handlers(handler["routes"]) if handler["handler"] == "subroute" else [handler])
    return found


def test_the_caddyfile_serves_the_group_name_over_https_with_hsts_and_redirects_port_80() -> None:
    """What deploy/aci/Caddyfile is, as Caddy reads it for the group (tests/http/test_tls.py runs it)."""
    caddy = shutil.which("caddy")
    if caddy is None:
        missing_part("caddy is not installed (.ci/run installs it)")
    env = {key: value for key, value in os.environ.items() if key != "UPSTREAM"} | {"SITE_ADDRESS": FQDN}
    adapted = subprocess.run([caddy, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"], env=env,
                             capture_output=True, text=True, check=True)
    config = json.loads(adapted.stdout)
    assert config["admin"] == {"disabled": True}
    [server] = config["apps"]["http"]["servers"].values()
    # Only 443 is configured: port 80 is Caddy's automatic redirect server (not turned off here), no route.
    assert server["listen"] == [":443"] and "automatic_https" not in server
    assert [route["match"] for route in server["routes"]] == [[{"host": [FQDN]}]]
    assert handlers(server["routes"]) == [
        {"handler": "headers", "response": {"set": {"Strict-Transport-Security": ["max-age=31536000"]}}},
        {"handler": "reverse_proxy", "upstreams": [{"dial": f"localhost:{Settings().port}"}]}]


# Where a Caddy image could be named: every deployment file, the compose file, the image, the docs.
IMAGE_FILES = [*sorted(path for path in DEPLOY.rglob("*") if path.is_file()), PROJECT_ROOT / "docker-compose.yml",
               PROJECT_ROOT / "Dockerfile", PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md")),
               *sorted((PROJECT_ROOT / "tests" / "deploy" / "container").glob("*.py"))]
CADDY_TAG = re.compile(r"\bcaddy:([\w.-]*)|(?:image:\s*['\"]?|/library/)caddy(?![\w:-])")


def caddy_tags(text: str) -> list[str]:
    """The tags of the Caddy images `text` names (`""` for an image named without one, i.e. latest)."""
    return [match.group(1) or "" for match in CADDY_TAG.finditer(text)]


def test_every_caddy_image_is_pinned_to_one_exact_version() -> None:
    """A floating tag (`caddy:2`, `latest`) changes the TLS terminator under a running deployment."""
    assert caddy_tags("image: docker.io/library/caddy:2\nimage: caddy\n`caddy:latest`") == ["2", "", "latest"]
    tags = {str(path.relative_to(PROJECT_ROOT)): caddy_tags(path.read_text()) for path in IMAGE_FILES}
    assert tags["deploy/aci/aci.yaml"] and tags["deploy/aci/main.bicep"]
    versions = {tag for found in tags.values() for tag in found}
    assert len(versions) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", versions.pop()), tags


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: install the test extra (pip install -e '.[test]')"
    scripts = [*sorted((DEPLOY / "aci").glob("*.sh")), *sorted((PROJECT_ROOT / "scripts").glob("*.sh")),
               PROJECT_ROOT / ".ci" / "run"]
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
