from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, Field

from saas.auth.principal import KNOWN_SCOPES, KeyStatus
from saas.keys.models import ApiKey
from saas.kit.db import as_utc, utcnow
from saas.kit.fields import IsoDateTime, Name


class KeyCreate(BaseModel):
    name: Name = Field(default="", max_length=128, examples=["production"])
    scopes: list[str] = Field(
        default_factory=list,
        examples=[[]],
        # The service names the unknown ones in its 422; the schema lists the known ones.
        json_schema_extra={"items": {"type": "string", "enum": [*sorted(KNOWN_SCOPES)]}},
    )
    expires_at: IsoDateTime | None = Field(default=None, description="UTC if no offset is given.")


class CustomerKeyCreate(BaseModel):
    name: Name = Field(default="", max_length=128, examples=["staging"])
    expires_at: IsoDateTime | None = Field(default=None, description="UTC if no offset is given.")


class KeyPublic(BaseModel):
    """Everything about a key except the secret and its hash."""

    id: int
    account_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    rolled_at: datetime | None
    status: KeyStatus = Field(
        description="active; grace (rolled, works until expires_at); expired; revoked"
    )

    @classmethod
    def listing(cls, keys: Iterable[ApiKey]) -> list["KeyPublic"]:
        """Every key's public view, their status read at one moment."""
        now = utcnow()
        return [cls.of(key, now) for key in keys]

    @classmethod
    def of(cls, key: ApiKey, now: datetime) -> "KeyPublic":
        assert key.id is not None
        return cls(
            id=key.id,
            account_id=key.account_id,
            name=key.name,
            prefix=key.prefix,
            scopes=sorted(key.scope_set),
            created_at=as_utc(key.created_at),
            last_used_at=as_utc(key.last_used_at),
            expires_at=as_utc(key.expires_at),
            revoked_at=as_utc(key.revoked_at),
            rolled_at=as_utc(key.rolled_at),
            status=key.status(now),
        )


class KeyCreated(KeyPublic):
    key: str = Field(description="The secret key. Shown this once; only its hash is stored.")

    @classmethod
    def of_new(cls, key: ApiKey, plaintext: str, now: datetime) -> "KeyCreated":
        return cls(**KeyPublic.of(key, now).model_dump(), key=plaintext)


class KeyRoll(BaseModel):
    grace_seconds: int = Field(
        default=3600, ge=0, le=30 * 86400, description="How long the old key keeps working."
    )
