#!/usr/bin/env bash
# Start the service with its defaults. Unless AZURE_STORAGE_CONNECTION_STRING names another account,
# also start Azurite on 127.0.0.1:10000 (data kept in .azurite/) when nothing listens there yet.
set -euo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ -z "${AZURE_STORAGE_CONNECTION_STRING:-}" ]] && ! port_open 10000; then
  mkdir -p .azurite
  node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort 10000 --location .azurite \
    --skipApiVersionCheck --loose --silent &
  azurite_pid=$!
  trap 'kill "$azurite_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do port_open 10000 && break; sleep 0.1; done
  port_open 10000 || { echo "Azurite did not start on 127.0.0.1:10000" >&2; exit 1; }
  echo "Azurite blob service on http://127.0.0.1:10000 (data in .azurite/)"
fi

# A development key unless the caller brings credentials; never use it anywhere reachable.
if [[ -z "${API_KEYS:-}" && -z "${API_KEYS_FILE:-}" && -z "${AUTH_MODE:-}" ]]; then
  export API_KEYS="dev=dev-key-change-me" BATCH_IDENTITIES="${BATCH_IDENTITIES:-dev}"
  echo "development API key: export SCORING_API_KEY=dev-key-change-me (Authorization: Bearer dev-key-change-me)"
fi

.venv/bin/python -m service
