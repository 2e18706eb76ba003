"""Database work for bulk clean-ups: who is connected to a database, closing and reopening it, and
terminating an approved snapshot of sessions in batches.

Every session is named by ``(pid, backend_start)`` and re-checked in the same statement that signals
it (``queries/bulk_terminate.sql``). The only SQL built in Python is ``ALTER DATABASE``, whose name is
quoted with :class:`psycopg.sql.Identifier` (a database name is never formatted in as a value).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql
from psycopg.rows import dict_row

from bot.postgres.models import Session
from bot.postgres.sql import Conn, query
from bot.session_rules import SignalGuard


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    name: str
    oid: int
    is_template: bool
    allow_connections: bool
    conn_limit: int
    owner: str
    bot_user: str
    bot_is_superuser: bool
    bot_can_alter: bool
    bot_database: str
    bot_pid: int
    postmaster_start: str
    port: str
    in_recovery: bool
    prepared_xacts: int
    logical_slots: int


def database_info(conn: Conn, database: str) -> DatabaseInfo | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query("clear_db_info", conn), {"database": database})
        row = cur.fetchone()
    return DatabaseInfo(**row) if row else None


def database_names(conn: Conn) -> list[str]:
    return [r[0] for r in conn.execute(query("clear_db_names", conn)).fetchall()]


def connected_to(conn: Conn, database: str) -> list[Session]:
    """Every backend connected to ``database``, oldest first, as :class:`~bot.postgres.models.Session`
    (``is_bot``: one of the bot's own connections; ``backend_secs``: how long it is connected;
    ``query``: the first 1000 characters, only for matching the ignore rules, never shown)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query("clear_db_sessions", conn), {"database": database})
        rows = cur.fetchall()
    return [Session.from_row(r) for r in rows]


def database_state(conn: Conn, database: str) -> tuple[bool, int] | None:
    """``(allows connections, oid)`` of a database now, or None if it does not exist."""
    row = conn.execute(query("clear_db_state", conn), {"database": database}).fetchone()
    return (bool(row[0]), int(row[1])) if row else None


def set_allow_connections(conn: Conn, database: str, allow: bool) -> None:
    """``ALTER DATABASE <name> WITH ALLOW_CONNECTIONS true|false`` (the name quoted as an identifier)."""
    stmt = sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
        sql.Identifier(database), sql.SQL("true" if allow else "false")
    )
    conn.execute(stmt)


def state_changes(conn: Conn, pairs: list[tuple[int, datetime]]) -> dict[tuple[int, datetime], tuple[str | None, datetime, float]]:
    """``{(pid, backend_start): (state, state_change, state_secs)}`` for those of ``pairs`` still connected."""
    if not pairs:
        return {}
    rows = conn.execute(
        query("bulk_snapshot", conn), {"pids": [p for p, _ in pairs], "starts": [s for _, s in pairs]}
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


@dataclass(frozen=True, slots=True)
class BatchRow:
    pid: int
    backend_start: datetime
    state: str | None
    state_secs: float | None
    verdict: str
    signalled: bool | None
    # who the session is now (for a 'protected_rule' verdict: which protect rule names it)
    user: str | None = None
    application: str | None = None
    database: str | None = None
    is_superuser: bool = False


def terminate_batch(
    conn: Conn,
    batch: list[tuple[int, datetime, datetime | None]],
    database: str | None,
    state_like: str | None,
    guard: SignalGuard,
) -> list[BatchRow]:
    """Re-check and signal ``[(pid, backend_start, state_change or None), ...]`` in one statement
    (``guard``: the protect rules, re-checked in it)."""
    rows = conn.execute(
        query("bulk_terminate", conn),
        {
            "pids": [b[0] for b in batch],
            "starts": [b[1] for b in batch],
            "state_changes": [b[2] for b in batch],
            "database": database,
            "state_like": state_like,
            **guard.params(),
        },
    ).fetchall()
    return [BatchRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9])) for r in rows]


def still_present(conn: Conn, pairs: list[tuple[int, datetime]]) -> set[int]:
    if not pairs:
        return set()
    rows = conn.execute(
        query("bulk_remaining", conn), {"pids": [p for p, _ in pairs], "starts": [s for _, s in pairs]}
    ).fetchall()
    return {r[0] for r in rows}


def arrivals(conn: Conn, database: str, pairs: list[tuple[int, datetime]]) -> int:
    """Client sessions on ``database`` outside the snapshot ``pairs`` (not the bot's own)."""
    row = conn.execute(
        query("clear_db_arrivals", conn),
        {"database": database, "pids": [p for p, _ in pairs], "starts": [s for _, s in pairs]},
    ).fetchone()
    return int(row[0]) if row else 0
