"""Every code of saas/problems/__init__.py, provoked over HTTP against the real app and checked as
problem details (status, `application/problem+json`, `type`, `title`, `detail`, `code` and the
fields that help). A code added to the registry fails `test_every_code_is_walked` until it is
walked here or listed, with its reason, in ELSEWHERE or AS_PAGE.

- CASES run on the session's apps, PostgreSQL + Redis and SQLite (tests/conftest.py);
- FAULTS need an app of their own that can be broken: on its own SQLite file, served by Uvicorn
  with this service's HTTP protocol (saas/server/protocol.py) on a loopback port, so that the
  protocol's own answers (400, 431) and a slow body (408) are real;
- the README's table, the /errors page, and the source (no error body is built without a code)
  are checked against the registry."""

import ast
import os
import re
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session

from saas import problems
from saas.accounts.models import Plan
from saas.app import create_app
from saas.auth import key_format
from saas.config import Settings
from saas.kit.db import make_engine, utcnow
from saas.kit.migrations import upgrade
from saas.nlp.lane import TEXT_FAILED
from saas.problems import REGISTRY
from saas.server.protocol import GuardedHttpToolsProtocol, headers_too_large
from saas.web.deps import DbSession
from tests.e2e.test_hostile_input import exchange
from tests.support.customers import Customer, new_customer
from tests.support.dashboard import signed_in
from tests.support.nlp import ENGLISH_ONLY, FRENCH, MODEL
from tests.support.polling import eventually
from tests.support.problems import ANY, PROBLEM_EXTRAS, assert_problem
from tests.support.servers import serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
ENTITIES = f"/v1/{MODEL}/entities"
BATCH = f"{ENTITIES}/batch"
TEXT = {"text": "Paris is in France."}


@dataclass
class Walk:
    """What a case may use: the app, a new customer per call, an admin, the settings."""

    client: TestClient
    make_customer: Callable[..., Customer]
    admin: Customer
    settings: Settings


Case = Callable[[Walk], tuple[httpx.Response, dict[str, Any]]]  # the answer, fields expected


def _revoked(w: Walk) -> tuple[httpx.Response, dict[str, Any]]:
    customer = w.make_customer()
    w.client.delete(f"/admin/keys/{customer.key_id}", headers=w.admin.headers).raise_for_status()
    return w.client.get("/v1/models", headers=customer.headers), {}


def _rate_limited(w: Walk) -> tuple[httpx.Response, dict[str, Any]]:
    customer = w.make_customer(rate_limit="1/minute")
    assert w.client.get("/v1/models", headers=customer.headers).status_code == 200
    return w.client.get("/v1/models", headers=customer.headers), {"limit": 1}


def _reused(w: Walk) -> tuple[httpx.Response, dict[str, Any]]:
    customer = w.make_customer()
    headers = {**customer.headers, "Idempotency-Key": uuid.uuid4().hex}
    assert w.client.post(ENTITIES, headers=headers, json=TEXT).status_code == 200
    return w.client.post(ENTITIES, headers=headers, json={"text": "Another text."}), {}


def _rolled(w: Walk) -> tuple[str, Customer]:
    customer = w.make_customer()
    url = f"/admin/keys/{customer.key_id}/roll"
    rolled = w.client.post(url, headers=w.admin.headers, json={"grace_seconds": 3600})
    assert rolled.status_code == 201, rolled.text
    return url, customer


def _being_replaced(w: Walk) -> tuple[httpx.Response, dict[str, Any]]:
    _, customer = _rolled(w)  # its key now works only for the grace period
    return w.client.post("/v1/keys", headers=customer.headers, json={"name": "x"}), {}


def _not_rollable(w: Walk) -> tuple[httpx.Response, dict[str, Any]]:
    url, _ = _rolled(w)
    return w.client.post(url, headers=w.admin.headers, json={"grace_seconds": 60}), {}


def _body(w: Walk, content: bytes, content_type: str = "application/json") -> httpx.Response:
    headers = {**w.make_customer().headers, "Content-Type": content_type}
    return w.client.post(ENTITIES, headers=headers, content=content)


def _batch(w: Walk, texts: list[str], **plan: object) -> httpx.Response:
    return w.client.post(BATCH, headers=w.make_customer(**plan).headers, json={"texts": texts})


