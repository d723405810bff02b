"""Quota alerts: one signed POST per threshold per month, retried, recorded."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlmodel import select

from saas.accounts.models import Account
from saas.usage.models import QuotaAlert
from tests.support.apps import dedicated_client
from tests.support.nlp import MODEL
from tests.support.polling import eventually

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Paris is in France."}
SECRET = "s3cret" * 8


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.1 that fails its first call, then accepts."""
    received: list[tuple[dict[str, Any], str, bytes]] = []
    calls = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls["n"] += 1
            if calls["n"] == 1:
                self.send_response(500)
                self.end_headers()
                return
            received.append((json.loads(body), self.headers["X-Signature"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


@pytest.fixture(scope="module")
def alerting_client(settings):
    """An app that may send alerts to this test's receiver, on loopback (SAAS_WEBHOOK_ALLOW_
    PRIVATE; tests/accounts/test_webhooks.py has the refusals)."""
    with dedicated_client(settings, webhook_allow_private=True) as client:
        yield client


def test_80_and_100_percent_alerts_once_each(alerting_client, make_customer, db, receiver):
    client = alerting_client
    url, received = receiver
    customer = make_customer(monthly_quota=5)
    with db() as session:
        account = session.get(Account, customer.account_id)
        account.webhook_url, account.webhook_secret = url, SECRET
        session.add(account)
        session.commit()
    statuses = [
        client.post(ENTITIES, headers=customer.headers, json=BODY).status_code for _ in range(7)
    ]
    assert statuses == [200] * 5 + [402] * 2

    def delivered() -> list[QuotaAlert]:
        with db() as session:
            statement = select(QuotaAlert).where(QuotaAlert.account_id == customer.account_id)
            alerts = list(session.exec(statement))
        return alerts if len(alerts) == 2 and all(a.delivered_at for a in alerts) else []

    # Once both rows say delivered, no POST can follow: one row per threshold and month, and a
    # delivered row is never sent again.
    assert eventually(delivered, timeout=15)
    assert sorted(p["threshold_percent"] for p, _, _ in received) == [80, 100]
    for payload, signature, raw in received:
        assert payload["account"] == customer.account_name and payload["monthly_quota"] == 5
        timestamp, digest = (part.split("=", 1)[1] for part in signature.split(","))
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
        assert hmac.compare_digest(digest, expected.hexdigest())
        assert abs(int(timestamp) - time.time()) < 60
    with db() as session:
        alerts = session.exec(
            select(QuotaAlert).where(QuotaAlert.account_id == customer.account_id)
        ).all()
    assert sorted(a.threshold for a in alerts) == [80, 100]
    assert all(a.delivered_at is not None for a in alerts)
    assert sorted(a.attempts for a in alerts) == [1, 2]  # the first POST failed and was retried
