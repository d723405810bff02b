from datetime import datetime

from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel

from saas.auth.principal import KeyStatus, key_status
from saas.kit.db import as_utc, utcnow


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="accounts.id", index=True)
    name: str = Field(default="", max_length=128)
    # Shown in lists so people can tell keys apart; never enough to use the key.
    prefix: str = Field(max_length=32)
    # SHA-256 of the whole key, hex. The key itself is never stored.
    key_hash: str = Field(max_length=64, unique=True, index=True)
    # Space-separated, e.g. "admin". Customer keys have none.
    scopes: str = Field(default="", max_length=256)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # Set when the key was rolled: it keeps working until expires_at (the grace period).
    rolled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    last_used_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())

    def status(self, now: datetime) -> KeyStatus:
        return key_status(
            revoked=self.revoked_at is not None,
            expires_at=as_utc(self.expires_at),
            rolled=self.rolled_at is not None,
            now=now,
        )
