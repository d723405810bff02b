"""api_keys.rolled_at (the grace status), audit_log.via and actor_name (who, through which door)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot alter a table in place.
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("rolled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("audit_log") as batch_op:
        batch_op.add_column(
            sa.Column("via", sa.String(length=16), nullable=False, server_default="api")
        )
        batch_op.add_column(sa.Column("actor_name", sa.String(length=128), nullable=True))
    # Before this revision only the CLI wrote entries without an acting key.
    op.execute("UPDATE audit_log SET via = 'cli' WHERE actor_key_id IS NULL")
    with op.batch_alter_table("audit_log") as batch_op:  # the default only filled old rows
        batch_op.alter_column("via", server_default=None)
    # `saas plans create --models all` stored a plan whose only model was named "all" (so it
    # could use none); it meant every model, which is NULL.
    op.execute("UPDATE plans SET models = NULL WHERE CAST(models AS TEXT) = '[\"all\"]'")


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch_op:
        batch_op.drop_column("actor_name")
        batch_op.drop_column("via")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("rolled_at")
