#!/usr/bin/env bash
# Deploy the scoring service to Azure Container Instances, as the seed tutorial did (1 core), but as
# our own image, over HTTPS and with the service's own storage credential. The container group is
# main.bicep: a Caddy sidecar (deploy/aci/Caddyfile) terminates HTTPS for the group's FQDN with automatic
# certificates (kept on the Azure Files share caddy-data) and only redirects on port 80; the service
# listens on localhost only.
#
#   AUTH=identity          (default) a user-assigned managed identity reads and writes the key container
#                          (Storage Blob Data Contributor on that container only, given by main.bicep)
#   AUTH=connection-string the account's connection string, passed as a secure environment variable
#
# Either way the identity pulls the image (AcrPull on the registry). Every name can be overridden
# from the environment; nothing is printed that holds a secret. Clients authenticate with API_KEY
# (default: a new random key, written to ./<prefix>.api-key, mode 600).
set -euo pipefail

PREFIX=${PREFIX:-encscore$RANDOM}
RESOURCE_GROUP=${RESOURCE_GROUP:-${PREFIX}-rg}
LOCATION=${LOCATION:-westeurope}
STORAGE_ACCOUNT=${STORAGE_ACCOUNT:-${PREFIX}keys}
KEY_CONTAINER=${KEY_CONTAINER:-public-keys}
REGISTRY=${REGISTRY:-${PREFIX}acr}
IMAGE_TAG=${IMAGE_TAG:-0.1.0}
NAME=${NAME:-encrypted-scoring}
DNS_LABEL=${DNS_LABEL:-${PREFIX}}
CPU=${CPU:-1}
MEMORY_GB=${MEMORY_GB:-1.5}
AUTH=${AUTH:-identity}
CADDY_SHARE=${CADDY_SHARE:-caddy-data}
RATE_LIMIT=${RATE_LIMIT:-20000/hour;200000/day}
KEY_TTL_DAYS=${KEY_TTL_DAYS:-30}
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -z "${API_KEY:-}" ]]; then
  API_KEY=$(openssl rand -hex 32)
  (umask 077 && printf '%s\n' "$API_KEY" > "${PREFIX}.api-key")
  echo "API key for identity 'client' written to ${PREFIX}.api-key"
fi

echo "resource group $RESOURCE_GROUP in $LOCATION"
az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none

echo "storage account $STORAGE_ACCOUNT, container $KEY_CONTAINER"
az storage account create --name "$STORAGE_ACCOUNT" --resource-group "$RESOURCE_GROUP" --location "$LOCATION" \
  --sku Standard_LRS --kind StorageV2 --min-tls-version TLS1_2 --allow-blob-public-access false --output none
az storage container create --name "$KEY_CONTAINER" --account-name "$STORAGE_ACCOUNT" --auth-mode key --output none

echo "registry $REGISTRY: building the image in Azure"
az acr create --name "$REGISTRY" --resource-group "$RESOURCE_GROUP" --sku Basic --output none
REGISTRY_ID=$(az acr show --name "$REGISTRY" --query id -o tsv)
az acr build --registry "$REGISTRY" --image "encrypted-scoring:$IMAGE_TAG" "$REPO_ROOT"
IMAGE="$REGISTRY.azurecr.io/encrypted-scoring:$IMAGE_TAG"

echo "file share $CADDY_SHARE for Caddy's certificates"
az storage share-rm create --storage-account "$STORAGE_ACCOUNT" --resource-group "$RESOURCE_GROUP" \
  --name "$CADDY_SHARE" --quota 1 --output none

echo "managed identity ${NAME}-id: AcrPull on the registry"
az identity create --name "${NAME}-id" --resource-group "$RESOURCE_GROUP" --output none
PRINCIPAL_ID=$(az identity show --name "${NAME}-id" --resource-group "$RESOURCE_GROUP" --query principalId -o tsv)
az role assignment create --assignee-object-id "$PRINCIPAL_ID" --assignee-principal-type ServicePrincipal \
  --role AcrPull --scope "$REGISTRY_ID" --output none

parameters=(image="$IMAGE" identityName="${NAME}-id" storageAccountName="$STORAGE_ACCOUNT"
  keyContainer="$KEY_CONTAINER" caddyShare="$CADDY_SHARE" dnsNameLabel="$DNS_LABEL" name="$NAME"
  cpu="$CPU" memoryInGB="$MEMORY_GB" apiKeys="client=$API_KEY" rateLimit="$RATE_LIMIT" keyTtlDays="$KEY_TTL_DAYS")
if [[ "$AUTH" == "connection-string" ]]; then
  parameters+=(storageConnectionString="$(az storage account show-connection-string --name "$STORAGE_ACCOUNT" \
    --resource-group "$RESOURCE_GROUP" --query connectionString -o tsv)")
fi
echo "container group $NAME (Caddy + service), native keys deleted after $KEY_TTL_DAYS days; with AUTH=identity, Storage Blob Data Contributor on container $KEY_CONTAINER"
az deployment group create --resource-group "$RESOURCE_GROUP" --template-file "$REPO_ROOT/deploy/aci/main.bicep" \
  --parameters "${parameters[@]}" --output none

FQDN=$(az container show --resource-group "$RESOURCE_GROUP" --name "$NAME" --query ipAddress.fqdn -o tsv)
echo "scoring service: https://$FQDN  (readiness: https://$FQDN/ready; the first certificate takes a minute)"
echo "upload client keys to account $STORAGE_ACCOUNT, container $KEY_CONTAINER; tear down with:"
echo "  RESOURCE_GROUP=$RESOURCE_GROUP deploy/aci/teardown.sh"
