"""The ``pool_waiting`` watch kind (issue 25): clients waiting in a PgBouncer pool, and who holds it.

Kept apart from :mod:`bot.watch.rules` so it ports as one piece. Two halves:

* :func:`read_pools` (I/O, in the watcher's check): the host's poolers as read beside the watch read,
  and, only when some pool's clients have waited past the threshold, the sessions holding those pools
  (``pool_holders.sql``, by the pids of the pool's busy server connections). Both go into the
  snapshot's ``extra``.
* :func:`pool_waiting` (pure): one :class:`~bot.watch.rules.Condition` per pool whose longest wait is
  at least the threshold, keyed ``<pooler>:<user>/<database>``; its sessions (with buttons) are the
  holders, longest transaction first. ``consecutive``, reminders and resolution are the watch's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from psycopg.rows import dict_row

from bot.config import IgnoreRule, Watch
from bot.postgres import pgbouncer
from bot.postgres.models import Session
from bot.postgres.pgbouncer import PendingReads, PoolerRead
from bot.postgres.pools import Databases, DatabaseUnavailable
from bot.postgres.sql import query
from bot.watch.model import CONNECTIONS, POOL_WAITING, HostSnapshot, session_facts, session_from_row
from bot.watch.rules import MAX_SHOWN, Condition, ignored_session

log = logging.getLogger(__name__)

READS = "poolers"  # HostSnapshot.extra keys
HOLDERS = "pool_holders"


def watching(watch: Watch | None) -> bool:
    """The poolers are read for ``pool_waiting``, and for the connections alert's *Terminate these N*
    (idle pool members are the pool's, never an application's idle sessions to sweep)."""
    return watch is not None and (watch.pool_waiting is not None or watch.connections is not None)


def start(dbs: Databases, env: str, host: str, watch: Watch | None) -> PendingReads:
    """Start reading the host's poolers (before the watch read, so both run at once)."""
    return pgbouncer.start_reads(dbs.config, env, host) if watching(watch) else []


def _over(reads: Sequence[PoolerRead], threshold: float) -> list[tuple[PoolerRead, str, str]]:
    return [(r, p.user, p.database) for r in reads if r.ok for p in r.pools
            if p.cl_waiting > 0 and p.maxwait_secs >= threshold]


def read_pools(dbs: Databases, snap: HostSnapshot, pending: PendingReads, watch: Watch | None,
               query_chars: int = 600) -> HostSnapshot:
    """The snapshot with its poolers' reads and, when a pool waits past the threshold, its holders."""
    if not pending or not watching(watch):
        return snap
    assert watch is not None
    reads = pgbouncer.collect(pending)
    over = _over(reads, watch.pool_waiting) if watch.pool_waiting is not None else []
    pids = sorted({s.pid for r, user, db in over for s in r.servers if s.link and s.user == user and s.database == db})
    holders: tuple[Session, ...] = ()
    if pids:
        try:
            with dbs.connection(snap.env, snap.host, op="watch_pool_holders") as conn:
                with conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(query("pool_holders", conn), {"pids": pids, "query_chars": query_chars})
                    rows = cur.fetchall()
            holders = tuple(session_from_row(r, bool(r["bot_is_super"]), bool(r["bot_can_signal"])) for r in rows)
        except DatabaseUnavailable as exc:  # the alert still goes out, without the holders' details
            log.warning("watch: holders of %s/%s pools not read: %s", snap.env, snap.host, exc.reason)
    return replace(snap, extra={**snap.extra, READS: reads, HOLDERS: holders})


def pool_waiting(snap: HostSnapshot, watch: Watch, ignore: Sequence[IgnoreRule] = ()) -> list[Condition]:
    threshold = watch.pool_waiting
    if threshold is None:
        return []
    reads: Sequence[PoolerRead] = snap.extra.get(READS) or ()
    by_pid = {s.pid: s for s in snap.extra.get(HOLDERS) or ()}
    out = []
    for read, user, db in _over(reads, threshold):
        pool = read.pool(user, db)
        assert pool is not None
        busy = [s for s in read.servers if s.link and s.user == user and s.database == db]
        holders = sorted((by_pid[s.pid] for s in busy if s.pid in by_pid and by_pid[s.pid].backend_start is not None),
                         key=lambda h: -(h.xact_secs if h.xact_secs is not None else h.state_secs or 0.0))
        shown = [h for h in holders if not ignored_session(ignore, h)][:MAX_SHOWN]
        facts = {
            "pooler": read.name, "pool": pool.name, "waiting": pool.cl_waiting, "longest_wait": pool.maxwait_secs,
            "active": pool.cl_active, "servers_active": pool.sv_active, "servers_busy": len(busy),
            "pool_size": pool.pool_size, "pool_mode": pool.pool_mode, "threshold": threshold,
            "holders": [{**session_facts(h), "xact_secs": h.xact_secs} for h in shown],
            "holders_total": len(holders),
        }
        out.append(Condition(POOL_WAITING, f"{read.name}:{pool.name}", facts, tuple(shown)))
    out.sort(key=lambda c: -c.facts["longest_wait"])
    return out


def pool_member_pids(snap: HostSnapshot) -> set[int]:
    """Server connections idle in a pool (no client linked) as the snapshot's poolers saw them."""
    reads: Sequence[PoolerRead] = snap.extra.get(READS) or ()
    return {s.pid for r in reads if r.ok for s in r.servers if s.pid and not s.link}


def without_pool_members(found: list[Condition], snap: HostSnapshot) -> list[Condition]:
    """The conditions with idle pool members taken out of the connections alert's *Terminate these N*."""
    members = pool_member_pids(snap)
    if not members:
        return found
    out = []
    for c in found:
        if c.kind == CONNECTIONS and c.bulk:
            bulk = tuple(s for s in c.bulk if not (s.pid in members and s.state == "idle"))
            facts = {**c.facts, "bulk_count": len(bulk), "bulk_app": c.bulk_app if bulk else None}
            c = replace(c, bulk=bulk, facts=facts, bulk_app=c.bulk_app if bulk else None)
        out.append(c)
    return out
