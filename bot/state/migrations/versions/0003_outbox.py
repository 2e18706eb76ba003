"""The Slack outbox: alert messages and their edits kept until Slack has taken them.

One row per Web API call the lag watcher wants made (``post``, ``update``, ``thread_reply``), keyed by
the incident it belongs to, delivered in ``id`` order per key by ``bot.slack.outbox``.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pgs_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(80), nullable=False),
        sa.Column("ts", sa.String(32)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(200)),
        sa.Column("delivered_at", sa.Float),
    )
    op.create_index("ix_pgs_outbox_state_id", "pgs_outbox", ["state", "id"])
    op.create_index("ix_pgs_outbox_key", "pgs_outbox", ["key"])


def downgrade() -> None:
    op.drop_index("ix_pgs_outbox_key", table_name="pgs_outbox")
    op.drop_index("ix_pgs_outbox_state_id", table_name="pgs_outbox")
    op.drop_table("pgs_outbox")
