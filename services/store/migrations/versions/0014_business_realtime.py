"""businesses.realtime: the business's Realtime choices (model, turn detection, speed, ...)

Revision ID: 0014
Revises: 0013

One JSON column, not typed columns: it holds only the settings the business chose (NULL for
none), so the rest keep following the server's defaults (OPENAI_REALTIME_MODEL among them), and
its shape follows the Realtime session's own (turn detection is server VAD with three numbers
or semantic VAD with one word). services/realtime_settings.py validates it on the way in.
"""
from alembic import op
import sqlalchemy as sa

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.add_column(sa.Column("realtime", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("businesses") as batch_op:
        batch_op.drop_column("realtime")
