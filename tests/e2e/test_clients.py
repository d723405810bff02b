"""What customers run against the API, against `saas serve` as `make run` starts it (embedded
SQLite, no Redis): the README's quickstarts, the very text of each taken from README.md and run
with curl (bash), the virtualenv's Python and Node; and a Python client generated from the
server's /openapi.json by openapi-python-client, imported and called."""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from saas.kit.db import make_engine
from saas.kit.migrations import upgrade
from tests.e2e.test_serve import DONE_WHEN
from tests.support.apps import SAAS, wait_until_ready
from tests.support.customers import Customer, new_customer
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.servers import free_port, start_process, stop_process

README = Path(__file__).parents[2] / "README.md"
# A plan of one window, so the headers are exact: the snippets use 3 units (a text, then two).
RATE_LIMIT = 100
# Code blocks of these languages in the Quickstart section must be snippets the tests run.
RUNNABLE = {"sh", "bash", "shell", "console", "python", "py", "js", "javascript", "mjs", "node"}
MARKER = re.compile(r"<!-- snippet: ([\w-]+) -->\n\Z")  # right before a block
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass
class Api:
    base: str
    customer: Callable[[], Customer]  # a new account with a key, on a plan of RATE_LIMIT/minute


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path_factory.mktemp('clients') / 'saas.kit.db'}"
    upgrade(url)
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": url,
        "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
        "SAAS_LOG_LEVEL": "WARNING",
    }
    env.pop("SAAS_REDIS_URL", None)
    port = free_port()
    process = start_process([SAAS, "serve", "--port", str(port)], env)
    engine = make_engine(url)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, process)
        rate_limit = f"{RATE_LIMIT}/minute"
        yield Api(
            base,
            lambda: new_customer(lambda: Session(engine), ENGLISH_ONLY, rate_limit=rate_limit),
        )
    finally:
        stop_process(process)
        engine.dispose()


def client_env(api: Api, key: str) -> dict[str, str]:
    """What a customer's shell would have: the snippets' two variables, and no proxy."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "SPACY_API_URL": api.base, "SPACY_API_KEY": key}


# Quickstarts ----------------------------------------------------------------------------------


def quickstart_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Quickstart\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def readme_snippets() -> dict[str, tuple[str, str]]:
    """Each marked code block of the Quickstart section: name -> (language, code). An unmarked
    block of a language that could run fails: every snippet shown must be one the tests run."""
    section = quickstart_section()
    snippets: dict[str, tuple[str, str]] = {}
    for block in FENCE.finditer(section):
        language, code = block.group(1), block.group(2)
        marker = MARKER.search(section[: block.start()])
        if marker is None:
            assert language not in RUNNABLE, f"unmarked {language} block:\n{code}"
            continue
        assert marker.group(1) not in snippets, f"two snippets named {marker.group(1)}"
        snippets[marker.group(1)] = (language, code)
    return snippets


def node() -> str:
    """Node 18 or newer (fetch), or the test fails saying how to get it."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node not found: apt-get install nodejs (Node 18 or newer)", pytrace=False)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    major = int(version.strip().lstrip("v").split(".")[0])
    if major < 18:
        pytest.fail(f"node {version.strip()} has no fetch: Node 18 or newer", pytrace=False)
    return binary


def run_shell(code: str, workdir: Path) -> list[str]:
    return ["bash", "-c", code]


def run_python(code: str, workdir: Path) -> list[str]:
    return [sys.executable, "-c", code]


def run_node(code: str, workdir: Path) -> list[str]:
    script = workdir / "quickstart.mjs"  # top-level await: an ES module, as the README says
    script.write_text(code, encoding="utf-8")
    return [node(), str(script)]


# Each snippet of the README, with the language its block must have and how it is run.
RUNNERS: dict[str, tuple[str, Callable[[str, Path], list[str]]]] = {
    "curl": ("sh", run_shell),
    "python-httpx": ("python", run_python),
    "python-nlpcloud": ("python", run_python),
    "javascript-fetch": ("js", run_node),
}
ENTITY_TEXTS = ("John Doe", "Google", "London", "Angela Merkel", "Emmanuel Macron", "Berlin")
HEADER = re.compile(r"^(x-ratelimit-(?:limit|remaining|reset)): *(\d+)\s*$", re.I | re.M)


