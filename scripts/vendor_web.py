"""Put the ES modules of @noble/ciphers that web/ring.js imports (ChaCha20 and what it imports)
into web/vendor/noble-ciphers/, so the service serves them and the page loads nothing from a CDN.

The version is package-lock.json's. `make setup` copies them from node_modules (after `npm ci`);
where there is no node_modules (the Docker build), the package's tarball is fetched from the npm
registry and checked against the lockfile's integrity hash first.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "@noble/ciphers"
FILES = ("chacha.js", "_arx.js", "_poly1305.js", "utils.js", "LICENSE")
TARGET = ROOT / "web" / "vendor" / "noble-ciphers"


def _from_registry(version: str, integrity: str) -> dict[str, bytes]:
    url = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE.split('/')[1]}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        tarball = response.read()
    algorithm, expected = integrity.split("-", 1)
    if base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode() != expected:
        raise SystemExit(f"{url} does not match package-lock.json's integrity {integrity}")
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        return {name: archive.extractfile(f"package/{name}").read() for name in FILES}


def main() -> None:
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"][f"node_modules/{PACKAGE}"]
    installed = ROOT / "node_modules" / PACKAGE
    TARGET.mkdir(parents=True, exist_ok=True)
    if installed.is_dir():
        for name in FILES:
            shutil.copyfile(installed / name, TARGET / name)
        return
    for name, data in _from_registry(locked["version"], locked["integrity"]).items():
        (TARGET / name).write_bytes(data)


if __name__ == "__main__":
    main()