def _customer_get(path: str, **plan: object) -> Case:
    return lambda w: (w.client.get(path, headers=w.make_customer(**plan).headers), {})


def _entities(**plan: object) -> Case:
    return lambda w: (
        w.client.post(ENTITIES, headers=w.make_customer(**plan).headers, json=TEXT),
        {},
    )


# Each code the session's apps can answer, and how to make them.
CASES: dict[str, Case] = {
    "missing_api_key": lambda w: (w.client.get("/v1/models"), {}),
    "malformed_api_key": lambda w: (w.client.get("/v1/models", headers={"X-API-Key": "sk_x"}), {}),
    "invalid_api_key": lambda w: (
        w.client.get("/v1/models", headers={"X-API-Key": key_format.generate_key()}),
        {},
    ),
    "key_revoked": _revoked,
    "key_expired": _customer_get("/v1/models", expires_at=utcnow() - timedelta(seconds=1)),
    "account_suspended": _customer_get("/v1/models", status="suspended"),
    "admin_scope_required": _customer_get("/admin/plans"),
    "rate_limited": _rate_limited,
    "quota_exhausted": lambda w: (_entities(monthly_quota=0)(w)[0], {"limit": 0}),
    "not_found": _customer_get("/v1/nothing/here"),
    "method_not_allowed": _customer_get(ENTITIES),
    "invalid_content_length": lambda w: (
        w.client.post("/v1/models", headers={"Content-Length": "ten"}, content=b"{}"),
        {},
    ),
    "body_too_large": lambda w: (
        _body(w, b'{"text": "' + b"a" * w.settings.max_body_bytes + b'"}'),
        {"limit": w.settings.max_body_bytes},
    ),
    "unsupported_media_type": lambda w: (_body(w, b'{"text": "Paris"}', "text/plain"), {}),
    "malformed_body": lambda w: (
        # The dashboard's sign-in form, as multipart without its boundary.
        w.client.post("/dashboard", headers={"Content-Type": "multipart/form-data"}, content=b"x"),
        {},
    ),
    "invalid_json": lambda w: (_body(w, b'{"text": '), {}),
    "validation_failed": lambda w: (
        w.client.post(ENTITIES, headers=w.make_customer().headers, json={"text": 5}),
        {"errors": [{"loc": ["body", "text"], "msg": "Input should be a valid string"}]},
    ),
    "model_not_found": lambda w: (
        w.client.post("/v1/xx_unknown/entities", headers=w.make_customer().headers, json=TEXT),
        {},
    ),
    "model_not_in_plan": _entities(models=[FRENCH]),
    "empty_text": lambda w: (_batch(w, ["Paris.", " "]), {"texts_index": 1}),
    "invalid_text": lambda w: (
        w.client.post(
            BATCH,
            headers={**w.make_customer().headers, "Content-Type": "application/json"},
            content=b'{"texts": ["Paris.", "Rome.", "bad \\ud800 text"]}',
        ),
        {"texts_index": 2},
    ),
    "text_too_long": lambda w: (
        _batch(w, ["Paris.", "Rome is in Italy."], max_text_chars=10),
        {"limit": 10, "texts_index": 1},
    ),
    "batch_too_large": lambda w: (_batch(w, ["Paris.", "Rome."], max_batch_texts=1), {"limit": 1}),
    "invalid_idempotency_key": lambda w: (
        w.client.post(
            ENTITIES, headers={**w.make_customer().headers, "Idempotency-Key": "x" * 256}, json=TEXT
        ),
        {},
    ),
    "idempotency_key_reused": _reused,
    "key_limit_reached": lambda w: (
        w.client.post("/v1/keys", headers=w.make_customer(max_keys=1).headers, json={}),
        {"limit": 1},
    ),
    "key_being_replaced": _being_replaced,
    "key_not_rollable": _not_rollable,
    "name_taken": lambda w: (
        w.client.post("/admin/plans", headers=w.admin.headers, json={"name": w.admin.plan_name}),
        {},
    ),
}

