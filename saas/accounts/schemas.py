"""What the admin API, the CLI and the dashboard take and show for plans and accounts. Outputs
are built from these, never from the table models, so no secret can leak through a listing."""

import re
from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, EmailStr, Field, field_validator

from saas.accounts.models import Account, Plan, PlanBase
from saas.auth.key_format import display_url
from saas.kit.db import as_utc
from saas.kit.fields import MAX_INT, Name, Stored, never_null
from saas.ratelimit.windows import MAX_WINDOW_SECONDS, parse_windows

PLAN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


class PlanRules(PlanBase):
    """What every plan must be, made or changed (its name apart: checked once, in PlanCreate,
    since it never changes)."""

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        try:
            windows = parse_windows(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit in the limits notation: {value!r}") from exc
        lengths = [window.seconds for window in windows]
        if len(set(lengths)) != len(lengths):
            # The limiter keeps one counter per window length.
            raise ValueError(f"two windows of the same length in {value!r}")
        for window in windows:
            if not 1 <= window.limit <= MAX_INT:
                raise ValueError(
                    f"{window.limit} requests a {window.name}: from 1 to {MAX_INT:,} a window"
                )
            if window.seconds > MAX_WINDOW_SECONDS:
                days = f"{window.seconds / 86_400:,.0f}"
                most = MAX_WINDOW_SECONDS // 86_400
                raise ValueError(f"a window may be at most {most} days long, not {days} days")
        return value


class PlanCreate(PlanRules):
    # The validator below gives the readable message; the schema states the same rule.
    name: str = Field(max_length=64, json_schema_extra={"pattern": f"^{PLAN_NAME.pattern}$"})

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        # It goes into URLs and CLI arguments as it is.
        if not PLAN_NAME.fullmatch(value):
            raise ValueError(
                "lowercase letters, digits, '-' and '_', starting with a letter or a digit"
            )
        return value


class PlanUpdate(BaseModel):
    """Only the fields sent change (a plan's name never does). Null is no quota, or all models;
    any other field must be a value (the plan's rules refuse null)."""

    model_config = ConfigDict(json_schema_extra=never_null("monthly_quota", "models"))

    rate_limit: str | None = Field(default=None, examples=["10/second;600/minute"])
    monthly_quota: int | None = Field(default=None, ge=0, le=MAX_INT)
    max_text_chars: int | None = Field(default=None, ge=1, le=MAX_INT)
    models: list[str] | None = None
    price_cents_per_month: int | None = Field(default=None, ge=0, le=MAX_INT)
    price_cents_per_1000_requests: int | None = Field(default=None, ge=0, le=MAX_INT)
    max_keys: int | None = Field(default=None, ge=0, le=MAX_INT)
    max_batch_texts: int | None = Field(default=None, ge=1, le=MAX_INT)


class PlanPublic(PlanBase):
    id: int
    created_at: datetime

    @classmethod
    def of(cls, plan: Plan) -> "PlanPublic":
        return cls.model_validate(
            {**plan.model_dump(exclude={"created_at"}), "created_at": as_utc(plan.created_at)}
        )


class AccountCreate(BaseModel):
    name: Name = Field(min_length=1, max_length=128, examples=["acme"])
    email: EmailStr = Field(examples=["ops@acme.example"])
    plan: Stored = Field(examples=["free"])


class AccountUpdate(BaseModel):
    """Only the fields sent change; none of them can be null."""

    model_config = ConfigDict(json_schema_extra=never_null())
    email: EmailStr | None = None
    plan: Stored | None = None
    status: Literal["active", "suspended"] | None = None

    @field_validator("email", "plan", "status", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class AccountPublic(BaseModel):
    id: int
    name: str
    email: str
    plan: str
    status: str
    created_at: datetime
    webhook: str | None = Field(
        description="Where quota alerts go: scheme and host only (the full URL and its signing"
        " secret are shown once, when set).",
        examples=["https://hooks.acme.example/…"],
    )

    @classmethod
    def of(cls, account: Account, plan: Plan) -> "AccountPublic":
        assert account.id is not None
        return cls(
            id=account.id,
            name=account.name,
            email=account.email,
            plan=plan.name,
            status=account.status,
            created_at=as_utc(account.created_at),
            webhook=display_url(account.webhook_url) if account.webhook_url else None,
        )


class AccountPage(BaseModel):
    total: int
    offset: int
    limit: int
    accounts: list[AccountPublic]


class WebhookSet(BaseModel):
    url: AnyHttpUrl | None = Field(
        description="Where quota alerts (80% and 100%) are POSTed; null removes the webhook.",
        examples=["https://hooks.acme.example/quota"],
    )


class WebhookCreated(BaseModel):
    url: str | None
    secret: str | None = Field(
        description="Signs each alert (X-Signature). Shown in this answer only; a new one is"
        " made each time the webhook is set."
    )
