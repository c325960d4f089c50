"""Put the browser files the service serves from npm packages into web/vendor/, so that no page it
serves loads anything from a CDN: the ES modules of @noble/ciphers that web/ring.js imports (ChaCha20
and what it imports) for /demo, and Swagger UI's bundle and style sheet for /docs.

The versions are package-lock.json's. `make setup` copies them from node_modules (after `npm ci`);
where there is no node_modules (the Docker build), each package's tarball is fetched from the npm
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
VENDOR = ROOT / "web" / "vendor"
# package -> (its files to copy, the folder of web/vendor/ they go to)
PACKAGES = {
    "@noble/ciphers": (("chacha.js", "_arx.js", "_poly1305.js", "utils.js", "LICENSE"), "noble-ciphers"),
    "swagger-ui-dist": (("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"), "swagger-ui"),
}


def _from_registry(package: str, version: str, integrity: str, files: tuple[str, ...]) -> dict[str, bytes]:
    url = f"https://registry.npmjs.org/{package}/-/{package.rsplit('/', 1)[-1]}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        tarball = response.read()
    algorithm, expected = integrity.split("-", 1)
    if base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode() != expected:
        raise SystemExit(f"{url} does not match package-lock.json's integrity {integrity}")
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        return {name: archive.extractfile(f"package/{name}").read() for name in files}


def vendor(package: str, locked: dict, files: tuple[str, ...], target: Path) -> None:
    """Copy `files` of `package` into `target`, from node_modules if installed, else from the registry."""
    installed = ROOT / "node_modules" / package
    target.mkdir(parents=True, exist_ok=True)
    if installed.is_dir():
        for name in files:
            shutil.copyfile(installed / name, target / name)
        return
    for name, data in _from_registry(package, locked["version"], locked["integrity"], files).items():
        (target / name).write_bytes(data)


def main() -> None:
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    for package, (files, folder) in PACKAGES.items():
        vendor(package, locked[f"node_modules/{package}"], files, VENDOR / folder)


if __name__ == "__main__":
    main()
