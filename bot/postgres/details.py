"""One session whole, read at the moment of the Details click.

The clicked session is named by ``(pid, backend_start)`` from the button's stored snapshot; a pid that
now belongs to another backend (compared at microsecond precision) or no backend at all is reported as
such, never shown as if it were the session clicked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from bot.postgres import pgbouncer, relnames
from bot.postgres.activity import _session
from bot.postgres.locks import LockGraph, LockObject, LockRef, behind, blocker_levels, graph_from_rows
from bot.postgres.models import AUTOVACUUM_WORKER, CLIENT_BACKEND, Session, cannot_signal_reason
from bot.postgres.pooler_models import PoolerNote
from bot.postgres.pools import Databases
from bot.postgres.redact import redact
from bot.postgres.sql import features, query

log = logging.getLogger(__name__)

QUERY_CHARS = 12000  # more than four code blocks of a modal hold
LOCK_LIMIT = 60


@dataclass(frozen=True)
class Details:
    env: str
    host: str
    pid: int
    status: str  # ok | ended | reused
    session: Session | None = None  # the one Session, whole (its xids, query_id, client host name, times)
    leader_pid: int | None = None  # a parallel query: the leader's pid (its own for the leader)
    worker_pids: tuple[int, ...] = ()  # and the workers of that leader
    locks: tuple[LockRef, ...] = ()
    locks_total: int = 0
    blocker_levels: tuple[tuple[int, ...], ...] = ()
    waiting_direct: int = 0
    waiting_total: int = 0
    longest_wait: float | None = None
    cannot_signal: str | None = None
    other_start: datetime | None = None  # the newcomer's backend_start when the pid was reused
    read_at: datetime | None = None
    graph: LockGraph | None = None
    poolers: tuple[PoolerNote, ...] = ()  # the host's poolers as read with the session (issue 25)


def _as_datetime(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def why_not_signal(row: dict[str, Any]) -> str | None:
    """Why the bot could not cancel or terminate this backend (None: it could)."""
    if row.get("is_bot"):
        return "this is the bot's own connection"
    if row.get("backend_type") not in (CLIENT_BACKEND, AUTOVACUUM_WORKER):
        return f"it is a {row.get('backend_type') or 'server process'}, not a client session: the bot signals only client sessions"
    return cannot_signal_reason(row)


def read_details(
    dbs: Databases, env: str, host: str, pid: int, backend_start: str | datetime, lock_limit: int = LOCK_LIMIT
) -> Details:
    environment = dbs.config.environments[env]
    started = _as_datetime(backend_start)
    pooler_reads = pgbouncer.start_reads(dbs.config, env, host)  # beside the database read, each bounded
    with dbs.connection(env, host, op="details") as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query("details_session", conn), {"pid": pid, "query_chars": QUERY_CHARS})
            row = cur.fetchone()
            if row is None:
                return Details(env, host, pid, "ended")
            if row["backend_start"] != started:
                return Details(env, host, pid, "reused", other_start=row["backend_start"], read_at=row["read_at"])
            cur.execute(query("details_locks", conn), {"pid": pid, "backend_start": started, "lock_limit": lock_limit})
            lock_rows = cur.fetchall()
            graph_rows: list[dict[str, Any]] = []
            cur.execute(query("lock_forest", conn), {"query_chars": 600})
            graph_rows = cur.fetchall()
        from_query = not features(conn).lock_wait_start
    if environment.redact_queries:
        row["query"] = redact(row["query"] or "")
    graph = replace(graph_from_rows(env, host, graph_rows, environment.redact_queries), waits_from_query=from_query)
    locks = tuple(
        LockRef(r["mode"], r["granted"], LockObject.from_row(r) or LockObject(r["locktype"]), r["wait_secs"])
        for r in lock_rows
    )
    locks = _names_in_own_database(dbs, env, host, row.get("datname"), locks)
    direct, total, longest = behind(graph.waits, pid)
    flags = {
        "blocked_by": list(graph.waits[pid].blocked_by) if pid in graph.waits else [],
        "blocking_count": direct,
        "is_blocked": pid in graph.waits,
        "is_long_running": row["state"] == "active",
        "is_idle_tx": bool(row["state"] and row["state"].startswith("idle in transaction")),
        "is_idle": row["state"] == "idle",
    }
    session = _session({**row, **flags})
    poolers = pgbouncer.collect(pooler_reads)
    via = pgbouncer.via_for(session, poolers)
    if via is not None:
        session = replace(session, via=via)
    return Details(
        env,
        host,
        pid,
        "ok",
        session=session,
        leader_pid=row["leader_pid"],
        worker_pids=tuple(row["worker_pids"] or ()),
        locks=locks,
        locks_total=lock_rows[0]["total"] if lock_rows else 0,
        blocker_levels=tuple(blocker_levels(graph.waits, pid)),
        waiting_direct=direct,
        waiting_total=total,
        longest_wait=longest,
        cannot_signal=why_not_signal(row),
        read_at=row["read_at"],
        graph=graph,
        poolers=tuple(p.note() for p in poolers if not p.ok),
    )


def _names_in_own_database(
    dbs: Databases, env: str, host: str, datname: str | None, locks: tuple[LockRef, ...]
) -> tuple[LockRef, ...]:
    """Name the relations of the session's own database that the bot's database cannot name.

    Through :func:`bot.postgres.relnames.resolve` (one bounded, cached connection to that database);
    what it cannot name keeps saying "name not readable"."""
    oids = sorted({x.obj.relation for x in locks if x.obj.relation and not x.obj.rel_name and x.obj.lock_db == datname})
    if not oids or not datname:
        return locks
    resolved = relnames.resolve(dbs.config, env, host, [(datname, oid) for oid in oids])
    names = {oid: name for (_, oid), name in resolved.items() if name != relnames.unreadable(oid, datname)}
    return tuple(
        replace(x, obj=replace(x.obj, rel_name=names[x.obj.relation]))
        if x.obj.relation in names and not x.obj.rel_name and x.obj.lock_db == datname
        else x
        for x in locks
    )
