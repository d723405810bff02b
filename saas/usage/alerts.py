"""Quota alerts: when an account with a webhook passes 80% and then 100% of its monthly quota,
one signed POST per threshold per month, retried with backoff, every attempt recorded.

Signature (as Stripe does it): `X-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>"
keyed with the account's webhook secret>`, so a receiver can check origin and freshness.

Each attempt resolves the webhook's name, checks every address (saas/accounts/webhooks.py) and
connects to the addresses it checked, in turn; a refused target is recorded and not tried again.
"""

import asyncio
import contextlib
import hashlib
import hmac
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import orjson
import structlog
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from saas.accounts import webhooks
from saas.accounts.models import Account, Plan
from saas.kit import metrics, months
from saas.kit.db import dialect_insert, table_of, utcnow
from saas.usage.ledger import Event
from saas.usage.models import QuotaAlert
from saas.usage.service import month_billable_units, rollup_billable_units

log = structlog.get_logger(__name__)
THRESHOLDS = (80, 100)
ALERTS = table_of(QuotaAlert)


@dataclass(frozen=True, slots=True)
class _Delivery:
    url: str
    secret: str
    body: bytes
    attempts_so_far: int


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


class QuotaAlerts:
    def __init__(
        self,
        engine: Engine,
        *,
        attempts: int = 6,
        first_delay: float = 1.0,
        timeout: float = 5.0,
        allow_private: bool = False,
    ) -> None:
        self.engine = engine
        self.allow_private = allow_private  # SAAS_WEBHOOK_ALLOW_PRIVATE
        self.attempts = attempts
        self.first_delay = first_delay
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    async def after_commit(self, events: list[Event]) -> None:
        accounts = {e.account_id for e in events if e.billable}
        if accounts:
            for alert in await asyncio.to_thread(self._new_alerts, accounts):
                self._spawn(alert)

    def _new_alerts(self, account_ids: Iterable[int]) -> list[tuple[int, str, int]]:
        """Alert rows newly created for thresholds these accounts have now reached."""
        created = []
        with Session(self.engine) as session:
            rows = session.exec(
                select(Account, Plan)
                .join(Plan, col(Plan.id) == col(Account.plan_id))
                .where(
                    col(Account.id).in_(list(account_ids)),
                    col(Account.webhook_url).is_not(None),
                    col(Plan.monthly_quota).is_not(None),
                )
            ).all()
        month = months.of(time.time())
        for account, plan in rows:
            assert account.id is not None and plan.monthly_quota is not None  # the query says so
            used = month_billable_units(self.engine, account.id, month)
            for threshold in THRESHOLDS:
                reached = used >= math.ceil(plan.monthly_quota * threshold / 100)
                if reached and self._claim(account, month, threshold):
                    created.append((account.id, month, threshold))
        return created

    def _claim(self, account: Account, month: str, threshold: int) -> bool:
        """Insert the alert row; the primary key makes exactly one worker win it."""
        insert = dialect_insert(self.engine.dialect.name)
        with self.engine.begin() as connection:
            result = connection.execute(
                insert(ALERTS)
                .values(
                    account_id=account.id,
                    month=month,
                    threshold=threshold,
                    created_at=utcnow(),
                    url=account.webhook_url,
                    attempts=0,
                )
                .on_conflict_do_nothing()
                .returning(ALERTS.c.threshold)
            )
            return result.first() is not None

    def _spawn(self, alert: tuple[int, str, int]) -> None:
        task = asyncio.create_task(self._deliver(*alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self) -> None:
        """At start-up: deliver alerts an earlier process created but did not finish. A database
        that is down must not keep the server from starting (readiness reports it)."""
        try:
            pending = await asyncio.to_thread(self._undelivered)
        except Exception as exc:  # noqa: BLE001
            metrics.DATABASE_ERRORS_ALERTS.inc()
            log.error("quota_alert_resume_failed", error=type(exc).__name__)
            return
        for alert in pending:
            self._spawn((alert.account_id, alert.month, alert.threshold))

    def _undelivered(self) -> list[QuotaAlert]:
        with Session(self.engine) as session:
            statement = select(QuotaAlert).where(
                col(QuotaAlert.delivered_at).is_(None), QuotaAlert.attempts < self.attempts
            )
            return list(session.exec(statement))

    def _prepare(self, account_id: int, month: str, threshold: int) -> "_Delivery | None":
        """What to send for an alert row (blocking: run it in a thread), or None when there is
        nothing to send any more (webhook removed, alert gone)."""
        with Session(self.engine) as session:
            account = session.get(Account, account_id)
            plan = session.get(Plan, account.plan_id) if account else None
            alert = session.get(QuotaAlert, (account_id, month, threshold))
            if account is None or plan is None or alert is None:
                return None
            if not account.webhook_url or not account.webhook_secret:
                return None  # the webhook was removed since the threshold was reached
            body = orjson.dumps(
                {
                    "type": "quota.threshold_reached",
                    "account": account.name,
                    "month": month,
                    "threshold_percent": threshold,
                    "monthly_quota": plan.monthly_quota,
                    "used": rollup_billable_units(session, account_id, month),
                }
            )
            # The account's webhook now, with its secret (it may have changed since).
            return _Delivery(account.webhook_url, account.webhook_secret, body, alert.attempts)

    async def _deliver(self, account_id: int, month: str, threshold: int) -> None:
        delivery = await asyncio.to_thread(self._prepare, account_id, month, threshold)
        if delivery is None:
            return
        delay = self.first_delay
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for attempt in range(delivery.attempts_so_far + 1, self.attempts + 1):
                error = None
                try:
                    target = await webhooks.resolve(delivery.url, allow_private=self.allow_private)
                    response = await self._post(client, target, delivery)
                    if response.status_code >= 300:
                        error = f"HTTP {response.status_code}"
                except webhooks.TargetRefused as exc:
                    # Nothing was sent. Recorded as every attempt used, so that it is not tried
                    # again, after a restart either: a name that pointed inside may again.
                    error = f"refused: {exc}"[:500]
                    await asyncio.to_thread(
                        self._record, account_id, month, threshold, self.attempts, error
                    )
                    log.warning("quota_alert_refused", account_id=account_id, reason=str(exc))
                    return
                except (httpx.HTTPError, OSError) as exc:  # OSError: the name did not resolve
                    error = type(exc).__name__
                except Exception as exc:  # noqa: BLE001 - an attempt fails, the task goes on
                    error = type(exc).__name__
                    log.exception("quota_alert_attempt_failed", account_id=account_id)
                await asyncio.to_thread(self._record, account_id, month, threshold, attempt, error)
                if error is None:
                    return
                log.warning(
                    "quota_alert_failed", account_id=account_id, attempt=attempt, error=error
                )
                await asyncio.sleep(delay)
                delay *= 2

    async def _post(
        self, client: httpx.AsyncClient, target: webhooks.Target, delivery: _Delivery
    ) -> httpx.Response:
        """POST to the checked addresses in turn, until one takes the connection (as a client
        would try each address of a name). The name goes in Host and in TLS."""
        headers = {
            "Host": target.host,
            "Content-Type": "application/json",
            "X-Signature": sign(delivery.secret, int(time.time()), delivery.body),
        }
        extensions = {"sni_hostname": target.server_name}
        *others, last = target.urls
        for url in others:
            with contextlib.suppress(httpx.ConnectError, httpx.ConnectTimeout):
                # A failed connection sent nothing: the next address.
                return await client.post(
                    url, content=delivery.body, headers=headers, extensions=extensions
                )
        return await client.post(
            last, content=delivery.body, headers=headers, extensions=extensions
        )

    def _record(
        self, account_id: int, month: str, threshold: int, attempt: int, error: str | None
    ) -> None:
        values: dict[str, object] = {"attempts": attempt, "last_error": error}
        if error is None:
            values["delivered_at"] = utcnow()
        with self.engine.begin() as connection:
            connection.execute(
                update(ALERTS)
                .where(
                    ALERTS.c.account_id == account_id,
                    ALERTS.c.month == month,
                    ALERTS.c.threshold == threshold,
                )
                .values(**values)
            )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
