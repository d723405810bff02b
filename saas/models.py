"""All tables, imported by Alembic's env.py and by the services."""

from saas.accounts.models import Account, AccountStatus, Plan
from saas.audit.models import AuditEntry
from saas.dashboard.models import DashboardSession
from saas.idempotency.models import IdempotencyRecord
from saas.keys.models import ApiKey
from saas.usage.models import QuotaAlert, UsageEvent, UsageRollup

__all__ = [
    "Account",
    "AccountStatus",
    "ApiKey",
    "AuditEntry",
    "DashboardSession",
    "IdempotencyRecord",
    "Plan",
    "QuotaAlert",
    "UsageEvent",
    "UsageRollup",
]
