"""Admin routes (the `admin` scope is checked by the auth middleware for all of /admin)."""

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlmodel import Session

from saas.accounts import service
from saas.accounts.models import PlanBase
from saas.db import get_session

router = APIRouter(prefix="/admin", tags=["admin"])
DbSession = Annotated[Session, Depends(get_session)]


class PlanPublic(PlanBase):
    id: int


class AccountPublic(BaseModel):
    id: int
    name: str
    email: str
    plan_id: int
    status: str


@router.get("/plans", response_model=list[PlanPublic])
def list_plans(session: DbSession) -> list[PlanPublic]:
    return [
        PlanPublic.model_validate(plan, from_attributes=True)
        for plan in service.list_plans(session)
    ]


@router.get("/accounts", response_model=list[AccountPublic])
def list_accounts(session: DbSession) -> list[AccountPublic]:
    return [
        AccountPublic.model_validate(account, from_attributes=True)
        for account in service.list_accounts(session)
    ]
