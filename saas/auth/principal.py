"""Who is calling and who changed what: the key's principal, the one key-status rule, and the
actor that audit entries record. Every layer needs these types, so this module imports nothing
of the project (import-linter keeps it so)."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

ADMIN_SCOPE = "admin"
KNOWN_SCOPES = frozenset({ADMIN_SCOPE})


class KeyStatus(StrEnum):
    active = "active"
    grace = "grace"  # rolled: works until its (brought forward) expiry, then stops
    expired = "expired"
    revoked = "revoked"

    @property
    def usable(self) -> bool:
        return self in (KeyStatus.active, KeyStatus.grace)


def key_status(
    *, revoked: bool, expires_at: datetime | None, rolled: bool, now: datetime
) -> KeyStatus:
    """The one rule, checked in this order: revoked, expired, in its grace period after a roll,
    active. `expires_at` and `now` are timezone-aware."""
    if revoked:
        return KeyStatus.revoked
    if expires_at is not None and expires_at <= now:
        return KeyStatus.expired
    if rolled:
        return KeyStatus.grace
    return KeyStatus.active


@dataclass(frozen=True, slots=True)
class Principal:
    """Everything the request path needs to know about a key, cached for `key_cache_ttl`."""

    key_id: int
    key_prefix: str
    key_hash: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    rolled: bool
    account_id: int
    account_name: str
    account_active: bool
    plan_name: str
    rate_limit: str
    monthly_quota: int | None
    max_text_chars: int
    models: tuple[str, ...] | None
    max_batch_texts: int
    # Most texts one batch may carry: max_batch_texts, but never more than the plan's smallest
    # rate-limit window holds (each text takes a place in every window).
    batch_limit: int
    # The account has a webhook and the plan a quota: only then do commits check alert thresholds.
    quota_alerts: bool = False

    def status(self, now: datetime) -> KeyStatus:
        return key_status(
            revoked=self.revoked, expires_at=self.expires_at, rolled=self.rolled, now=now
        )

    def may_use_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made an admin write, as the audit log records it."""

    via: str  # "api", "cli" or "dashboard"
    key_id: int | None = None
    account_id: int | None = None
    name: str | None = None  # the key's public prefix, or the operating-system user of the CLI

    @classmethod
    def of(cls, principal: Principal, *, via: str = "api") -> "Actor":
        return cls(
            via=via,
            key_id=principal.key_id,
            account_id=principal.account_id,
            name=principal.key_prefix,
        )
