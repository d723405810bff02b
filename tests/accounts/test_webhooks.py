"""Quota-alert webhooks cannot be aimed inside the deployment (SSRF): loopback, private,
link-local (cloud metadata), multicast and unspecified targets, and URLs with a user name or
password, are refused when the webhook is set, through the admin API and the CLI, and again at
each delivery after resolving the name; the delivery connects to the address it checked. Every
refusal is checked against a receiver of the test's own on loopback, which must see no
connection; alerts are delivered only to such receivers, with SAAS_WEBHOOK_ALLOW_PRIVATE on."""

import asyncio
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from sqlmodel import Session

from saas.accounts import webhooks
from saas.accounts.models import Account
from saas.kit import months
from saas.kit.db import make_engine
from saas.usage.alerts import QuotaAlerts
from saas.usage.models import QuotaAlert
from tests.support.customers import Customer
from tests.support.marks import SQLITE_ONLY
from tests.support.polling import eventually_async


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1 that counts every connection made to it."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {"host": self.headers["Host"], "path": self.path, "body": json.loads(body)}
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def refused_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/hook",
        f"http://localhost:{port}/hook",  # a name that resolves to loopback
        f"http://[::ffff:127.0.0.1]:{port}/hook",  # loopback, written as IPv6
        f"http://user:pass@127.0.0.1:{port}/hook",
        "http://user:pass@[::1]:6379/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://[fd00::1]/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[::]/hook",
        "http://224.0.0.1/hook",
        "http://240.0.0.1/hook",
        f"http://{'a' * 64}.example/hook",  # no resolver takes a label that long
        "http://hooks.acme.example:99999/hook",
    ]


def test_addresses_that_alerts_may_not_go_to() -> None:
    def refused(address: str, allow_private: bool = False) -> bool:
        parsed = ipaddress.ip_address(address)
        return webhooks.address_refusal(parsed, allow_private=allow_private) is not None

    never = [
        "169.254.169.254",  # the metadata service of AWS, GCP, Azure...
        "fd00:ec2::254",  # AWS's, over IPv6
        "100.100.100.200",  # Alibaba Cloud's
        "168.63.129.16",  # Azure's platform endpoint
        "fe80::1",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "::",
        "240.0.0.1",
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 of it
    ]
    for address in never:
        assert refused(address) and refused(address, allow_private=True), address
    private = [
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "100.64.0.1",
        "fd00::1",
        "fec0::1",  # site-local
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, its client at 192.0.2.45
    ]
    for address in private:
        assert refused(address) and not refused(address, allow_private=True), address
    public = [
        "93.184.215.14",
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
        "8.8.8.8",
        "64:ff9b::5db8:d70e",  # NAT64 of 93.184.215.14: how IPv6-only clusters reach IPv4
    ]
    for address in public:
        assert not refused(address), address


def test_setting_an_internal_webhook_is_refused_before_any_connection(
    client, make_customer, saas, receiver
) -> None:
    admin = make_customer(scopes=("admin",))
    customer = make_customer()
    path = f"/admin/accounts/{customer.account_id}/webhook"
    for url in refused_urls(receiver.port):
        answer = client.put(path, headers=admin.headers, json={"url": url})
        assert answer.status_code == 422, (url, answer.text)
        reasons = ("user name or password", "cannot be sent there", "host name", "port")
        detail = answer.json()["detail"]
        assert any(reason in detail for reason in reasons), detail
        cli = saas("accounts", "webhook", str(customer.account_id), url, ok=False)
        assert cli.returncode != 0, url
        assert any(reason in cli.stderr for reason in reasons), cli.stderr
    # Public addresses and names that do not resolve yet are accepted (checked at delivery).
    for url in ("https://93.184.215.14/hook", "https://hooks.acme.example/quota"):
        answer = client.put(path, headers=admin.headers, json={"url": url})
        assert answer.status_code == 200, (url, answer.text)
    assert (
        client.get(f"/admin/accounts/{customer.account_id}", headers=admin.headers).json()[
            "webhook"
        ]
        == "https://hooks.acme.example/…"
    )
    assert receiver.connections == 0


