"""A key is shown once, in the answer that creates it, and nowhere else: a realistic session
against `saas serve` (one worker, PostgreSQL and Redis, DEBUG logs) creates keys through the
admin API, the customer API, the CLI and the dashboard, uses them well and badly, rolls one,
browses the dashboards and reads /metrics, capturing everything the service emits: the
server's stdout and stderr, every answer's status line, headers and body, the CLI's output and
the metrics text. Then every key, the secret part of every key (what follows its public prefix)
and its hash are searched for in all of it, except in the answers that created them. Both log
formats are tried, and the second test does the same through the paths that write tracebacks."""

import contextlib
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session
from starlette.routing import Route

from saas.auth import key_format
from saas.dashboard import admin as dashboard_admin
from saas.kit.db import make_engine
from saas.kit.migrations import upgrade
from tests.support.apps import SAAS, wait_until_ready
from tests.support.customers import new_customer
from tests.support.dashboard import csrf_of
from tests.support.marks import POSTGRES_ONLY
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.polling import eventually
from tests.support.servers import PostgresServer, ServerUnavailable, free_port, stop_process
from tests.support.stores import redis_url

ENTITIES = f"/v1/{MODEL}/entities"
NEW_KEY = re.compile(r'<code id="new-key">([^<]+)</code>')
# The console format's colours, between the characters searched for.
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ACCESS_STATUS = re.compile(r"\brequest\b.* status=(\d{3})\b")


class Recorder:
    """Every answer the test gets, in two piles: the creation answers (where a new key may
    appear) and everything else (where no key may)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.creations: list[str] = []
        self.others: list[str] = []

    def __call__(
        self, method: str, path: str, *, creates: bool = False, **kwargs
    ) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
        # Not the request's own path: some carry a key on purpose.
        record = f"{method} -> {response.status_code}\n{headers}\n\n{response.text}"
        (self.creations if creates else self.others).append(record)
        return response


def secrets_of(key: str) -> list[str]:
    """The key, the part of it that is not public (after the displayed prefix) and its hash."""
    return [key, key[len(key_format.display_prefix(key)) :], key_format.hash_key(key)]


@contextlib.contextmanager
def logging_server(
    database_url: str, redis_prefix: str, log_json: bool, log: Path, max_body_bytes: int
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`saas serve` (one worker, English only, DEBUG, the log format given) on that database and
    the run's Redis, its stdout and stderr both in `log`: its address and process."""
    port = free_port()
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": database_url,
        "SAAS_REDIS_URL": redis_url(),
        "SAAS_REDIS_PREFIX": redis_prefix,
        "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
        "SAAS_LOG_LEVEL": "DEBUG",
        "SAAS_LOG_JSON": "true" if log_json else "false",
        "SAAS_MAX_BODY_BYTES": str(max_body_bytes),
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
        yield base, process
    finally:
        stop_process(process)


@pytest.fixture
def served(backend, settings, tmp_path, log_json) -> Iterator[tuple[str, Path]]:
    """`saas serve` on the test database, in the log format the test names, and its log."""
    log = tmp_path / "server.log"
    with logging_server(backend, settings.redis_prefix, log_json, log, 20_000) as (base, _):
        yield base, log


