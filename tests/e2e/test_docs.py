"""/docs and /redoc in headless Chromium with no network but the server, as `make run` serves
them: the pages render from the package's own files, the browser asks no other host for anything
and logs no Content-Security-Policy violation, and "Authorize" then "Try it out" in /docs gets
entities with the demo key that `saas bootstrap` prints. Writes docs/screenshots/docs.png."""

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    Route,
    expect,
)

from tests.e2e.browser import SCREENSHOTS, chromium
from tests.support.apps import SAAS, wait_until_ready
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.servers import free_port, start_process, stop_process

TEXT = "John Doe works at Google in London."


@dataclass
class Served:
    base: str
    keys: dict[str, str]  # "admin", "demo": as `saas bootstrap` prints them


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`make run`: `saas bootstrap` then `saas serve` on a SQLite file, no Redis."""
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('docs') / 'saas.kit.db'}",
        "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
        "SAAS_LOG_LEVEL": "WARNING",
    }
    env.pop("SAAS_REDIS_URL", None)
    boot = subprocess.run([SAAS, "bootstrap"], env=env, capture_output=True, text=True, check=True)
    keys = {line.split()[0]: line.split()[-1] for line in boot.stdout.splitlines()}
    port = free_port()
    process = start_process([SAAS, "serve", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        yield Served(base, keys)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


class Offline:
    """A browser page that may reach the server and nothing else: every other request is
    aborted and kept, as are console errors (Chromium logs each CSP violation as one) and
    failed loads of the page's scripts, styles and images."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base  # scheme, host and port
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.documents: list[Response] = []
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("response", self._response)

    def _route(self, route: Route) -> None:
        if route.request.url.startswith(f"{self.base}/"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def _response(self, response: Response) -> None:
        if response.request.resource_type == "document":
            self.documents.append(response)
        elif response.status >= 400 and "/v1/" not in response.url:  # tried API calls aside
            self.errors.append(f"{response.status} {response.url}")

    def check(self) -> None:
        """Nothing asked of another host, no error or CSP violation, and each page served under
        a policy without inline script."""
        assert self.outside == []
        assert self.errors == []
        assert self.documents
        for document in self.documents:
            csp = document.all_headers().get("content-security-policy", "")
            assert "script-src 'self';" in csp and "unsafe-inline" not in csp, document.url
            assert "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp, document.url


@pytest.fixture
def offline(browser: Browser, served: Served) -> Iterator[Offline]:
    one = Offline(browser, served.base)
    yield one
    one.context.close()


def try_entities(offline: Offline, url: str, key: str) -> Locator:
    """Open the docs at `url`, authorize with the key in NLP Cloud's form (as a customer of
    theirs would type it), and try entities; returns the answer's row."""
    page = offline.page
    page.goto(url)
    entities = page.locator(".opblock-summary-path[data-path='/v1/{model}/entities']")
    expect(entities).to_be_visible()
    expect(page.locator(".opblock-summary-path[data-path='/admin/plans']").first).to_be_visible()

    page.get_by_role("button", name="Authorize").first.click()
    form = page.locator(".auth-container").filter(has=page.locator("h4 code", has_text="token"))
    form.get_by_label("Value:").fill(f"Token {key}")
    form.get_by_role("button", name="Apply credentials").click()
    expect(form.get_by_role("heading", name="Authorized")).to_be_visible()
    form.get_by_role("button", name="Close").click()

    entities.click()
    operation = page.locator(".opblock").filter(has=entities)
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("textarea.body-param__text").fill(json.dumps({"text": TEXT}))
    with page.expect_request(f"**/v1/{MODEL}/entities") as sent:
        operation.get_by_role("button", name="Execute").click()
    assert sent.value.headers["authorization"] == f"Token {key}"
    answer = operation.locator(".live-responses-table tr.response")
    expect(answer.locator(".response-col_status")).to_have_text("200")
    body = json.loads(answer.locator(".response-col_description pre").first.inner_text())
    assert {"start": 0, "end": 8, "type": "PERSON", "text": "John Doe"} in body["entities"]
    offline.check()
    return answer


def test_docs_authorize_and_try_entities_without_internet(offline, served):
    answer = try_entities(offline, f"{served.base}/docs", served.keys["demo"])
    # From the Authorize bar down to the answer, for the README (the description above it, with
    # the quickstarts and the errors table, is pages long). The curl line shows the key: masked.
    page = offline.page
    page.evaluate("window.scrollTo(0, 0)")
    top, bottom = page.locator(".scheme-container").bounding_box(), answer.bounding_box()
    assert top is not None and bottom is not None
    height = bottom["y"] + bottom["height"] + 16 - top["y"]
    clip = {"x": 0, "y": top["y"], "width": 1280, "height": height}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    mask = [page.locator(".curl-command")]
    shot = {"full_page": True, "clip": clip, "mask": mask, "mask_color": "#3b4151"}
    page.screenshot(path=SCREENSHOTS / "docs.png", **shot)


def test_redoc_renders_and_searches_without_internet(offline, served):
    page = offline.page
    page.goto(f"{served.base}/redoc")
    endpoint = page.get_by_role("button", name="post /v1/{model}/entities", exact=True)
    expect(endpoint).to_be_visible()
    # Styled: ReDoc's own styles reached the page (its sidebar is grey, not transparent).
    sidebar = page.locator(".menu-content")
    assert sidebar.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(250, 250, 250)"
    # The search index runs in a Worker ReDoc makes from a blob: URL (the policy's worker-src).
    page.get_by_placeholder("Search...").fill("sentence")
    found = page.locator("[data-role='search:results'] [role=menuitem]")
    expect(found.first).to_have_attribute("aria-label", "Sentence Dependencies")
    offline.check()
