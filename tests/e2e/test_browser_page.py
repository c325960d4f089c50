"""The demo page (`GET /demo`) in headless Chromium, driven by Playwright, against the running service.

Digits picked from the bundled ones and one drawn with the mouse are scored through the page; the
digit it shows must be scikit-learn's prediction for the pixels the page encrypted, and no request
body may contain those pixels in clear. Skipped only where no Chromium is installed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.browser import CHROMIUM, VIEWPORT, draw_seven, launch_chromium
from bench.processes import TEST_API_KEY, ServiceProcess
from tests.real_parts import missing_part
from web.digits import DIGITS_FILE, bundled_digits

pytestmark = pytest.mark.browser
if CHROMIUM is None:
    missing_part("no Chromium found (apt-get install chromium)", whole_module=True)
SCORED_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


class DemoPage:
    """The page, with every console error and every request body it sent recorded."""

    def __init__(self, browser: object, service: ServiceProcess, api_key: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.bodies: list[bytes] = []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.route("**/*", self._record)
        self.response = self.page.goto(f"{service.url}/demo")
        self.page.fill("#api-key", api_key)
        self.page.wait_for_selector("#digits button >> nth=9")

    def _record(self, route: object) -> None:
        self.bodies.append(route.request.post_data_buffer or b"")
        route.continue_()

    def score(self) -> tuple[np.ndarray, str]:
        """Press Score; the pixels the page encrypted and the digit it shows."""
        self.page.click("#score")
        result = self.page.wait_for_selector('#result[data-state="done"]', timeout=SCORED_TIMEOUT_MS)
        pixels = np.frombuffer(base64.b64decode(result.get_attribute("data-pixels")), dtype=np.uint8)
        return pixels, self.page.inner_text("#label")

    def assert_pixels_never_sent(self, pixels: np.ndarray) -> None:
        forms = [pixels.tobytes(), json.dumps(pixels.tolist()).encode(), ",".join(map(str, pixels)).encode(),
                 base64.b64encode(pixels.tobytes())]
        assert any(self.bodies), "no request body was recorded"
        for body in self.bodies:
            assert not any(form in body for form in forms)


@pytest.fixture
def demo(browser: object, service: ServiceProcess) -> Iterator[DemoPage]:
    page = DemoPage(browser, service, TEST_API_KEY)
    yield page
    page.context.close()


def _sklearn_label(estimator: object, pixels: np.ndarray) -> str:
    return str(estimator.predict(pixels.reshape(1, -1) / 255.0)[0])


def test_committed_digits_are_the_bundled_sample() -> None:
    assert DIGITS_FILE.read_bytes() == bundled_digits()


def test_page_loads_with_a_strict_policy_and_no_console_error(demo: DemoPage) -> None:
    policy = demo.response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert demo.page.title() == "Encrypted digit scoring"
    demo.page.wait_for_load_state("networkidle")
    assert demo.errors == []


def test_picked_digits_score_as_scikit_learn_without_leaving_the_page(demo: DemoPage, bundled_estimator: object,
                                                                    tmp_path: Path) -> None:
    digits = np.frombuffer(bundled_digits(), dtype=np.uint8).reshape(10, -1)
    for digit in (2, 5, 7):
        demo.page.click(f'#digits button[data-digit="{digit}"]')
        pixels, shown = demo.score()
        assert (pixels == digits[digit]).all()
        assert shown == _sklearn_label(bundled_estimator, pixels)
        demo.assert_pixels_never_sent(pixels)
    assert demo.page.inner_text("#sent").replace(",", "").startswith("30800")
    demo.page.screenshot(path=tmp_path / "demo-picked.png")
    assert demo.errors == []


def test_a_drawn_digit_is_centred_like_mnist_and_scored(demo: DemoPage, bundled_estimator: object,
                                                        tmp_path: Path) -> None:
    draw_seven(demo.page)
    pixels, shown = demo.score()
    image = pixels.reshape(28, 28).astype(float)
    rows, cols = np.nonzero(image)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 == 20  # fitted to MNIST's 20 x 20 box
    centre = np.array([(image.sum(axis=1) * np.arange(28)).sum(), (image.sum(axis=0) * np.arange(28)).sum()])
    assert np.abs(centre / image.sum() + 0.5 - 14).max() <= 1  # centre of mass at the centre
    assert shown == _sklearn_label(bundled_estimator, pixels) == "7"
    demo.assert_pixels_never_sent(pixels)
    demo.page.screenshot(path=tmp_path / "demo-drawn.png")
    assert demo.errors == []


def test_twenty_digits_scored_by_the_square_network_and_both_answers_shown(demo: DemoPage, tmp_path: Path) -> None:
    """The network chosen on the page: each bundled digit twice, every label exactly the quantized network's for
    the pixels the page encrypted; then "both" shows the linear model's and the network's answers."""
    from bfv.network_plan import build_network_plan
    from model import BUNDLED_NETWORK_DIR, BUNDLED_NETWORK_FILE
    from model.description import ModelDescription
    from model.onnx_graphs import read_network

    description = ModelDescription.load(BUNDLED_NETWORK_DIR)
    plan = build_network_plan(read_network(BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE), description.inputs,
                              "compact", description.weight_bits)
    demo.page.select_option("#model", "mnist-square")
    for scoring in range(20):
        demo.page.click(f'#digits button[data-digit="{scoring % 10}"]')
        pixels, shown = demo.score()
        # pixels / 255 on the network's levels, as the page encodes the image for this model
        expected = np.asarray(plan.quantized_scores(pixels[None] / 255.0)).argmax(axis=1)[0]
        assert shown == str(expected)
        demo.assert_pixels_never_sent(pixels)
    assert demo.page.inner_text("#label-model") == "square network"
    demo.page.select_option("#model", "both")
    demo.page.click('#digits button[data-digit="3"]')
    demo.score()
    labels = json.loads(demo.page.get_attribute("#result", "data-labels"))
    assert set(labels) == {"linear", "mnist-square"}
    assert demo.page.is_visible("#other") and demo.page.inner_text("#other-label") == str(labels["mnist-square"])
    demo.page.screenshot(path=tmp_path / "demo-both.png")
    assert demo.errors == []
