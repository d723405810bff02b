"""The browser harness end to end, and dashboard.js's contract with the templates: a page of the
test's own, served from 127.0.0.1 with the dashboard's Content-Security-Policy, loads the
dashboard's stylesheet, the vendored uPlot and dashboard.js from saas/dashboard/static and is
checked in headless chromium."""

import json
import mimetypes
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.e2e.browser import axe_violations, chromium, describe, screenshot

STATIC = Path(__file__).resolve().parents[2] / "saas" / "dashboard" / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DAYS = [(date(2026, 11, 1) + timedelta(days=i)).isoformat() for i in range(30)]
CHARTS = {
    "chart-requests": {
        "x": DAYS,
        "series": [
            {"label": "entities", "values": [(i * 7) % 23 for i in range(30)]},
            {"label": "tokens", "values": [(i * 5) % 11 for i in range(30)]},
        ],
        "y_label": "requests",
    },
    # Nothing to plot still draws the axes.
    "chart-zero": {"x": DAYS, "series": [{"label": "rejected", "values": [0] * 30}]},
    "chart-none": {"x": DAYS[:1], "series": [], "y_label": "requests"},
}
KEY = "sk_live_0123456789abcdefghijklmnopqrstuv"


def page_html() -> str:
    figures = "".join(
        f'<figure class="chart"><figcaption>{name}</figcaption>'
        f'<div class="chart-plot" data-chart="{name}"></div></figure>'
        for name in CHARTS
    )
    blocks = "".join(
        f'<script type="application/json" id="{name}">{json.dumps(spec)}</script>'
        for name, spec in CHARTS.items()
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Harness</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
<link rel="stylesheet" href="/dashboard/static/vendor/uplot/uPlot.min.css">
<script src="/dashboard/static/vendor/uplot/uPlot.iife.min.js" defer></script>
<script src="/dashboard/static/dashboard.js" defer></script>
</head>
<body>
<main>
<h1>Usage</h1>
{figures}
<p class="secret"><code id="new-key">{KEY}</code>
<button type="button" class="copy" data-copy-target="new-key" hidden>Copy</button></p>
<form method="post" action="/"><label>Key <input name="api_key"></label>
<button>Sign in</button></form>
</main>
{blocks}
</body>
</html>"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/":
            self.reply(page_html().encode(), "text/html; charset=utf-8")
            return
        prefix = "/dashboard/static/"
        file = (STATIC / self.path.removeprefix(prefix)).resolve()
        if (
            not self.path.startswith(prefix)
            or not file.is_relative_to(STATIC)
            or not file.is_file()
        ):
            self.send_error(404)
            return
        self.reply(file.read_bytes(), mimetypes.guess_type(file.name)[0] or "text/plain")

    def reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


class Watched:
    """A page whose console errors, uncaught exceptions and requests off the site are kept."""

    def __init__(self, page: Page, site: str) -> None:
        self.page = page
        self.errors: list[str] = []
        self.offsite: list[str] = []
        page.on("console", self.console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith(site) else self.offsite.append(r.url))

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} at {message.location['url']}")


def open_page(browser: Browser, site: str, **context_options: Any) -> Watched:
    page = browser.new_context(**context_options).new_page()
    watched = Watched(page, site)
    page.goto(site + "/")
    return watched


def test_charts_drawn_under_the_csp_accessible_and_offline(
    browser: Browser, site: str, tmp_path: Path
) -> None:
    # West of Greenwich, where a UTC midnight shown in local time would fall on the day before.
    watched = open_page(browser, site, timezone_id="America/Los_Angeles")
    page = watched.page
    for name in CHARTS:
        expect(page.locator(f'.chart-plot[data-chart="{name}"] canvas')).to_have_count(1)
    # Each series is drawn in its colour: the first line's blue is on the canvas.
    blue_pixels = page.evaluate(
        """() => {
            const canvas = document.querySelector('[data-chart="chart-requests"] canvas');
            const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < px.length; i += 4)
                if (px[i] === 0x00 && px[i + 1] === 0x72 && px[i + 2] === 0xb2) n++;
            return n;
        }"""
    )
    assert blue_pixels > 100
    legend = page.locator('[data-chart="chart-requests"] .u-legend .u-label')
    expect(legend).to_have_text(["Day", "entities", "tokens"])
    # Pointing at the first day shows it, and its values, in the legend.
    page.locator('[data-chart="chart-requests"] .u-over').hover(position={"x": 1, "y": 50})
    values = page.locator('[data-chart="chart-requests"] .u-legend .u-value')
    expect(values).to_have_text(["2026-11-01", "0", "0"])

    violations = axe_violations(page)
    assert violations == [], describe(violations)

    # Resizing redraws each chart at its container's width (screenshot() waits for that), so
    # even a phone's page needs no sideways scrolling.
    for width in (390, 1280):
        shot = screenshot(page, "harness", width, directory=tmp_path)
        assert shot == tmp_path / f"harness-{width}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert page.evaluate("document.documentElement.scrollWidth") <= width

    assert watched.errors == []
    assert watched.offsite == []


def test_copy_button(browser: Browser, site: str) -> None:
    without_js = open_page(browser, site, java_script_enabled=False).page
    expect(without_js.get_by_role("button", name="Copy")).to_be_hidden()

    watched = open_page(browser, site, permissions=["clipboard-read", "clipboard-write"])
    button = watched.page.get_by_role("button", name="Copy")
    expect(button).to_be_visible()
    button.click()
    expect(watched.page.locator("button.copy")).to_have_text("Copied")
    assert watched.page.evaluate("navigator.clipboard.readText()") == KEY
    expect(watched.page.locator("button.copy")).to_have_text("Copy")  # back after a moment
    assert watched.errors == []
