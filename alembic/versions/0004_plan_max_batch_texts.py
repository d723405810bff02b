"""plans.max_batch_texts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot alter a table in place; existing plans get the default.
    with op.batch_alter_table("plans") as batch_op:
        batch_op.add_column(
            sa.Column("max_batch_texts", sa.Integer(), nullable=False, server_default="32")
        )


def downgrade() -> None:
    with op.batch_alter_table("plans") as batch_op:
        batch_op.drop_column("max_batch_texts")