@POSTGRES_ONLY
@pytest.mark.parametrize("log_json", [True, False], ids=["json", "console"])
def test_no_key_is_emitted_after_its_creation(served, log_json, make_customer, saas, saas_process):
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
    near = key_format.with_checksum(main[: -key_format.CHECKSUM_CHARS - 3] + "xyz")
    assert near != main and key_format.display_prefix(near) == key_format.display_prefix(main)
    typo = main[:-1] + ("A" if main[-1] != "A" else "B")  # fails the checksum
    truncated = main[:-4]
    statuses = {
        "ok": call("POST", ENTITIES, headers=main_h, json={"text": "Ada works in Paris."}),
        "cli key": call("GET", "/v1/models", headers={"X-API-Key": cli_key}),
        "unknown": call("GET", "/v1/models", headers={"X-API-Key": key_format.generate_key()}),
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
        if isinstance(route, Route)
        and "GET" in (route.methods or ())
        and not route.path.endswith(".csv")
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
    server_output = ANSI.sub("", log.read_text(encoding="utf-8"))
    # What was captured is the server's whole story: its refusals were logged too (and at
    # DEBUG, whatever the libraries say at that level).
    if log_json:
        records = [json.loads(line) for line in server_output.splitlines()]
        logged = {r["status"] for r in records if r.get("event") == "request"}
    else:
        logged = {int(status) for status in ACCESS_STATUS.findall(server_output)}
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
        if truncated[len(key_format.display_prefix(truncated)) :] in text
    ]
    assert not leaks, leaks


# --- The same promise when things fail: a traceback, in either log format, holds no secret.

# Text that looks like a key anywhere in a log: nothing the service writes may (its access
# lines carry ids, never even a key's public prefix).
KEY_SHAPED = re.compile(key_format.KEY_PREFIX + "[0-9A-Za-z]")
TOO_LONG_FOR_SPACY = "word " * 200_001  # over spaCy's nlp.max_length (E088)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own: the test stops it (never the machine's)."""
    server = PostgresServer()
    try:
        server.start()
    except ServerUnavailable as error:
        server.stop()
        pytest.fail(str(error), pytrace=False)
    upgrade(server.url)
    try:
        yield server
    finally:
        server.stop()


