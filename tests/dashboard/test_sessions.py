"""Signing in to the dashboard with an API key: the session cookie, what ends a session, CSRF on
every form, and the security headers on every page (in-process; the browser tests are in
tests/e2e/test_dashboard.py)."""

import re
import secrets
import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from httpx import Response
from sqlmodel import select

from saas.auth import key_format
from saas.dashboard.models import DashboardSession
from saas.dashboard.sessions import hash_id, open_session
from saas.keys.models import ApiKey
from saas.kit.db import utcnow
from saas.problems import REGISTRY
from tests.support.apps import dedicated_client
from tests.support.dashboard import csrf_of, signed_in
from tests.support.polling import eventually


def test_a_wrong_key_gets_the_form_again_with_a_message_and_no_cookie(app_client):
    browser = TestClient(app_client.app)
    response = browser.post(
        "/dashboard", data={"api_key": "sk_live_notakey"}, follow_redirects=False
    )
    assert response.status_code == 401
    assert "Malformed API key." in response.text  # not in the format of keys
    assert 'name="api_key"' in response.text
    assert "set-cookie" not in response.headers
    assert "sk_live_notakey" not in response.text  # never echoed back


def test_a_key_is_exchanged_for_an_http_only_strict_session_cookie(app_client, customer, db):
    browser = TestClient(app_client.app)
    response = browser.post("/dashboard", data={"api_key": customer.key}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/overview"
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 1
    cookie = cookies[0]
    name, _, rest = cookie.partition("=")
    session_id = rest.split(";")[0]
    assert name == "saas_session" and customer.key not in cookie
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/dashboard"} <= attributes
    assert "max-age=28800" in attributes  # 8 h
    with db() as session:  # only the id's hash is stored
        assert session.get(DashboardSession, session_id) is None
        assert session.get(DashboardSession, hash_id(session_id)) is not None
    page = browser.get("/dashboard/overview")
    assert page.status_code == 200
    assert customer.account_name in page.text and customer.key not in page.text


def test_revoking_the_key_ends_its_session(app_client, make_customer, customer):
    browser = signed_in(app_client, customer.key)
    assert browser.get("/dashboard/keys").status_code == 200
    admin = make_customer(scopes=("admin",))
    revoked = app_client.delete(f"/admin/keys/{customer.key_id}", headers=admin.headers)
    assert revoked.status_code == 200
    page = browser.get("/dashboard/keys")
    assert page.status_code == 401
    assert "revoked" in page.text and 'name="api_key"' in page.text
    # The session is gone, not just refused: the same cookie never works again.
    assert "saas_session" in page.headers.get("set-cookie", "")


def test_suspending_the_account_ends_its_sessions(app_client, make_customer, customer):
    browser = signed_in(app_client, customer.key)
    admin = make_customer(scopes=("admin",))
    suspended = app_client.patch(
        f"/admin/accounts/{customer.account_id}",
        json={"status": "suspended"},
        headers=admin.headers,
    )
    assert suspended.status_code == 200
    page = browser.get("/dashboard/overview")
    assert page.status_code == 403 and "suspended" in page.text


def test_sign_out_ends_the_session(app_client, customer):
    browser = signed_in(app_client, customer.key)
    token = csrf_of(browser.get("/dashboard/overview").text)
    cookie = browser.cookies.get("saas_session")
    response = browser.post("/dashboard/sign-out", data={"csrf_token": token})
    assert response.status_code == 200 and "You have signed out." in response.text
    again = TestClient(app_client.app, cookies={"saas_session": cookie})
    assert again.get("/dashboard/overview").status_code == 401


def test_a_post_without_the_csrf_token_is_refused(app_client, customer, db):
    browser = signed_in(app_client, customer.key)
    token = csrf_of(browser.get("/dashboard/keys").text)
    for data in ({"name": "x"}, {"name": "x", "csrf_token": "forged"}):
        refused = browser.post("/dashboard/keys", data=data)
        assert refused.status_code == 403 and "reload the page" in refused.text
    created = browser.post("/dashboard/keys", data={"name": "from-page", "csrf_token": token})
    assert created.status_code == 200
    plaintext = re.search(r'<code id="new-key">([^<]+)</code>', created.text)
    assert plaintext
    answer = app_client.post(
        "/v1/en_core_web_sm/entities",
        headers={"Authorization": f"Token {plaintext.group(1)}"},
        json={"text": "Paris"},
    )
    assert answer.status_code == 200
    # Listed afterwards without its secret.
    assert plaintext.group(1) not in browser.get("/dashboard/keys").text


def test_every_page_sends_the_security_headers(app_client, customer):
    browser = signed_in(app_client, customer.key)
    anonymous = TestClient(app_client.app)
    answers = [
        anonymous.get("/dashboard"),
        browser.get("/dashboard/overview"),
        browser.get("/dashboard/keys"),
        browser.get("/dashboard/keys/999999/revoke"),  # an error page
        browser.get("/dashboard/usage.csv"),
        anonymous.get("/dashboard/no-such-page"),
    ]
    for response in answers:
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert "script-src 'self'" in csp
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "same-origin"
    assert answers[3].status_code == 404
    assert answers[5].status_code == 404 and "There is no such page." in answers[5].text


def test_pages_need_a_session(app_client):
    anonymous = TestClient(app_client.app)
    for path in ("/dashboard/overview", "/dashboard/keys", "/dashboard/usage.csv"):
        response = anonymous.get(path)
        assert response.status_code == 401 and 'name="api_key"' in response.text
    refused = anonymous.post("/dashboard/keys", data={"name": "x"})
    assert refused.status_code == 401


def test_behind_the_proxy_prefix_links_static_files_and_the_cookie_carry_it(settings, customer):
    """With SAAS_ROOT_PATH=/api, Traefik strips /api: the app sees /dashboard/..., and every URL
    it writes for the browser starts with /api/dashboard."""
    with dedicated_client(settings, root_path="/api") as browser:
        response = browser.post(
            "/dashboard", data={"api_key": customer.key}, follow_redirects=False
        )
        assert response.headers["location"] == "/api/dashboard/overview"
        assert "path=/api/dashboard" in response.headers["set-cookie"].lower()
        # The browser sends it for /api/dashboard; the proxy forwards /dashboard.
        browser.cookies.set("saas_session", response.cookies["saas_session"])
        page = browser.get("/dashboard/overview")
        assert page.status_code == 200
        urls = re.findall(r'(?:href|src|action)="([^"]+)"', page.text)
        local = [url for url in urls if url.startswith("/")]
        assert local and all(url.startswith("/api/dashboard/") for url in local), local
        for url in (u for u in local if "/static/" in u):
            assert browser.get(url.removeprefix("/api")).status_code == 200, url


def test_failed_sign_ins_count_toward_the_addresss_guard(settings, customer, make_customer):
    """Guessing keys in the sign-in form is limited like guessing them at the API, with one
    count for both; keys the worker saw authenticate still sign in from the blocked address."""
    neighbour = make_customer()
    # A Redis prefix of its own: the failed-key count of this address must not be shared with
    # the other tests that fail keys from it within the same minute (ratelimit/test_bruteforce).
    prefix = f"{settings.redis_prefix}-{uuid.uuid4().hex[:8]}"
    guarded = {"auth_failures_per_ip": "3/minute", "redis_prefix": prefix}
    with dedicated_client(settings, **guarded) as browser:
        assert browser.get("/v1/models", headers=neighbour.headers).status_code == 200
        for guess in (key_format.generate_key(), "not even a key"):
            refused = browser.post("/dashboard", data={"api_key": guess})
            assert refused.status_code == 401
        api = browser.get("/v1/models", headers={"X-API-Key": key_format.generate_key()})
        assert api.status_code == 401  # the third failure: the last one allowed
        crossed = browser.post("/dashboard", data={"api_key": key_format.generate_key()})
        assert (
            crossed.status_code == 429 and "Too many failed authentication attempts" in crossed.text
        )
        blocked = browser.post("/dashboard", data={"api_key": customer.key})  # not seen yet
        assert blocked.status_code == 429 and "retry in" in blocked.text
        assert "set-cookie" not in blocked.headers
        seen = browser.post("/dashboard", data={"api_key": neighbour.key})
        assert seen.status_code == 200 and seen.url.path == "/dashboard/overview"
        assert "saas_session" in seen.history[0].headers.get("set-cookie", "")


def test_unknown_sessions_count_as_failed_keys_and_writes_have_a_limit(settings, db, make_customer):
    """Any cookie value cost a database lookup, uncounted: now an unknown session id counts
    toward the address's failed-key guard like a bad key, and a blocked address is refused
    without a lookup, except for the sessions this worker saw valid. The dashboard's writes
    (sign-ins, forms) have a limit per key of their own, outside the plans'."""
    neighbour, other = make_customer(), make_customer()
    prefix = f"{settings.redis_prefix}-{uuid.uuid4().hex[:8]}"
    guarded = {
        "auth_failures_per_ip": "3/minute",
        "dashboard_writes_per_key": "4/minute",
        "redis_prefix": prefix,
    }
    # One client throughout: its requests share one event loop, as a worker's do (a client
    # made per request would not reach the guards' Redis connections).
    with dedicated_client(settings, **guarded) as client:

        def visit(cookie: str, method: str = "GET", **form: str) -> Response:
            client.cookies.clear()  # each request names its own session
            headers = {"Cookie": f"saas_session={cookie}"}
            return client.request(method, "/dashboard/keys", headers=headers, data=form or None)

        signed = client.post("/dashboard", data={"api_key": neighbour.key}, follow_redirects=False)
        assert signed.status_code == 303  # write 1 of the neighbour's key
        seen = signed.cookies["saas_session"]
        assert visit(seen).status_code == 200
        # A session opened elsewhere (another worker), not yet seen by this one.
        with db() as session:
            unseen, _ = open_session(
                session=session, key_id=other.key_id, now=utcnow(), lifetime=timedelta(hours=1)
            )
            session.commit()

        guesses = [visit(secrets.token_urlsafe(32)) for _ in range(4)]
        assert [guess.status_code for guess in guesses] == [401, 401, 401, 429]
        assert 1 <= int(guesses[-1].headers["retry-after"]) <= 60
        # A session this worker has not seen: not looked up, but not signed out either (it may
        # be valid: another worker may have seen it); the page says when to come back.
        blocked = visit(unseen)
        assert blocked.status_code == 429 and "Too many failed attempts" in blocked.text
        assert "retry-after" in blocked.headers and "set-cookie" not in blocked.headers
        assert visit(seen).status_code == 200  # a session seen valid goes on

        # Writes: three more forms of the neighbour's key pass, valid or not; the next is 429.
        token = csrf_of(visit(seen).text)
        statuses = [visit(seen, "POST", csrf_token=token, name="ci").status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        refused = visit(seen, "POST", csrf_token=token, name="ci")
        assert refused.status_code == REGISTRY["too_many_dashboard_writes"].status
        assert "Too many changes" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["content-type"].startswith("text/html")
        # Signing in again counts too, and keeps the session it would have replaced.
        client.cookies.clear()
        again = client.post(
            "/dashboard",
            data={"api_key": neighbour.key},
            headers={"Cookie": f"saas_session={seen}"},
        )
        assert again.status_code == 429 and "Too many changes" in again.text
        assert "retry-after" in again.headers
        assert visit(seen).status_code == 200
        # Signing out is never held back.
        signed_out = client.post(
            "/dashboard/sign-out",
            data={"csrf_token": token},
            headers={"Cookie": f"saas_session={seen}"},
        )
        assert signed_out.status_code == 200 and "You have signed out" in signed_out.text
        ended = visit(seen)  # unknown now: from this blocked address, the sign-in page, 429
        assert ended.status_code == 429 and 'name="api_key"' in ended.text
        # The API is not held back: the plans' limits apply there.
        assert client.get("/v1/models", headers=neighbour.headers).status_code == 200
    with db() as session:
        made = session.exec(select(ApiKey).where(ApiKey.account_id == neighbour.account_id))
        assert len(made.all()) == 1 + 3


def test_a_session_ends_when_it_expires_or_its_key_does(app_client, db, make_customer):
    first, second = make_customer(), make_customer()
    aged, expiring = signed_in(app_client, first.key), signed_in(app_client, second.key)
    with db() as session:
        row = session.get(DashboardSession, hash_id(aged.cookies["saas_session"]))
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)  # 8 hours later
        session.add(row)
        key = session.get(ApiKey, second.key_id)
        assert key is not None
        key.expires_at = utcnow() - timedelta(seconds=1)
        session.add(key)
        session.commit()
    page = aged.get("/dashboard/overview")
    assert page.status_code == 401 and "Your session has ended" in page.text
    # The key's expiry is seen once the key cache's entry ages out (SAAS_KEY_CACHE_TTL).
    pages: list[str] = []

    def signed_out() -> bool:
        answer = expiring.get("/dashboard/overview")
        pages.append(answer.text)
        return answer.status_code == 401

    assert eventually(signed_out)
    assert "API key has expired. Your session has ended." in pages[-1]


def test_bad_input_gets_a_page_never_a_500(app_client, make_customer, customer):
    browser = signed_in(app_client, customer.key)
    operator = make_customer(scopes=("admin",))
    for month in ("0000-01", "9999-12", "2026-13"):
        page = browser.get("/dashboard/overview", params={"month": month})
        assert page.status_code == 422 and "<html" in page.text, month
        api = app_client.get("/admin/invoices", params={"month": month}, headers=operator.headers)
        assert api.status_code == 422, month
    for path in ("/dashboard/keys/99999999999/revoke", "/dashboard/keys/0/revoke"):
        assert browser.get(path).status_code == 422
    token = csrf_of(browser.get("/dashboard/keys").text)
    refused = browser.post("/dashboard/keys/99999999999/revoke", data={"csrf_token": token})
    assert refused.status_code == 422
    long_key = TestClient(app_client.app).post("/dashboard", data={"api_key": "k" * 5000})
    assert long_key.status_code == 401 and 'name="api_key"' in long_key.text


def test_a_sign_in_posted_from_another_site_is_refused(app_client, customer):
    """Login CSRF: no session yet, so the browser's word on where the form came from."""
    browser = TestClient(app_client.app)
    cases = [
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "https://evil.example"}, 403),  # a browser without Sec-Fetch-Site
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "same-origin"}, 303),
        ({"Origin": "http://testserver"}, 303),
        ({}, 303),  # not a browser
    ]
    for headers, status in cases:
        response = browser.post(
            "/dashboard", data={"api_key": customer.key}, headers=headers, follow_redirects=False
        )
        assert response.status_code == status, headers
        assert ("set-cookie" in response.headers) == (status == 303), headers


def test_signing_in_again_ends_the_previous_session(app_client, make_customer, customer):
    browser = signed_in(app_client, customer.key)
    first = browser.cookies["saas_session"]
    browser.post("/dashboard", data={"api_key": make_customer().key})
    assert browser.cookies["saas_session"] != first
    stale = TestClient(app_client.app, cookies={"saas_session": first})
    assert stale.get("/dashboard/overview").status_code == 401
