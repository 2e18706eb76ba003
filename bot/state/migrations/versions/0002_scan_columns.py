"""Indexes for the periodic scans, and real columns for the outcome facts they select on.

Before this revision the clear-db scans matched the outcome JSON with ``LIKE '%"blocked": true%'``.
``outcome_status``, ``blocked`` and ``reopened`` are now written by the store with every outcome
(``bot.state.schema.outcome_columns``) and backfilled here from the stored JSON.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_pgs_requests_state_expires_at", "pgs_requests", ["state", "expires_at"]),
    ("ix_pgs_requests_state_updated_at", "pgs_requests", ["state", "updated_at"]),
    ("ix_pgs_requests_action_blocked", "pgs_requests", ["action", "blocked"]),
    ("ix_pgs_incidents_open", "pgs_incidents", ["open"]),
    ("ix_pgs_audit_at", "pgs_audit", ["at"]),
    ("ix_pgs_targets_created_at", "pgs_targets", ["created_at"]),
    ("ix_pgs_approvals_request_id", "pgs_approvals", ["request_id"]),
]

BATCH = 500


def _derived(outcome_json: str | None) -> dict[str, Any]:
    # Frozen copy of bot.state.schema.outcome_columns as of this revision (a migration never imports
    # code that may change after it).
    try:
        outcome = json.loads(outcome_json) if outcome_json else None
    except ValueError:
        outcome = None
    if not isinstance(outcome, dict):
        return {"outcome_status": None, "blocked": None, "reopened": None}
    status = outcome.get("status")
    blocked = outcome.get("blocked") if "blocked" in outcome else None
    return {
        "outcome_status": str(status)[:16] if status is not None else None,
        "blocked": None if blocked is None else bool(blocked),
        "reopened": bool(outcome.get("reopened")),
    }


def upgrade() -> None:
    op.add_column("pgs_requests", sa.Column("outcome_status", sa.String(16)))
    op.add_column("pgs_requests", sa.Column("blocked", sa.Boolean))
    op.add_column("pgs_requests", sa.Column("reopened", sa.Boolean))

    bind = op.get_bind()
    t = sa.table(
        "pgs_requests",
        sa.column("id", sa.String),
        sa.column("outcome", sa.Text),
        sa.column("outcome_status", sa.String),
        sa.column("blocked", sa.Boolean),
        sa.column("reopened", sa.Boolean),
    )
    ids = [r[0] for r in bind.execute(sa.select(t.c.id).where(t.c.outcome.is_not(None)).order_by(t.c.id))]
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        rows = bind.execute(sa.select(t.c.id, t.c.outcome).where(t.c.id.in_(chunk))).all()
        for rid, outcome in rows:
            bind.execute(sa.update(t).where(t.c.id == rid).values(**_derived(outcome)))

    for name, table, cols in INDEXES:
        op.create_index(name, table, cols)


def downgrade() -> None:
    for name, table, _cols in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("pgs_requests") as batch:
        batch.drop_column("reopened")
        batch.drop_column("blocked")
        batch.drop_column("outcome_status")
