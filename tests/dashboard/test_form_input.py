"""Every field of every dashboard form, posted with a NUL, an over-long value and control
characters: a page with a 4xx (never a 500), and nothing of it stored. The forms are read from
the pages themselves (what a browser would post) and must reach every POST route of the
dashboard, so a new form cannot be missed. A form goes through the same schema as its API twin:
a key name the API refuses, the dashboard refuses with the same words."""

import html
import re
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.support.dashboard import signed_in

BAD_VALUES = {
    "NUL": "a\x00b",
    "over-long": "x" * 10_000,
    "control characters": "a\x1b[2J\x07b\r\nc\td\x85",
    "invisible formatting": "admin\u202egnp.exe\u200b",  # a right-to-left override
}
# What a refused field may be answered with: the page again with why (422), a wrong CSRF
# token (403), a failed sign-in (401). Never 500, never a success.
REFUSED = {401, 403, 422}
# A checkbox is "on" whatever its value: posting any is ticking it, not bad input.
CHECKBOXES = {"admin"}


@dataclass
class Form:
    page: str
    action: str
    fields: dict[str, str] = field(default_factory=dict)


class FormReader(HTMLParser):
    """The POST forms of a page, with each field's value as the page fills it in."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.page = page
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value or "" for name, value in attrs}
        form, select = self._form, self._select
        if tag == "form" and a.get("method", "").lower() == "post":
            self._form = Form(self.page, html.unescape(a["action"]))
            self.forms.append(self._form)
        elif form is None:
            return
        elif tag == "option" and select is not None:
            if select not in form.fields or "selected" in a:  # the first, or the selected one
                form.fields[select] = a.get("value", "")
        elif tag in ("input", "textarea") and "name" in a:
            form.fields[a["name"]] = a.get("value", "")
        elif tag == "select" and "name" in a:
            self._select = a["name"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


def forms_of(browser: TestClient, path: str) -> list[Form]:
    page = browser.get(path)
    assert page.status_code == 200, path
    reader = FormReader(path)
    reader.feed(page.text)
    return reader.forms


def route_of(templates: set[str], path: str) -> str:
    """The route template (`/dashboard/keys/{key_id}/revoke`) that serves `path`."""
    found = [t for t in templates if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path)]
    assert found, f"a form posts to {path}, which no route serves"
    return found[0]


def test_every_form_field_refuses_nul_overlong_and_control_characters(
    app_client, make_customer, db
) -> None:
    operator = make_customer(scopes=("admin",))
    customer = make_customer()
    admin, visitor = signed_in(app_client, operator.key), signed_in(app_client, customer.key)
    anonymous = TestClient(app_client.app)
    account, key, plan = customer.account_id, customer.key_id, customer.plan_name
    pages = [
        (anonymous, "/dashboard"),
        (visitor, "/dashboard/keys"),
        (visitor, f"/dashboard/keys/{key}/revoke"),
        (admin, f"/dashboard/admin/accounts/{account}"),
        (admin, f"/dashboard/admin/accounts/{account}/keys/{key}/revoke"),
        (admin, "/dashboard/admin/plans"),
        (admin, f"/dashboard/admin/plans/{plan}"),
    ]
    dashboard_posts = {
        route.path
        for route in iter_route_contexts(app_client.app.routes)
        if route.path
        and route.path.startswith("/dashboard")
        and "POST" in (route.methods or ())
        and "{path:path}" not in route.path  # the fallback's 404 page
    }
    walked: set[str] = set()
    answers: list[tuple[str, str, str, int]] = []
    for browser, path in pages:
        for form in forms_of(browser, path):
            walked.add(route_of(dashboard_posts, form.action))
            valid = dict(form.fields)
            if form.action == "/dashboard/admin/plans":  # a new plan needs a name of its own
                valid["name"] = f"form-{uuid.uuid4().hex[:8]}"
            for name in form.fields:
                if name in CHECKBOXES:
                    continue
                for label, value in BAD_VALUES.items():
                    response = browser.post(
                        form.action, data={**valid, name: value}, follow_redirects=False
                    )
                    answers.append((form.action, name, label, response.status_code))
                    assert response.status_code in REFUSED, (form.action, name, label)
                    assert response.headers["content-type"].startswith("text/html")
                    if name != "csrf_token" and response.status_code == 422:
                        assert 'role="alert"' in response.text, (form.action, name, label)
    # Every form was reached, and every field of each was tried.
    assert walked == dashboard_posts
    assert len({(action, name) for action, name, _, _ in answers}) >= 20

    # The customer's key form and POST /v1/keys refuse a name for the same reason.
    for value in BAD_VALUES.values():
        api = app_client.post("/v1/keys", headers=customer.headers, json={"name": value})
        assert api.status_code == 422, api.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', visitor.get("/dashboard/keys").text)
        assert token
        page = visitor.post("/dashboard/keys", data={"csrf_token": token.group(1), "name": value})
        assert page.status_code == 422
        assert api.json()["detail"] in html.unescape(page.text)

    # Nothing of it was stored: no key, account or plan name, no plan field.
    with db() as session:
        stored: list[Any] = []
        for table, column in [("api_keys", "name"), ("accounts", "name"), ("plans", "name")]:
            stored += session.execute(text(f"SELECT {column} FROM {table}")).scalars().all()
        stored += session.execute(text("SELECT rate_limit FROM plans")).scalars().all()
    unseen = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u202e]")
    assert not [s for s in stored if s and (unseen.search(s) or len(s) > 128)]