# Codes whose answer needs a broken or specially set app: walked by test_fault_codes_...
FAULTS = (
    "invalid_request",
    "headers_too_large",
    "request_timeout",
    "authentication_unavailable",
    "idempotency_key_in_use",
    "idempotency_unavailable",
    "usage_unavailable",
    "database_unavailable",
    "conflicting_write",
    "inference_failed",
    "internal_error",
    "overloaded",
    "too_many_failed_keys",
)
# Provoked by another test, which checks the answer with assert_problem; the reason it is there.
ELSEWHERE = {
    "limiter_unavailable": (
        "tests/ratelimit/test_redis_outage.py::test_fail_closed_answers_503",
        "needs a Redis of its own to stop, with the limiter failing closed",
    ),
}
# Refusals of the dashboard's pages: people get an HTML page there, never problem details
# (too_many_dashboard_writes: tests/dashboard/test_sessions.py, test_unknown_sessions_...).
AS_PAGE = ("csrf_failed", "too_many_dashboard_writes")


def test_every_code_is_walked() -> None:
    walked = [*CASES, *FAULTS, *ELSEWHERE, *AS_PAGE]
    assert sorted(walked) == sorted(REGISTRY), "each code walked exactly once"


@pytest.mark.parametrize("code", list(ELSEWHERE))
def test_codes_provoked_elsewhere_are_checked_there(code: str) -> None:
    where, _ = ELSEWHERE[code]
    path, _, name = where.partition("::")
    tree = ast.parse((ROOT / path).read_text())
    test = next(node for node in tree.body if getattr(node, "name", None) == name)
    checks = [
        node
        for node in ast.walk(test)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "assert_problem"
        and any(isinstance(arg, ast.Constant) and arg.value == code for arg in node.args)
    ]
    assert checks, f"{where} does not call assert_problem(..., {code!r})"


@pytest.mark.parametrize("code", list(CASES))
def test_each_code_over_http(code, client, make_customer, settings) -> None:
    walk = Walk(client, make_customer, make_customer(scopes=("admin",)), settings)
    response, fields = CASES[code](walk)
    assert_problem(response, code, **fields)


def test_codes_of_the_dashboard_pages_are_pages(app_client, customer) -> None:
    browser = signed_in(app_client, customer.key)
    refused = browser.post("/dashboard/keys", data={"name": "no-token"})
    assert refused.status_code == REGISTRY["csrf_failed"].status
    assert refused.headers["content-type"].startswith("text/html")
    assert "reload the page" in refused.text


# --- An app of its own, served by Uvicorn on a loopback port, broken one way after another.

FAULT_SETTINGS: dict[str, Any] = {
    "redis_url": None,
    "models": ENGLISH_ONLY,
    "log_level": "CRITICAL",  # the faults below are logged as errors, on purpose
    "engine_long_text_chars": 0,
    "max_body_bytes": 1_100_000,  # a text spaCy refuses (over nlp.max_length) must get in
    "body_timeout": 0.5,
    "idempotency_wait_seconds": 0.2,
    "auth_failures_per_ip": "3/minute",
}
TOO_LONG_FOR_SPACY = "word " * 200_001  # 1,000,005 characters: spaCy's E088


def _probe_routes(app: FastAPI, closed_port: int) -> None:
    """Routes that meet the database failures the exception handlers turn into codes: real
    errors of a real database, raised where a route would meet them."""

    @app.get("/probe/database-down")
    def database_down() -> None:
        engine = make_engine(f"postgresql://postgres@127.0.0.1:{closed_port}/none")
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()

    @app.post("/probe/duplicate-plan")
    def duplicate_plan(session: DbSession) -> None:
        # What a lost race past create_plan's own check meets: the unique index.
        name = f"race-{uuid.uuid4().hex[:8]}"
        session.add(Plan(name=name))
        session.flush()
        session.add(Plan(name=name))
        session.flush()

    @app.get("/probe/bug")
    def bug() -> None:
        raise RuntimeError("a bug")


@dataclass
class Served:
    base: str
    port: int
    app: FastAPI
    engine: Any
    customer: Customer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    url = f"sqlite:///{tmp_path_factory.mktemp('faults') / 'saas.kit.db'}"
    upgrade(url)
    settings = Settings(database_url=url, _env_file=None, **FAULT_SETTINGS)
    engine = make_engine(url)
    customer = new_customer(
        lambda: Session(engine), settings.models, max_text_chars=1_100_000, rate_limit="1000/second"
    )
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    app = create_app(settings)
    _probe_routes(app, closed_port)
    try:
        with serve_in_thread(app, log_level="critical", http=GuardedHttpToolsProtocol) as port:
            yield Served(f"http://127.0.0.1:{port}", port, app, engine, customer)
    finally:
        engine.dispose()


