"""What the usage ledger holds for an account, read as billing would."""

from collections.abc import Callable

from sqlmodel import Session, col, func, select

from saas.usage.models import UsageEvent
from tests.support.polling import eventually


def wait_for_events(
    db: Callable[[], Session], account_id: int, expected: int, timeout: float = 5.0
) -> list[UsageEvent]:
    """The account's usage events once `expected` of them are there (or the timeout passed):
    non-billable events are committed without holding their answer back."""

    def events() -> list[UsageEvent]:
        with db() as session:
            statement = select(UsageEvent).where(UsageEvent.account_id == account_id)
            return list(session.exec(statement))

    def enough() -> list[UsageEvent]:
        rows = events()
        return rows if len(rows) >= expected else []

    return eventually(enough, timeout) or events()


def billed(db: Callable[[], Session], account_id: int) -> int:
    """The account's billable events."""
    with db() as session:
        return session.exec(
            select(func.count())
            .select_from(UsageEvent)
            .where(UsageEvent.account_id == account_id, col(UsageEvent.billable).is_(True))
        ).one()
