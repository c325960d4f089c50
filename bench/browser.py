"""The browser client's figures, measured in headless Chromium (Debian's, driven by Playwright).

    python -m bench.browser [--images 30] [--screenshot docs/demo.png]

Starts its own Azurite and service on free loopback ports (accepting `TEST_API_KEY`, which the page
is given in its API-key field), opens `/demo`, and reports as JSON: the
page weight (bytes transferred for the page and its modules, without the bundled digits), key
generation ms, and medians per image of encryption, waiting and decryption ms and end to end ms,
measured by the page's own `ScoringClient` on the bundled digits; then draws a "7", scores it and
saves a screenshot. The helpers here are shared with tests/e2e/test_browser_page.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.processes import TEST_API_KEY, running_azurite, running_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's Chromium as root needs --no-sandbox; the rest keep it off this machine's closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 1180, "height": 800}

# Runs in the page: the served module, the bundled digits, one request per image.
MEASURE = """async (count) => {
  const { ScoringClient } = await import('/demo/scoring-client.js');
  const digits = new Uint8Array(await (await fetch('/demo/digits.bin')).arrayBuffer());
  const client = new ScoringClient(location.origin, { apiKey: document.getElementById('api-key').value || undefined });
  await client.ready();
  const rows = [];
  for (let i = 0; i < count; i++) {
    const image = digits.slice((i % 10) * 784, (i % 10 + 1) * 784);
    const started = performance.now();
    await client.predict([image]);
    rows.push({ ...client.lastExchange, request: undefined, totalMs: performance.now() - started });
  }
  return { keygenMs: client.keygenMs, rows };
}"""

PAGE_WEIGHT = """() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
  .filter((entry) => !entry.name.endsWith('/digits.bin'))
  .map((entry) => ({ name: entry.name, bytes: entry.transferSize }))"""


def launch_chromium(playwright: object) -> object:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def draw_seven(page: object) -> None:
    """A "7" on the page's drawing pad with the mouse: a bar across the top, then a stroke down-left."""
    box = page.locator("#pad").bounding_box()
    points = [(0.3, 0.22), (0.72, 0.22), (0.45, 0.82)]
    page.mouse.move(box["x"] + box["width"] * points[0][0], box["y"] + box["height"] * points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y, steps=12)
    page.mouse.up()


def measure(url: str, api_key: str, images: int, screenshot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{url}/demo")
        page.wait_for_load_state("networkidle")
        page.fill("#api-key", api_key)
        weight = page.evaluate(PAGE_WEIGHT)
        run = page.evaluate(MEASURE, images)
        if screenshot:
            draw_seven(page)
            page.click("#score")
            page.wait_for_selector('#result[data-state="done"]', timeout=120_000)
            page.screenshot(path=screenshot)
        browser.close()
    rows = run["rows"][1:]  # the first request also warms the server's key cache
    median = {key: round(statistics.median(row[key] for row in rows), 1)
              for key in ("encryptMs", "waitMs", "decryptMs", "totalMs")}
    return {"browser": "headless Chromium (Debian)", "images": len(rows),
            "page_bytes": sum(entry["bytes"] for entry in weight), "page_files": len(weight),
            "keygen_ms": round(run["keygenMs"], 1), **{f"median_{key}": value for key, value in median.items()},
            "request_bytes": rows[0]["requestBytes"], "reply_bytes": rows[0]["replyBytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=31)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, running_azurite() as conn_str, \
            running_service({"AZURE_STORAGE_CONNECTION_STRING": conn_str, "WORKER_COUNT": "1"},
                            Path(folder) / "service.log") as service:
        print(json.dumps(measure(service.url, TEST_API_KEY, args.images, args.screenshot), indent=2))


if __name__ == "__main__":
    main()
