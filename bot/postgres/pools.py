"""Connections to the monitored servers: one psycopg_pool per (environment, host), plus one reserved
connection per server that the bot keeps open from start-up (environments whose host has the same
connection string and timeouts share it: :meth:`Databases.server_key`).

Every connection is bounded: ``connect_timeout`` for the TCP and start-up exchange, ``statement_timeout``
for every query on the server, a client-side deadline for every statement (statement timeout plus a
small margin, :mod:`bot.postgres.deadline`) for a server that stops answering altogether, and libpq's
``tcp_user_timeout`` and keepalives for a network that silently drops packets. The bot's connections
carry ``application_name='pgsessions'`` so that the listing can leave them out.

At most :data:`HOST_CONCURRENCY` calls run against one host at a time (one while the host is known to
hang), and waiting for a turn is bounded: a hung host can hold a few threads for a bounded time, never
every thread. When the server refuses a new connection for lack of slots, the reserved connection serves
the call (listings, signals, bulk clean-ups), so a full server can still be listed and cleaned up.

Failures become :class:`~bot.postgres.errors.DatabaseUnavailable` (:mod:`bot.postgres.errors`) with a
message a person understands and no secret in it.
"""

from __future__ import annotations

import logging
import math
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import psycopg
from prometheus_client import Histogram
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from bot.config import Config, Environment
from bot.metrics import DB_QUERY_SECONDS, DB_UNAVAILABLE
from bot.postgres.deadline import GuardedConnection, GuardedCursor, NotAnswering
from bot.postgres.errors import _UNAVAILABLE_SEEN

# the errors of a call to a monitored server, re-exported: callers catch them from here
from bot.postgres.errors import DatabaseUnavailable as DatabaseUnavailable
from bot.postgres.errors import OutOfConnections as OutOfConnections
from bot.postgres.errors import UnsupportedServer as UnsupportedServer
from bot.postgres.errors import describe_target as describe_target
from bot.postgres.errors import explain as explain
from bot.postgres.errors import is_out_of_slots as is_out_of_slots
from bot.postgres.errors import watch_unavailable as watch_unavailable
from bot.postgres.sql import unsupported_conn

log = logging.getLogger(__name__)

APPLICATION_NAME = "pgsessions"

DEADLINE_MARGIN = 0.4  # seconds a statement may run past statement_timeout before the bot cuts it
CHECK_LIMIT = 2.0  # seconds (at most statement + margin) for the liveness check of a pooled connection
HOST_CONCURRENCY = 3  # calls at once against one host
HOST_WAITING = 29  # calls that may wait for a turn on one host (a burst of listings); more are refused at once
SUSPECT_FOR = 30.0  # seconds a host that overran a deadline gets only one call at a time
SUSPECT_WAIT = 0.2  # seconds a call waits for its turn on such a host
PROBE_EVERY = 2.0  # seconds between attempts at a new connection while a server is out of slots
RESERVED_CHECK_EVERY = 5.0  # seconds between health checks of the reserved connections
KEEPER_SHARE = 25  # servers whose reserved connections one keeper thread tends in turn


def tcp_params(connect_timeout: float, statement_timeout: float) -> dict[str, int]:
    """libpq parameters that bound a TCP connection whose peer stops answering (ignored on unix sockets)."""
    return {
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        # unacknowledged data may wait this long before the kernel gives up on the connection
        "tcp_user_timeout": int(max(10.0, connect_timeout + statement_timeout + 2) * 1000),
    }


def connect_kwargs(
    connect_timeout: float, statement_timeout: float, application_name: str = APPLICATION_NAME
) -> dict[str, Any]:
    """Keyword arguments of every connection the bot opens to a monitored server."""
    return {
        "connect_timeout": max(2, math.ceil(connect_timeout)),
        "application_name": application_name,
        "autocommit": True,
        "cursor_factory": GuardedCursor,
        **tcp_params(connect_timeout, statement_timeout),
    }


def connect_bounded(
    dsn: str, connect_timeout: float, statement_timeout: float, *, application_name: str = APPLICATION_NAME,
    **kwargs: Any,
) -> GuardedConnection:
    """A connection of its own to a monitored server, bounded like the pooled ones: ``connect_timeout``,
    libpq's TCP bounds (:func:`tcp_params`) and a client-side deadline of ``statement_timeout`` plus
    :data:`DEADLINE_MARGIN` on every statement (:class:`GuardedCursor`). For the short-lived connections
    outside the pools (relation names in another database, ``pgsessions check``)."""
    conn = GuardedConnection.connect(
        dsn, **connect_kwargs(connect_timeout, statement_timeout, application_name), **kwargs
    )
    conn.pgs_limit = statement_timeout + DEADLINE_MARGIN
    return conn


