"""One row per account and Idempotency-Key: first a claim (no status yet, a short lease), then
the 2xx answer, written in the same transaction as the request's usage event (so an answer
that was billed is always there to replay), kept until `expires_at`."""

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, LargeBinary, SmallInteger
from sqlmodel import Field, SQLModel


class IdempotencyRecord(SQLModel, table=True):
    """A plain table (not partitioned like the ledger): rows live 24 h and `saas maintain`
    deletes the expired ones. No foreign key, like the ledger, so the request path checks
    nothing it does not need to."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    account_id: int = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    # sha256 of method, path, query and body: the same key with another request is refused.
    fingerprint: str = Field(max_length=64)
    request_id: str = Field(max_length=32)  # the request that holds the claim
    status: int | None = Field(default=None, sa_column=Column(SmallInteger, nullable=True))
    content_type: str | None = Field(default=None, max_length=255)
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # A claim's lease while the request runs; 24 h after the answer once it is stored.
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
