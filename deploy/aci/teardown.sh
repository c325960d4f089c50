#!/usr/bin/env bash
# Delete everything deploy.sh created: it all lives in one resource group.
set -euo pipefail
: "${RESOURCE_GROUP:?set RESOURCE_GROUP to the group deploy.sh printed}"
az group delete --name "$RESOURCE_GROUP" --yes --no-wait
echo "deleting resource group $RESOURCE_GROUP (runs in the background in Azure)"