class _ErrorSlot:
    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.at = 0.0

    def record(self, exc: BaseException) -> None:
        self.error, self.at = exc, time.monotonic()


def _recording_connection(slot: _ErrorSlot) -> type[GuardedConnection]:
    """A Connection class that remembers why the pool's last attempt failed (the pool only says 'timeout')."""

    class RecordingConnection(GuardedConnection):
        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> Self:
            try:
                return super().connect(*args, **kwargs)
            except BaseException as exc:
                slot.record(exc)
                raise

    return RecordingConnection


def _configure(conn: GuardedConnection, statement_timeout: float) -> None:
    conn.autocommit = True
    conn.pgs_limit = statement_timeout + DEADLINE_MARGIN
    ms = f"{int(statement_timeout * 1000)}ms"
    conn.execute(
        "SELECT set_config('statement_timeout', %s, false), "
        "set_config('lock_timeout', %s, false), "
        "set_config('idle_in_transaction_session_timeout', %s, false)",
        (ms, ms, "60s"),
    )


def _quiet(conn: psycopg.Connection) -> bool:
    """Whether an idle pooled connection looks usable without a round trip: open, outside a transaction,
    and nothing arrived on its socket since it was last used (a server that ends a backend, restarts or
    shuts down sends an error and closes the socket first, which makes it readable). A zero-timeout
    poll, so no deadline applies; a backend that froze is cut by the statement's own deadline."""
    try:
        if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
            return False
        poller = select.poll()  # not select.select: a fleet's descriptors pass 1024
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False


def _discard(conn: psycopg.Connection) -> None:
    try:
        conn.close()
    except Exception:  # it is being thrown away
        pass


class _Gate:
    """Bounds the calls in flight against one host; a host that overran a deadline gets one at a time."""

    def __init__(self, limit: int):
        self.limit = limit
        self.inflight = 0
        self.waiting = 0
        self.suspect_until = 0.0
        self._cv = threading.Condition()

    def suspect(self) -> bool:
        return time.monotonic() < self.suspect_until

    def enter(self, wait: float) -> bool:
        now = time.monotonic()
        deadline, short = now + wait, now + min(wait, SUSPECT_WAIT)
        with self._cv:
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
                    self._cv.wait(left)
            finally:
                self.waiting -= 1

    def leave(self) -> None:
        with self._cv:
            self.inflight -= 1
            self._cv.notify()

    def mark_hung(self) -> None:
        with self._cv:
            self.suspect_until = time.monotonic() + SUSPECT_FOR

    def mark_answering(self) -> None:
        with self._cv:
            if self.suspect_until:
                self.suspect_until = 0.0
                self._cv.notify_all()


@dataclass
class _Reserved:
    """The connection kept open for when the server has no slot left (used by one call at a time)."""

    conn: GuardedConnection | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    usage: tuple[int, int] | None = None  # (client connections, max_connections) at the last health check
    usage_at: float = 0.0
    last_error: str | None = None  # why the last attempt to open it failed (logged once per reason)
    unsupported: str | None = None  # the server's version is refused (sql.unsupported): not kept open


@dataclass
class _Pool:
    pool: ConnectionPool[GuardedConnection]
    slot: _ErrorSlot
    connect_timeout: float
    statement_timeout: float
    dsn: str
    gate: _Gate = field(default_factory=lambda: _Gate(HOST_CONCURRENCY))
    reserved: _Reserved = field(default_factory=_Reserved)
    full_at: float = 0.0  # when the server last refused a connection for lack of slots
    probe_at: float = 0.0  # when the bot last tried a connection of its own while the server was full

    @property
    def limit(self) -> float:
        return self.statement_timeout + DEADLINE_MARGIN


USAGE_SQL = (
    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int, "
    "current_setting('max_connections')::int"
)