def deliver(
    backend: str, customer: Customer, url: str, *, allow_private: bool, attempts: int = 3
) -> Callable[[], QuotaAlert]:
    """An 80% alert for `customer`, its webhook now `url` (as if set before a rule or a name
    changed), delivered by a QuotaAlerts of its own; returns a reader of the alert's row."""
    engine = make_engine(backend)
    month = months.of(time.time())
    with Session(engine) as session:
        account = session.get(Account, customer.account_id)
        assert account is not None
        account.webhook_url, account.webhook_secret = url, "s" * 64
        session.add(account)
        session.add(
            QuotaAlert(
                account_id=customer.account_id,
                month=month,
                threshold=80,
                created_at=datetime.now(UTC),
                url=url,
            )
        )
        session.commit()

    def row() -> QuotaAlert:
        with Session(engine) as session:
            found = session.get(QuotaAlert, (customer.account_id, month, 80))
            assert found is not None
            return found

    async def run() -> None:
        alerts = QuotaAlerts(
            engine, attempts=attempts, first_delay=0.01, timeout=2, allow_private=allow_private
        )
        await alerts.resume()  # sends what is undelivered: this alert

        def settled() -> bool:
            alert = row()
            return alert.delivered_at is not None or alert.attempts >= attempts

        assert await eventually_async(settled, 15, 0.02), (
            "the alert was neither delivered nor refused"
        )
        await alerts.stop()

    # asyncio's own loop, whatever policy a server of an earlier test set (see `resolving`).
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(run())
    return row


