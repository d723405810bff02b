"""The operators' pages: accounts, one account's keys, plan and status, plans, the audit log and
the invoices CSV, each write through the same service as the admin API (in-process, both
databases)."""

import re
import uuid
from datetime import date
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from saas.accounts import service as accounts
from saas.accounts.schemas import AccountCreate
from saas.dashboard.admin_views import month_activity, outcome_rates, plan_fields
from saas.kit import months
from saas.problems.errors import Invalid
from saas.usage.models import UsageRollup
from saas.usage.service import top_accounts
from tests.support.customers import TEST_ACTOR
from tests.support.dashboard import csrf_of, signed_in
from tests.support.nlp import MODEL
from tests.support.usage import wait_for_events

NEW_KEY = re.compile(r'<code id="new-key">([^<]+)</code>')


def nlp(client: TestClient, key: str) -> int:
    response = client.post(
        f"/v1/{MODEL}/entities", headers={"Authorization": f"Token {key}"}, json={"text": "Paris"}
    )
    return response.status_code


def admin_browser(app_client, make_customer):
    operator = make_customer(scopes=("admin",))
    return operator, signed_in(app_client, operator.key)


def test_admin_signs_in_to_the_accounts_page(app_client, make_customer):
    operator = make_customer(scopes=("admin",))
    browser = TestClient(app_client.app)
    response = browser.post("/dashboard", data={"api_key": operator.key}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/admin"
    page = browser.get("/dashboard/admin")
    assert page.status_code == 200
    assert 'aria-current="page">Accounts' in page.text
    assert f"Rejections and errors in {months.current()}" in page.text
    assert "Top accounts" in page.text and "invoices.csv" in page.text


def test_accounts_are_searched_by_name_or_email_and_paged(app_client, make_customer, db):
    operator, browser = admin_browser(app_client, make_customer)
    tag = uuid.uuid4().hex[:8]
    with db() as session:
        for n in range(27):
            accounts.create_account(
                session=session,
                data=AccountCreate(
                    name=f"paged-{tag}-{n:02d}",
                    email=f"ops{n}@{tag}.example.org",
                    plan=operator.plan_name,
                ),
                actor=TEST_ACTOR,
            )
        session.commit()

    nul = browser.get("/dashboard/admin", params={"q": "paged\x00"})
    assert nul.status_code == 422  # PostgreSQL refuses a NUL in a query's text: never a 500
    first = browser.get("/dashboard/admin", params={"q": f"paged-{tag}"})
    assert first.status_code == 200
    assert "27 accounts" in first.text and "Page 1 of 2" in first.text
    assert len(re.findall(rf">paged-{tag}-\d\d<", first.text)) == 25
    assert f"paged-{tag}-24<" in first.text and f"paged-{tag}-25<" not in first.text
    assert "Previous" not in first.text
    next_url = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert next_url, "no link to the next page"
    second = browser.get(next_url.group(1).replace("&amp;", "&"))
    assert len(re.findall(rf">paged-{tag}-\d\d<", second.text)) == 2
    assert "Page 2 of 2" in second.text and 'rel="prev"' in second.text
    assert 'rel="next"' not in second.text

    by_email = browser.get("/dashboard/admin", params={"q": f"OPS3@{tag.upper()}"})
    assert "1 account " in by_email.text and f"paged-{tag}-03<" in by_email.text
    nothing = browser.get("/dashboard/admin", params={"q": f"nobody-{tag}"})
    assert "0 accounts" in nothing.text and "No accounts match" in nothing.text

    bad = browser.get("/dashboard/admin", params={"page": "zero"})
    assert bad.status_code == 422 and "page" in bad.text
    assert browser.get("/dashboard/admin", params={"page": "0"}).status_code == 422


def test_the_account_page_shows_the_account_its_usage_and_keys(app_client, make_customer):
    _, browser = admin_browser(app_client, make_customer)
    customer = make_customer()
    assert nlp(app_client, customer.key) == 200
    page = browser.get(f"/dashboard/admin/accounts/{customer.account_id}")
    assert page.status_code == 200
    for text in (customer.account_name, "@example.com", customer.plan_name, ">active<"):
        assert text in page.text
    assert 'data-chart="chart-requests"' in page.text and "uPlot" in page.text
    assert f"/keys/{customer.key_id}/revoke" in page.text and "Roll" in page.text
    assert customer.key not in page.text

    assert browser.get("/dashboard/admin/accounts/99999999").status_code == 404
    assert browser.get("/dashboard/admin/accounts/x").status_code == 422
    too_big = browser.get("/dashboard/admin/accounts/99999999999999999999")
    assert too_big.status_code == 422 and "less than or equal" in too_big.text
    key_too_big = (
        f"/dashboard/admin/accounts/{customer.account_id}/keys/99999999999999999999/revoke"
    )
    assert browser.get(key_too_big).status_code == 422
    bad_month = browser.get(
        f"/dashboard/admin/accounts/{customer.account_id}", params={"month": "2026-13"}
    )
    assert bad_month.status_code == 422


def test_revoking_a_key_through_the_page(app_client, make_customer):
    operator, browser = admin_browser(app_client, make_customer)
    customer = make_customer()
    assert nlp(app_client, customer.key) == 200
    base = f"/dashboard/admin/accounts/{customer.account_id}"

    confirm = browser.get(f"{base}/keys/{customer.key_id}/revoke")
    assert confirm.status_code == 200 and "Revoke key" in confirm.text
    assert nlp(app_client, customer.key) == 200  # asking is not revoking
    # Another account's page does not reach this key.
    other = make_customer()
    elsewhere = f"/dashboard/admin/accounts/{other.account_id}/keys/{customer.key_id}/revoke"
    assert browser.get(elsewhere).status_code == 404

    done = browser.post(
        f"{base}/keys/{customer.key_id}/revoke",
        data={"csrf_token": csrf_of(confirm.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == base
    assert nlp(app_client, customer.key) == 401

    entries = app_client.get(
        "/admin/audit",
        params={"action": "key.revoke", "object_id": str(customer.key_id)},
        headers=operator.headers,
    ).json()
    assert len(entries) == 1
    assert entries[0]["via"] == "dashboard" and entries[0]["actor_key_id"] == operator.key_id

    log = browser.get("/dashboard/admin/audit", params={"action": "key.revoke", "via": "dashboard"})
    assert log.status_code == 200
    assert f"key {customer.key_id}<" in log.text and f"(key {operator.key_id})" in log.text


def test_rolling_a_key_shows_the_new_one_once_and_keeps_the_old_in_grace(app_client, make_customer):
    operator, browser = admin_browser(app_client, make_customer)
    customer = make_customer()
    base = f"/dashboard/admin/accounts/{customer.account_id}"
    token = csrf_of(browser.get(base).text)

    bad = browser.post(
        f"{base}/keys/{customer.key_id}/roll", data={"csrf_token": token, "grace_seconds": "-5"}
    )
    assert bad.status_code == 422 and "grace_seconds" in bad.text
    assert 'role="alert"' in bad.text and customer.account_name in bad.text

    rolled = browser.post(
        f"{base}/keys/{customer.key_id}/roll", data={"csrf_token": token, "grace_seconds": "600"}
    )
    assert rolled.status_code == 200
    found = NEW_KEY.search(rolled.text)
    assert found, "the new key is not shown"
    new_key = found.group(1)
    assert "keeps working for 600 seconds" in rolled.text
    assert nlp(app_client, new_key) == 200
    assert nlp(app_client, customer.key) == 200  # in its grace period
    listed = app_client.get(
        f"/admin/accounts/{customer.account_id}/keys", headers=operator.headers
    ).json()
    assert {key["id"]: key["status"] for key in listed}[customer.key_id] == "grace"
    again = browser.get(base)
    assert new_key not in again.text and ">grace<" in again.text

    twice = browser.post(
        f"{base}/keys/{customer.key_id}/roll", data={"csrf_token": token, "grace_seconds": "0"}
    )
    assert twice.status_code == 409 and "already rolled" in twice.text


def test_creating_a_key_with_the_admin_scope(app_client, make_customer):
    _, browser = admin_browser(app_client, make_customer)
    customer = make_customer()
    base = f"/dashboard/admin/accounts/{customer.account_id}"
    token = csrf_of(browser.get(base).text)
    created = browser.post(f"{base}/keys", data={"csrf_token": token, "name": "ops", "admin": "1"})
    assert created.status_code == 200
    found = NEW_KEY.search(created.text)
    assert found
    assert (
        app_client.get(
            "/admin/plans", headers={"Authorization": f"Token {found.group(1)}"}
        ).status_code
        == 200
    )
    plain = browser.post(f"{base}/keys", data={"csrf_token": token, "name": "app"})
    plain_key = NEW_KEY.search(plain.text)
    assert plain_key
    refused = app_client.get(
        "/admin/plans", headers={"Authorization": f"Token {plain_key.group(1)}"}
    )
    assert refused.status_code == 403
    too_long = browser.post(f"{base}/keys", data={"csrf_token": token, "name": "x" * 200})
    assert too_long.status_code == 422 and "name" in too_long.text


def test_changing_the_plan_and_suspending_an_account(app_client, make_customer):
    operator, browser = admin_browser(app_client, make_customer)
    customer = make_customer()
    target = make_customer()
    base = f"/dashboard/admin/accounts/{customer.account_id}"
    token = csrf_of(browser.get(base).text)

    changed = browser.post(
        f"{base}/plan", data={"csrf_token": token, "plan": target.plan_name}, follow_redirects=False
    )
    assert changed.status_code == 303 and changed.headers["location"] == base
    shown = app_client.get(f"/admin/accounts/{customer.account_id}", headers=operator.headers)
    assert shown.json()["plan"] == target.plan_name
    assert f'data-testid="plan">{target.plan_name}<' in browser.get(base).text

    unknown = browser.post(f"{base}/plan", data={"csrf_token": token, "plan": "no-such-plan"})
    assert unknown.status_code == 422 and "no-such-plan" in unknown.text

    assert nlp(app_client, customer.key) == 200
    suspended = browser.post(
        f"{base}/status", data={"csrf_token": token, "status": "suspended"}, follow_redirects=False
    )
    assert suspended.status_code == 303
    assert nlp(app_client, customer.key) == 403
    page = browser.get(base)
    assert 'data-testid="status">suspended<' in page.text and "Reactivate" in page.text

    nonsense = browser.post(f"{base}/status", data={"csrf_token": token, "status": "deleted"})
    assert nonsense.status_code == 422 and "status" in nonsense.text

    browser.post(f"{base}/status", data={"csrf_token": token, "status": "active"})
    assert nlp(app_client, customer.key) == 200
    entries = app_client.get(
        "/admin/audit",
        params={"action": "account.update", "object_id": str(customer.account_id)},
        headers=operator.headers,
    ).json()
    assert [entry["changes"]["after"] for entry in entries] == [
        {"status": "active"},
        {"status": "suspended"},
        {"plan": target.plan_name},
    ]
    assert {(entry["via"], entry["actor_key_id"]) for entry in entries} == {
        ("dashboard", operator.key_id)
    }


def test_creating_and_editing_a_plan(app_client, make_customer):
    operator, browser = admin_browser(app_client, make_customer)
    name = f"pro-{uuid.uuid4().hex[:8]}"
    token = csrf_of(browser.get("/dashboard/admin/plans").text)
    fields = {
        "csrf_token": token,
        "name": name,
        "rate_limit": "5/second;100/minute",
        "monthly_quota": "10,000",
        "models": MODEL,
        "price_cents_per_month": "4900",
        "price_cents_per_1000_requests": "25",
        "max_text_chars": "5000",
        "max_batch_texts": "8",
        "max_keys": "3",
    }
    created = browser.post("/dashboard/admin/plans", data=fields, follow_redirects=False)
    assert created.status_code == 303 and created.headers["location"] == "/dashboard/admin/plans"
    plan = app_client.get(f"/admin/plans/{name}", headers=operator.headers).json()
    assert plan["monthly_quota"] == 10_000 and plan["models"] == [MODEL]
    assert plan["rate_limit"] == "5/second;100/minute" and plan["max_keys"] == 3
    assert f">{name}</a>" in browser.get("/dashboard/admin/plans").text

    again = browser.post("/dashboard/admin/plans", data=fields)
    assert again.status_code == 409 and "already exists" in again.text
    bad = browser.post(
        "/dashboard/admin/plans", data={**fields, "name": "x-" + name, "rate_limit": "lots"}
    )
    assert bad.status_code == 422 and "not a rate limit" in bad.text
    assert 'value="lots"' in bad.text  # the form comes back as it was sent
    unknown = browser.post(
        "/dashboard/admin/plans", data={**fields, "name": "y-" + name, "models": "klingon"}
    )
    assert unknown.status_code == 422 and "Unknown model(s): klingon" in unknown.text

    edit = browser.get(f"/dashboard/admin/plans/{name}")
    assert edit.status_code == 200 and 'value="10000"' in edit.text
    saved = browser.post(
        f"/dashboard/admin/plans/{name}",
        data={**fields, "monthly_quota": "", "models": "all", "rate_limit": "20/second"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    assert "Saved." in browser.get(saved.headers["location"]).text
    plan = app_client.get(f"/admin/plans/{name}", headers=operator.headers).json()
    assert plan["monthly_quota"] is None and plan["models"] is None
    assert plan["rate_limit"] == "20/second" and plan["price_cents_per_month"] == 4900
    entries = app_client.get(
        "/admin/audit", params={"object_type": "plan", "object_id": name}, headers=operator.headers
    ).json()
    assert [entry["action"] for entry in entries] == ["plan.update", "plan.create"]
    assert {entry["via"] for entry in entries} == {"dashboard"}

    refused = browser.post(
        f"/dashboard/admin/plans/{name}", data={**fields, "max_batch_texts": "0"}
    )
    assert refused.status_code == 422 and "max_batch_texts" in refused.text
    huge = browser.post(f"/dashboard/admin/plans/{name}", data={**fields, "max_keys": "9" * 30})
    assert huge.status_code == 422 and "max_keys: must be at most 2,147,483,647" in huge.text
    assert browser.get("/dashboard/admin/plans/no-such-plan").status_code == 404


def test_the_invoices_csv_is_the_admin_apis(app_client, make_customer):
    operator, browser = admin_browser(app_client, make_customer)
    customer = make_customer(price_cents_per_1000_requests=1000)
    assert nlp(app_client, customer.key) == 200
    month = months.current()
    page = browser.get("/dashboard/admin/invoices.csv", params={"month": month})
    api = app_client.get(
        "/admin/invoices", params={"month": month, "format": "csv"}, headers=operator.headers
    )
    assert page.status_code == api.status_code == 200
    assert page.text == api.text and customer.account_name in page.text
    assert page.headers["content-type"].startswith("text/csv")
    assert f"invoices-{month}.csv" in page.headers["content-disposition"]
    assert browser.get("/dashboard/admin/invoices.csv").text == api.text  # this month by default
    bad = browser.get("/dashboard/admin/invoices.csv", params={"month": "2026-13"})
    assert bad.status_code == 422


def test_the_audit_log_is_filtered_and_paged(app_client, make_customer):
    operator, browser = admin_browser(app_client, make_customer)
    customer = make_customer()
    base = f"/dashboard/admin/accounts/{customer.account_id}"
    token = csrf_of(browser.get(base).text)
    for status in ["suspended", "active"] * 26:  # 52 entries for this account
        browser.post(f"{base}/status", data={"csrf_token": token, "status": status})
    filters = {"object_type": "account", "object_id": str(customer.account_id)}
    first = browser.get("/dashboard/admin/audit", params=filters)
    assert first.status_code == 200
    assert first.text.count("<td>account.update</td>") == 50
    next_url = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert next_url
    second = browser.get(next_url.group(1).replace("&amp;", "&"))
    assert second.text.count("<td>account.update</td>") == 2
    assert second.text.count("<td>account.create</td>") == 1  # the oldest comes last
    assert 'rel="next"' not in second.text
    none = browser.get("/dashboard/admin/audit", params={**filters, "via": "cli"})
    assert "No entries match these filters" in none.text


def admin_pages(app: FastAPI, method: str) -> list[str]:
    """Every operator page the app serves for `method`, from app.routes: a page added on any
    router under /dashboard/admin is checked too."""
    return [
        path
        for route in iter_route_contexts(app.routes)
        if (path := route.path) is not None
        and path.startswith("/dashboard/admin")
        and method in (route.methods or ())
    ]


def admin_posts(app: FastAPI) -> list[str]:
    return admin_pages(app, "POST")


def test_a_customer_key_gets_403_on_every_admin_page(app_client, make_customer, customer):
    browser = signed_in(app_client, customer.key)
    token = csrf_of(browser.get("/dashboard/keys").text)
    plan = customer.plan_name
    ids = {"account_id": customer.account_id, "key_id": customer.key_id, "name": plan}
    gets = [path.format(**ids) for path in admin_pages(app_client.app, "GET")]
    assert len(gets) >= 6
    for path in gets:
        response = browser.get(path)
        assert response.status_code == 403, path
        assert "These pages need a key with the &#39;admin&#39; scope." in response.text
    for path in admin_posts(app_client.app):
        response = browser.post(
            path.format(**ids), data={"csrf_token": token, "status": "suspended"}
        )
        assert response.status_code == 403, path
    assert nlp(app_client, customer.key) == 200  # nothing was suspended or revoked


def test_every_admin_post_without_the_csrf_token_is_refused(app_client, make_customer):
    operator, browser = admin_browser(app_client, make_customer)
    customer = make_customer()
    ids = {"account_id": customer.account_id, "key_id": customer.key_id, "name": customer.plan_name}
    posts = admin_posts(app_client.app)
    assert len(posts) >= 7
    data: dict[str, Any] = {"status": "suspended", "plan": operator.plan_name, "name": "x"}
    for path in posts:
        for form in (data, {**data, "csrf_token": "forged"}):
            response = browser.post(path.format(**ids), data=form)
            assert response.status_code == 403, path
            assert "reload the page" in response.text
    assert nlp(app_client, customer.key) == 200  # nothing changed


def test_anonymous_visitors_get_the_sign_in_form(app_client):
    anonymous = TestClient(app_client.app)
    for path in ("/dashboard/admin", "/dashboard/admin/plans", "/dashboard/admin/audit"):
        response = anonymous.get(path)
        assert response.status_code == 401 and 'name="api_key"' in response.text
        assert "unsafe-inline" not in response.headers["content-security-policy"]


# What the overview computes


def rate_limited(activity: dict[str, Any]) -> int:
    return next(
        o["requests"] for o in activity["rates"]["outcomes"] if o["label"].startswith("429")
    )


def test_the_months_rates_and_top_accounts_come_from_the_rollups(app_client, make_customer, db):
    _, browser = admin_browser(app_client, make_customer)
    customer = make_customer(rate_limit="1/minute")
    month = months.current()
    with db() as session:
        before = month_activity(session, month)
    assert nlp(app_client, customer.key) == 200
    assert nlp(app_client, customer.key) == 429
    assert len(wait_for_events(db, customer.account_id, 2)) == 2
    with db() as session:
        after = month_activity(session, month)
    # Other tests' traffic may land meanwhile, so at least: this test's requests are counted.
    assert after["rates"]["requests"] >= before["rates"]["requests"] + 2
    assert rate_limited(after) >= rate_limited(before) + 1
    leaders = after["top_accounts"]
    assert 1 <= len(leaders) <= 10 and all(entry["name"] for entry in leaders)
    billed = [entry["billable_requests"] for entry in leaders]
    assert billed == sorted(billed, reverse=True)
    page = browser.get("/dashboard/admin")
    assert f">{leaders[0]['name']}</a>" in page.text
    assert re.search(r"429 rate limited</th><td class=\"num\">[\d,]+</td>", page.text)


def test_outcome_rates_share_every_request():
    rates = outcome_rates({200: 60, 429: 20, 402: 10, 404: 5, 503: 5})
    assert rates["requests"] == 100
    assert [(o["label"], o["requests"], o["percent"]) for o in rates["outcomes"]] == [
        ("429 rate limited", 20, 20.0),
        ("402 quota exceeded", 10, 10.0),
        ("other 4xx", 5, 5.0),
        ("5xx", 5, 5.0),
    ]
    assert all(o["percent"] is None for o in outcome_rates({})["outcomes"])


def test_top_accounts_rank_by_billable_requests(make_customer, db):
    """Ranked by the database, on rollups of a month no other test writes to."""
    ids = [make_customer().account_id for _ in range(4)]
    day = date(2001, 1, 15)
    # account: (requests, billable) in two hours; the last one billed nothing.
    usage = {ids[0]: (5, 5), ids[1]: (9, 9), ids[2]: (7, 5), ids[3]: (50, 0)}
    with db() as session:
        for account_id, (requests, billable) in usage.items():
            for hour in (3, 4):
                session.add(
                    UsageRollup(
                        account_id=account_id,
                        day=day,
                        hour=hour,
                        endpoint="entities",
                        status=200 if billable else 429,
                        requests=requests,
                        units=requests,
                        billable_units=billable,
                        chars=0,
                    )  # fmt: skip
                )
        session.commit()
        ranked = top_accounts(session, start=day, end=day, limit=10)
        assert [(e["account_id"], e["billable_requests"], e["requests"]) for e in ranked] == [
            (ids[1], 18, 18),
            (ids[2], 10, 14),  # a tie on billable: more requests first
            (ids[0], 10, 10),
        ]
        assert ranked[0]["name"].startswith("acct-")
        assert len(top_accounts(session, start=day, end=day, limit=2)) == 2


def test_the_plan_form_becomes_the_schemas_input():
    form = {"name": " pro ", "rate_limit": "", "monthly_quota": "", "models": " a, b ,"}
    assert plan_fields(form, with_name=True) == {
        "name": "pro",
        "monthly_quota": None,
        "models": ["a", "b"],
    }
    with pytest.raises(Invalid, match="monthly_quota"):
        plan_fields({"monthly_quota": "3000000000"}, with_name=False)
    assert plan_fields({"models": "ALL", "max_keys": "1_000"}, with_name=False) == {
        "monthly_quota": None,
        "models": None,
        "max_keys": "1000",
    }


def test_an_admin_key_being_rolled_manages_no_keys(app_client, make_customer):
    """A roll contains a leaked key: during its grace period the old key must not mint a key
    the roll does not cover, through the admin API or the dashboard."""
    operator, browser = admin_browser(app_client, make_customer)
    successor = make_customer(scopes=("admin",))
    customer = make_customer()
    rolled = app_client.post(
        f"/admin/keys/{operator.key_id}/roll", headers=successor.headers, json={}
    )
    assert rolled.status_code == 201
    minted = app_client.post(
        f"/admin/accounts/{customer.account_id}/keys", headers=operator.headers, json={}
    )
    assert minted.status_code == 403 and "rolled" in minted.json()["detail"]
    revoked = app_client.delete(f"/admin/keys/{customer.key_id}", headers=operator.headers)
    assert revoked.status_code == 403
    account = f"/dashboard/admin/accounts/{customer.account_id}"
    token = csrf_of(browser.get(account).text)
    page = browser.post(f"{account}/keys", data={"csrf_token": token, "admin": "on"})
    assert page.status_code == 403 and "rolled" in page.text
    page = browser.post(f"{account}/keys/{customer.key_id}/roll", data={"csrf_token": token})
    assert page.status_code == 403
    # The successor may.
    assert (
        app_client.delete(f"/admin/keys/{customer.key_id}", headers=successor.headers).status_code
        == 200
    )
