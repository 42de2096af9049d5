"""Delta manifests: a new version stores only the items it adds or re-labels.

`dataset_version.manifest_form` says how a version's items and hashes are kept: "full" (every
row of its manifest, sorted-list hashes: every version made before this revision, hence the
server default) or "delta" (only its changes over the parent, additive hashes; see
flywheel/core/manifests.py). `val_boxes` (filled in here for the versions there are) keeps the
boxes per split on the version row, which a delta's own items cannot tell. The index on
`dataset_version_item.image_sha256` lets an ingest look up the parent's items for just the
images of its batch.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("manifest_form", sa.String(), nullable=False, server_default="full"))
        batch_op.add_column(sa.Column("val_boxes", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE dataset_version SET val_boxes = (SELECT COALESCE(SUM(i.boxes), 0) FROM dataset_version_item i "
        "WHERE i.version_id = dataset_version.id AND i.split = 'val')"
    )
    with op.batch_alter_table("dataset_version_item", schema=None) as batch_op:
        batch_op.create_index("ix_dataset_version_item_image_sha256", ["image_sha256"], unique=False)


def downgrade() -> None:
    # Delta versions would lose the items they inherit: refuse rather than corrupt them.
    bind = op.get_bind()
    deltas = bind.execute(sa.text("SELECT COUNT(*) FROM dataset_version WHERE manifest_form = 'delta'")).scalar()
    if deltas:
        raise RuntimeError(f"{deltas} dataset versions are stored as deltas; restore a backup to go back")
    with op.batch_alter_table("dataset_version_item", schema=None) as batch_op:
        batch_op.drop_index("ix_dataset_version_item_image_sha256")
    with op.batch_alter_table("dataset_version", schema=None) as batch_op:
        batch_op.drop_column("val_boxes")
        batch_op.drop_column("manifest_form")
