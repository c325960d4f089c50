#!/usr/bin/env bash
# Copy the ES modules of @noble/ciphers that web/ring.js imports (ChaCha20 and what it imports)
# from node_modules into web/vendor/, so the service serves them: the page loads nothing from a CDN.
# Run by `make setup` and by the Dockerfile's web stage, after `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
target=web/vendor/noble-ciphers
mkdir -p "$target"
cp node_modules/@noble/ciphers/{chacha,_arx,_poly1305,utils}.js node_modules/@noble/ciphers/LICENSE "$target/"
