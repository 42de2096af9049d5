"""Label pulls: which annotation of each labeling-tool task was taken into which inbox batch
(flywheel/store/label_pulls.py), so a pull never takes a task twice and a relabel (a newer
`updated_at`) is taken once more, across restarts of flywheel and of the tool.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "label_pull",
        sa.Column("project", sa.String(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.String(), nullable=False),
        sa.Column("batch", sa.String(), nullable=False),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project", "task_id"),
    )


def downgrade() -> None:
    op.drop_table("label_pull")
