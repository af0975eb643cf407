"""calls.last_seen_at (the journal's heartbeat of a live call), turns.write_key (its idempotent inserts)

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_calls_last_seen_at", "calls", ["last_seen_at"], unique=False)
    with op.batch_alter_table("turns") as batch_op:
        batch_op.add_column(sa.Column("write_key", sa.String(length=32), nullable=True))
    # An index, not a table constraint: SQLite adds it without copying the table; ON CONFLICT uses either.
    op.create_index("ix_turns_write_key", "turns", ["write_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_turns_write_key", table_name="turns")
    with op.batch_alter_table("turns") as batch_op:
        batch_op.drop_column("write_key")
    op.drop_index("ix_calls_last_seen_at", table_name="calls")
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_column("last_seen_at")
