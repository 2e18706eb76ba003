"""The audit records of the bot's own database (``pgs_audit``): every statement on them, and the one
structured log line per audit event (``event: "audit"``) written as each is stored.

The CLI export and its formats (``pgsessions audit``) are in :mod:`bot.audit_export`, above this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, insert, or_, select
from sqlalchemy.engine import Connection

from bot.approval.models import Request
from bot.logs import log_value
from bot.secrets import scrub
from bot.state.schema import audit, requests

log = logging.getLogger("pgsessions.audit")

# Columns of an exported audit record, in this order (the CSV header).
FIELDS = (
    "at",
    "env",
    "host",
    "request_id",
    "action",
    "event",
    "actor",
    "requester",
    "pid",
    "backend_start",
    "db_user",
    "application",
    "query",
    "reason",
    "result",
)


def request_values(req: Request, event: str, actor: str | None, result: str | None = None) -> dict[str, Any]:
    """The audit row of a request event (``<action>:<event>``): what the request acted on, and its
    outcome's detail unless ``result`` says otherwise."""
    s = req.session
    if result is None and req.outcome is not None:
        result = req.outcome.detail
    return {
        "env": req.env, "host": req.host, "request_id": req.id, "event": f"{req.action}:{event}", "actor": actor,
        "pid": s.pid if s else None, "backend_start": s.backend_start if s else None,
        "db_user": s.user if s else None, "application": s.application if s else None,
        "query": s.query if s else None, "reason": req.reason, "result": result,
    }


def split_event(event: str | None) -> tuple[str | None, str]:
    """``terminate:approved`` -> (``terminate``, ``approved``)."""
    if not event:
        return None, ""
    action, sep, what = event.partition(":")
    return (action, what) if sep else (None, event)


def action_matches(event: str | None, action: str) -> bool:
    act, _ = split_event(event)
    return act == action


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """One audit record: every field of :data:`FIELDS` in order, strings scrubbed of known secrets (the
    query text as stored: the export redacts it where its environment asks)."""
    action, what = split_event(row.get("event"))
    out: dict[str, Any] = {
        "at": iso(row.get("at")),
        "env": row.get("env"),
        "host": row.get("host"),
        "request_id": row.get("request_id"),
        "action": action,
        "event": what,
        "actor": row.get("actor"),
        "requester": row.get("requester"),
        "pid": row.get("pid"),
        "backend_start": row.get("backend_start"),
        "db_user": row.get("db_user"),
        "application": row.get("application"),
        "query": row.get("query"),
        "reason": row.get("reason"),
        "result": row.get("result"),
    }
    return {k: scrub(v) if isinstance(v, str) else v for k, v in out.items()}


def log_audit(values: Mapping[str, Any]) -> None:
    """Log one audit event as a structured line (``event: "audit"``); the query text stays out of logs.

    In the text log every value is quoted (:func:`bot.logs.log_value`): an ``application_name`` such as
    ``x result=executed actor=U0ADMIN`` stays one value and cannot forge fields."""
    try:
        rec = fields({k: v for k, v in values.items() if k not in ("query", "requester")})  # not scrubbed to be dropped
        rec.pop("query", None)
        rec.pop("requester", None)
        present = {k: v for k, v in rec.items() if v is not None}
        log.info(
            "audit %s %s",
            values.get("event"),
            " ".join(f"{k}={log_value(v)}" for k, v in present.items() if k not in ("event", "action")),
            extra={"event": "audit", "env": values.get("env"), "host": values.get("host"), "audit": present},
        )
    except Exception:  # an audit log line must never break the audited action
        log.warning("could not log an audit event", exc_info=False)


# --- statements ---------------------------------------------------------------------------------------


def add(conn: Connection, values: dict[str, Any]) -> None:
    """Store one audit event (``at`` defaults to now) and log it."""
    values.setdefault("at", time.time())
    log_audit(values)
    conn.execute(insert(audit).values(**values))


def add_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Store several audit events at one time and log each."""
    if not rows:
        return
    now = time.time()
    stamped = [{"at": now, **r} for r in rows]
    for r in stamped:
        log_audit(r)
    conn.execute(insert(audit), stamped)


def _where(
    env: str | None, since: float | None, actor: str | None, action: str | None,
    envs: Collection[str | None] | None = None, request_id: str | None = None,
) -> list[ColumnElement[bool]]:
    """The conditions of an audit query (the entries and their counts select the same ones)."""
    where: list[ColumnElement[bool]] = []
    if env is not None:
        where.append(audit.c.env == env)
    if envs is not None:
        named = audit.c.env.in_([e for e in envs if e is not None])
        where.append(or_(named, audit.c.env.is_(None)) if None in envs else named)
    if request_id is not None:
        where.append(audit.c.request_id == request_id)
    if since is not None:
        where.append(audit.c.at >= since)
    if actor is not None:
        where.append(audit.c.actor == actor)
    if action is not None:
        where.append(audit.c.event.like(f"{action}:%"))
    return where


def entries(
    conn: Connection,
    env: str | None = None,
    limit: int = 20,
    request_id: str | None = None,
    *,
    since: float | None = None,
    actor: str | None = None,
    action: str | None = None,
    offset: int = 0,
    envs: Collection[str | None] | None = None,
) -> list[dict[str, Any]]:
    """The newest entries first. ``envs``: only entries of these environments (None among them: entries
    of no environment), so that a page of a viewer's audit is full of entries the viewer may see."""
    stmt = (select(audit).where(*_where(env, since, actor, action, envs, request_id))
            .order_by(audit.c.id.desc()).limit(limit).offset(offset))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def counts(
    conn: Connection, env: str | None = None, *, since: float | None = None, actor: str | None = None,
    action: str | None = None,
) -> dict[str | None, int]:
    """How many audit entries match, per environment (so hidden environments can be left out)."""
    stmt = select(audit.c.env, func.count()).where(*_where(env, since, actor, action)).group_by(audit.c.env)
    return {e: int(n) for e, n in conn.execute(stmt)}


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(audit)).scalar_one())


def export_rows(
    conn: Connection,
    *,
    env: str | None = None,
    since: float | None = None,
    user: str | None = None,
    action: str | None = None,
    limit: int | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Audit rows for the export (newest first when ``limit`` is given, else oldest first), each with the
    request's requester joined in. ``since``: seconds back from ``now``; ``user``: the actor or the
    requester."""
    now = time.time() if now is None else now
    stmt = select(audit, requests.c.requester).select_from(
        audit.outerjoin(requests, requests.c.id == audit.c.request_id)
    )
    if env is not None:
        stmt = stmt.where(audit.c.env == env)
    if since is not None:
        stmt = stmt.where(audit.c.at >= now - since)
    if user is not None:
        stmt = stmt.where(or_(audit.c.actor == user, requests.c.requester == user))
    if action is not None:
        stmt = stmt.where(audit.c.event.like(f"{action}:%"))
    if limit is not None:
        stmt = stmt.order_by(audit.c.id.desc()).limit(limit)
    else:
        stmt = stmt.order_by(audit.c.id)
    return [dict(r) for r in conn.execute(stmt).mappings()]
