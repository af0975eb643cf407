"""businesses.barge_in_mode and backchannel_words: hold the agent when the caller speaks over it,
and go on after a backchannel ("כן", "אהה"), with the business's own words besides the defaults

Revision ID: 0015
Revises: 0014
"""
from alembic import op
import sqlalchemy as sa

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.add_column(sa.Column("barge_in_mode", sa.String(16), nullable=False, server_default="hold"))
        batch_op.add_column(sa.Column("backchannel_words", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.drop_column("backchannel_words")
        batch_op.drop_column("barge_in_mode")