def _slow_body(served: Served) -> httpx.Response:
    """Headers and part of a declared body, then nothing: the body's deadline answers."""
    head = (
        f"POST {ENTITIES} HTTP/1.1\r\nHost: test\r\nAuthorization: Token {served.customer.key}"
        "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"text": ')
        received = b""
        while chunk := sock.recv(65536):  # until the server closes (Connection: close)
            received += chunk
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


def _renamed(served: Served, table: str) -> Any:
    """The table out of the way (the database refuses what needs it) for a `with` block."""

    class Renamed:
        def __enter__(self) -> None:
            with served.engine.begin() as connection:
                connection.execute(text(f"ALTER TABLE {table} RENAME TO {table}_gone"))

        def __exit__(self, *_: object) -> None:
            with served.engine.begin() as connection:
                connection.execute(text(f"ALTER TABLE {table}_gone RENAME TO {table}"))

    return Renamed()


def test_fault_codes_over_a_real_server(served: Served) -> None:
    http = httpx.Client(base_url=served.base, timeout=30)
    keyed = served.customer.headers
    checked: list[str] = []

    def check(response: httpx.Response, code: str, **fields: Any) -> dict[str, Any]:
        checked.append(code)
        return assert_problem(response, code, **fields)

    # Uvicorn's own refusals, before the app: a request it cannot parse, huge headers.
    garbage = exchange(served.port, b"NOT HTTP AT ALL\r\n\r\n")
    check(
        httpx.Response(garbage.status, headers=garbage.headers, content=garbage.body),
        "invalid_request",
    )
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 8192) for i in range(100))
    huge = exchange(served.port, b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + filler + b"\r\n")
    limit = Settings(_env_file=None).max_header_bytes  # the protocol reads the environment's
    check(
        httpx.Response(huge.status, headers=huge.headers, content=huge.body),
        "headers_too_large",
        limit=limit,
    )
    check(_slow_body(served), "request_timeout")

    # A key checked while its table is gone: authentication fails closed.
    with _renamed(served, "api_keys"):
        unseen = {"X-API-Key": key_format.generate_key()}
        check(http.get("/v1/models", headers=unseen), "authentication_unavailable", retry_after=1)
    assert http.post(ENTITIES, headers=keyed, json=TEXT).status_code == 200  # now cached

    # Idempotency-Key: held by another worker past the wait; then the claims table gone.
    from tests.idempotency.test_other_workers import BODY, claim_elsewhere

    claim_elsewhere(served.engine, served.customer.account_id, "held", timedelta(seconds=30))
    held = {**keyed, "Idempotency-Key": "held", "Content-Type": "application/json"}
    check(
        http.post(ENTITIES, headers=held, content=BODY), "idempotency_key_in_use", retry_after=ANY
    )
    with _renamed(served, "idempotency_keys"):
        fresh = {**keyed, "Idempotency-Key": uuid.uuid4().hex}
        check(http.post(ENTITIES, headers=fresh, json=TEXT), "idempotency_unavailable")

    # The ledger gone: a billable answer is withheld.
    with _renamed(served, "usage_events"):
        check(http.post(ENTITIES, headers=keyed, json=TEXT), "usage_unavailable")

    # What the exception handlers make of a database down, a lost race, a bug.
    check(http.get("/probe/database-down"), "database_unavailable")
    check(http.post("/probe/duplicate-plan"), "conflicting_write")
    check(http.get("/probe/bug"), "internal_error")

    # A text spaCy refuses: alone, 500; in a batch, its own entry, the others answered.
    long_text = {"text": TOO_LONG_FOR_SPACY}
    check(http.post(f"/v1/{MODEL}/tokens", headers=keyed, json=long_text), "inference_failed")
    batch = http.post(BATCH, headers=keyed, json={"texts": ["Paris.", TOO_LONG_FOR_SPACY]})
    assert batch.status_code == 200, batch.text
    entry = batch.json()["results"][1]
    assert entry == {"error": {"detail": TEXT_FAILED, "code": "inference_failed"}}

    # The inference process killed (it is this test's app's): answered 503 until replaced.
    pid = served.app.state.services.inference.short.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    refused = eventually(
        lambda: (
            (answer := http.post(ENTITIES, headers=keyed, json=TEXT)).status_code == 503 and answer
        ),
        timeout=10,
    )
    assert refused, "no 503 while the inference process was replaced"
    check(refused, "overloaded", retry_after=1)

    # Last, as it blocks this address for unknown keys: too many of them.
    statuses = [
        http.get("/v1/models", headers={"X-API-Key": key_format.generate_key()}).status_code
        for _ in range(3)
    ]
    assert statuses == [401] * 3
    blocked = http.get("/v1/models", headers={"X-API-Key": key_format.generate_key()})
    check(blocked, "too_many_failed_keys")
    assert sorted(checked) == sorted(FAULTS)


