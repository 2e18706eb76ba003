"""The database side of the lag watcher: the queries in ``queries/lag_*.sql``, run and read into rows.

Nothing here decides anything: :mod:`bot.lagwatch.detect` interprets what these functions return.
"""

from __future__ import annotations

from psycopg.rows import dict_row

from bot.postgres.models import Category, Session
from bot.postgres.redact import redact
from bot.postgres.sql import Conn, Row, query, statement


def read_standby(conn: Conn) -> Row:
    """One row from ``lag_standby.sql``: replay position, receiver and startup-process state."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement("lag_standby", conn))
        row = cur.fetchone()
    assert row is not None
    return row


def read_culprit_rows(conn: Conn, startup_pid: int | None, suspect_secs: float, query_chars: int) -> list[Row]:
    """Sessions that may hold replay back, from ``lag_culprits.sql`` (flags: holds_lock, old_snapshot, is_suspect)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            query("lag_culprits", conn),
            {"startup_pid": startup_pid, "suspect_secs": float(suspect_secs), "query_chars": int(query_chars)},
        )
        return cur.fetchall()


def read_replication(conn: Conn) -> list[Row]:
    """The primary's ``pg_stat_replication`` rows with their slots, from ``lag_replication.sql``."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement("lag_replication", conn))
        return cur.fetchall()


def culprit_session(row: Row, *, holding_back: bool, redact_queries: bool = False) -> Session:
    """A culprit/suspect row as a :class:`Session` (what the buttons and their tokens are made from)."""
    idle_tx = bool(row["state"] and str(row["state"]).startswith("idle in transaction"))
    cats: list[Category] = []
    if holding_back:
        cats.append(Category.BLOCKING)
    if idle_tx:
        cats.append(Category.IDLE_TX)
    if row["state"] == "active" and not holding_back:
        cats.append(Category.LONG_RUNNING)
    if not cats:
        cats.append(Category.IDLE if row["state"] == "idle" else Category.LONG_RUNNING)
    # a culprit blocks replay, not a session: blocked_by stays empty
    return Session.from_row({**row, "blocked_by": ()}, cats, blocking_count=1 if holding_back else 0,
                            redact=redact if redact_queries else None)
