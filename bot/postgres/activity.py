"""Reading pg_stat_activity: the sessions that need attention, as typed rows, worst first."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from psycopg.rows import dict_row

from bot.config import Environment
from bot.postgres import pgbouncer
from bot.postgres.models import (
    QUERY_RUNNING_STATES,
    Category,
    Filters,
    Listing,
    ServerInfo,
    Session,
)
from bot.postgres.pools import Databases
from bot.postgres.redact import redact
from bot.postgres.sql import Conn, Row, query, statement
from bot.session_rules import is_ignored


def server_info(conn: Conn) -> ServerInfo:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement("server_info", conn))
        row = cur.fetchone()
    assert row is not None  # the query always returns one row
    return ServerInfo(**row)


def _session(row: Row, redact_queries: bool = False) -> Session:
    """A row of ``sessions.sql`` (or ``lock_forest.sql``, ``details_session.sql`` with the same flags) as a
    :class:`Session`, with the listing's categories."""
    cats = []
    if row["blocking_count"] > 0:
        cats.append(Category.BLOCKING)
    if row["is_idle_tx"]:
        cats.append(Category.IDLE_TX)
    if row["is_long_running"]:
        cats.append(Category.LONG_RUNNING)
    if row["is_blocked"]:
        cats.append(Category.BLOCKED)
    if row["is_idle"]:
        cats.append(Category.IDLE)
    if not cats:  # shown only as the blocker of a filtered waiter
        cats.append(Category.BLOCKED if row["blocked_by"] else Category.BLOCKING)
    return Session.from_row(row, cats, redact=redact if redact_queries else None)


def thresholds_for(environment: Environment, filters: Filters) -> dict[str, float]:
    t = environment.thresholds
    m = filters.min_seconds
    return {
        "long_running": t.long_running if m is None else m,
        "idle_in_transaction": t.idle_in_transaction if m is None else m,
        "idle": t.idle if m is None else m,
        "blocked_min": 0.0 if m is None else m,
    }


def list_sessions(
    dbs: Databases, env: str, host: str = "primary", filters: Filters | None = None,
    poolers: tuple[pgbouncer.PoolerRead, ...] | None = None, annotate_all: bool = False,
) -> Listing:
    """``poolers``: the host's poolers as already read (else they are read here, beside the database);
    ``annotate_all``: every session gets its pooler view, not only the first ``listing.max_sessions``."""
    filters = filters or Filters()
    environment = dbs.config.environments[env]
    thresholds = thresholds_for(environment, filters)
    params = {
        **thresholds,
        "want_long_running": filters.wants("active"),
        "want_idle_tx": filters.wants("idle-tx"),
        "want_idle": filters.wants("idle"),
        "want_blocked": filters.wants("blocked"),
        "app": filters.app,
        "usr": filters.user,
        "db": filters.database,
        "query_chars": max(environment.listing.query_chars * 2, 600),
        "running_states": list(QUERY_RUNNING_STATES),
    }
    # beside the database read, each bounded
    pooler_reads = pgbouncer.start_reads(dbs.config, env, host) if poolers is None else []
    with dbs.connection(env, host, op="list_sessions") as conn:
        started = time.monotonic()
        info = server_info(conn)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query("sessions", conn), params)
            rows = cur.fetchall()
        read_ms = (time.monotonic() - started) * 1000
        full = bool(getattr(conn, "pgs_reserved", False))
    # ignore: never listed (the rule is bot.session_rules, matched on the text as read, before redaction)
    ignored = 0
    if environment.ignore:
        kept = []
        for r in rows:
            if is_ignored(environment.ignore, app=r["application_name"], user=r["usename"], db=r["datname"],
                          query=r["query"]):
                ignored += 1
            else:
                kept.append(r)
        rows = kept
    if poolers is None:
        poolers = pgbouncer.collect(pooler_reads)
    # idle pool members are counted per pool, not listed; the pooler's view is attached to the sessions
    # a message draws (the first listing.max_sessions, or all of them with annotate_all)
    listed = pgbouncer.without_pool_members((_session(r, environment.redact_queries) for r in rows), poolers)
    sessions = pgbouncer.attach(sorted(listed, key=lambda s: s.sort_key), poolers,
                                None if annotate_all else environment.listing.max_sessions)
    return Listing(
        env=env, host=host, server=info, sessions=tuple(sessions), filters=filters, thresholds=thresholds,
        read_at=datetime.now(UTC), read_ms=read_ms, out_of_connections=full, ignored=ignored,
        poolers=tuple(p.note() for p in poolers),
    )
