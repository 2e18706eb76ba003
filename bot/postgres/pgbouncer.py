"""Reading PgBouncer's admin console (issue 25): pools, server connections, clients, KILL_CLIENT.

The console (``dbname=pgbouncer``) speaks only the simple query protocol and takes no bound parameters:
connections here use ``prepare_threshold=None``, every command is one of the constants below, and the
only value ever put into one (a client id for ``KILL_CLIENT``) is checked to be a positive integer first.

Every read is bounded by the pooler's own ``timeouts`` (connect, and a client-side deadline on each
command, :mod:`bot.postgres.deadline`); :func:`start_reads` runs the reads of a host's poolers in
threads next to the database read, and :func:`collect` waits for each at most its deadline, so a pooler
that does not answer costs one line in a listing, never the listing. A read never raises: a failure is
a :class:`PoolerRead` with ``error`` (plain text, no secret).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import psycopg

from bot.config import Config, Pooler
from bot.postgres.deadline import GuardedConnection
from bot.postgres.models import Session
from bot.postgres.pooler_models import (
    PooledVia,
    PoolerClient,
    PoolerNote,
    PoolerServer,
    PoolStat,
    kill_client_refusal,
)
from bot.postgres.pools import connect_bounded, explain

log = logging.getLogger(__name__)

# The admin commands, and the only ones this module sends.
SHOW_VERSION = "SHOW VERSION"
SHOW_POOLS = "SHOW POOLS"
SHOW_DATABASES = "SHOW DATABASES"
SHOW_SERVERS = "SHOW SERVERS"
SHOW_CLIENTS = "SHOW CLIENTS"
KILL_CLIENT = "KILL_CLIENT {id}"  # 1.24+; {id} is an int checked by kill_client()

COLLECT_MARGIN = 0.3  # seconds past a pooler's connect + statement timeouts a listing waits for its read
GONE_WAIT = 2.0  # seconds Disconnect client waits for the client to leave SHOW CLIENTS

_READS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pgs-pooler")
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PoolerRead:
    """One read of one pooler's console: what it holds now, or why it could not be read.

    ``client_rows`` are ``SHOW CLIENTS`` as read: a listing turns only the clients it draws into
    :class:`PoolerClient` (:meth:`client`), so 1000 clients cost a dict each, not a parse each."""

    name: str
    host: str
    version: tuple[int, ...] = ()
    pools: tuple[PoolStat, ...] = ()
    servers: tuple[PoolerServer, ...] = ()
    client_rows: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None  # plain text
    read_at: datetime | None = None
    read_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @cached_property
    def clients(self) -> tuple[PoolerClient, ...]:
        return tuple(client_row(r) for r in self.client_rows)

    @cached_property
    def _client_rows_by_ptr(self) -> dict[str, Mapping[str, Any]]:
        return {_text(r.get("ptr")): r for r in self.client_rows}

    def client(self, ptr: str) -> PoolerClient | None:
        row = self._client_rows_by_ptr.get(ptr) if ptr else None
        return client_row(row) if row is not None else None

    @cached_property
    def _servers_by_pid(self) -> dict[int, PoolerServer]:
        return {s.pid: s for s in self.servers if s.pid}

    def server_by_pid(self) -> dict[int, PoolerServer]:
        return self._servers_by_pid

    def pool(self, user: str, database: str) -> PoolStat | None:
        for p in self.pools:
            if p.user == user and p.database == database:
                return p
        return None

    def idle_members(self) -> tuple[tuple[str, int], ...]:
        """(pool, count) of server connections with no client linked, pools with any, largest first."""
        counts = Counter(f"{s.user}/{s.database}" for s in self.servers if not s.link and s.pid)
        return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def note(self) -> PoolerNote:
        return PoolerNote(name=self.name, host=self.host, version=self.version,
                          idle_members=self.idle_members() if self.ok else (), error=self.error)


# --- parsing ---------------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    """``"PgBouncer 1.24.1"`` -> (1, 24, 1); () when it says no version."""
    m = _VERSION.search(text or "")
    if not m:
        return ()
    return tuple(int(g) for g in m.groups() if g is not None)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    text = str(value).strip().removesuffix(" UTC")
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def client_row(r: Mapping[str, Any]) -> PoolerClient:
    wait = float(_int(r.get("wait")) or 0) + float(_int(r.get("wait_us")) or 0) / 1e6
    return PoolerClient(
        ptr=_text(r.get("ptr")), id=_int(r.get("id")), user=_text(r.get("user")), database=_text(r.get("database")),
        state=_text(r.get("state")), addr=_text(r.get("addr")) or None, port=_int(r.get("port")),
        application=_text(r.get("application_name")), connect_time=_time(r.get("connect_time")),
        wait_secs=wait, link=_text(r.get("link")),
    )


def server_row(r: Mapping[str, Any]) -> PoolerServer:
    return PoolerServer(
        ptr=_text(r.get("ptr")), pid=_int(r.get("remote_pid")) or 0, user=_text(r.get("user")),
        database=_text(r.get("database")), state=_text(r.get("state")), local_port=_int(r.get("local_port")),
        link=_text(r.get("link")), application=_text(r.get("application_name")),
    )


def pool_rows(pools: Iterable[Mapping[str, Any]], databases: Iterable[Mapping[str, Any]]) -> tuple[PoolStat, ...]:
    sizes = {_text(d.get("name")): _int(d.get("pool_size")) for d in databases}
    out = []
    for r in pools:
        if _text(r.get("database")) == "pgbouncer":  # the console's own pseudo-pool
            continue
        out.append(PoolStat(
            database=_text(r.get("database")), user=_text(r.get("user")),
            cl_active=_int(r.get("cl_active")) or 0, cl_waiting=_int(r.get("cl_waiting")) or 0,
            sv_active=_int(r.get("sv_active")) or 0, sv_idle=_int(r.get("sv_idle")) or 0,
            sv_used=_int(r.get("sv_used")) or 0,
            maxwait_secs=float(_int(r.get("maxwait")) or 0) + float(_int(r.get("maxwait_us")) or 0) / 1e6,
            pool_mode=_text(r.get("pool_mode")), pool_size=sizes.get(_text(r.get("database"))),
        ))
    return tuple(out)


# --- the console ------------------------------------------------------------------------------------


def connect_console(pooler: Pooler) -> GuardedConnection:
    """A bounded connection to the console: simple query protocol only (no prepared statements)."""
    t = pooler.timeouts
    return connect_bounded(pooler.dsn, t.connect, t.statement, prepare_threshold=None)


def show(conn: psycopg.Connection, command: str) -> list[dict[str, Any]]:
    """One admin command (a constant of this module); its rows as dicts."""
    with conn.cursor() as cur:
        cur.execute(command)
        if cur.description is None:
            return []
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def read_pooler(name: str, pooler: Pooler) -> PoolerRead:
    """Version, pools, server connections and clients of one pooler; never raises."""
    started = time.monotonic()
    try:
        with connect_console(pooler) as conn:
            version = parse_version(str((show(conn, SHOW_VERSION) or [{}])[0].get("version", "")))
            pools = show(conn, SHOW_POOLS)
            databases = show(conn, SHOW_DATABASES)
            servers = show(conn, SHOW_SERVERS)
            clients = show(conn, SHOW_CLIENTS)
    except (psycopg.Error, OSError) as exc:
        t = pooler.timeouts
        reason = explain(exc, (t.connect, t.statement))
        log.warning("pooler %s: %s", name, reason)
        return PoolerRead(name=name, host=pooler.host, error=reason)
    return PoolerRead(
        name=name, host=pooler.host, version=version, pools=pool_rows(pools, databases),
        servers=tuple(server_row(r) for r in servers if _text(r.get("type")) in ("S", "")),
        client_rows=tuple(r for r in clients if _text(r.get("database")) != "pgbouncer"),
        read_at=datetime.now(UTC), read_ms=(time.monotonic() - started) * 1000,
    )


def deadline_of(pooler: Pooler) -> float:
    """How long a listing waits for this pooler's read."""
    return pooler.timeouts.connect + pooler.timeouts.statement + COLLECT_MARGIN


