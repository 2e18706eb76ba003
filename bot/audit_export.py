"""The audit trail outside Slack: ``pgsessions audit`` (JSON lines or CSV on stdout), the filtered
reads behind ``/pgsessions audit <env> --user/--since/--action``, and one structured log line per
audit event (``event: "audit"``) for log pipelines.

Reads the ``pgs_audit`` table through the state store (every statement is in :mod:`bot.state.audit`);
never writes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TextIO

from bot.cli_common import Subparsers, load_or_exit
from bot.durations import DurationError, parse_duration
from bot.postgres.redact import redact
from bot.secrets import scrub
from bot.state.audit import (  # noqa: F401 - re-exported: the audit record and its log line
    FIELDS,
    action_matches,
    fields,
    log_audit,
    split_event,
)
from bot.state.store import StateStore


def query_audit(
    store: StateStore,
    *,
    env: str | None = None,
    since: float | None = None,
    user: str | None = None,
    action: str | None = None,
    limit: int | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Audit rows (newest first when ``limit`` is given, else oldest first), each with the request's
    requester joined in. ``since``: seconds back from ``now``; ``user``: the actor or the requester."""
    return store.audit_export(env=env, since=since, user=user, action=action, limit=limit, now=now)


def record(row: Mapping[str, Any], redacted: Collection[str] = ()) -> dict[str, Any]:
    """One exported audit record: every field of :data:`FIELDS`, strings scrubbed of known secrets; the
    query text redacted when its environment is in ``redacted`` (``redact_queries``: also texts stored
    before it was turned on)."""
    out = fields(row)
    if out["query"] and row.get("env") in redacted:
        out["query"] = scrub(redact(out["query"]))
    return out


def write_jsonl(rows: Iterable[dict[str, Any]], out: TextIO, redacted: Collection[str] = ()) -> int:
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


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO, redacted: Collection[str] = ()) -> int:
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in record(row, redacted).items()})
        n += 1
    return n


# --- the CLI ----------------------------------------------------------------------------------------


def add_parser(sub: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
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


def run(args: argparse.Namespace) -> int:
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
