"""`GET /docs`: Swagger UI from the service's own files (package-lock.json's swagger-ui-dist), no CDN,
no inline script, under a strict Content-Security-Policy; open or behind credentials as `API_DOCS` says.

The demo page keeps an API key in sessionStorage on this same origin: any script the docs page ran
from elsewhere could read it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

from bench.browser import CHROMIUM, launch_chromium
from bench.processes import PROJECT_ROOT, ServiceProcess, running_service
from service.routes.docs import PATHS, VENDOR
from tests.real_parts import missing_part


@pytest.fixture(scope="module")
def open_docs(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "API_DOCS": "open"}
    with running_service(env, tmp_path_factory.mktemp("open-docs") / "service.log") as service:
        yield service


class Resources(HTMLParser):
    """What a page makes the browser fetch or run: script sources, inline scripts, linked files."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self._in_script = tag == "script"
        self.sources += [value for name, value in attrs if name in {"src", "href"} and value]
        if tag == "script" and "src" not in attributes:
            self.inline_scripts.append("")
        self.inline_scripts += [f"{name}=" for name, _ in attrs if name.startswith("on")]

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def policy(answer: httpx.Response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as directive -> sources."""
    directives = [part.split() for part in answer.headers["content-security-policy"].split(";") if part.strip()]
    return {directive[0]: directive[1:] for directive in directives}


def assert_strict_headers(answer: httpx.Response) -> None:
    rules = policy(answer)
    assert rules["default-src"] == ["'self'"] and "script-src" not in rules  # scripts: this origin's files only
    assert not any(source.startswith("'unsafe") for sources in rules.values() for source in sources), rules
    assert rules["frame-ancestors"] == rules["object-src"] == rules["base-uri"] == ["'none'"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_the_page_loads_only_files_of_this_origin_and_runs_no_inline_script(open_docs: ServiceProcess) -> None:
    page = httpx.get(f"{open_docs.url}/docs")  # API_DOCS=open: no credentials
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_strict_headers(page)
    resources = Resources(page.text)
    assert resources.inline_scripts == []
    assert resources.sources and all(source.startswith("/") and not source.startswith("//")
                                     for source in resources.sources), resources.sources
    assert {"/docs", *resources.sources} == PATHS | {"/demo/favicon.svg"}  # the demo page's icon
    for source in resources.sources:
        answer = httpx.get(open_docs.url + source)
        assert answer.status_code == 200 and answer.headers["content-type"].split(";")[0] in {
            "text/javascript", "text/css", "image/svg+xml"}
        assert_strict_headers(answer)


def test_the_bundle_is_the_locked_swagger_ui(open_docs: ServiceProcess) -> None:
    """The version package-lock.json pins, which scripts/vendor_web.py copied (checked against its hash)."""
    locked = json.loads((PROJECT_ROOT / "package-lock.json").read_text())["packages"]["node_modules/swagger-ui-dist"]
    assert json.loads((PROJECT_ROOT / "package.json").read_text())["dependencies"]["swagger-ui-dist"] == \
        locked["version"], "an exact version, not a range"
    served = httpx.get(f"{open_docs.url}/docs/swagger-ui-bundle.js").content
    assert served == (VENDOR / "swagger-ui-bundle.js").read_bytes()
    installed = PROJECT_ROOT / "node_modules" / "swagger-ui-dist"
    if installed.is_dir():  # npm ci checked these files against the lockfile's integrity
        assert json.loads((installed / "package.json").read_text())["version"] == locked["version"]
        assert served == (installed / "swagger-ui-bundle.js").read_bytes()


def test_open_docs_are_warned_about_at_start(open_docs: ServiceProcess, service: ServiceProcess) -> None:
    assert "WARNING" in next(line for line in open_docs.log().splitlines() if "API_DOCS=open" in line)
    assert "API_DOCS" not in service.log()  # the default, protected


@pytest.mark.parametrize("path", sorted(PATHS))
def test_protected_docs_files_need_credentials(service: ServiceProcess, path: str) -> None:
    """API_DOCS=protected (the default): callers without credentials learn nothing, the files included."""
    assert httpx.get(service.url + path).status_code == 401
    answer = service.http.get(path)
    assert answer.status_code == 200
    assert_strict_headers(answer)


@pytest.mark.parametrize("path", ["/docs/oauth2-redirect", "/docs/swagger-ui-bundle.js.map", "/docs/LICENSE",
                                  "/docs/index.html", "/docs/../service/app.py", "/docs/%2e%2e/pyproject.toml",
                                  "/docs/swagger-ui.js"])
def test_nothing_else_is_served_under_docs(open_docs: ServiceProcess, path: str) -> None:
    assert httpx.get(open_docs.url + path).status_code == 401  # only the page's own files are open
    answer = open_docs.http.get(path)
    assert answer.status_code == 404 and answer.json()["message"]


@pytest.mark.browser
def test_swagger_ui_renders_under_its_policy_in_chromium(open_docs: ServiceProcess) -> None:
    """The policy does not break the page: every operation is listed, nothing was refused, nothing
    was fetched from another origin."""
    if CHROMIUM is None:
        missing_part("no Chromium found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    operations = len(open_docs.http.get("/swagger.json").json()["paths"])
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            errors: list[str] = []
            requested: list[str] = []
            page.on("console", lambda message: message.type in {"error", "warning"} and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            page.on("response", lambda response: response.status >= 400 and errors.append(
                f"{response.status} {response.url}"))
            page.goto(f"{open_docs.url}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=60_000)
            shown = {element.inner_text().replace("\u200b", "")
                     for element in page.query_selector_all(".opblock-summary-path")}
        finally:
            browser.close()
    assert len(shown) == operations, shown
    assert errors == []
    assert all(url.startswith(f"{open_docs.url}/") for url in requested), requested