def inference_process(server: subprocess.Popen[bytes]) -> int:
    """The pid of the server's spawned inference process (not multiprocessing's tracker)."""
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(path.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (path.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == server.pid and b"multiprocessing.spawn" in cmdline:
            return int(path.parent.name)
    raise AssertionError("no inference process found")


def renamed(engine: Engine, table: str) -> contextlib.AbstractContextManager[None]:
    """The table out of the way for a `with` block: what needs it fails as a bug would (500)."""

    @contextlib.contextmanager
    def moved() -> Iterator[None]:
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {table} RENAME TO {table}_gone"))
        try:
            yield
        finally:
            with engine.begin() as connection:
                connection.execute(text(f"ALTER TABLE {table}_gone RENAME TO {table}"))

    return moved()


@pytest.mark.parametrize("log_json", [True, False], ids=["json", "console"])
def test_no_secret_is_logged_when_requests_fail(
    own_postgres: PostgresServer, log_json: bool, tmp_path: Path
) -> None:
    """`saas serve` at DEBUG, in the log format given, through the paths that write tracebacks:
    500s (a table gone under the dashboard's key form and under the API's), spaCy refusing a
    text, the inference process killed, and a database outage while keys, a session cookie and
    a CSRF token are presented. The log must hold none of them, nor anything shaped like a key,
    while still telling what happened."""
    engine = make_engine(own_postgres.url)

    def db() -> Session:
        return Session(engine)

    customer = new_customer(db, ENGLISH_ONLY, max_text_chars=1_100_000)
    operator = new_customer(db, ENGLISH_ONLY, scopes=("admin",))
    # Never presented before the outage: no worker has them cached, so their lookup fails.
    unseen = new_customer(db, ENGLISH_ONLY)
    unseen_admin = new_customer(db, ENGLISH_ONLY, scopes=("admin",))
    log = tmp_path / "server.log"
    prefix = f"secrecy-{uuid.uuid4().hex[:8]}"
    with (
        logging_server(own_postgres.url, prefix, log_json, log, 1_100_000) as (base, server),
        httpx.Client(base_url=base, timeout=60) as http,
        httpx.Client(base_url=base, timeout=60, follow_redirects=True) as browser,
    ):
        ok = http.post(ENTITIES, headers=customer.headers, json={"text": "Ada is in Paris."})
        assert ok.status_code == 200, ok.text
        assert browser.post("/dashboard", data={"api_key": customer.key}).status_code == 200
        cookie = browser.cookies["saas_session"]
        csrf = csrf_of(browser.get("/dashboard/keys").text)

        # 500s: a new key's audit row cannot be written (the key is made, then the flush fails).
        with renamed(engine, "audit_log"):
            page = browser.post("/dashboard/keys", data={"csrf_token": csrf, "name": "page"})
            assert page.status_code == 500, page.text
            made = http.post("/v1/keys", headers=customer.headers, json={"name": "api"})
            assert made.status_code == 500, made.text

        # spaCy refuses a text; then the inference process dies under the requests.
        refused = http.post(
            f"/v1/{MODEL}/tokens", headers=customer.headers, json={"text": TOO_LONG_FOR_SPACY}
        )
        assert refused.status_code == 500, refused.text
        os.kill(inference_process(server), signal.SIGKILL)

        def answered(status: int) -> bool:
            text = {"text": "Ada."}
            return http.post(ENTITIES, headers=customer.headers, json=text).status_code == status

        replacing = eventually(lambda: answered(503), timeout=10)
        assert replacing, "no 503 while the inference process was replaced"
        assert eventually(lambda: answered(200), timeout=60), (
            "the inference process was not replaced"
        )

        # The database down while keys, the cookie and the CSRF token are presented.
        own_postgres.halt()
        try:
            outage = {
                "key": http.get("/v1/models", headers=unseen.headers).status_code,
                "admin key": http.get("/admin/plans", headers=unseen_admin.headers).status_code,
                "bearer": http.post(
                    ENTITIES,
                    headers={"Authorization": f"Bearer {unseen.key}"},
                    json={"text": "Ada."},
                ).status_code,
                "page": browser.get("/dashboard/keys").status_code,
                "form": browser.post(
                    "/dashboard/keys", data={"csrf_token": csrf, "name": "down"}
                ).status_code,
                "sign-in": httpx.post(
                    f"{base}/dashboard", data={"api_key": unseen.key}, timeout=60
                ).status_code,
                "sign-in over a session": browser.post(
                    "/dashboard", data={"api_key": unseen.key}
                ).status_code,
            }
        finally:
            own_postgres.launch()
        assert set(outage.values()) == {503}, outage
        # The outage said nothing about the browser's session: it goes on.
        kept = eventually(lambda: browser.get("/dashboard/keys").status_code == 200, timeout=30)
        assert kept, "a sign-in during the outage ended the session"
        last = http.get("/v1/models", headers=customer.headers)
        assert last.status_code == 200, last.text
        last_id = last.headers["x-request-id"]
        assert eventually(lambda: last_id in log.read_text(encoding="utf-8"), timeout=10)
    engine.dispose()

    written = ANSI.sub("", log.read_text(encoding="utf-8"))
    # The console format wraps long lines: look in the text without spaces and frames too.
    flat = re.sub(r"[\s│╭╮╰╯─]", "", written)
    secrets = {
        "customer key": customer.key,
        "operator key": operator.key,
        "unseen key": unseen.key,
        "unseen admin key": unseen_admin.key,
        "session cookie": cookie,
        "csrf token": csrf,
    }
    for key in (customer, operator, unseen, unseen_admin):
        secrets[f"hash of {key.account_name}'s key"] = key_format.hash_key(key.key)
    leaks = [name for name, secret in secrets.items() if secret in written or secret in flat]
    assert not leaks, f"in the log: {leaks}\n{written[-5000:]}"
    assert not KEY_SHAPED.search(written), KEY_SHAPED.search(written)
    # What the log still says: each failure, with the tracebacks of the unexpected ones.
    for event in (
        "unhandled_error",
        "inference_failed",
        "inference_process_died",
        "key_lookup_failed",
        "database_unavailable",
    ):
        assert event in written, f"no {event} in the log"
    assert written.count("Traceback (most recent call last)") >= 3
