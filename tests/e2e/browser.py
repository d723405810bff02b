"""Browser tests' harness: headless Debian chromium driven by Playwright's sync API, axe-core's
accessibility checks and full-page screenshots.

The browser is the machine's `chromium` (Debian package), never one Playwright downloads: that
download cannot work here, so a missing chromium fails the test with the command that installs
it. axe-core comes from the `axe-playwright-python` wheel, which ships axe.min.js: pinned with the
other test dependencies, nothing to vendor or refresh by hand, and injected through Playwright's
evaluate (the DevTools protocol), which the dashboard's `script-src 'self'` does not block, as it
would block a <script> tag added to the page.
"""

import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# The two layouts the dashboard is designed for: desktop and a phone.
VIEWPORTS = {1280: 800, 390: 844}
# Headless in a closed network: no background connections (each would be refused, noisily),
# no sandbox (tests run as root in CI).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The machine's chromium binary; fails the test (never skips it) when there is none."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "browser tests need Debian's chromium: apt-get install chromium "
            "(.ci/run installs it; Playwright's own browser download does not work here)",
            pytrace=False,
        )
    return path


def launch_chromium(playwright: Playwright) -> Browser:
    """Headless chromium from `chromium_path()`, started by a running sync Playwright."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
    )


@contextmanager
def chromium() -> Iterator[Browser]:
    """Playwright and a headless chromium for the duration of the block, both stopped after."""
    chromium_path()  # before starting Playwright: the clear failure, not a launch error
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


def axe_violations(
    page: Page, impacts: Iterable[str] = ("critical", "serious")
) -> list[dict[str, Any]]:
    """axe-core's violations on the page as loaded now, those of the given impacts only (each a
    dict as axe reports it: id, impact, help, nodes...)."""
    wanted = set(impacts)
    violations: list[dict[str, Any]] = Axe().run(page).response["violations"]
    return [v for v in violations if v["impact"] in wanted]


def describe(violations: list[dict[str, Any]]) -> str:
    """One line per violation and element, for an assertion message."""
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {node['target']}"
        for v in violations
        for node in v["nodes"]
    )


def screenshot(page: Page, name: str, width: int, *, directory: Path = SCREENSHOTS) -> Path:
    """The whole page at viewport width 1280 or 390, as `<directory>/<name>-<width>.png`
    (docs/screenshots by default); returns the file's path."""
    if width not in VIEWPORTS:
        raise ValueError(f"width must be one of {sorted(VIEWPORTS)}, not {width}")
    page.set_viewport_size({"width": width, "height": VIEWPORTS[width]})
    # Wait for the web fonts and for each chart to be redrawn at its container's new width
    # (dashboard.js redraws after a pause in resize events).
    page.evaluate("document.fonts.ready.then(() => null)")
    page.wait_for_function(
        """() => [...document.querySelectorAll(".chart-plot[data-chart]")].every((plot) => {
            const wrap = plot.querySelector(".u-wrap");
            return wrap !== null && wrap.offsetWidth === plot.clientWidth;
        })"""
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{width}.png"
    page.screenshot(path=path, full_page=True)
    return path
