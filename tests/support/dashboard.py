"""A browser on the dashboard: signed in with a key, and the CSRF token its forms carry."""

import re

from fastapi.testclient import TestClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def signed_in(app_client: TestClient, key: str) -> TestClient:
    """A browser of its own (its own cookie jar), signed in with `key`."""
    browser = TestClient(app_client.app)
    response = browser.post("/dashboard", data={"api_key": key}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return browser


def csrf_of(page: str) -> str:
    """The CSRF token of the form on `page`."""
    match = CSRF.search(page)
    assert match, "no CSRF field in the page"
    return match.group(1)
