from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index
from sqlmodel import Field, SQLModel

from saas.kit.db import utcnow


class AuditEntry(SQLModel, table=True):
    """Who did what to which object, when, through which door, and the change."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True),
    )
    actor_key_id: int | None = Field(default=None, index=True)
    actor_account_id: int | None = None
    # The door the write came through: "api" or "cli" (the dashboard will add "dashboard").
    via: str = Field(default="api", max_length=16)
    # The acting key's public prefix, or the operating-system user who ran the CLI.
    actor_name: str | None = Field(default=None, max_length=128)
    action: str = Field(max_length=64)  # e.g. "key.revoke", "account.update"
    object_type: str = Field(max_length=32)
    object_id: str = Field(max_length=64)
    changes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
