"""The usage ledger: one row per customer request (append-only, keyed by request id), hourly
rollups for dashboards and invoices, and the quota alerts sent for each account and month."""

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Date, DateTime, Index, SmallInteger
from sqlmodel import Field, SQLModel


class UsageEvent(SQLModel, table=True):
    """Keyed by request id and time, so that on PostgreSQL the key includes the partition key:
    the table is partitioned by month of `occurred_at` there (migration 0007, usage/partitions.py;
    the partitions are not models). No foreign keys, so the hot insert path checks nothing it
    does not need to, and a month can be detached whole."""

    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_account_time", "account_id", "occurred_at"),)

    # Our own request id (uuid4 hex): the idempotency key of the ledger.
    request_id: str = Field(primary_key=True, max_length=32)
    occurred_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), primary_key=True, nullable=False)
    )
    account_id: int
    key_id: int | None = None
    endpoint: str = Field(max_length=64)
    model: str | None = Field(default=None, max_length=64)
    status: int = Field(sa_column=Column(SmallInteger, nullable=False))
    chars: int = 0
    units: int = 1
    latency_ms: float = 0.0
    billable: bool = False


class UsageRollup(SQLModel, table=True):
    """Counts per account, hour (UTC), endpoint and status, kept in the same transaction as the
    events they count, so raw events = rollups at every commit."""

    __tablename__ = "usage_rollups"

    account_id: int = Field(primary_key=True, foreign_key="accounts.id")
    day: date = Field(sa_column=Column(Date, primary_key=True))
    hour: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    endpoint: str = Field(primary_key=True, max_length=64)
    status: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    requests: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    units: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    billable_units: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    chars: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class QuotaAlert(SQLModel, table=True):
    """One row per account, month and threshold: the unique key makes it one POST per month."""

    __tablename__ = "quota_alerts"

    account_id: int = Field(primary_key=True, foreign_key="accounts.id")
    month: str = Field(primary_key=True, max_length=7)
    threshold: int = Field(primary_key=True)  # percent: 80 or 100
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    url: str = Field(max_length=2048)
    attempts: int = 0
    delivered_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    last_error: str | None = Field(default=None, max_length=500)
