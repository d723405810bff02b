from typing import Annotated

from fastapi import APIRouter, Query

from saas.audit import service
from saas.audit.schemas import AuditPublic
from saas.kit.fields import Id, Offset, Stored
from saas.web.context import ADMIN_PREFIX
from saas.web.deps import DbSession
from saas.web.openapi import ADMIN

router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin: audit"], responses=ADMIN)


@router.get("/audit", response_model=list[AuditPublic])
def audit_log(
    session: DbSession,
    actor_key_id: Id | None = None,
    action: Stored | None = None,
    object_type: Stored | None = None,
    object_id: Stored | None = None,
    via: Stored | None = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditPublic]:
    """Every admin write, newest first: who (admin key or CLI user), what, which object, when,
    through which door (`via`: api or cli), the change."""
    entries = service.search(
        session,
        actor_key_id=actor_key_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        via=via,
        limit=limit,
        offset=offset,
    )
    return [AuditPublic.of(entry) for entry in entries]