PendingReads = list[tuple[str, Pooler, "Future[PoolerRead]", float]]


def poolers_of(config: Config, env: str, host: str) -> dict[str, Pooler]:
    environment = config.environments[env]
    return {name: p for name, p in environment.poolers.items() if p.host == host}


def start_reads(config: Config, env: str, host: str) -> PendingReads:
    """Start reading every pooler in front of (env, host), each in a thread of its own."""
    started = time.monotonic()
    return [(name, p, _READS.submit(read_pooler, name, p), started + deadline_of(p))
            for name, p in poolers_of(config, env, host).items()]


def collect(pending: PendingReads) -> tuple[PoolerRead, ...]:
    """The reads started by :func:`start_reads`, each waited for until its own deadline."""
    out = []
    for name, pooler, future, deadline in pending:
        try:
            out.append(future.result(timeout=max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            limit = deadline_of(pooler) - COLLECT_MARGIN
            out.append(PoolerRead(name=name, host=pooler.host, error=f"not answering within {limit:g}s"))
        except Exception as exc:  # a read never raises; this is a bug, and the listing still goes out
            log.exception("pooler %s read failed", name)
            out.append(PoolerRead(name=name, host=pooler.host, error=f"the read failed ({type(exc).__name__})"))
    return tuple(out)


def read_all(config: Config, env: str, host: str) -> tuple[PoolerRead, ...]:
    return collect(start_reads(config, env, host))


# --- a listing through the poolers -------------------------------------------------------------------


def _server_of(session: Session, reads: Iterable[PoolerRead]) -> tuple[PoolerRead, PoolerServer] | None:
    """The pooler's ``SHOW SERVERS`` row of this session: ``remote_pid`` = the pid and, where PostgreSQL
    shows the client port, ``local_port`` = that port (so a reused pid is not mistaken)."""
    for read in reads:
        if not read.ok:
            continue
        server = read.server_by_pid().get(session.pid)
        if server is None:
            continue
        # over a unix socket PostgreSQL shows port -1 and PgBouncer none: then the pid alone decides
        known = (session.client_port or 0) > 0 and (server.local_port or 0) > 0
        if known and server.local_port != session.client_port:
            continue
        return read, server
    return None


def via_for(session: Session, reads: Iterable[PoolerRead]) -> PooledVia | None:
    """The pooler that opened this server session, and its client now; None for a direct connection."""
    found = _server_of(session, reads)
    if found is None:
        return None
    read, server = found
    pool = read.pool(server.user, server.database)  # a few pools: a scan is cheaper than an index
    return PooledVia(pooler=read.name, pool=f"{server.user}/{server.database}",
                     pool_mode=pool.pool_mode if pool else None, version=read.version,
                     client=read.client(server.link), read_at=read.read_at)


def is_pool_member(session: Session, reads: Iterable[PoolerRead] = ()) -> bool:
    """An idle server connection with no client linked: the pool's, not an application's."""
    if session.state != "idle":
        return False
    if session.via is not None:
        return session.via.client is None
    found = _server_of(session, reads)
    return found is not None and not found[1].link


def without_pool_members(sessions: Iterable[Session], reads: tuple[PoolerRead, ...]) -> list[Session]:
    """The sessions less the idle pool members (they are counted per pool instead)."""
    if not reads:
        return list(sessions)
    return [s for s in sessions if not is_pool_member(s, reads)]


def attach(sessions: Iterable[Session], reads: tuple[PoolerRead, ...], limit: int | None = None) -> list[Session]:
    """The sessions with their pooler view (the first ``limit`` only: those a message draws)."""
    out = list(sessions)
    if not reads:
        return out
    for i, s in enumerate(out[:limit] if limit is not None else out):
        via = via_for(s, reads)
        if via is not None:
            out[i] = replace(s, via=via)
    return out


def annotate(sessions: Iterable[Session], reads: tuple[PoolerRead, ...], limit: int | None = None) -> list[Session]:
    """:func:`without_pool_members`, then :func:`attach` (in that order: the order is the caller's)."""
    return attach(without_pool_members(sessions, reads), reads, limit)


# --- Disconnect client -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KillOutcome:
    """What KILL_CLIENT did: ``status`` is done / not_done (sent, still connected) / gone / moved / refused /
    failed (the pooler could not be asked: nothing was sent); ``detail`` plain text."""

    status: str
    detail: str


def find_client(conn: psycopg.Connection, client_id: int) -> PoolerClient | None:
    for r in show(conn, SHOW_CLIENTS):
        c = client_row(r)
        if c.id == client_id:
            return c
    return None


def kill_client(pooler: Pooler, client_id: int, *, addr: str | None, port: int | None) -> KillOutcome:
    """Disconnect one client, if it is still the one approved: same ``id``, same address and port.

    The id is checked to be a positive integer before it is put into the command (the console takes no
    bound parameters)."""
    if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id <= 0:
        return KillOutcome("refused", "not a PgBouncer client id")
    try:
        with connect_console(pooler) as conn:
            version = parse_version(str((show(conn, SHOW_VERSION) or [{}])[0].get("version", "")))
            refusal = kill_client_refusal(version)
            if refusal is not None:
                return KillOutcome("refused", refusal.replace("`", ""))
            client = find_client(conn, client_id)
            if client is None:
                return KillOutcome("gone", f"client {client_id} is no longer connected to the pooler: nothing was done")
            if (addr, port) != (client.addr, client.port):
                return KillOutcome("moved", f"client {client_id} is now another connection: nothing was done")
            try:
                show(conn, KILL_CLIENT.format(id=int(client_id)))
            except psycopg.errors.Error as exc:  # e.g. not in admin_users: the pooler refused, nothing was done
                if conn.closed:
                    raise
                t = pooler.timeouts
                return KillOutcome("refused", f"the pooler refused KILL_CLIENT: {explain(exc, (t.connect, t.statement))}")
            deadline = time.monotonic() + GONE_WAIT
            while True:
                if find_client(conn, client_id) is None:
                    return KillOutcome("done", f"client {client_id} disconnected by the pooler")
                if time.monotonic() > deadline:
                    return KillOutcome("not_done", f"client {client_id} was told to disconnect but is still "
                                                   f"connected after {GONE_WAIT:g}s")
                time.sleep(0.05)
    except psycopg.Error as exc:
        t = pooler.timeouts
        return KillOutcome("failed", explain(exc, (t.connect, t.statement)))


__all__ = [
    "KillOutcome",
    "PoolerRead",
    "annotate",
    "collect",
    "kill_client",
    "read_all",
    "read_pooler",
    "start_reads",
]
