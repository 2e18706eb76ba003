"""The audit trail outside Slack: ``pgsessions audit`` (JSON lines or CSV on stdout), the filtered
reads behind ``/pgsessions audit <env> --user/--since/--action``, and one structured log line per
audit event (``event: "audit"``) for log pipelines.

Reads the ``pgs_audit`` table of the state store; never writes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import time
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select

from bot.logs import log_value
from bot.postgres.redact import redact
from bot.secrets import scrub
from bot.state.schema import audit, requests
from bot.state.store import StateStore

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


def split_event(event: str | None) -> tuple[str | None, str]:
    """``terminate:approved`` -> (``terminate``, ``approved``)."""
    if not event:
        return None, ""
    action, sep, what = event.partition(":")
    return (action, what) if sep else (None, event)


def action_matches(event: str | None, action: str) -> bool:
    act, _ = split_event(event)
    return act == action


def query_audit(
    store: StateStore,
    *,
    env: str | None = None,
    since: float | None = None,
    user: str | None = None,
    action: str | None = None,
    limit: int | None = None,
    now: float | None = None,
) -> list[dict]:
    """Audit rows (newest first when ``limit`` is given, else oldest first), each with the request's
    requester joined in. ``since``: seconds back from ``now``; ``user``: the actor or the requester."""
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
    with store.engine.connect() as c:
        return [dict(r) for r in c.execute(stmt).mappings()]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(row: dict, redacted: Collection[str] = ()) -> dict[str, Any]:
    """One exported audit record: every field of :data:`FIELDS`, strings scrubbed of known secrets; the
    query text redacted when its environment is in ``redacted`` (``redact_queries``: also texts stored
    before it was turned on)."""
    action, what = split_event(row.get("event"))
    out: dict[str, Any] = {
        "at": _iso(row.get("at")),
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
        "query": redact(row["query"]) if row.get("query") and row.get("env") in redacted else row.get("query"),
        "reason": row.get("reason"),
        "result": row.get("result"),
    }
    return {k: scrub(v) if isinstance(v, str) else v for k, v in out.items()}


def write_jsonl(rows: Iterable[dict], out, redacted: Collection[str] = ()) -> int:
    n = 0
    for row in rows:
        out.write(json.dumps(record(row, redacted), ensure_ascii=False, default=str) + "\n")
        n += 1
    return n


def _csv_cell(value: Any) -> Any:
    # a spreadsheet runs a cell that starts with = + - @ as a formula: database text is data
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(rows: Iterable[dict], out, redacted: Collection[str] = ()) -> int:
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in record(row, redacted).items()})
        n += 1
    return n


# --- one log line per audit event -------------------------------------------------------------------


def log_audit(values: dict) -> None:
    """Log one audit event as a structured line (``event: "audit"``); the query text stays out of logs.

    In the text log every value is quoted (:func:`bot.logs.log_value`): an ``application_name`` such as
    ``x result=executed actor=U0ADMIN`` stays one value and cannot forge fields."""
    try:
        rec = record(values)
        rec.pop("query", None)
        rec.pop("requester", None)
        fields = {k: v for k, v in rec.items() if v is not None}
        log.info(
            "audit %s %s",
            values.get("event"),
            " ".join(f"{k}={log_value(v)}" for k, v in fields.items() if k not in ("event", "action")),
            extra={"event": "audit", "env": values.get("env"), "host": values.get("host"), "audit": fields},
        )
    except Exception:  # an audit log line must never break the audited action
        log.warning("could not log an audit event", exc_info=False)


# --- the CLI ----------------------------------------------------------------------------------------


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "audit",
        help="print the audit trail (requests, decisions, outcomes) as JSON lines or CSV",
        description="Print the audit trail of the state store to standard output: every request, "
        "decision and outcome, with the Slack ids of the people involved, the target's pid and "
        "backend_start, the reason and the result.",
    )
    common(p)
    p.add_argument("--env", help="only this environment")
    p.add_argument("--since", help="only events this recent, e.g. 7d, 12h, 30m (default: everything)")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.cli import load_or_exit
    from bot.durations import DurationError, parse_duration

    config = load_or_exit(args.config)
    if args.env is not None and config.env(args.env) is None:
        known = ", ".join(config.environments)
        print(f"pgsessions audit: unknown environment {args.env!r}: use one of {known}", file=sys.stderr)
        return 2
    since = None
    if args.since:
        try:
            since = parse_duration(args.since)
        except DurationError:
            print(f"pgsessions audit: --since {args.since!r} is not a duration: write it like 7d, 12h, 30m",
                  file=sys.stderr)
            return 2
    try:
        store = StateStore(config.state)
    except Exception as exc:
        print(f"pgsessions audit: cannot open the state store: {type(exc).__name__}: {scrub(str(exc))[:300]}",
              file=sys.stderr)
        return 1
    try:
        rows = query_audit(store, env=args.env, since=since)
    finally:
        store.close()
    buf = io.StringIO()
    redacted = {name for name, e in config.environments.items() if e.redact_queries}
    (write_csv if args.format == "csv" else write_jsonl)(rows, buf, redacted)
    sys.stdout.write(buf.getvalue())
    sys.stdout.flush()
    return 0
