"""Cancel and terminate one backend, never the wrong one, and only while it does what was approved.

The target is named by ``(pid, backend_start)`` and bound to what the approver saw (``query_start``,
``xact_start``, ``state_change``, see signal_cancel.sql / signal_terminate.sql): the re-check and the
signal are one statement, so a pid that now belongs to another backend (pids are reused), a session
that has ended, or one that has moved on to another query or transaction is never signalled. Terminate uses
``pg_terminate_backend(pid, timeout)`` and reports whether the backend is really gone (PostgreSQL 13 has
only ``pg_terminate_backend(pid)``: the bot then polls for the exit within the same deadline); cancel
reports whether the query actually stopped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import errors as pgerrors

from bot.durations import format_duration
from bot.postgres.models import AUTOVACUUM_WORKER, QUERY_RUNNING_STATES, runs_query
from bot.postgres.pools import Databases, DatabaseUnavailable
from bot.postgres.sql import Conn, features, query
from bot.session_rules import OWN_STATE_REASON, SignalGuard, protection

TERMINATE_WAIT_MS = 3000
CANCEL_WAIT_S = 2.0


@dataclass(frozen=True)
class SignalResult:
    status: str  # done | gone | moved | not_done | refused (by PostgreSQL or by protect) | unavailable
    detail: str
    signalled: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "done"


def _as_datetime(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _maybe_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    return _as_datetime(value)


def binding_params(listed: Mapping[str, Any] | None, now: float | None = None) -> dict[str, Any]:
    """The listed facts a signal is bound to (missing ones are NULL, and NULL never matches).

    ``listed_secs_ago``: seconds since the listing (``listed_at``, epoch seconds, as the bot measured
    it), for a snapshot without the exact timestamps (a request made by an earlier release): the
    statements then take what began at or before that moment and still goes on. ``running_states``:
    the states in which a query runs (:data:`bot.postgres.models.QUERY_RUNNING_STATES`, the list that
    also decides where Cancel is offered)."""
    listed = listed or {}
    listed_at = listed.get("listed_at")
    now = time.time() if now is None else now
    return {
        "listed_state": listed.get("state"),
        "query_start": _maybe_datetime(listed.get("query_start")),
        "xact_start": _maybe_datetime(listed.get("xact_start")),
        "state_change": _maybe_datetime(listed.get("state_change")),
        "listed_secs_ago": max(0.0, now - float(listed_at)) if listed_at else None,
        "running_states": list(QUERY_RUNNING_STATES),
    }


def binding_key(action: str, listed_state: str | None) -> str:
    """The listed timestamp a signal of ``action`` on a session listed in ``listed_state`` is bound to.

    ``active``: the query (query_start). A Terminate of a session idle in transaction: the transaction
    (xact_start). Anything else, a fastpath function call included (it leaves query_start at the
    previous query's): the same state, unchanged since (state_change)."""
    if listed_state == "active":
        return "query_start"
    if action == "terminate" and listed_state and listed_state.startswith("idle in transaction"):
        return "xact_start"
    return "state_change"


def unbound_refusal(action: str, bound: Mapping[str, Any]) -> str | None:
    """Why nothing can be checked: the snapshot has neither the exact timestamp nor the listing time.

    Plain text (an outcome detail). Never "moved on": the bot does not know that it did."""
    if bound[binding_key(action, bound["listed_state"])] is not None or bound["listed_secs_ago"] is not None:
        return None
    return (
        "nothing was signalled: this request does not record when the session was listed nor what it was "
        "doing then (it was made by an earlier release), so the bot cannot check that it is still the same "
        "query or transaction. Make a new request from a fresh listing if it still needs stopping"
    )


def _again(env: str, host: str) -> str:
    return f"/pgsessions {env}" + ("" if host == "primary" else f" {host}")


def _ago(secs: float | None) -> str:
    return f"{format_duration(secs)} ago" if secs is not None else "at an unknown time"


def moved_on(pid: int, action: str, listed_state: str | None, now: Mapping[str, Any], again: str) -> str:
    """Plain words for 'the session is not doing what was approved any more; nothing was signalled'.

    An outcome detail is plain text (it is also the audit result and the requester's DM), escaped
    where it is drawn: no mrkdwn markers in it."""
    state = now.get("state") or "unknown"
    if state == "active":
        doing = f"active, running a query that started {_ago(now.get('query_secs'))}"
    elif runs_query(state):  # a fastpath function call: query_start is the previous query's
        doing = f"in a {state} that started {_ago(now.get('state_secs'))}"
    elif str(state).startswith("idle in transaction"):
        doing = f"{state} in a transaction that started {_ago(now.get('xact_secs'))}"
    elif state == "idle":
        doing = f"idle since {_ago(now.get('state_secs'))}"
    else:
        doing = f"{state} since {_ago(now.get('state_secs'))}"
    if action == "cancel":
        listed = "the query that was listed"
    elif listed_state and listed_state.startswith("idle in transaction"):
        listed = "the transaction that was listed"
    elif listed_state == "idle":
        listed = "the idle session that was listed (it has been used since)"
    elif runs_query(listed_state):
        listed = "the query that was listed"
    else:
        listed = f"the session as listed ({listed_state or 'unknown state'})"
    return (
        f"nothing was signalled: pid {pid} moved on from {listed}; it is now {doing}. "
        f"Run {again} for a fresh listing and make a new request if it still needs stopping"
    )


def protected_detail(pid: int, guard: SignalGuard, kind: str, facts: Any) -> str:
    """Plain words for 'the statement found the session protected; nothing was signalled'."""
    user, application, database, is_superuser = facts
    why = OWN_STATE_REASON if kind == "own_state" else protection(
        guard.protect, user=user, application=application, database=database, is_superuser=bool(is_superuser)
    )
    return f"nothing was signalled: pid {pid} is {why or 'protected (protect)'}"


def _why_gone(conn: Conn, pid: int, backend_start: datetime) -> str:
    row = conn.execute(query("backend_by_pid", conn), {"pid": pid}).fetchone()
    if row is None:
        return "session already ended"
    _, now_start, backend_type, *_ = row
    if now_start != backend_start:
        return (
            f"session already ended (pid {pid} now belongs to another "
            f"{backend_type or 'backend'} that started at {now_start:%H:%M:%S.%f}; not touched)"
        )
    if backend_type == AUTOVACUUM_WORKER:
        return (f"nothing was signalled: pid {pid} is an autovacuum worker, which the bot only cancels, and never "
                "in a run to prevent wraparound")
    return f"session already ended (pid {pid} is no longer a client backend the bot may signal)"


def signal(
    dbs: Databases,
    env: str,
    host: str,
    action: str,
    pid: int,
    backend_start: str | datetime,
    listed: Mapping[str, Any] | None = None,
    guard: SignalGuard | None = None,
) -> SignalResult:
    """Cancel or terminate ``pid`` if and only if it is still the backend that started at ``backend_start``
    and still doing what ``listed`` (the approved snapshot: state, query_start, xact_start, state_change)
    says, and ``protect`` (``guard``, the environment's by default) does not name it now. Without
    ``listed`` nothing matches and nothing is signalled (fail closed)."""
    started = _as_datetime(backend_start)
    if action not in ("cancel", "terminate"):
        raise ValueError(action)
    bound = binding_params(listed)
    bound["bound_by"] = binding_key(action, bound["listed_state"])
    unbound = unbound_refusal(action, bound)
    if unbound:
        return SignalResult("refused", unbound)
    guard = guard or SignalGuard(dbs.config.protect_for(env))
    guarded = guard.params()
    try:
        with dbs.connection(env, host) as conn:
            deadline = time.monotonic() + TERMINATE_WAIT_MS / 1000
            # the seconds since the listing, measured just before the statement (not before waiting for a
            # connection): the statement turns them into a moment on the server's clock
            bound = binding_params(listed)
            bound["bound_by"] = binding_key(action, bound["listed_state"])
            try:
                if action == "cancel":
                    row = conn.execute(
                        query("signal_cancel", conn),
                        {"pid": pid, "backend_start": started, **bound, **guarded},
                    ).fetchone()
                else:
                    row = conn.execute(
                        query("signal_terminate", conn),
                        {"pid": pid, "backend_start": started, "timeout_ms": TERMINATE_WAIT_MS, **bound, **guarded},
                    ).fetchone()
            except pgerrors.InsufficientPrivilege as exc:
                first = str(exc).splitlines()[0]
                return SignalResult("refused", f"PostgreSQL refused: {first}")
            if row is None:
                return SignalResult("gone", _why_gone(conn, pid, started))
            # the guard's five columns come last (protected, usename, application_name, datname, is_superuser)
            if row[-5] is not None:
                return SignalResult("refused", protected_detail(pid, guard, row[-5], row[-4:]))
            if row[2] != "signal":
                now = dict(zip(("state", "query_start", "xact_start", "state_change",
                                "query_secs", "xact_secs", "state_secs"), row[3:-5], strict=True))
                return SignalResult("moved", moved_on(pid, action, bound["listed_state"], now, _again(env, host)))
            sent = bool(row[1])
            if action == "terminate":
                if sent and not features(conn).terminate_waits:
                    sent = _exited(conn, pid, started, deadline)  # PostgreSQL 13: the signal was only sent
                if sent:
                    return SignalResult("done", f"backend {pid} terminated: the connection is gone", True)
                return SignalResult(
                    "not_done",
                    f"terminate signal sent to {pid}, but the backend had not exited after "
                    f"{TERMINATE_WAIT_MS / 1000:g}s",
                    True,
                )
            if not sent:
                return SignalResult("gone", "session already ended")
            return _after_cancel(conn, pid, started)
    except DatabaseUnavailable as exc:
        return SignalResult("unavailable", f"nothing was signalled: {exc.plain}")


def _exited(conn: Conn, pid: int, started: datetime, deadline: float) -> bool:
    """Whether the backend (pid, backend_start) exits by ``deadline`` (monotonic): what
    ``pg_terminate_backend(pid, timeout)`` waits for, where only ``pg_terminate_backend(pid)`` exists."""
    while True:
        if conn.execute(query("backend_state", conn), {"pid": pid, "backend_start": started}).fetchone() is None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _after_cancel(conn: Conn, pid: int, started: datetime) -> SignalResult:
    deadline = time.monotonic() + CANCEL_WAIT_S
    first = conn.execute(query("backend_state", conn), {"pid": pid, "backend_start": started}).fetchone()
    while True:
        row = conn.execute(query("backend_state", conn), {"pid": pid, "backend_start": started}).fetchone()
        if row is None:
            return SignalResult("done", f"query of {pid} cancelled (the session then ended)", True)
        state, query_start = row
        if not runs_query(state) or (first is not None and query_start != first[1]):
            return SignalResult("done", f"query of {pid} cancelled; the session is now {state}", True)
        if time.monotonic() >= deadline:
            return SignalResult(
                "not_done", f"cancel signal sent to {pid}, but the query was still running after {CANCEL_WAIT_S:g}s", True
            )
        time.sleep(0.05)
