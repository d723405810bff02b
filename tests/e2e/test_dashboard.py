"""The dashboard in headless Chromium against real servers: a customer and an admin doing in the
browser what the pages are for, the security headers and axe-core on every page, and the
README's screenshots (docs/screenshots/). `saas serve` on PostgreSQL + Redis, and the embedded
default as `make run` starts it."""

import csv
import io
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Response

from tests.e2e.browser import axe_violations, chromium, describe, screenshot
from tests.e2e.test_crash_billing import Server
from tests.support.apps import SAAS
from tests.support.customers import Customer
from tests.support.marks import POSTGRES_ONLY
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.stores import redis_url

ENTITIES = f"/v1/{MODEL}/entities"
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def server(backend, settings) -> Iterator[Server]:
    server = Server(backend, redis_url(), settings.redis_prefix)
    server.start()
    yield server
    server.stop()


class Visit:
    """One browser (its own cookies) on the dashboard: every page it loads must carry the
    security headers, and no page may log a console error."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base
        self.context: BrowserContext = browser.new_context(
            accept_downloads=True, permissions=["clipboard-read", "clipboard-write"]
        )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.documents: list[Response] = []
        self.page.on("console", self._console)
        self.page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium also logs every 4xx as an error, a refused sign-in's 401 page too: failed
        # loads are judged in _response instead, where a page and its resources differ.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _response(self, response: Response) -> None:
        if response.request.resource_type == "document":
            self.documents.append(response)
        elif response.status >= 400:  # a script, stylesheet or image the page needs
            self.errors.append(f"{response.status} {response.url}")

    def goto(self, path: str) -> Page:
        self.page.goto(f"{self.base}{path}")
        return self.page

    def sign_in(self, key: str) -> Page:
        page = self.goto("/dashboard")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        return page

    def check(self) -> None:
        """Every document had the headers; axe found nothing serious on the page shown."""
        assert self.documents
        for response in self.documents:
            headers = response.all_headers()
            csp = headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, response.url
            assert "frame-ancestors 'none'" in csp, response.url
            assert headers.get("cache-control") == "no-store", response.url
            assert headers.get("referrer-policy") == "same-origin", response.url
        violations = axe_violations(self.page)
        assert not violations, describe(violations)
        assert not self.errors, self.errors

    def shoot(self, name: str) -> None:
        self.check()
        for width in WIDTHS:
            screenshot(self.page, name, width)
            # Readable at a phone's width: nothing wider than the screen.
            overflow = self.page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} scrolls sideways at {width} px"
        self.page.set_viewport_size({"width": 1280, "height": 800})

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: Browser, server: Server) -> Iterator[Callable[[], Visit]]:
    opened: list[Visit] = []

    def _open() -> Visit:
        opened.append(Visit(browser, server.base))
        return opened[-1]

    yield _open
    for one in opened:
        one.close()


def api(server: Server, key: str, text: str = "John Doe works at Google in London.") -> int:
    response = httpx.post(
        f"{server.base}{ENTITIES}", headers={"Authorization": f"Token {key}"}, json={"text": text}
    )
    return response.status_code


def chart_data(page: Page, chart: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(page.locator(f"script#{chart}").text_content() or "{}")
    return data


def chart_total(page: Page, chart: str) -> int:
    return sum(sum(series["values"]) for series in chart_data(page, chart)["series"])


def billable_shown(page: Page) -> int:
    return int((page.get_by_test_id("billable").text_content() or "").replace(",", ""))


@POSTGRES_ONLY
def test_a_customer_sees_usage_change_downloads_the_csv_and_makes_a_key(
    server, visit, make_customer, saas
):
    customer: Customer = make_customer(monthly_quota=1000, price_cents_per_1000_requests=250)
    you = visit()
    page = you.sign_in(customer.key)
    assert page.url.endswith("/dashboard/overview")
    page.wait_for_selector("[data-chart=chart-requests] canvas")
    before, drawn_before = billable_shown(page), chart_total(page, "chart-requests")

    assert [api(server, customer.key) for _ in range(3)] == [200, 200, 200]
    page.reload()
    page.wait_for_selector("[data-chart=chart-requests] canvas")
    assert billable_shown(page) == before + 3
    assert chart_total(page, "chart-requests") == drawn_before + 3
    assert page.get_by_role("progressbar").get_attribute("value") is not None
    you.shoot("overview")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download usage as CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    billed = sum(int(row["billable_requests"]) for row in rows)
    month = page.locator("select#month").input_value()
    invoices = json.loads(saas("invoices", "--month", month).stdout)["invoices"]
    (line,) = [line for line in invoices if line["account_id"] == customer.account_id]
    assert billed == line["billable_requests"] == before + 3

    page = you.goto("/dashboard/keys")
    page.get_by_label("Name").fill("from the browser")
    page.get_by_role("button", name="Create key").click()
    new_key = page.locator("code#new-key").text_content() or ""
    assert re.fullmatch(r"sk_live_\w+", new_key)
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == new_key
    assert api(server, new_key) == 200
    you.shoot("keys-created")
    page = you.goto("/dashboard/keys")
    assert new_key not in page.content()  # shown once
    you.shoot("keys")
    # The browser never holds the key: one cookie, an opaque session id.
    (cookie,) = you.context.cookies()
    assert cookie["name"] == "saas_session" and cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict" and customer.key not in cookie["value"]
    assert (
        page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") == 0
    )


@POSTGRES_ONLY
def test_a_wrong_key_shows_why_and_sets_no_cookie(visit):
    stranger = visit()
    page = stranger.sign_in("sk_live_this_is_not_a_key")
    assert page.get_by_role("alert").text_content() == "Malformed API key."
    assert stranger.context.cookies() == []
    assert "sk_live_this_is_not_a_key" not in page.content()
    stranger.shoot("sign-in-refused")
    stranger.goto("/dashboard")
    stranger.shoot("sign-in")


@POSTGRES_ONLY
def test_an_admin_revokes_a_key_in_the_page_and_the_api_and_its_session_end(
    server, visit, make_customer
):
    customer: Customer = make_customer()
    assert api(server, customer.key) == 200
    customers_browser = visit()
    customers_browser.sign_in(customer.key)
    operator = make_customer(scopes=("admin",))
    admin = visit()
    page = admin.sign_in(operator.key)
    assert page.url.endswith("/dashboard/admin")
    admin.shoot("admin-accounts")
    page.get_by_label("Name or e-mail").fill(customer.account_name)
    page.get_by_role("button", name="Search").click()
    found = page.get_by_role("region", name="All accounts")
    found.get_by_role("link", name=customer.account_name).click()
    page.wait_for_selector("[data-chart=chart-requests] canvas")
    admin.shoot("admin-account")

    page.get_by_role("link", name=re.compile(r"^Revoke")).first.click()
    assert "cannot be undone" in page.content()
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_load_state()
    assert "revoked" in (page.locator("table").last.text_content() or "")

    assert api(server, customer.key) == 401
    page = customers_browser.goto("/dashboard/overview")
    assert "revoked" in (page.get_by_role("alert").text_content() or "")
    assert page.get_by_label("API key").is_visible()
    assert customers_browser.context.cookies() == []

    audit = admin.goto("/dashboard/admin/audit")
    assert "key.revoke" in audit.content() and "dashboard" in audit.content()
    admin.shoot("admin-audit")
    admin.goto("/dashboard/admin/plans")
    admin.shoot("admin-plans")


@POSTGRES_ONLY
def test_a_form_without_its_csrf_token_is_refused(visit, customer):
    you = visit()
    you.sign_in(customer.key)
    page = you.goto("/dashboard/keys")
    keys_before = page.locator("tbody tr").count()
    # What a forged form lacks: the session's token.
    page.evaluate(
        "document.querySelectorAll('form[action$=\"/keys\"] input[name=csrf_token]')"
        ".forEach((field) => field.remove())"
    )
    page.get_by_role("button", name="Create key").click()
    page.wait_for_load_state()
    assert you.documents[-1].status == 403
    assert "reload the page" in (page.get_by_role("alert").text_content() or "")
    assert you.goto("/dashboard/keys").locator("tbody tr").count() == keys_before


def test_make_run_shows_the_demo_account_with_a_chart(browser, tmp_path):
    """What README's quick start promises: the embedded default (SQLite, no Redis), the demo
    key that `saas bootstrap` prints, the overview with its chart."""
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": f"sqlite:///{tmp_path / 'saas.kit.db'}",
        "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
    }
    env.pop("SAAS_REDIS_URL", None)
    printed = subprocess.run(
        [SAAS, "bootstrap"], env=env, capture_output=True, text=True, check=True
    ).stdout
    demo = re.search(r"^demo key \(shown once, store it now\): (sk_live_\w+)$", printed, re.M)
    assert demo, printed
    server = Server(env["SAAS_DATABASE_URL"], "", "unused")
    server.env = {**env, "SAAS_LOG_LEVEL": "WARNING"}
    server.start()
    try:
        assert api(server, demo.group(1)) == 200
        you = Visit(browser, server.base)
        page = you.sign_in(demo.group(1))
        page.wait_for_selector("[data-chart=chart-requests] canvas")
        assert billable_shown(page) == 1
        you.check()
        you.close()
    finally:
        server.stop()
