"""usage.parent_agent_id and usage.extra (JSON: all group ids, abort flag, …)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(
            sa.Column("parent_agent_id", sa.String(length=200), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("extra", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("extra")
        batch.drop_column("parent_agent_id")
