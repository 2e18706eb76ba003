"""Cancel and terminate one backend, never the wrong one.

The target is named by ``(pid, backend_start)``: the re-check and the signal are one statement, so a
pid that now belongs to another backend (pids are reused) or a session that has ended is never
signalled. Terminate uses ``pg_terminate_backend(pid, timeout)`` and reports whether the backend is
really gone; cancel reports whether the query actually stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from psycopg import errors as pgerrors

from bot.postgres.pools import Databases, DatabaseUnavailable
from bot.postgres.sql import Conn, query

TERMINATE_WAIT_MS = 3000
CANCEL_WAIT_S = 2.0


@dataclass(frozen=True)
class SignalResult:
    status: str  # done | gone | not_done | refused | unavailable
    detail: str
    signalled: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "done"


def _as_datetime(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _why_gone(conn: Conn, pid: int, backend_start: datetime) -> str:
    row = conn.execute(query("backend_by_pid"), {"pid": pid}).fetchone()
    if row is None:
        return "session already ended"
    _, now_start, backend_type, *_ = row
    if now_start != backend_start:
        return (
            f"session already ended (pid {pid} now belongs to another "
            f"{backend_type or 'backend'} that started at {now_start:%H:%M:%S.%f}; not touched)"
        )
    return f"session already ended (pid {pid} is no longer a client backend the bot may signal)"


def signal(dbs: Databases, env: str, host: str, action: str, pid: int, backend_start: str | datetime) -> SignalResult:
    """Cancel or terminate ``pid`` if and only if it is still the backend that started at ``backend_start``."""
    started = _as_datetime(backend_start)
    if action not in ("cancel", "terminate"):
        raise ValueError(action)
    try:
        with dbs.connection(env, host) as conn:
            try:
                if action == "cancel":
                    row = conn.execute(query("signal_cancel"), {"pid": pid, "backend_start": started}).fetchone()
                else:
                    row = conn.execute(
                        query("signal_terminate"),
                        {"pid": pid, "backend_start": started, "timeout_ms": TERMINATE_WAIT_MS},
                    ).fetchone()
            except pgerrors.InsufficientPrivilege as exc:
                first = str(exc).splitlines()[0]
                return SignalResult("refused", f"PostgreSQL refused: {first}")
            if row is None:
                return SignalResult("gone", _why_gone(conn, pid, started))
            sent = bool(row[1])
            if action == "terminate":
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
        return SignalResult("unavailable", f"nothing was signalled: {exc}")


def _after_cancel(conn: Conn, pid: int, started: datetime) -> SignalResult:
    deadline = time.monotonic() + CANCEL_WAIT_S
    first = conn.execute(query("backend_state"), {"pid": pid, "backend_start": started}).fetchone()
    while True:
        row = conn.execute(query("backend_state"), {"pid": pid, "backend_start": started}).fetchone()
        if row is None:
            return SignalResult("done", f"query of {pid} cancelled (the session then ended)", True)
        state, query_start = row
        if state != "active" or (first is not None and query_start != first[1]):
            return SignalResult("done", f"query of {pid} cancelled; the session is now {state}", True)
        if time.monotonic() >= deadline:
            return SignalResult(
                "not_done", f"cancel signal sent to {pid}, but the query was still running after {CANCEL_WAIT_S:g}s", True
            )
        time.sleep(0.05)