@pytest.fixture
def resolving(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """DNS for `*.rebind.test` as the test says: answers[i] for the i-th lookup (the last one
    after that); returns the lookups made. No name server of the test's own can be put in the
    machine's resolver, so the event loop's getaddrinfo (ours and httpx's alike) is wrapped:
    every other name and every address go to the real one."""
    real = asyncio.base_events.BaseEventLoop.getaddrinfo
    lookups: list[str] = []

    def install(*answers: list[str]) -> list[str]:
        async def getaddrinfo(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, str) and host.endswith(".rebind.test"):
                lookups.append(host)
                addresses = answers[min(len(lookups), len(answers)) - 1]
                return [
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                    for address in addresses
                ]
            return await real(self, host, port, *args, **kwargs)

        monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
        return lookups

    return install


@SQLITE_ONLY  # the rules do not depend on the database (alert rows: test_alerts)
def test_a_delivery_to_an_internal_address_is_refused_unsent(
    backend, make_customer, receiver
) -> None:
    for url in (f"http://localhost:{receiver.port}/hook", f"http://127.0.0.1:{receiver.port}/h"):
        row = deliver(backend, make_customer(monthly_quota=10), url, allow_private=False)()
        assert row.delivered_at is None
        assert row.last_error and row.last_error.startswith("refused: "), row.last_error
        assert "loopback or private" in row.last_error
        assert row.attempts == 3  # all used: never tried again, after a restart either
    assert receiver.connections == 0


@SQLITE_ONLY  # the rules do not depend on the database (alert rows: test_alerts)
def test_a_delivery_goes_to_the_address_it_checked(backend, make_customer, receiver) -> None:
    customer = make_customer(monthly_quota=10)
    url = f"http://localhost:{receiver.port}/hook?team=ops"
    row = deliver(backend, customer, url, allow_private=True)()
    assert row.delivered_at is not None and row.attempts == 1, row.last_error
    [request] = receiver.requests
    # The name stays in Host (the connection goes to the address checked: the test of
    # rebinding below shows it).
    assert request["host"] == f"localhost:{receiver.port}"
    assert request["path"] == "/hook?team=ops"
    assert request["body"]["threshold_percent"] == 80


def test_the_target_is_pinned_to_the_checked_addresses() -> None:
    async def resolve(url: str) -> webhooks.Target:
        return await webhooks.resolve(url, allow_private=True)

    target = asyncio.run(resolve("https://localhost:8443/a/b?c=d#frag"))
    assert set(target.urls) <= {"https://127.0.0.1:8443/a/b?c=d", "https://[::1]:8443/a/b?c=d"}
    assert (target.host, target.server_name) == ("localhost:8443", "localhost")
    assert asyncio.run(resolve("http://[::1]/x")).urls == ("http://[::1]:80/x",)
    with pytest.raises(webhooks.TargetRefused):
        asyncio.run(webhooks.resolve("http://localhost/x", allow_private=False))


@SQLITE_ONLY  # the rules do not depend on the database (alert rows: test_alerts)
def test_a_name_that_rebinds_after_its_check_is_not_followed(
    backend, make_customer, receiver, resolving
) -> None:
    """The name passes the check as a public address, then resolves to the receiver on
    loopback (DNS rebinding): the delivery goes to the address it checked (unreachable here)
    and never looks the name up again, so the receiver sees nothing."""
    lookups = resolving(["93.184.215.14"], ["127.0.0.1"])
    url = f"http://hooks.rebind.test:{receiver.port}/hook"
    row = deliver(backend, make_customer(monthly_quota=10), url, allow_private=False, attempts=1)()
    assert row.delivered_at is None and row.last_error in ("ConnectError", "ConnectTimeout")
    assert lookups == ["hooks.rebind.test"]  # one lookup: the one that was checked
    assert receiver.connections == 0


@SQLITE_ONLY  # the rules do not depend on the database (alert rows: test_alerts)
def test_one_refused_address_refuses_the_name(backend, make_customer, receiver, resolving) -> None:
    resolving(["93.184.215.14", "127.0.0.1"])
    url = f"http://hooks.rebind.test:{receiver.port}/hook"
    row = deliver(backend, make_customer(monthly_quota=10), url, allow_private=False)()
    assert row.last_error and "127.0.0.1 is a loopback or private address" in row.last_error
    assert receiver.connections == 0


@SQLITE_ONLY  # the rules do not depend on the database (alert rows: test_alerts)
def test_each_checked_address_is_tried_in_turn(backend, make_customer, receiver, resolving) -> None:
    """A name with two addresses, the first refusing connections: the second gets the alert."""
    resolving(["127.0.0.2", "127.0.0.1"])  # nothing listens on 127.0.0.2 (the receiver: .1)
    url = f"http://hooks.rebind.test:{receiver.port}/hook"
    row = deliver(backend, make_customer(monthly_quota=10), url, allow_private=True)()
    assert row.delivered_at is not None and row.attempts == 1, row.last_error
    assert [r["host"] for r in receiver.requests] == [f"hooks.rebind.test:{receiver.port}"]


@SQLITE_ONLY  # the rules do not depend on the database (alert rows: test_alerts)
def test_https_delivery_checks_the_certificate_against_the_name(
    backend, make_customer, receiver, tmp_path, monkeypatch
) -> None:
    """Connected to the checked address, TLS still names the host (SNI) and verifies the
    certificate against it: a receiver with a certificate for `localhost` is reached as
    https://localhost, one whose certificate names another host is not."""
    authority = trustme.CA()
    authority.cert_pem.write_to_path(tmp_path / "ca.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # httpx trusts it
    for name, delivered in (("localhost", True), ("receiver.example", False)):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(name).configure_cert(context)
        tls = Receiver()
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
        try:
            url = f"https://localhost:{tls.port}/hook"
            row = deliver(backend, make_customer(monthly_quota=10), url, allow_private=True)()
        finally:
            tls.shutdown()
            tls.server_close()
        assert (row.delivered_at is not None) is delivered, row.last_error
        assert len(tls.requests) == int(delivered)
        if delivered:
            assert tls.requests[0]["host"] == f"localhost:{tls.port}"
        else:
            assert row.last_error == "ConnectError"
