"""``/pgsessions <env> pool`` (issue 25): the host's PgBouncer pools worst first, and the server sessions
holding the pools whose clients wait (longest transaction first)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.postgres import pgbouncer
from bot.postgres.activity import list_sessions
from bot.postgres.models import Filters, Session
from bot.postgres.pgbouncer import PoolerRead
from bot.postgres.pooler_models import PoolStat
from bot.postgres.pools import Databases


@dataclass(frozen=True, slots=True)
class PoolRow:
    pooler: str
    stat: PoolStat
    holders: tuple[Session, ...] = ()  # when clients wait: the sessions linked to the pool's busy servers

    @property
    def rank(self) -> tuple[int, float, int]:
        """Worst first: clients waiting, then the longest wait, then active clients."""
        return (-self.stat.cl_waiting, -self.stat.maxwait_secs, -self.stat.cl_active)


@dataclass(frozen=True, slots=True)
class PoolView:
    env: str
    host: str
    reads: tuple[PoolerRead, ...]
    pools: tuple[PoolRow, ...]
    sessions_error: str | None = None


def holders_of(read: PoolerRead, stat: PoolStat, sessions: dict[int, Session]) -> tuple[Session, ...]:
    """The sessions behind the pool's server connections that have a client linked, longest transaction first."""
    pids = {s.pid for s in read.servers if s.link and s.user == stat.user and s.database == stat.database}
    # (annotate_all: every holder has its pooler view)
    found = [sessions[p] for p in pids if p in sessions]
    return tuple(sorted(found, key=lambda s: -(s.xact_secs if s.xact_secs is not None else s.state_secs or 0.0)))


def read_pool_view(dbs: Databases, env: str, host: str = "primary") -> PoolView:
    """Every pooler of (env, host), and the sessions holding the pools whose clients wait.

    Raises :class:`~bot.postgres.pools.DatabaseUnavailable` only when the database must be read (some
    pool has waiting clients) and cannot be."""
    reads = pgbouncer.read_all(dbs.config, env, host)
    waiting = [(r, p) for r in reads if r.ok for p in r.pools if p.cl_waiting > 0]
    by_pid: dict[int, Session] = {}
    if waiting:
        listing = list_sessions(dbs, env, host, Filters(min_seconds=0.0), poolers=reads, annotate_all=True)
        by_pid = {s.pid: s for s in listing.sessions}
    rows = []
    for r in reads:
        if not r.ok:
            continue
        for p in r.pools:
            rows.append(PoolRow(r.name, p, holders_of(r, p, by_pid) if p.cl_waiting > 0 else ()))
    return PoolView(env, host, reads, tuple(sorted(rows, key=lambda row: row.rank)))
