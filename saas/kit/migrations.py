"""Run Alembic from code (CLI, `make run`, tests) with the project's alembic/ folder."""

import re
from pathlib import Path

from alembic.config import Config

from alembic import command

# The checkout (or the image's /app): alembic/ and alembic.ini sit beside saas/.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The partitions of usage_events on PostgreSQL (saas/usage/partitions.py): made by migration 0007
# and `saas maintain`, not by the models, which describe the partitioned table itself.
MONTH_PARTITION = re.compile(r"usage_events_(\d{4})_(\d{2})")
DEFAULT_PARTITION = "usage_events_default"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """What autogenerate compares (env.py and tests/test_migrations.py): every table but the
    ledger's month partitions, which no model describes (they come and go by the calendar);
    their indexes are left out with them."""
    partition = name == DEFAULT_PARTITION or (name is not None and MONTH_PARTITION.fullmatch(name))
    return not (type_ == "table" and partition)


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
