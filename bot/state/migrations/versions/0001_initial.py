"""The state schema as release 0.1.0 created it with ``metadata.create_all`` (frozen: never edit).

A state database created by that release (these tables, no version table) is stamped at this revision
at start instead of being created again.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pgs_targets",
        sa.Column("token", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("env", sa.String(64), nullable=False),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(32)),
        sa.Column("created_by", sa.String(32)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_table(
        "pgs_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("env", sa.String(64), nullable=False),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_token", sa.String(32)),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("requester", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("channel", sa.String(32)),
        sa.Column("message_ts", sa.String(32)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("decided_at", sa.Float),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("outcome", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "pgs_approvals",
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("approver", sa.String(32), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.UniqueConstraint("request_id", "approver", name="pgs_approvals_once"),
    )
    op.create_table(
        "pgs_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("env", sa.String(64)),
        sa.Column("host", sa.String(64)),
        sa.Column("request_id", sa.String(32)),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(32)),
        sa.Column("pid", sa.Integer),
        sa.Column("backend_start", sa.String(40)),
        sa.Column("db_user", sa.String(128)),
        sa.Column("application", sa.String(256)),
        sa.Column("query", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("result", sa.Text),
    )
    op.create_table(
        "pgs_incidents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("env", sa.String(64), nullable=False),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("open", sa.Boolean, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
        sa.Column("channel", sa.String(32)),
        sa.Column("message_ts", sa.String(32)),
        sa.Column("last_update_at", sa.Float),
        sa.Column("last_reminder_at", sa.Float),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_table(
        "pgs_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for name in ("pgs_leases", "pgs_incidents", "pgs_audit", "pgs_approvals", "pgs_requests", "pgs_targets"):
        op.drop_table(name)
