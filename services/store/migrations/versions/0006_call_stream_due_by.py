"""calls.stream_due_by: when a call's stream must have started, and an index of calls awaiting one

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_AWAITING = "stream_sid IS NULL AND ended_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("stream_due_by", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_calls_awaiting_stream", "calls", ["stream_due_by"],
                    sqlite_where=sa.text(_AWAITING), postgresql_where=sa.text(_AWAITING))


def downgrade() -> None:
    op.drop_index("ix_calls_awaiting_stream", table_name="calls")
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_column("stream_due_by")
