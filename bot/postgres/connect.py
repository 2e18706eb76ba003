"""How the bot opens, configures, judges and drops a connection to a monitored server (shared by the
per-host holders of :mod:`bot.postgres.pools` and the reserved connections of :mod:`bot.postgres.reserved`).

Every connection is bounded: ``connect_timeout`` for the TCP and start-up exchange, ``statement_timeout``
for every query on the server, a client-side deadline for every statement (statement timeout plus
:data:`DEADLINE_MARGIN`, :mod:`bot.postgres.deadline`) for a server that stops answering altogether, and
libpq's ``tcp_user_timeout`` and keepalives for a network that silently drops packets. The bot's
connections carry ``application_name='pgsessions'`` so that the listing can leave them out.
"""

from __future__ import annotations

import math
import select
from collections import deque
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from bot.postgres.deadline import GuardedConnection, GuardedCursor

APPLICATION_NAME = "pgsessions"

DEADLINE_MARGIN = 0.4  # seconds a statement may run past statement_timeout before the bot cuts it
CHECK_LIMIT = 2.0  # seconds (at most statement + margin) for the liveness check of an idle connection
# a connection the bot keeps prepares a statement on the server the second time it runs there (psycopg's
# default: the sixth). The watch's statements are long (watch_host.sql: 10 KiB) and run once a check, so
# with the default a host's server parsed and planned them afresh for the first five checks: in the fleet
# bench (2000 hosts on two servers through PgBouncer) those cycles took 9-11 s, the later ones 2.3-2.8 s.
PREPARE_THRESHOLD = 1


class _FlushQueue(list[bytes | None]):
    """The deque operations psycopg's PrepareManager uses on its queue (append, clear, popleft), on a list."""

    def popleft(self) -> bytes | None:
        return self.pop(0)


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
    """A connection of its own to a monitored server, bounded like the held ones: ``connect_timeout``,
    libpq's TCP bounds (:func:`tcp_params`) and a client-side deadline of ``statement_timeout`` plus
    :data:`DEADLINE_MARGIN` on every statement (:class:`GuardedCursor`). For the short-lived connections
    outside the holders (relation names in another database, ``pgsessions check``)."""
    conn = GuardedConnection.connect(
        dsn, **connect_kwargs(connect_timeout, statement_timeout, application_name), **kwargs
    )
    conn.pgs_limit = statement_timeout + DEADLINE_MARGIN
    return conn


def configure(conn: GuardedConnection, statement_timeout: float) -> None:
    """The session settings of a connection the bot keeps: the server's own statement and lock timeouts,
    and an idle-in-transaction timeout in case the bot ever leaves one open."""
    conn.autocommit = True
    conn.pgs_limit = statement_timeout + DEADLINE_MARGIN
    ms = f"{int(statement_timeout * 1000)}ms"
    conn.execute(
        "SELECT set_config('statement_timeout', %s, false), "
        "set_config('lock_timeout', %s, false), "
        "set_config('idle_in_transaction_session_timeout', %s, false)",
        (ms, ms, "60s"),
    )


def open_configured(dsn: str, connect_timeout: float, statement_timeout: float) -> GuardedConnection:
    """A connection to keep: opened (bounded by ``connect_timeout``) and configured (bounded by the
    statement's deadline); closed again if configuring it fails. Its statements are prepared on the
    server from their second run (:data:`PREPARE_THRESHOLD`)."""
    conn = GuardedConnection.connect(dsn, **connect_kwargs(connect_timeout, statement_timeout),
                                     prepare_threshold=PREPARE_THRESHOLD)
    if conn._notifies_backlog is not None:
        # the bot never LISTENs on a monitored server, so it keeps no backlog of notifications: psycopg's
        # empty deque costs 0.6 KiB a connection, 2.4 MiB for a fleet's 4000 (issue 26). None is what
        # psycopg sets while its notifies() generator runs: a notification goes to the handlers (none)
        conn._notifies_backlog = None
    if type(conn._prepared._to_flush) is deque and not conn._prepared._to_flush:
        # psycopg's queue of prepared statements to deallocate: a deque takes 0.6 KiB even empty (a block of
        # 64 slots), and it stays empty unless more than prepared_max statements are prepared (the bot
        # has a few per connection). The same queue as a list, 2.3 MiB less for a fleet's 4000
        conn._prepared._to_flush = _FlushQueue()  # type: ignore[assignment]
    try:
        configure(conn, statement_timeout)
    except BaseException:
        discard(conn)
        raise
    return conn


def quiet(conn: psycopg.Connection) -> bool:
    """Whether an idle connection looks usable without a round trip: open, outside a transaction, and
    nothing arrived on its socket since it was last used (a server that ends a backend, restarts or shuts
    down sends an error and closes the socket first, which makes it readable). A zero-timeout poll, so no
    deadline applies; a backend that froze is cut by the statement's own deadline."""
    try:
        if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
            return False
        poller = select.poll()  # not select.select: a fleet's descriptors pass 1024
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False


def discard(conn: psycopg.Connection) -> None:
    try:
        conn.close()
    except Exception:  # it is being thrown away
        pass