def test_every_quickstart_is_run() -> None:
    assert set(readme_snippets()) == set(RUNNERS)


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_quickstart_runs(api: Api, tmp_path: Path, name: str) -> None:
    language, code = readme_snippets()[name]
    expected, command = RUNNERS[name]
    assert language == expected
    customer = api.customer()
    before = time.time()
    result = subprocess.run(
        command(code, tmp_path),
        env=client_env(api, customer.key),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for text in (*ENTITY_TEXTS, "PERSON", "ORG", "GPE"):
        assert text in out, f"{text!r} not printed:\n{out}"
    headers = {header.lower(): int(value) for header, value in HEADER.findall(out)}
    assert headers.keys() == {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
    assert headers["x-ratelimit-limit"] == RATE_LIMIT
    # A text and a batch of two: three units of the window used.
    assert headers["x-ratelimit-remaining"] == RATE_LIMIT - 3, out
    # The oldest bucket leaves a minute window at most 61 s after its first request (rounded up).
    assert before <= headers["x-ratelimit-reset"] <= time.time() + 62, out


# A client generated from the schema ------------------------------------------------------------

PACKAGE = "spacy_api_client"
GENERATOR = str(Path(sys.executable).parent / "openapi-python-client")


@pytest.fixture
def generated(api: Api, tmp_path: Path) -> Iterator[Any]:
    """The package openapi-python-client makes from the server's /openapi.json, imported."""
    config = tmp_path / "config.json"  # no post hooks: formatting the code is not the subject
    config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    result = subprocess.run(
        [GENERATOR, "generate", "--url", f"{api.base}/openapi.json", "--meta", "none"]
        + ["--output-path", str(tmp_path / PACKAGE), "--config", str(config)],
        env=client_env(api, ""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # The generator reports what it could not read in the schema as warnings, and goes on.
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[module]


def test_generated_client_calls_entities_and_usage(api: Api, generated: Any) -> None:
    entities = importlib.import_module(f"{PACKAGE}.api.nlp.entities")
    my_usage = importlib.import_module(f"{PACKAGE}.api.usage.my_usage")
    models = importlib.import_module(f"{PACKAGE}.models")
    customer = api.customer()
    client = generated.AuthenticatedClient(base_url=api.base, token=customer.key)  # Bearer
    model = models.EntitiesModel(MODEL)

    answer = entities.sync(model=model, client=client, body=models.EntitiesIn(text=DONE_WHEN))
    assert isinstance(answer, models.EntitiesOut)
    assert all(isinstance(entity, models.Entity) for entity in answer.entities)
    assert [(e.start, e.end, e.type_, e.text) for e in answer.entities] == [
        (0, 8, "PERSON", "John Doe"),
        (30, 36, "ORG", "Google"),
        (40, 46, "GPE", "London"),
    ]

    usage = my_usage.sync(client=client)
    assert isinstance(usage, models.MonthUsage)
    assert usage.account == customer.account_name
    assert usage.billable_requests == 1  # committed before the entities answer was sent
    assert isinstance(usage.plan, models.PlanLimits)
    assert usage.plan.name == customer.plan_name

    # An error is a declared answer too: its status, and a body the client could read.
    wrong = generated.AuthenticatedClient(base_url=api.base, token="sk_live_wrong")
    refused = entities.sync_detailed(model=model, client=wrong, body=models.EntitiesIn(text="x"))
    assert refused.status_code == HTTPStatus.UNAUTHORIZED
    assert refused.parsed is not None


def test_operation_ids_are_the_route_names(api: Api) -> None:
    """What generated clients name their functions after (saas/app.py)."""
    import httpx

    schema = httpx.get(f"{api.base}/openapi.json").json()
    ids = [op["operationId"] for methods in schema["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))
    assert schema["paths"]["/v1/{model}/entities"]["post"]["operationId"] == "entities"
    assert schema["paths"]["/v1/usage"]["get"]["operationId"] == "my_usage"
