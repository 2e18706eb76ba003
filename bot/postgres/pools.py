"""Connections to the monitored servers: at most a few connections per (environment, host), held by a
:class:`_Host` without a thread of its own, plus one reserved connection per server kept open from
start-up (:mod:`bot.postgres.reserved`; environments whose host has the same connection string and
timeouts share it: :meth:`Databases.server_key`).

Every connection is bounded (:mod:`bot.postgres.connect`): ``connect_timeout`` for the TCP and start-up
exchange, ``statement_timeout`` on the server, a client-side deadline for every statement
(:mod:`bot.postgres.deadline`), libpq's ``tcp_user_timeout`` and keepalives. A call takes the idle
connection used last, handed out without a round trip while its socket is quiet (a bounded liveness
round trip when the server sent something, or while the host is suspected of hanging); with none idle,
the call opens one itself, bounded by the connect timeout. Idle connections are closed after
:data:`MAX_IDLE` s unused (one sweeper thread for every host) and replaced after :data:`MAX_LIFETIME` s.
(psycopg_pool's ``ConnectionPool`` runs a scheduler and at least one worker thread per pool: 4000
threads and 84 MiB for a fleet of 2000 hosts, for connections opened on a caller's demand anyway.)

At most :data:`HOST_CONCURRENCY` calls run against one host at a time (one while the host is known to
hang), and waiting for a turn is bounded: a hung host can hold a few threads for a bounded time, never
every thread. When the server refuses a new connection for lack of slots, the reserved connection serves
the call (listings, signals, bulk clean-ups), so a full server can still be listed and cleaned up.

Failures become :class:`~bot.postgres.errors.DatabaseUnavailable` (:mod:`bot.postgres.errors`) with a
message a person understands and no secret in it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from prometheus_client import Histogram
from psycopg.pq import TransactionStatus

from bot.config import Config, Environment
from bot.metrics import DB_QUERY_SECONDS, DB_UNAVAILABLE

# how a connection is opened and judged, re-exported: callers import them from here
from bot.postgres.connect import APPLICATION_NAME as APPLICATION_NAME
from bot.postgres.connect import CHECK_LIMIT as CHECK_LIMIT
from bot.postgres.connect import DEADLINE_MARGIN as DEADLINE_MARGIN
from bot.postgres.connect import connect_bounded as connect_bounded
from bot.postgres.connect import connect_kwargs as connect_kwargs
from bot.postgres.connect import discard, open_configured, quiet
from bot.postgres.connect import tcp_params as tcp_params
from bot.postgres.deadline import GuardedConnection, NotAnswering
from bot.postgres.errors import _UNAVAILABLE_SEEN

# the errors of a call to a monitored server, re-exported: callers catch them from here
from bot.postgres.errors import DatabaseUnavailable as DatabaseUnavailable
from bot.postgres.errors import OutOfConnections as OutOfConnections
from bot.postgres.errors import UnsupportedServer as UnsupportedServer
from bot.postgres.errors import describe_target as describe_target
from bot.postgres.errors import explain as explain
from bot.postgres.errors import is_out_of_slots as is_out_of_slots
from bot.postgres.errors import watch_unavailable as watch_unavailable
from bot.postgres.reserved import KEEPER_SHARE as KEEPER_SHARE
from bot.postgres.reserved import RESERVED_CHECK_EVERY as RESERVED_CHECK_EVERY
from bot.postgres.reserved import Keepers, Reserved
from bot.postgres.sql import unsupported_conn

_quiet = quiet  # the name tests/test_hung.py knows

log = logging.getLogger(__name__)

HOST_CONCURRENCY = 3  # calls at once against one host (so at most 3 connections of it in use)
HOST_WAITING = 29  # calls that may wait for a turn on one host (a burst of listings); more are refused at once
SUSPECT_FOR = 30.0  # seconds a host that overran a deadline gets only one call at a time
SUSPECT_WAIT = 0.2  # seconds a call waits for its turn on such a host
PROBE_EVERY = 2.0  # seconds between attempts at a new connection while a server is out of slots
FULL_FOR = 300.0  # seconds a refusal for lack of slots sends calls to the reserved connection between probes
MAX_IDLE = 300.0  # seconds an idle connection is kept unused before it is closed
MAX_LIFETIME = 3600.0  # seconds after which a connection is replaced when it is handed back
SWEEP_EVERY = 30.0  # seconds between sweeps of the idle connections


class _Gate:
    """Bounds the calls in flight against one host; a host that overran a deadline gets one at a time."""

    __slots__ = ("limit", "inflight", "waiting", "suspect_until", "_lock", "_cv")

    def __init__(self, limit: int):
        self.limit = limit
        self.inflight = 0
        self.waiting = 0
        self.suspect_until = 0.0
        self._lock = threading.Lock()
        # made the first time a call has to wait for its turn: a Condition (its deque of waiters) costs
        # 0.8 KiB, and most of a fleet's hosts never see two calls at once (issue 26)
        self._cv: threading.Condition | None = None

    def suspect(self) -> bool:
        return time.monotonic() < self.suspect_until

    def enter(self, wait: float) -> bool:
        now = time.monotonic()
        deadline, short = now + wait, now + min(wait, SUSPECT_WAIT)
        with self._lock:
            if self.inflight >= self.limit and self.waiting >= HOST_WAITING:
                return False  # enough already wait: do not hold one more thread
            self.waiting += 1
            try:
                while True:
                    suspect = self.suspect()
                    if self.inflight < (1 if suspect else self.limit):
                        self.inflight += 1
                        return True
                    left = (short if suspect else deadline) - time.monotonic()
                    if left <= 0:
                        return False
                    if self._cv is None:
                        self._cv = threading.Condition(self._lock)
                    self._cv.wait(left)
            finally:
                self.waiting -= 1

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1
            if self._cv is not None:
                self._cv.notify()

    def mark_hung(self) -> None:
        with self._lock:
            self.suspect_until = time.monotonic() + SUSPECT_FOR

    def mark_answering(self) -> None:
        with self._lock:
            if self.suspect_until:
                self.suspect_until = 0.0
                if self._cv is not None:
                    self._cv.notify_all()


@dataclass(eq=False, slots=True)  # no __dict__: one per host of a fleet (issue 26)
class _Host:
    """The connections of one (environment, host): the idle ones, most recently used last. No thread of
    its own: a call opens a connection when none is idle (the gate bounds how many are in use)."""

    dsn: str
    connect_timeout: float
    statement_timeout: float
    reserved: Reserved
    gate: _Gate = field(default_factory=lambda: _Gate(HOST_CONCURRENCY))
    idle: list[GuardedConnection] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    full_at: float = 0.0  # when the server last refused a connection for lack of slots
    probe_at: float = 0.0  # when the bot last tried a connection of its own while the server was full

    @property
    def limit(self) -> float:
        return self.statement_timeout + DEADLINE_MARGIN

    @property
    def timeouts(self) -> tuple[float, float]:
        return self.connect_timeout, self.statement_timeout

    def take(self) -> GuardedConnection | None:
        with self.lock:
            return self.idle.pop() if self.idle else None

    def give_back(self, conn: GuardedConnection) -> None:
        now = time.monotonic()
        if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE or now >= conn.pgs_expires:
            discard(conn)  # cut, broken, left in a transaction or old: the next call opens a fresh one
            return
        conn.pgs_limit = self.limit
        conn.pgs_idle_since = now
        with self.lock:
            if not self.closed:
                self.idle.append(conn)
                return
        discard(conn)

    def sweep(self, now: float) -> None:
        """Close the connections idle for longer than :data:`MAX_IDLE` (the oldest-used come first)."""
        with self.lock:
            n = 0
            while n < len(self.idle) and now - self.idle[n].pgs_idle_since >= MAX_IDLE:
                n += 1
            stale, self.idle[:n] = self.idle[:n], []
        for conn in stale:
            discard(conn)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            conns, self.idle = self.idle, []
        for conn in conns:
            discard(conn)


class Databases:
    """The connections to every (environment, host) of the config, opened on demand; reserved connections
    once :meth:`keep_reserved` has been called."""

    def __init__(self, config: Config):
        self.config = config
        self._pools: dict[tuple[str, str], _Host] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._keepers = Keepers(self._stop)
        self._sweeper: threading.Thread | None = None
        # one reserved connection per server (environments that reach it alike share it)
        self._reserved_of: dict[tuple[str, float, float], Reserved] = {}
        self._timers: dict[tuple[str, str, str], Histogram] = {}

    def _environment(self, env: str) -> Environment:
        environment = self.config.env(env)
        if environment is None:
            raise KeyError(env)
        return environment

    def server_key(self, env: str, host: str) -> tuple[str, float, float]:
        """What makes two (environment, host)s the same server seen the same way: the connection string
        (server, database, role) and the timeouts."""
        environment = self._environment(env)
        return environment.hosts()[host], environment.timeouts.connect, environment.timeouts.statement

    def _reserved_for(self, env: str, host: str) -> Reserved:
        """The reserved connection of the server of (env, host) (its lock held by the caller)."""
        key = self.server_key(env, host)
        res = self._reserved_of.get(key)
        if res is None:
            res = self._reserved_of[key] = Reserved(*key, label=f"{env}/{host}")
        return res

    def _pool(self, env: str, host: str) -> _Host:
        key = (env, host)
        entry = self._pools.get(key)  # no lock on the way every call takes
        if entry is not None:
            return entry
        with self._lock:
            entry = self._pools.get(key)
            if entry is not None:
                return entry
            if self._closed:
                raise DatabaseUnavailable(env, host, "the bot is shutting down")
            environment = self._environment(env)
            dsn = environment.hosts()[host]
            entry = _Host(dsn, environment.timeouts.connect, environment.timeouts.statement,
                          self._reserved_for(env, host))
            self._pools[key] = entry
            if self._sweeper is None:
                self._sweeper = threading.Thread(target=self._sweep, name="pgs-idle-sweeper", daemon=True)
                self._sweeper.start()
            return entry

    def _sweep(self) -> None:
        while not self._stop.wait(SWEEP_EVERY):
            now = time.monotonic()
            for entry in list(self._pools.values()):
                entry.sweep(now)

    # --- the reserved connection per server ----------------------------------------------------------

    def keep_reserved(self) -> None:
        """Open one reserved connection per configured server now (in the background) and keep it open
        (:mod:`bot.postgres.reserved`: a keeper thread per :data:`KEEPER_SHARE` servers)."""
        with self._lock:
            if self._keepers.started or self._closed:
                return
            servers: dict[int, Reserved] = {}
            for env, e in self.config.environments.items():
                for host in e.hosts():
                    res = self._reserved_for(env, host)
                    servers.setdefault(id(res), res)
            self._keepers.start(list(servers.values()))

    def max_blocked_threads(self) -> int:
        """How many threads calls to monitored servers can hold at most (running plus waiting for a turn):
        size the worker pools above this, so that hung hosts never take every thread."""
        hosts = sum(len(e.hosts()) for e in self.config.environments.values())
        return hosts * (HOST_CONCURRENCY + HOST_WAITING)

    def usage(self, env: str, host: str = "primary") -> tuple[int, int] | None:
        """(client connections, max_connections) as last read through the reserved connection."""
        return self._pool(env, host).reserved.fresh_usage()

    def out_of_connections(self, env: str, host: str = "primary", within: float = 60.0) -> bool:
        """Whether the server refused the bot a new connection for lack of slots in the last ``within`` s."""
        entry = self._pools.get((env, host))
        return entry is not None and entry.full_at > 0 and time.monotonic() - entry.full_at < within

    def reserved_open(self, env: str, host: str = "primary") -> bool:
        res = self._reserved_of.get(self.server_key(env, host))
        return res is not None and res.is_open()

    # --- handing out connections ----------------------------------------------------------------------

    @contextmanager
    def connection(self, env: str, host: str = "primary", op: str = "query") -> Iterator[psycopg.Connection]:
        """An autocommit connection to the host; raises DatabaseUnavailable with a clear reason.

        The time from asking for the connection to handing it back is observed in
        ``pgsessions_db_query_seconds{env,host,op}``; failures count in ``pgsessions_db_unavailable_total``.
        """
        started = time.monotonic()
        try:
            with self._connection(env, host, started) as conn:
                yield conn
        except DatabaseUnavailable as exc:
            DB_UNAVAILABLE.labels(env, host).inc()
            seen = _UNAVAILABLE_SEEN.get()
            if seen is not None:
                seen.append(exc)
            raise
        finally:
            self._timer(env, host, op).observe(time.monotonic() - started)

    def _timer(self, env: str, host: str, op: str) -> Histogram:
        """The ``pgsessions_db_query_seconds`` child of one (env, host, op), looked up once (``labels()``
        costs a lock and a tuple of strings per call)."""
        key = (env, host, op)
        child = self._timers.get(key)
        if child is None:
            child = self._timers[key] = DB_QUERY_SECONDS.labels(env, host, op)
        return child

    @contextmanager
    def _connection(self, env: str, host: str, started: float) -> Iterator[psycopg.Connection]:
        entry = self._pool(env, host)
        deadline = started + entry.connect_timeout + 0.5
        if not entry.gate.enter(deadline - started):
            if entry.gate.suspect():
                raise DatabaseUnavailable(
                    env, host, f"not answering within {entry.limit:g}s (an earlier request is still waiting for it)"
                )
            raise DatabaseUnavailable(env, host, f"busy: {entry.gate.limit} requests to it are running and "
                                      f"{HOST_WAITING} waiting; try again in a moment")
        # a call that waited for its turn still gets a moment for the reserved connection
        deadline = max(deadline, time.monotonic() + 1.0)
        try:
            conn, reserved = self._checkout(entry, env, host, deadline)
            try:
                refused = unsupported_conn(conn)  # what the server said when the connection started
                if refused is not None:
                    raise UnsupportedServer(env, host, refused)
                yield conn
            except NotAnswering as exc:
                entry.gate.mark_hung()
                raise DatabaseUnavailable(env, host, explain(exc, entry.timeouts)) from None
            except psycopg.Error as exc:
                raise DatabaseUnavailable(env, host, explain(exc, entry.timeouts)) from None
            finally:
                self._checkin(entry, conn, reserved)
        finally:
            entry.gate.leave()

    def _checkin(self, entry: _Host, conn: GuardedConnection, reserved: bool) -> None:
        overrun = conn.pgs_overrun
        if overrun:
            entry.gate.mark_hung()
        if reserved:
            res = entry.reserved
            if overrun or conn.closed:
                discard(conn)
                res.conn = None  # the keeper opens a new one
            else:
                conn.pgs_limit = res.limit
            res.lock.release()
            return
        if overrun:
            discard(conn)  # never hand a cut connection out again
            return
        entry.give_back(conn)

    def _checkout(self, entry: _Host, env: str, host: str, deadline: float) -> tuple[GuardedConnection, bool]:
        """A connection, and whether it is the server's reserved one."""
        while True:
            conn = entry.take()
            if conn is None:
                return self._open(entry, env, host, deadline)
            if not entry.gate.suspect() and quiet(conn):
                # nothing came from the server since the last use: no round trip (a check's whole CPU
                # budget is a millisecond); a backend that froze meanwhile is cut at the statement's deadline.
                # A host suspected of hanging still gets the bounded round trip: only an answer clears it
                conn.pgs_limit = entry.limit
                return conn, False
            # the server said something (an error, the end of the backend): a bounded liveness check
            conn.pgs_limit = min(CHECK_LIMIT, entry.limit)
            try:
                conn.execute("")
            except NotAnswering as exc:
                discard(conn)
                entry.gate.mark_hung()
                raise DatabaseUnavailable(env, host, explain(exc, entry.timeouts)) from None
            except psycopg.Error:
                discard(conn)  # broken (server restarted, connection dropped): try another one
                continue
            conn.pgs_limit = entry.limit
            entry.gate.mark_answering()
            return conn, False

    def _open(self, entry: _Host, env: str, host: str, deadline: float) -> tuple[GuardedConnection, bool]:
        """No idle connection: open one in this call (bounded by the connect timeout), or take the reserved
        one if the server is out of slots. A refused attempt costs the server a fork, so while it is full
        it is asked at most every :data:`PROBE_EVERY` s whether a slot is free again."""
        now = time.monotonic()
        if entry.full_at and now - entry.full_at < FULL_FOR:
            if now - entry.probe_at < PROBE_EVERY:
                return self._reserved(entry, env, host, deadline)
            entry.probe_at = now
        try:
            conn = open_configured(entry.dsn, *entry.timeouts)
        except NotAnswering as exc:
            entry.gate.mark_hung()
            raise DatabaseUnavailable(env, host, explain(exc, entry.timeouts)) from None
        except psycopg.Error as exc:
            if is_out_of_slots(exc):
                return self._reserved(entry, env, host, deadline)
            reason = explain(exc, entry.timeouts)
            if "connect timeout" in reason:
                entry.gate.mark_hung()  # no answer in time: one call at a time until it answers again
            raise DatabaseUnavailable(env, host, reason) from None
        entry.full_at = 0.0  # a slot was free
        conn.pgs_expires = now + MAX_LIFETIME
        if entry.gate.suspect():
            entry.gate.mark_answering()  # it answered the start-up exchange and a statement
        return conn, False

    def _reserved(self, entry: _Host, env: str, host: str, deadline: float) -> tuple[GuardedConnection, bool]:
        """The server has no slot for a new connection: serve the call on the reserved connection (the slot
        usage read through it first, unless it is recent)."""
        res = entry.reserved
        entry.full_at = res.full_at = time.monotonic()
        if not res.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise OutOfConnections(env, host, res.fresh_usage(), "the bot's reserved connection is busy")
        conn = res.conn
        if conn is None or conn.closed:
            res.lock.release()
            raise OutOfConnections(env, host, res.fresh_usage(), "the bot's reserved connection to it is not open")
        if time.monotonic() - res.usage_at >= RESERVED_CHECK_EVERY:
            try:
                res.read_usage(conn)
            except BaseException as exc:
                discard(conn)
                res.conn = None  # the keeper opens a new one
                res.lock.release()
                if isinstance(exc, NotAnswering):
                    entry.gate.mark_hung()
                if isinstance(exc, psycopg.Error):
                    raise DatabaseUnavailable(env, host, explain(exc, entry.timeouts)) from None
                raise
        conn.pgs_limit = res.limit
        log.info("%s/%s refused a new connection for lack of slots: using the reserved connection", env, host)
        return conn, True

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._closed = True
            hosts, self._pools = list(self._pools.values()), {}
            reserved = list(self._reserved_of.values())
        for entry in hosts:
            entry.close()
        for res in reserved:
            res.close()
