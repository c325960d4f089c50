"""`GET /demo` serves the browser client's files, without credentials, and nothing else, with a strict policy."""

from __future__ import annotations

import httpx
import pytest

from bench.processes import ServiceProcess


@pytest.mark.parametrize(("path", "media_type"), [
    ("/demo", "text/html"), ("/demo/", "text/html"), ("/demo/scoring-client.js", "text/javascript"),
    ("/demo/vendor/noble-ciphers/chacha.js", "text/javascript"), ("/demo/demo.css", "text/css"),
    ("/demo/favicon.svg", "image/svg+xml"), ("/demo/digits.bin", "application/octet-stream"),
])
def test_assets_are_served_openly_with_a_strict_policy(service: ServiceProcess, path: str, media_type: str) -> None:
    response = httpx.get(service.url + path)  # no credentials: the page loads before a key is typed into it
    assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/demo/__init__.py", "/demo/digits.py", "/demo/../service/app.py",
                                  "/demo/%2e%2e/service/app.py", "/demo/vendor/noble-ciphers/LICENSE",
                                  "/demo/nothing.js", "/demo/vendor/../../model/sklearn_mnist_model.pkl"])
def test_nothing_else_is_served(service: ServiceProcess, path: str) -> None:
    assert httpx.get(service.url + path).status_code == 401  # only the served files are open
    response = service.http.get(path)
    assert response.status_code == 404 and response.json()["message"]
