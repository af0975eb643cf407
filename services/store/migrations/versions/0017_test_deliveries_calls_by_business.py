"""webhook_deliveries of test events (job_id and call_id may be empty, business_id says whose);
calls indexed by business and start, for a business's history newest first

Revision ID: 0017
Revises: 0016
"""
from alembic import op
import sqlalchemy as sa

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.alter_column("job_id", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("call_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("business_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_webhook_deliveries_business_id", "businesses", ["business_id"], ["id"],
                                    ondelete="CASCADE")
        batch_op.create_index("ix_webhook_deliveries_business_id", ["business_id"])
    op.create_index("ix_calls_business_started", "calls", ["business_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_business_started", table_name="calls")
    op.execute("DELETE FROM webhook_deliveries WHERE call_id IS NULL OR job_id IS NULL")
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_business_id")
        batch_op.drop_constraint("fk_webhook_deliveries_business_id", type_="foreignkey")
        batch_op.drop_column("business_id")
        batch_op.alter_column("call_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("job_id", existing_type=sa.Integer(), nullable=False)
