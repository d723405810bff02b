"""/docs and /redoc as HTML: their own files only, every URL under the root path behind the proxy
(SAAS_ROOT_PATH=/api), the security headers, and no key needed. The pages in a browser:
tests/e2e/test_docs.py."""

import re

import pytest
from fastapi.testclient import TestClient

from saas.app import create_app
from tests.support.marks import SQLITE_ONLY

PAGES = ("/docs", "/redoc")


# The pages need no model: these apps' lifespans are not run.
@pytest.fixture(scope="module")
def direct(settings):
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def behind_proxy(settings):
    """The app as Traefik reaches it: /api stripped, SAAS_ROOT_PATH=/api."""
    return TestClient(create_app(settings.model_copy(update={"root_path": "/api"})))


@SQLITE_ONLY
@pytest.mark.parametrize("path", PAGES)
def test_every_url_of_the_page_is_under_the_root_path_and_served(behind_proxy, path):
    page = behind_proxy.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "//" not in page.text  # no URL of another site, not even protocol-relative
    urls = re.findall(r'(?:href|src|data-spec-url)="([^"]+)"', page.text)
    assets = [url for url in urls if "/static/" in url]
    assert len(assets) >= 3, urls
    assert all(url.startswith(("/api/docs/static/", "/api/openapi.json")) for url in urls), urls
    for url in assets:  # as the proxy forwards them, /api stripped
        answer = behind_proxy.get(url.removeprefix("/api"))
        assert answer.status_code == 200, url
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    schema = behind_proxy.get("/openapi.json").json()
    assert schema["servers"] == [{"url": "/api"}]  # where "Try it out" sends its requests


@SQLITE_ONLY
def test_the_pages_send_a_policy_without_inline_script(direct):
    policies = {}
    for path in PAGES:
        answer = direct.get(path)  # no key: the docs are public
        assert answer.status_code == 200
        assert answer.headers["x-content-type-options"] == "nosniff"
        policies[path] = answer.headers["content-security-policy"]
    for policy in policies.values():
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'" and directives["script-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy
    assert "style-src 'self';" in policies["/docs"]


@SQLITE_ONLY
def test_fastapis_own_pages_are_gone(direct):
    assert direct.get("/docs/oauth2-redirect").status_code == 404
    assert direct.get("/docs/static/nothing.js").status_code == 404
    assert "cdn.jsdelivr.net" not in direct.get("/docs").text
