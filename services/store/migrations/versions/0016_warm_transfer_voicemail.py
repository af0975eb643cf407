"""Warm transfers and voicemail: businesses.transfer_mode, leads' call-back request, calls.first_words_at

Revision ID: 0016
Revises: 0015
"""
from alembic import op
import sqlalchemy as sa

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.add_column(sa.Column("transfer_mode", sa.String(8), nullable=False, server_default="warm"))
    with op.batch_alter_table("leads") as batch_op:
        batch_op.add_column(sa.Column("callback_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("callback_call_sid", sa.String(64), nullable=True))
    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("first_words_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_column("first_words_at")
    with op.batch_alter_table("leads") as batch_op:
        batch_op.drop_column("callback_call_sid")
        batch_op.drop_column("callback_requested_at")
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.drop_column("transfer_mode")
