"""post-call: jobs, webhook deliveries, call summary/extraction/recording, lead link, business webhook

Revision ID: 0003p
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003p"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.add_column(sa.Column("webhook_url", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("record_calls", sa.Boolean(), nullable=False, server_default=sa.true()))

    with op.batch_alter_table("leads") as batch_op:
        batch_op.add_column(sa.Column("city", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("last_call_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("lead_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("extraction", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("recording_sid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("recording_status", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("recording_url", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("recording_duration_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("recording_transcript", sa.JSON(), nullable=True))
        batch_op.create_foreign_key("fk_calls_lead_id_leads", "leads", ["lead_id"], ["id"], ondelete="SET NULL")
        batch_op.create_index("ix_calls_lead_id", ["lead_id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_call_id", "jobs", ["call_id"], unique=False)
    op.create_index("ix_jobs_claimable", "jobs", ["status", "run_after"], unique=False)

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_deliveries_call_id", "webhook_deliveries", ["call_id"], unique=False)
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("jobs")
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_index("ix_calls_lead_id")
        batch_op.drop_constraint("fk_calls_lead_id_leads", type_="foreignkey")
        for name in ("recording_transcript", "recording_duration_s", "recording_url", "recording_status",
                     "recording_sid", "extraction", "summary", "lead_id"):
            batch_op.drop_column(name)
    with op.batch_alter_table("leads") as batch_op:
        batch_op.drop_column("last_call_at")
        batch_op.drop_column("city")
    with op.batch_alter_table("businesses") as batch_op:
        for name in ("record_calls", "webhook_secret", "webhook_url"):
            batch_op.drop_column(name)
