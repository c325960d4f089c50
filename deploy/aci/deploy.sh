#!/usr/bin/env bash
# Deploy the scoring service to Azure Container Instances, as the seed tutorial did (1 core), but as
# our own image and with the service's own storage credential.
#
#   AUTH=identity          (default) a user-assigned managed identity pulls the image and reads the keys
#   AUTH=connection-string the account's connection string, passed as a secure environment variable
#
# Every name can be overridden from the environment; nothing is printed that holds a secret. Clients
# authenticate with API_KEY (default: a new random key, written to ./<prefix>.api-key, mode 600).
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
STORAGE_ID=$(az storage account show --name "$STORAGE_ACCOUNT" --resource-group "$RESOURCE_GROUP" --query id -o tsv)
az storage container create --name "$KEY_CONTAINER" --account-name "$STORAGE_ACCOUNT" --auth-mode key --output none
# Native public keys expire after KEY_TTL_DAYS: the service refuses them, this rule deletes them.
az storage account management-policy create --account-name "$STORAGE_ACCOUNT" --resource-group "$RESOURCE_GROUP" \
  --output none --policy "{\"rules\": [{\"enabled\": true, \"name\": \"expire-native-keys\", \"type\": \"Lifecycle\",
    \"definition\": {\"actions\": {\"baseBlob\": {\"delete\": {\"daysAfterModificationGreaterThan\": $KEY_TTL_DAYS}}},
    \"filters\": {\"blobTypes\": [\"blockBlob\"], \"prefixMatch\": [\"$KEY_CONTAINER/native-v1/\"]}}}]}"

echo "registry $REGISTRY: building the image in Azure"
az acr create --name "$REGISTRY" --resource-group "$RESOURCE_GROUP" --sku Basic --output none
REGISTRY_ID=$(az acr show --name "$REGISTRY" --query id -o tsv)
az acr build --registry "$REGISTRY" --image "encrypted-scoring:$IMAGE_TAG" "$REPO_ROOT"
IMAGE="$REGISTRY.azurecr.io/encrypted-scoring:$IMAGE_TAG"

common=(--resource-group "$RESOURCE_GROUP" --name "$NAME" --image "$IMAGE" --os-type Linux
  --cpu "$CPU" --memory "$MEMORY_GB" --ports 8000 --ip-address Public --dns-name-label "$DNS_LABEL"
  --environment-variables WORKER_COUNT="$CPU" KEY_CONTAINER="$KEY_CONTAINER" LOG_FORMAT=json
  RATE_LIMIT="$RATE_LIMIT" KEY_TTL_DAYS="$KEY_TTL_DAYS")

if [[ "$AUTH" == "identity" ]]; then
  echo "managed identity ${NAME}-id: AcrPull on the registry, Storage Blob Data Contributor on the account"
  az identity create --name "${NAME}-id" --resource-group "$RESOURCE_GROUP" --output none
  IDENTITY_ID=$(az identity show --name "${NAME}-id" --resource-group "$RESOURCE_GROUP" --query id -o tsv)
  PRINCIPAL_ID=$(az identity show --name "${NAME}-id" --resource-group "$RESOURCE_GROUP" --query principalId -o tsv)
  CLIENT_ID=$(az identity show --name "${NAME}-id" --resource-group "$RESOURCE_GROUP" --query clientId -o tsv)
  az role assignment create --assignee-object-id "$PRINCIPAL_ID" --assignee-principal-type ServicePrincipal \
    --role AcrPull --scope "$REGISTRY_ID" --output none
  az role assignment create --assignee-object-id "$PRINCIPAL_ID" --assignee-principal-type ServicePrincipal \
    --role "Storage Blob Data Contributor" --scope "$STORAGE_ID" --output none  # native keys are written
  az container create "${common[@]}" --assign-identity "$IDENTITY_ID" --acr-identity "$IDENTITY_ID" \
    --secure-environment-variables \
      AZURE_STORAGE_ACCOUNT_URL="https://$STORAGE_ACCOUNT.blob.core.windows.net" AZURE_CLIENT_ID="$CLIENT_ID" \
      API_KEYS="client=$API_KEY" \
    --output none
else
  az acr update --name "$REGISTRY" --admin-enabled true --output none
  CONNECTION_STRING=$(az storage account show-connection-string --name "$STORAGE_ACCOUNT" \
    --resource-group "$RESOURCE_GROUP" --query connectionString -o tsv)
  az container create "${common[@]}" \
    --registry-login-server "$REGISTRY.azurecr.io" \
    --registry-username "$(az acr credential show --name "$REGISTRY" --query username -o tsv)" \
    --registry-password "$(az acr credential show --name "$REGISTRY" --query 'passwords[0].value' -o tsv)" \
    --secure-environment-variables AZURE_STORAGE_CONNECTION_STRING="$CONNECTION_STRING" API_KEYS="client=$API_KEY" \
    --output none
fi

FQDN=$(az container show --resource-group "$RESOURCE_GROUP" --name "$NAME" --query ipAddress.fqdn -o tsv)
echo "scoring service: http://$FQDN:8000  (readiness: http://$FQDN:8000/ready)"
echo "upload client keys to account $STORAGE_ACCOUNT, container $KEY_CONTAINER; tear down with:"
echo "  RESOURCE_GROUP=$RESOURCE_GROUP deploy/aci/teardown.sh"