# --- The registry, and what is built from it.


def test_codes_are_stable_identifiers_with_a_status_and_a_meaning() -> None:
    for code, problem in REGISTRY.items():
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", code), code
        assert problem.code == code and 400 <= problem.status <= 599, problem
        assert problem.title and problem.title == problem.title.strip(), problem
        assert problem.meaning.endswith(".") and "\n" not in problem.meaning, problem
        assert "|" not in problem.meaning, problem  # a Markdown table cell
        assert set(problem.extras) <= PROBLEM_EXTRAS, problem
        if "retry_after" in problem.extras:
            assert problem.status in (402, 409, 429, 503), problem


def test_the_readme_lists_every_code() -> None:
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"<!-- errors:start[^>]*-->\n(.*?)\n<!-- errors:end -->", readme, re.S)
    assert section, "README.md has no errors:start/errors:end section"
    assert section.group(1) == problems.markdown_table(), "run: python -m saas.problems"


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_the_errors_page(settings: Settings, root_path: str) -> None:
    app = create_app(settings.model_copy(update={"root_path": root_path}))
    client = TestClient(app)  # no lifespan: the page needs no model
    page = client.get("/errors")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    rows = re.findall(r'<tr id="([a-z0-9_]+)">', page.text)
    assert rows == list(REGISTRY)
    assert "<script" not in page.text and "style=" not in page.text
    assert not re.search(r'(href|src)="(https?:)?//', page.text), "nothing from another site"
    assert f'href="{root_path}/dashboard/static/dashboard.css' in page.text
    # An answer's `type` is a link to its row, behind the prefix too.
    answer = client.get("/v1/models")
    assert_problem(answer, "missing_api_key", root_path=root_path)
    assert answer.json()["type"] == f"{root_path}/errors#missing_api_key"
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_protocol_answers_name_the_root_path() -> None:
    body = httpx.Response(431, content=headers_too_large("/api", 1024)).json()
    assert body["type"] == "/api/errors#headers_too_large" and body["limit"] == 1024


def test_no_error_answer_is_built_without_a_code() -> None:
    """Errors are answered through json_error, AppError or HTTPProblem, each of which needs a
    problem type: no module builds an error body or an error Response of its own."""
    import inspect

    from saas.problems.errors import AppError
    from saas.problems.responses import HTTPProblem, json_error

    for function in (json_error, AppError.__init__, HTTPProblem.__init__):
        parameter = inspect.signature(function).parameters["problem"]
        assert parameter.default is inspect.Parameter.empty, function
    # Answers that are not API errors: a static file of the dashboard or the docs that does not
    # exist (a browser asked for a stylesheet), and /readyz's report (load balancers read its
    # status; its status is not a constant, so not found here).
    allowed = {("saas/kit/assets.py", 404)}
    found = []
    for path in sorted((ROOT / "saas").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict) and name != "saas/problems/__init__.py":
                keys = [key.value for key in node.keys if isinstance(key, ast.Constant)]
                assert "detail" not in keys, f"{name}:{node.lineno} builds an error body"
            if isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith("Response"):
                for keyword in node.keywords:
                    value = getattr(keyword.value, "value", None)
                    if keyword.arg == "status_code" and isinstance(value, int) and value >= 400:
                        found.append((name, value))
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "HTTPException":
                found.append((name, node.lineno))
    assert set(found) <= allowed, found


def test_content_length_stays_right_when_headers_are_added(client, customer) -> None:
    """Rate-limit headers added by the middleware after the body was rendered keep
    Content-Length right (a wrong one breaks clients; the root path's case: above)."""
    answer = client.post(ENTITIES, headers={**customer.headers, "Idempotency-Key": ""}, json=TEXT)
    assert answer.headers["x-ratelimit-limit"]
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert_problem(answer, "invalid_idempotency_key")
