"""The state store's tables as the newest migration leaves them (see ``bot/state/migrations/``).

This module describes the schema for the queries; it never creates it. ``StateStore`` runs the Alembic
migrations at start, and a change here always comes with a new revision in
``bot/state/migrations/versions/`` (docs/ARCHITECTURE.md, "State schema and migrations").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

targets = Table(
    "pgs_targets",
    metadata,
    Column("token", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),  # session | bulk | database
    Column("env", String(64), nullable=False),
    Column("host", String(64), nullable=False),
    Column("channel", String(32)),
    Column("created_by", String(32)),
    Column("created_at", Float, nullable=False),
    Column("payload", Text, nullable=False),
    Index("ix_pgs_targets_created_at", "created_at"),
)

requests = Table(
    "pgs_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("env", String(64), nullable=False),
    Column("host", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target_token", String(32)),
    Column("target", Text, nullable=False),
    Column("requester", String(32), nullable=False),
    Column("reason", Text),
    Column("channel", String(32)),
    Column("message_ts", String(32)),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("decided_at", Float),
    Column("decided_by", String(64)),
    Column("outcome", Text),
    Column("updated_at", Float, nullable=False),
    # Facts of the outcome JSON that scans select on, written by the store with the outcome (0002):
    # outcome["status"]; outcome["blocked"] (NULL when the outcome has no such key: the request never
    # closed a database, or an interrupted one not repaired yet); whether outcome["reopened"] is set.
    Column("outcome_status", String(16)),
    Column("blocked", Boolean),
    Column("reopened", Boolean),
    Index("ix_pgs_requests_state_expires_at", "state", "expires_at"),
    Index("ix_pgs_requests_state_updated_at", "state", "updated_at"),
    Index("ix_pgs_requests_action_blocked", "action", "blocked"),
)

approvals = Table(
    "pgs_approvals",
    metadata,
    Column("request_id", String(32), nullable=False),
    Column("approver", String(32), nullable=False),
    Column("at", Float, nullable=False),
    UniqueConstraint("request_id", "approver", name="pgs_approvals_once"),
    Index("ix_pgs_approvals_request_id", "request_id"),
)

audit = Table(
    "pgs_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("env", String(64)),
    Column("host", String(64)),
    Column("request_id", String(32)),
    Column("event", String(32), nullable=False),
    Column("actor", String(32)),
    Column("pid", Integer),
    Column("backend_start", String(40)),
    Column("db_user", String(128)),
    Column("application", String(256)),
    Column("query", Text),
    Column("reason", Text),
    Column("result", Text),
    Index("ix_pgs_audit_at", "at"),
)

incidents = Table(
    "pgs_incidents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("env", String(64), nullable=False),
    Column("host", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # lag | unreachable
    Column("open", Boolean, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("channel", String(32)),
    Column("message_ts", String(32)),
    Column("last_update_at", Float),
    Column("last_reminder_at", Float),
    Column("payload", Text, nullable=False),
    Index("ix_pgs_incidents_open", "open"),
)

leases = Table(
    "pgs_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Slack Web API calls of the lag watcher kept until Slack took them (0003; bot/slack/outbox.py).
# state: pending | delivered | superseded (a newer edit of the same message replaced it) | failed.
outbox = Table(
    "pgs_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False),  # the incident id: one message and its thread
    Column("op", String(16), nullable=False),  # post | update | thread_reply
    Column("channel", String(80), nullable=False),
    Column("ts", String(32)),  # post: the ts Slack gave it; update/thread_reply: the target (NULL: the key's post)
    Column("payload", Text, nullable=False),  # the message: text, blocks
    Column("state", String(12), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_at", Float, nullable=False, server_default="0"),
    Column("last_error", String(200)),
    Column("delivered_at", Float),
    Index("ix_pgs_outbox_state_id", "state", "id"),
    Index("ix_pgs_outbox_key", "key"),
)


# The fleet (0004; bot/fleet/, bot/state/shards.py): the replicas and their heartbeat, and which replica
# checks each environment. ``generation`` goes up at every change of an environment's holder: writes of
# incidents and outbox claims check it, so a replica that lost an environment never writes for it.
replicas = Table(
    "pgs_replicas",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("label", String(128), nullable=False),  # host:pid, what `check` and the Home tab show
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),  # the heartbeat
    Column("owned", Integer, nullable=False, server_default="0"),  # environments it held at its last beat
)

env_leases = Table(
    "pgs_env_leases",
    metadata,
    Column("env", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),  # pgs_replicas.id
    Column("generation", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("taken_at", Float, nullable=False),
    Index("ix_pgs_env_leases_holder", "holder"),
)


def outcome_columns(outcome: dict[str, Any] | None) -> dict[str, Any]:
    """The real columns derived from a request's outcome; written wherever the outcome is written."""
    if not isinstance(outcome, dict):
        return {"outcome_status": None, "blocked": None, "reopened": None}
    status = outcome.get("status")
    blocked = outcome.get("blocked") if "blocked" in outcome else None
    return {
        "outcome_status": str(status)[:16] if status is not None else None,
        "blocked": None if blocked is None else bool(blocked),
        "reopened": bool(outcome.get("reopened")),
    }
