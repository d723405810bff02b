from datetime import datetime

from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel

from saas.kit.db import utcnow


class DashboardSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random id; only its hash is stored, so a copy of
    this table signs nobody in. The API key that signed in is never kept in the browser."""

    __tablename__ = "dashboard_sessions"

    # SHA-256 of the session id, hex.
    id_hash: str = Field(primary_key=True, max_length=64)
    key_id: int = Field(foreign_key="api_keys.id", index=True)
    # Sent back in every POST form; kept here, never in a cookie.
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    expires_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
