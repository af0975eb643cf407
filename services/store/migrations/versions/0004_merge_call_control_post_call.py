"""join the call-control and post-call branches

Revision ID: 0004
Revises: 0003, 0003p
"""
revision = "0004"
down_revision = ("0003", "0003p")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