class Databases:
    """Pools for every (environment, host) of the config, opened lazily; reserved connections once
    :meth:`keep_reserved` has been called."""

    def __init__(self, config: Config, max_size: int = 4):
        self.config = config
        self.max_size = max_size
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._keepers: list[threading.Thread] = []
        # one reserved connection per server (environments that reach it alike share it)
        self._reserved_of: dict[tuple[str, float, float], _Reserved] = {}
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

    def _connect_kwargs(self, ct: float, st: float) -> dict[str, Any]:
        return connect_kwargs(ct, st)

    def _pool(self, env: str, host: str) -> _Pool:
        key = (env, host)
        with self._lock:
            entry = self._pools.get(key)
            if entry is not None:
                return entry
            if self._closed:
                raise DatabaseUnavailable(env, host, "the bot is shutting down")
            environment = self._environment(env)
            dsn = environment.hosts()[host]
            ct, st = environment.timeouts.connect, environment.timeouts.statement
            slot = _ErrorSlot()
            pool = ConnectionPool(
                dsn,
                connection_class=_recording_connection(slot),
                kwargs=self._connect_kwargs(ct, st),
                min_size=0,
                max_size=self.max_size,
                configure=lambda conn: _configure(conn, st),
                check=None,  # checked in _checkout, with a bounded deadline
                name=f"{env}/{host}",
                timeout=ct + 1,
                max_idle=300,
                reconnect_timeout=max(60.0, ct * 4),
                num_workers=1,  # it opens at most max_size connections; three threads per host were idle
                open=True,
            )
            entry = _Pool(pool, slot, ct, st, dsn, reserved=self._reserved_of.setdefault((dsn, ct, st), _Reserved()))
            self._pools[key] = entry
            return entry

    # --- the reserved connection per host ------------------------------------------------------------

    def keep_reserved(self) -> None:
        """Open one reserved connection per configured server now (in the background) and keep it open.

        Environments whose host has the same connection string and timeouts share it. A keeper thread
        tends up to :data:`KEEPER_SHARE` servers in turn (each tending is bounded by the connect timeout
        and :data:`CHECK_LIMIT`): a fleet of 2000 hosts costs 80 threads, not 2000."""
        with self._lock:
            if self._keepers or self._closed:
                return
            servers: dict[tuple[str, float, float], tuple[str, str]] = {}
            for env, e in self.config.environments.items():
                for host in e.hosts():
                    servers.setdefault(self.server_key(env, host), (env, host))
            todo = list(servers.values())
            n = math.ceil(len(todo) / KEEPER_SHARE)
            for i in range(n):
                share = todo[i::n]
                name = f"pgs-reserved-{share[0][0]}/{share[0][1]}" + (f"+{len(share) - 1}" if len(share) > 1 else "")
                self._keepers.append(threading.Thread(target=self._keep, args=(share,), name=name, daemon=True))
        for t in self._keepers:
            t.start()

    def _keep(self, share: list[tuple[str, str]]) -> None:
        while not self._stop.is_set():
            for env, host in share:
                if self._stop.is_set():
                    return
                try:
                    self._tend(self._pool(env, host), env, host)
                except Exception:  # the keeper must outlive any failure
                    log.exception("reserved connection to %s/%s: unexpected error", env, host)
            self._stop.wait(RESERVED_CHECK_EVERY)

    def _tend(self, entry: _Pool, env: str, host: str) -> None:
        res = entry.reserved
        if not res.lock.acquire(blocking=False):
            return  # in use: it works
        try:
            conn = res.conn
            if conn is not None and (conn.closed or conn.pgs_overrun):
                _discard(conn)
                res.conn = conn = None
            if conn is None:
                try:
                    conn = GuardedConnection.connect(entry.dsn, **self._connect_kwargs(entry.connect_timeout,
                                                                                       entry.statement_timeout))
                    _configure(conn, entry.statement_timeout)
                except psycopg.Error as exc:
                    reason = explain(exc, (entry.connect_timeout, entry.statement_timeout))
                    if reason != res.last_error:  # once per reason, not every few seconds
                        log.info("reserved connection to %s/%s not open: %s", env, host, reason)
                        res.last_error = reason
                    return
                if self._stop.is_set():
                    _discard(conn)
                    return
                refused = unsupported_conn(conn)
                if refused is not None:
                    _discard(conn)
                    if refused != res.unsupported:  # said once, at start-up: the bot does not use this server
                        log.error("%s/%s refused: %s", env, host, refused)
                        res.unsupported = refused
                    return
                res.unsupported = None
                conn.pgs_reserved = True
                res.conn, res.last_error = conn, None
                log.debug("reserved connection to %s/%s open", env, host)
            conn.pgs_limit = min(CHECK_LIMIT, entry.limit)
            try:
                row = conn.execute(USAGE_SQL).fetchone()
                if row:
                    res.usage, res.usage_at = (int(row[0]), int(row[1])), time.monotonic()
            except psycopg.Error as exc:
                log.info("reserved connection to %s/%s lost: %s", env, host, explain(exc))
                _discard(conn)
                res.conn = None
            finally:
                if res.conn is not None:
                    res.conn.pgs_limit = entry.limit
        finally:
            res.lock.release()

    def max_blocked_threads(self) -> int:
        """How many threads calls to monitored servers can hold at most (running plus waiting for a turn):
        size the worker pools above this, so that hung hosts never take every thread."""
        hosts = sum(len(e.hosts()) for e in self.config.environments.values())
        return hosts * (HOST_CONCURRENCY + HOST_WAITING)

    def usage(self, env: str, host: str = "primary") -> tuple[int, int] | None:
        """(client connections, max_connections) as last read through the reserved connection."""
        res = self._pool(env, host).reserved
        return res.usage if res.usage_at and time.monotonic() - res.usage_at < 60 else None

    def out_of_connections(self, env: str, host: str = "primary", within: float = 60.0) -> bool:
        """Whether the server refused the bot a new connection for lack of slots in the last ``within`` s."""
        entry = self._pools.get((env, host))
        return entry is not None and entry.full_at > 0 and time.monotonic() - entry.full_at < within

    def reserved_open(self, env: str, host: str = "primary") -> bool:
        res = self._reserved_of.get(self.server_key(env, host))
        return res is not None and res.conn is not None and not res.conn.closed

    # --- handing out connections ----------------------------------------------------------------------

    @contextmanager
    def connection(self, env: str, host: str = "primary", op: str = "query") -> Iterator[psycopg.Connection]:
        """A pooled autocommit connection; raises DatabaseUnavailable with a clear reason.

        The time from asking for the connection to handing it back is observed in
        ``pgsessions_db_query_seconds{env,host,op}``; failures count in ``pgsessions_db_unavailable_total``.
        """
        started = time.monotonic()
        try:
            with self._connection(env, host) as conn:
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
    def _connection(self, env: str, host: str) -> Iterator[psycopg.Connection]:
        entry = self._pool(env, host)
        timeouts = (entry.connect_timeout, entry.statement_timeout)
        started = time.monotonic()
        deadline = started + entry.connect_timeout + 0.5
        if not entry.gate.enter(deadline - started):
            if entry.gate.suspect():
                raise DatabaseUnavailable(
                    env, host, f"not answering within {entry.limit:g}s (an earlier request is still waiting for it)"
                )
            raise DatabaseUnavailable(env, host, f"busy: {entry.gate.limit} requests to it are running and "
                                      f"{HOST_WAITING} waiting; try again in a moment")
        # a call that waited for its turn still gets a moment to take a connection (not a false 'hung')
        deadline = max(deadline, time.monotonic() + 1.0)
        try:
            conn, kind = self._checkout(entry, env, host, started, deadline, timeouts)
            try:
                refused = unsupported_conn(conn)  # what the server said when the connection started
                if refused is not None:
                    raise UnsupportedServer(env, host, refused)
                yield conn
            except NotAnswering as exc:
                entry.gate.mark_hung()
                raise DatabaseUnavailable(env, host, explain(exc, timeouts)) from None
            except psycopg.Error as exc:
                raise DatabaseUnavailable(env, host, explain(exc, timeouts)) from None
            finally:
                self._checkin(entry, conn, kind)
        finally:
            entry.gate.leave()

    def _checkin(self, entry: _Pool, conn: GuardedConnection, kind: str) -> None:
        overrun = bool(getattr(conn, "pgs_overrun", False))
        if overrun:
            entry.gate.mark_hung()
        if kind == "direct":
            _discard(conn)
            return
        if kind == "reserved":
            if overrun or conn.closed:
                _discard(conn)
                entry.reserved.conn = None  # the keeper opens a new one
            entry.reserved.lock.release()
            return
        if overrun:
            _discard(conn)  # never hand a cut connection out again
        elif not conn.closed:
            conn.pgs_limit = entry.limit
        entry.pool.putconn(conn)

    def _checkout(
        self, entry: _Pool, env: str, host: str, started: float, deadline: float, timeouts: tuple[float, float]
    ) -> tuple[GuardedConnection, str]:
        """A connection and where it came from: ``pool``, ``reserved`` or ``direct`` (closed after use)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                err = entry.slot.error if entry.slot.at >= started - 0.1 else None
                if is_out_of_slots(err):
                    return self._reserved(entry, env, host, started, deadline)
                reason = explain(err, timeouts) if err else f"no connection within {entry.connect_timeout:g}s"
                entry.gate.mark_hung()  # no answer in time: one call at a time until it answers again
                raise DatabaseUnavailable(env, host, reason)
            if entry.full_at and time.monotonic() - entry.full_at < 300 and not entry.pool.get_stats().get(
                "pool_available", 0
            ):
                # refused for lack of slots a moment ago and nothing idle in the pool: do not wait for it
                return self._direct_or_reserved(entry, env, host, started, deadline, timeouts)
            try:
                conn = entry.pool.getconn(timeout=min(0.25, remaining))
            except PoolTimeout:
                if is_out_of_slots(entry.slot.error) and entry.slot.at >= time.monotonic() - 300:
                    # the pool backs off after refusals; slots may have been freed since: ask once ourselves
                    return self._direct_or_reserved(entry, env, host, started, deadline, timeouts)
                # fail fast once an attempt made on our behalf has failed for a reason other than time
                if entry.slot.at >= started and entry.slot.error is not None:
                    reason = explain(entry.slot.error, timeouts)
                    if "connect timeout" not in reason or time.monotonic() >= started + entry.connect_timeout:
                        if "connect timeout" in reason:
                            entry.gate.mark_hung()
                        raise DatabaseUnavailable(env, host, reason) from None
                continue
            if not entry.gate.suspect() and _quiet(conn):
                # nothing came from the server since the last use: no round trip (a check's whole CPU
                # budget is a millisecond); a backend that froze meanwhile is cut at the statement's deadline.
                # A host suspected of hanging still gets the bounded round trip: only an answer clears it
                conn.pgs_limit = entry.limit
                return conn, "pool"
            # the server said something (an error, the end of the backend): a bounded liveness check (the
            # pool's own check would wait on a frozen backend forever)
            conn.pgs_limit = min(CHECK_LIMIT, entry.limit)
            try:
                conn.execute("")
            except NotAnswering as exc:
                _discard(conn)
                entry.pool.putconn(conn)
                entry.gate.mark_hung()
                raise DatabaseUnavailable(env, host, explain(exc, timeouts)) from None
            except psycopg.Error:
                _discard(conn)  # broken (server restarted, connection dropped): try another one
                entry.pool.putconn(conn)
                continue
            conn.pgs_limit = entry.limit
            entry.gate.mark_answering()
            return conn, "pool"

    def _direct_or_reserved(
        self, entry: _Pool, env: str, host: str, started: float, deadline: float, timeouts: tuple[float, float]
    ) -> tuple[GuardedConnection, str]:
        """A connection of its own for this call (closed after it), or the reserved one if the server is full.

        A refused attempt costs the server a fork, so while it is full it is asked at most every
        ``PROBE_EVERY`` s whether a slot is free again."""
        now = time.monotonic()
        if entry.full_at and now - entry.probe_at < PROBE_EVERY:
            return self._reserved(entry, env, host, started, deadline)
        entry.probe_at = now
        try:
            conn = GuardedConnection.connect(entry.dsn, **self._connect_kwargs(*timeouts))
            _configure(conn, entry.statement_timeout)
        except psycopg.Error as exc:
            if is_out_of_slots(exc):
                entry.slot.record(exc)
                return self._reserved(entry, env, host, started, deadline)
            raise DatabaseUnavailable(env, host, explain(exc, timeouts)) from None
        entry.full_at = 0.0  # a slot was free
        conn.pgs_limit = entry.limit
        return conn, "direct"

    def _reserved(
        self, entry: _Pool, env: str, host: str, started: float, deadline: float
    ) -> tuple[GuardedConnection, str]:
        """The server has no slot for a new connection: serve the call on the reserved connection."""
        entry.full_at = time.monotonic()
        res = entry.reserved
        wait = max(0.0, deadline - time.monotonic())
        if not res.lock.acquire(timeout=wait):
            raise OutOfConnections(env, host, self.usage(env, host), "the bot's reserved connection is busy")
        conn = res.conn
        if conn is None or conn.closed:
            res.lock.release()
            raise OutOfConnections(env, host, self.usage(env, host),
                                   "the bot's reserved connection to it is not open")
        conn.pgs_limit = entry.limit
        log.info("%s/%s refused a new connection for lack of slots: using the reserved connection", env, host)
        return conn, "reserved"

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for entry in pools:
            entry.pool.close(timeout=1)
            res = entry.reserved
            if res.lock.acquire(timeout=1):
                try:
                    if res.conn is not None:
                        _discard(res.conn)
                        res.conn = None
                finally:
                    res.lock.release()
