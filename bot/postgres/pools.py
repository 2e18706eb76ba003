"""Connections to the monitored servers: one psycopg_pool per (environment, host).

Every connection is bounded: ``connect_timeout`` for the TCP and start-up exchange, ``statement_timeout``
for every query, and the bot's connections carry ``application_name='pgsessions'`` so that the listing
can leave them out. Failures become :class:`DatabaseUnavailable` with a message a person understands
and no secret in it.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import ConnectionPool, PoolTimeout

from bot.config import Config, Environment
from bot.metrics import DB_QUERY_SECONDS, DB_UNAVAILABLE
from bot.render.common import esc
from bot.secrets import scrub

log = logging.getLogger(__name__)

APPLICATION_NAME = "pgsessions"


class DatabaseUnavailable(Exception):
    """The server could not be reached or did not answer in time.

    ``str()`` is safe to show: mrkdwn in which ``reason`` (plain text, may quote the server) is escaped."""

    def __init__(self, env: str, host: str, reason: str):
        self.env, self.host, self.reason = env, host, reason
        super().__init__(f"{describe_target(env, host)} is unavailable: {esc(reason)}")


_UNAVAILABLE_SEEN: contextvars.ContextVar[list[DatabaseUnavailable] | None] = contextvars.ContextVar(
    "pgsessions_unavailable_seen", default=None
)


@contextmanager
def watch_unavailable() -> Iterator[list[DatabaseUnavailable]]:
    """Collect the DatabaseUnavailable errors raised in this context, even those a handler caught."""
    seen: list[DatabaseUnavailable] = []
    token = _UNAVAILABLE_SEEN.set(seen)
    try:
        yield seen
    finally:
        _UNAVAILABLE_SEEN.reset(token)


def describe_target(env: str, host: str) -> str:
    return f"`{env}` (primary)" if host == "primary" else f"`{env}` standby `{host}`"


def explain(exc: BaseException, timeouts: tuple[float, float] | None = None) -> str:
    """A short, secret-free reason for a connection or query failure."""
    connect_t, statement_t = timeouts or (None, None)
    if isinstance(exc, pgerrors.QueryCanceled):
        if statement_t:
            return f"the query did not finish within the {statement_t:g}s statement timeout"
        return "the query was cancelled"
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return f"permission denied ({scrub(str(exc).splitlines()[0])})"
    if isinstance(exc, pgerrors.AdminShutdown | pgerrors.CrashShutdown):
        return "the server is shutting down or restarted"
    text = str(exc).strip()
    low = text.lower()
    if "timeout expired" in low or "timed out" in low:
        return f"no answer within the {connect_t:g}s connect timeout" if connect_t else "connection timed out"
    if "connection refused" in low:
        return "connection refused (is the server running and listening there?)"
    if "password authentication failed" in low or "no password supplied" in low:
        return "password authentication failed (check the password in the DSN's ${VAR})"
    if "does not exist" in low and "database" in low:
        return "the database in the DSN does not exist"
    if "does not exist" in low and "role" in low:
        return "the role in the DSN does not exist"
    if "could not translate host name" in low or "name or service not known" in low:
        return "the host name does not resolve"
    if "no pg_hba.conf entry" in low:
        return "the server refuses this connection (no pg_hba.conf entry for the bot)"
    if "server closed the connection" in low or "connection is closed" in low or "consuming input failed" in low:
        return "the connection was lost"
    first = text.splitlines()[0] if text else type(exc).__name__
    return scrub(first)[:200]


class _ErrorSlot:
    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.at = 0.0

    def record(self, exc: BaseException) -> None:
        self.error, self.at = exc, time.monotonic()


def _recording_connection(slot: _ErrorSlot) -> type[psycopg.Connection]:
    """A Connection class that remembers why the pool's last attempt failed (the pool only says 'timeout')."""

    class RecordingConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> Self:
            try:
                return super().connect(*args, **kwargs)
            except BaseException as exc:
                slot.record(exc)
                raise

    return RecordingConnection


@dataclass
class _Pool:
    pool: ConnectionPool
    slot: _ErrorSlot
    connect_timeout: float
    statement_timeout: float


class Databases:
    """Pools for every (environment, host) of the config, opened lazily."""

    def __init__(self, config: Config, max_size: int = 4):
        self.config = config
        self.max_size = max_size
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _environment(self, env: str) -> Environment:
        environment = self.config.env(env)
        if environment is None:
            raise KeyError(env)
        return environment

    def _pool(self, env: str, host: str) -> _Pool:
        key = (env, host)
        with self._lock:
            entry = self._pools.get(key)
            if entry is not None:
                return entry
            environment = self._environment(env)
            dsn = environment.hosts()[host]
            ct, st = environment.timeouts.connect, environment.timeouts.statement
            slot = _ErrorSlot()

            def configure(conn: psycopg.Connection) -> None:
                conn.autocommit = True
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, false), "
                    "set_config('lock_timeout', %s, false), "
                    "set_config('idle_in_transaction_session_timeout', %s, false)",
                    (f"{int(st * 1000)}ms", f"{int(st * 1000)}ms", "60s"),
                )

            pool = ConnectionPool(
                dsn,
                connection_class=_recording_connection(slot),
                kwargs={
                    "connect_timeout": max(2, math.ceil(ct)),
                    "application_name": APPLICATION_NAME,
                    "autocommit": True,
                },
                min_size=0,
                max_size=self.max_size,
                configure=configure,
                check=ConnectionPool.check_connection,
                name=f"{env}/{host}",
                timeout=ct + 1,
                max_idle=300,
                reconnect_timeout=max(60.0, ct * 4),
                open=True,
            )
            entry = _Pool(pool, slot, ct, st)
            self._pools[key] = entry
            return entry

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
            DB_QUERY_SECONDS.labels(env, host, op).observe(time.monotonic() - started)

    @contextmanager
    def _connection(self, env: str, host: str) -> Iterator[psycopg.Connection]:
        entry = self._pool(env, host)
        timeouts = (entry.connect_timeout, entry.statement_timeout)
        started = time.monotonic()
        deadline = started + entry.connect_timeout + 0.5
        conn = None
        while conn is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                err = entry.slot.error if entry.slot.at >= started - 0.1 else None
                reason = explain(err, timeouts) if err else f"no connection within {entry.connect_timeout:g}s"
                raise DatabaseUnavailable(env, host, reason)
            try:
                conn = entry.pool.getconn(timeout=min(0.25, remaining))
            except PoolTimeout:
                # fail fast once an attempt made on our behalf has failed for a reason other than time
                if entry.slot.at >= started and entry.slot.error is not None:
                    reason = explain(entry.slot.error, timeouts)
                    if "connect timeout" not in reason or time.monotonic() >= started + entry.connect_timeout:
                        raise DatabaseUnavailable(env, host, reason) from None
        try:
            yield conn
        except psycopg.Error as exc:
            # a query error on this connection: hand it back (the pool discards it if broken)
            entry.pool.putconn(conn)
            conn = None
            raise DatabaseUnavailable(env, host, explain(exc, timeouts)) from None
        finally:
            if conn is not None:
                entry.pool.putconn(conn)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for entry in pools:
            entry.pool.close(timeout=1)
