from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlmodel import Session

from saas.audit import service
from saas.db import as_utc, get_session

router = APIRouter(prefix="/admin", tags=["admin: audit"])


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor_key_id: int | None
    actor_account_id: int | None
    action: str
    object_type: str
    object_id: str
    changes: dict[str, Any]


@router.get("/audit", response_model=list[AuditPublic])
def audit_log(
    session: Annotated[Session, Depends(get_session)],
    actor_key_id: int | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditPublic]:
    """Every admin write, newest first: who (admin key), what, which object, when, the change."""
    entries = service.search(
        session,
        actor_key_id=actor_key_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        limit=limit,
        offset=offset,
    )
    return [
        AuditPublic(**entry.model_dump(exclude={"at"}), at=as_utc(entry.at)) for entry in entries
    ]
