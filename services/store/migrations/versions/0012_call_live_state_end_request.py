"""calls.live_state (what a live call is doing, for the console) and calls.end_requested_at (End call)

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("live_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("end_requested_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_column("end_requested_at")
        batch_op.drop_column("live_state")
