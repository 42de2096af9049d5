"""Baseline: the schema flywheel created with SQLModel's create_all before it used Alembic.

A database made then (tables, no alembic_version) is stamped with this revision and upgraded
from here (flywheel/store/migrate.py). Strings are plain VARCHAR and times are stored with a
zone (TIMESTAMP WITH TIME ZONE on PostgreSQL), as SQLModel's AutoString and UTCDateTime made them.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("content_sha256", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("files_versioned", sa.Integer(), nullable=False),
        sa.Column("images_ok", sa.Integer(), nullable=False),
        sa.Column("images_new", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("ignored", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("quarantine_dir", sa.String(), nullable=True),
        sa.Column("format", sa.String(), nullable=True),
        sa.Column("quarantine_reasons", sa.JSON(), nullable=False),
        sa.Column("images_relabelled", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_content_sha256"), ["content_sha256"], unique=False)

    op.create_table(
        "dataset_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("train_images", sa.Integer(), nullable=False),
        sa.Column("val_images", sa.Integer(), nullable=False),
        sa.Column("boxes", sa.Integer(), nullable=False),
        sa.Column("manifest_sha256", sa.String(), nullable=False),
        sa.Column("val_sha256", sa.String(), nullable=False),
        sa.Column("images_new", sa.Integer(), nullable=False),
        sa.Column("images_relabelled", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "dataset_version_item",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("image_sha256", sa.String(), nullable=False),
        sa.Column("label_sha256", sa.String(), nullable=False),
        sa.Column("ext", sa.String(), nullable=False),
        sa.Column("split", sa.String(), nullable=False),
        sa.Column("boxes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "image_sha256"),
    )
    op.create_table(
        "evaluation",
        sa.Column("model_sha256", sa.String(), nullable=False),
        sa.Column("eval_sha256", sa.String(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("map50_95", sa.Float(), nullable=False),
        sa.Column("map50", sa.Float(), nullable=False),
        sa.Column("precision", sa.Float(), nullable=False),
        sa.Column("recall", sa.Float(), nullable=False),
        sa.Column("per_class", sa.JSON(), nullable=False),
        sa.Column("instances", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model_sha256", "eval_sha256"),
    )
    op.create_table(
        "gate_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("eval_sha256", sa.String(), nullable=False),
        sa.Column("candidate_model_id", sa.Integer(), nullable=False),
        sa.Column("production_model_id", sa.Integer(), nullable=True),
        sa.Column("candidate_map", sa.Float(), nullable=False),
        sa.Column("production_map", sa.Float(), nullable=True),
        sa.Column("margin", sa.Float(), nullable=True),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "image_hash",
        sa.Column("image_sha256", sa.String(), nullable=False),
        sa.Column("dhash", sa.String(), nullable=False),
        sa.Column("q0", sa.Integer(), nullable=False),
        sa.Column("q1", sa.Integer(), nullable=False),
        sa.Column("q2", sa.Integer(), nullable=False),
        sa.Column("q3", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("image_sha256"),
    )
    with op.batch_alter_table("image_hash", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_hash_q0"), ["q0"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_hash_q1"), ["q1"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_hash_q2"), ["q2"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_hash_q3"), ["q3"], unique=False)

    op.create_table(
        "model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("parent_model_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_sha256"), ["sha256"], unique=False)
        batch_op.create_index(
            "one_production",
            ["status"],
            unique=True,
            sqlite_where=sa.text("status = 'production'"),
            postgresql_where=sa.text("status = 'production'"),
        )

    op.create_table(
        "production_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("previous_model_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("entry_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "training_epoch",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("box_loss", sa.Float(), nullable=False),
        sa.Column("cls_loss", sa.Float(), nullable=False),
        sa.Column("dfl_loss", sa.Float(), nullable=False),
        sa.Column("precision", sa.Float(), nullable=False),
        sa.Column("recall", sa.Float(), nullable=False),
        sa.Column("map50", sa.Float(), nullable=False),
        sa.Column("map50_95", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "epoch"),
    )
    op.create_table(
        "training_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("start_kind", sa.String(), nullable=False),
        sa.Column("start_model_id", sa.Integer(), nullable=True),
        sa.Column("start_checkpoint", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("warm_tensors_matched", sa.Integer(), nullable=True),
        sa.Column("warm_tensors_total", sa.Integer(), nullable=True),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("challenger_for", sa.Integer(), nullable=True),
        sa.Column("guard", sa.JSON(), nullable=False),
        sa.Column("replay", sa.JSON(), nullable=False),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("resumed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("training_run")
    op.drop_table("training_epoch")
    op.drop_table("production_ledger")
    op.drop_table("model")
    op.drop_table("image_hash")
    op.drop_table("gate_decision")
    op.drop_table("evaluation")
    op.drop_table("dataset_version_item")
    op.drop_table("dataset_version")
    op.drop_table("batch")
