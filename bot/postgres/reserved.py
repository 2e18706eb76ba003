"""The reserved connection per server: opened at start-up and kept open, for when the server refuses the
bot a new connection for lack of slots (listings, signals, bulk clean-ups still work on a full server).

Environments whose host has the same connection string and timeouts share one
(:meth:`bot.postgres.pools.Databases.server_key`). :class:`Keepers` tends them: a keeper thread tends up
to :data:`KEEPER_SHARE` servers in turn, every :data:`RESERVED_CHECK_EVERY` seconds, each tending
bounded by the connect timeout and :data:`~bot.postgres.connect.CHECK_LIMIT` (a fleet of 2000 servers
costs 80 threads, not 2000). A tending opens the connection if it is not open, and otherwise costs no
round trip while the socket is quiet (:func:`~bot.postgres.connect.quiet`, as for the held connections)
and the slot usage read through it is recent: the usage is read every :data:`USAGE_EVERY` seconds, and
on every tending while the server is out of slots.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import psycopg

from bot.postgres.connect import CHECK_LIMIT, DEADLINE_MARGIN, discard, open_configured, quiet
from bot.postgres.deadline import GuardedConnection
from bot.postgres.errors import explain
from bot.postgres.sql import unsupported_conn

log = logging.getLogger(__name__)

RESERVED_CHECK_EVERY = 5.0  # seconds between tendings of a reserved connection
KEEPER_SHARE = 25  # servers whose reserved connections one keeper thread tends in turn
USAGE_EVERY = 30.0  # seconds between reads of the slot usage while the server has free slots
USAGE_VALID = 60.0  # seconds a usage read is said in "out of connections" messages
FULL_FOR = 60.0  # seconds after a refusal for lack of slots during which the usage is read on every tending

USAGE_SQL = (
    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int, "
    "current_setting('max_connections')::int"
)


@dataclass(eq=False, slots=True)  # no __dict__: one per host of a fleet (issue 26)
class Reserved:
    """The connection kept open for one server (used by one call at a time, under :attr:`lock`)."""

    dsn: str
    connect_timeout: float
    statement_timeout: float
    label: str  # "env/host" of the first environment naming the server, for the logs
    conn: GuardedConnection | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    usage: tuple[int, int] | None = None  # (client connections, max_connections) as last read through it
    usage_at: float = 0.0
    full_at: float = 0.0  # when a call last found the server out of slots
    last_error: str | None = None  # why the last attempt to open it failed (logged once per reason)
    unsupported: str | None = None  # the server's version is refused (sql.unsupported): not kept open

    @property
    def limit(self) -> float:
        return self.statement_timeout + DEADLINE_MARGIN

    def is_open(self) -> bool:
        conn = self.conn
        return conn is not None and not conn.closed

    def fresh_usage(self) -> tuple[int, int] | None:
        return self.usage if self.usage_at and time.monotonic() - self.usage_at < USAGE_VALID else None

    def read_usage(self, conn: GuardedConnection) -> None:
        """Read the slot usage through ``conn`` (the reserved connection, its lock held), within
        :data:`CHECK_LIMIT`; raises what the read raised (the caller drops the connection)."""
        conn.pgs_limit = min(CHECK_LIMIT, self.limit)
        try:
            row = conn.execute(USAGE_SQL).fetchone()
        finally:
            conn.pgs_limit = self.limit
        if row:
            self.usage, self.usage_at = (int(row[0]), int(row[1])), time.monotonic()

    def tend(self, stop: threading.Event) -> None:
        """Open the connection if it is not open; read the usage when due. Never waits for the lock: a
        connection in use works."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            conn = self.conn
            if conn is not None and (conn.closed or conn.pgs_overrun):
                discard(conn)
                self.conn = conn = None
            if conn is None:
                conn = self._open(stop)
                if conn is None:
                    return
            else:
                now = time.monotonic()
                if quiet(conn) and now - self.usage_at < USAGE_EVERY and now - self.full_at >= FULL_FOR:
                    return  # nothing came from the server and the usage is recent: no round trip
            try:
                self.read_usage(conn)
            except psycopg.Error as exc:
                log.info("reserved connection to %s lost: %s", self.label, explain(exc))
                discard(conn)
                self.conn = None
        finally:
            self.lock.release()

    def _open(self, stop: threading.Event) -> GuardedConnection | None:
        try:
            conn = open_configured(self.dsn, self.connect_timeout, self.statement_timeout)
        except psycopg.Error as exc:
            reason = explain(exc, (self.connect_timeout, self.statement_timeout))
            if reason != self.last_error:  # once per reason, not every few seconds
                log.info("reserved connection to %s not open: %s", self.label, reason)
                self.last_error = reason
            return None
        if stop.is_set():
            discard(conn)
            return None
        refused = unsupported_conn(conn)
        if refused is not None:
            discard(conn)
            if refused != self.unsupported:  # said once, at start-up: the bot does not use this server
                log.error("%s refused: %s", self.label, refused)
                self.unsupported = refused
            return None
        self.unsupported = None
        conn.pgs_reserved = True
        self.conn, self.last_error = conn, None
        log.debug("reserved connection to %s open", self.label)
        return conn

    def close(self) -> None:
        if self.lock.acquire(timeout=1):
            try:
                if self.conn is not None:
                    discard(self.conn)
                    self.conn = None
            finally:
                self.lock.release()


class Keepers:
    """The threads that keep the reserved connections open (:data:`KEEPER_SHARE` servers each)."""

    def __init__(self, stop: threading.Event):
        self._stop = stop
        self._threads: list[threading.Thread] = []

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def start(self, servers: list[Reserved]) -> None:
        if self._threads or not servers:
            return
        n = math.ceil(len(servers) / KEEPER_SHARE)
        for i in range(n):
            share = servers[i::n]
            name = f"pgs-reserved-{share[0].label}" + (f"+{len(share) - 1}" if len(share) > 1 else "")
            self._threads.append(threading.Thread(target=self._keep, args=(share,), name=name, daemon=True))
        for t in self._threads:
            t.start()

    def _keep(self, share: list[Reserved]) -> None:
        while not self._stop.is_set():
            for res in share:
                if self._stop.is_set():
                    return
                try:
                    res.tend(self._stop)
                except Exception:  # the keeper must outlive any failure
                    log.exception("reserved connection to %s: unexpected error", res.label)
            self._stop.wait(RESERVED_CHECK_EVERY)
