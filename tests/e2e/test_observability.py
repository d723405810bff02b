"""Two server workers as operators run them (`saas serve --workers 2`, PROMETHEUS_MULTIPROC_DIR,
SAAS_LOG_JSON=true): /metrics adds up both workers' samples whichever worker answers it, and
every line on stderr, Uvicorn's and the app's, is one JSON object; a request's line carries its
request id, account id, route template, status and latency, and never a key or a text."""

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from saas.auth import key_format
from tests.support.apps import two_workers_on_redis
from tests.support.marks import POSTGRES_ONLY
from tests.support.metrics import metric
from tests.support.nlp import MODEL
from tests.support.polling import eventually

pytestmark = POSTGRES_ONLY

ROUTE = "/v1/{model}/entities"
ENTITIES = f"/v1/{MODEL}/entities"


class Served:
    def __init__(self, base: str, metrics_dir: Path, log: Path) -> None:
        self.base, self.metrics_dir, self.log = base, metrics_dir, log

    def ok_requests(self) -> float:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            return metric(client, "saas_http_requests_total", route=ROUTE, status="200")

    def ok_requests_by_process(self) -> dict[str, float]:
        """What each process wrote to the directory, read back one process at a time."""
        totals: dict[str, float] = {}
        pids = {path.stem.rsplit("_", 1)[-1] for path in self.metrics_dir.glob("*.db")}
        for pid in pids:
            with tempfile.TemporaryDirectory() as alone:
                for path in self.metrics_dir.glob(f"*_{pid}.db"):
                    shutil.copy(path, alone)
                registry = CollectorRegistry()
                MultiProcessCollector(registry, path=alone)
                value = registry.get_sample_value(
                    "saas_http_requests_total",
                    {"route": ROUTE, "method": "POST", "status": "200"},
                )
            totals[pid] = value or 0.0
        return totals

    def lines(self) -> list[str]:
        """The complete lines written so far (the last one may still be on its way)."""
        return self.log.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def served(backend, settings, tmp_path_factory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("observability")
    metrics_dir = workdir / "metrics"
    log = workdir / "stderr.log"
    with (
        log.open("ab") as stderr,
        two_workers_on_redis(
            backend,
            settings,
            stderr,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            SAAS_LOG_JSON="true",
            SAAS_LOG_LEVEL="INFO",
        ) as base,
    ):
        yield Served(base, metrics_dir, log)


def test_metrics_add_up_both_workers(served, make_customer):
    customer = make_customer()
    before = served.ok_requests()
    sent = 0

    def call(_: int) -> int:
        # A new connection per request, so the kernel spreads them over both workers.
        response = httpx.post(
            f"{served.base}{ENTITIES}", headers=customer.headers, json={"text": "Hi."}, timeout=30
        )
        return response.status_code

    def both_served() -> bool:
        return sum(1 for value in served.ok_requests_by_process().values() if value) >= 2

    while True:
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(call, range(16))) == {200}
        sent += 16
        if eventually(both_served, timeout=1) or sent >= 320:
            break
    by_process = served.ok_requests_by_process()
    assert sum(1 for value in by_process.values() if value) == 2, by_process

    # Counted once each answer is sent: wait for the last ones.
    assert eventually(lambda: served.ok_requests() - before == sent), served.ok_requests()
    # Whichever worker answers the scrape, it shows the sum of both.
    assert {served.ok_requests() for _ in range(8)} == {before + sent}
    assert sum(served.ok_requests_by_process().values()) == before + sent
    with httpx.Client(base_url=served.base, timeout=10) as client:
        assert metric(client, "saas_inference_queue_texts") == 0
        assert metric(client, "saas_inference_batch_texts_sum") >= sent


def test_every_line_is_json_and_requests_carry_their_fields(served, make_customer):
    customer = make_customer()
    text = f"Confidential{uuid.uuid4().hex} met Anna in Paris."
    unknown_key = key_format.generate_key()
    ok = httpx.post(f"{served.base}{ENTITIES}", headers=customer.headers, json={"text": text})
    refused = httpx.post(
        f"{served.base}{ENTITIES}", headers={"X-API-Key": unknown_key}, json={"text": text}
    )
    assert (ok.status_code, refused.status_code) == (200, 401)
    ids = {ok.headers["x-request-id"]: ok, refused.headers["x-request-id"]: refused}

    def request_lines() -> dict[str, dict[str, object]]:
        found = {}
        for line in served.lines():
            record = json.loads(line)
            if record.get("event") == "request" and record.get("request_id") in ids:
                found[record["request_id"]] = record
        return found if len(found) == len(ids) else {}

    lines = eventually(request_lines)
    assert lines, "no access line for the requests"
    ok_line, refused_line = (
        lines[ok.headers["x-request-id"]],
        lines[refused.headers["x-request-id"]],
    )
    assert ok_line["account_id"] == customer.account_id
    assert ok_line["status"] == 200 and refused_line["status"] == 401
    assert refused_line["account_id"] is None
    for line in (ok_line, refused_line):
        assert line["route"] == ROUTE
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0

    everything = served.lines()
    records = [json.loads(line) for line in everything]  # each one parses, or this fails
    assert all(isinstance(r, dict) and {"event", "level", "timestamp"} <= r.keys() for r in records)
    loggers = {r.get("logger") for r in records}
    assert {"uvicorn.error", "saas.access", "saas.nlp.lane"} <= loggers
    starts = [r for r in records if r["event"] == "Application startup complete."]
    assert len(starts) == 2  # both workers, in the same format
    log = "\n".join(everything)
    for secret in (customer.key, unknown_key, text, customer.account_name):
        assert secret not in log
