from datetime import datetime
from typing import Any

from pydantic import BaseModel

from saas.audit.models import AuditEntry
from saas.kit.db import as_utc


class AuditPublic(BaseModel):
    id: int
    at: datetime
    via: str
    actor_key_id: int | None
    actor_account_id: int | None
    actor_name: str | None
    action: str
    object_type: str
    object_id: str
    changes: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> "AuditPublic":
        return cls.model_validate({**entry.model_dump(exclude={"at"}), "at": as_utc(entry.at)})
