"""The fleet: replicas that register with a heartbeat, and one lease per environment.

``pgs_replicas``: one row per running replica (``seen_at`` is its heartbeat). ``pgs_env_leases``: who
checks an environment now, until when, and the lease's ``generation`` (raised at every change of
holder), by which a replica that lost an environment is fenced off its incidents and outbox rows
(``bot.fleet``, ``bot.state.shards``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pgs_replicas",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("owned", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "pgs_env_leases",
        sa.Column("env", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("taken_at", sa.Float, nullable=False),
    )
    op.create_index("ix_pgs_env_leases_holder", "pgs_env_leases", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_pgs_env_leases_holder", table_name="pgs_env_leases")
    op.drop_table("pgs_env_leases")
    op.drop_table("pgs_replicas")
