"""call control: appointments, voicemail message, slot length, transfer and AMD outcome on calls

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.add_column(sa.Column("voicemail_message", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("appointment_minutes", sa.Integer(), nullable=False, server_default="30"))

    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("transfer_to", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("transfer_status", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("answered_by", sa.String(length=32), nullable=True))

    op.create_table(
        "appointments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("business_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["business_id"], ["businesses.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("business_id", "starts_at", name="uq_appointments_business_start"),
    )
    op.create_index("ix_appointments_business_id", "appointments", ["business_id"], unique=False)
    op.create_index("ix_appointments_phone", "appointments", ["phone"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_appointments_phone", table_name="appointments")
    op.drop_index("ix_appointments_business_id", table_name="appointments")
    op.drop_table("appointments")
    with op.batch_alter_table("calls") as batch_op:
        for name in ("answered_by", "transfer_status", "transfer_to"):
            batch_op.drop_column(name)
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.drop_column("appointment_minutes")
        batch_op.drop_column("voicemail_message")
