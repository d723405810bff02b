"""All tables, imported by Alembic's env.py and by the services."""

from saas.accounts.models import Account, AccountStatus, Plan
from saas.keys.models import ApiKey

__all__ = ["Account", "AccountStatus", "ApiKey", "Plan"]
