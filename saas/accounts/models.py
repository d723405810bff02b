from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

from saas.kit.db import utcnow
from saas.kit.fields import MAX_INT


def _timestamp() -> "Column[datetime]":
    return Column(DateTime(timezone=True), nullable=False, default=utcnow)


class PlanBase(SQLModel):
    name: str = Field(max_length=64)  # its format: PlanCreate
    # One or more windows in the `limits` notation, e.g. "60/minute" or "5/second;100/minute".
    rate_limit: str = Field(default="60/minute", max_length=200)
    monthly_quota: int | None = Field(default=None, ge=0, le=MAX_INT)
    max_text_chars: int = Field(default=100_000, ge=1, le=MAX_INT)
    # Allowed public model names (each one the service runs); None means every model.
    models: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    price_cents_per_month: int = Field(default=0, ge=0, le=MAX_INT)
    price_cents_per_1000_requests: int = Field(default=0, ge=0, le=MAX_INT)
    # Keys a customer may hold at once when creating them through /v1/keys.
    max_keys: int = Field(default=10, ge=0, le=MAX_INT)
    # Texts one batch request may carry (each is billed and rate limited as one request).
    max_batch_texts: int = Field(default=32, ge=1, le=MAX_INT)


class Plan(PlanBase, table=True):
    __tablename__ = "plans"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class AccountStatus(StrEnum):
    active = "active"
    suspended = "suspended"


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True, index=True)
    email: str = Field(max_length=320)
    plan_id: int = Field(foreign_key="plans.id", index=True)
    status: str = Field(default=AccountStatus.active.value, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    # Quota alerts (80% and 100% of the monthly quota) are POSTed here, signed with the secret.
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_secret: str | None = Field(default=None, max_length=64)
