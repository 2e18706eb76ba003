"""The engine of the bot's own database: SQLite (a private file, WAL, writers serialise at ``BEGIN
IMMEDIATE``) or PostgreSQL (bounded connections, errors that keep only the server's primary message).
Used by :class:`bot.state.store.StateStore`; no statement on the bot's records is here."""

from __future__ import annotations

import os
import secrets as pysecrets
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

# Bounds on every PostgreSQL state connection (libpq keywords), so that a hung or unreachable state
# server costs bounded time; a value given in the state URL wins.
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "tcp_user_timeout": 10_000,  # ms without an ACK before the kernel drops the connection
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
PG_STATEMENT_TIMEOUT_MS = 5000
# A replica paused (SIGSTOP, a VM freeze) inside a state transaction would hold its row locks (a lease
# row: bot/fleet/) until it resumes; the server ends such a session after this long idle in it. The
# bot's transactions never wait on anything but the state store itself.
PG_IDLE_IN_TRANSACTION_MS = 15000

def new_id(nbytes: int = 12) -> str:
    return pysecrets.token_urlsafe(nbytes)


def _engine_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_path(url: str) -> str | None:
    """The file behind a ``sqlite:///`` URL; None for an in-memory database."""
    db = make_url(url).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return db


def _create_private_file(path: str) -> None:
    """Create the SQLite file readable only by its owner before SQLite does (with the umask's mode).

    SQLite gives the -wal and -shm files the permissions of the database file.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)  # whatever the umask


def _pg_connect_args(url: str) -> dict[str, Any]:
    query = make_url(url).query
    args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in query}
    args["application_name"] = query.get("application_name", "pgsessions-state")
    timeout = (f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS} "
               f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_MS}")
    given = query.get("options")
    if isinstance(given, tuple):
        given = " ".join(given)
    if given and "statement_timeout" in given:
        args["options"] = given
    else:
        args["options"] = f"{given} {timeout}" if given else timeout
    return args


def _server_message_only(ctx: Any) -> None:
    """Keep only the server's primary message in a state error: its DETAIL/HINT/CONTEXT lines can quote
    the row (``Key (token)=(...) already exists``, ``Failing row contains (...)``), i.e. the values that
    ``hide_parameters`` keeps out of the SQLAlchemy message. The fields stay readable in ``orig.diag``."""
    orig = ctx.original_exception
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary or not orig.args or str(orig.args[0]) == primary:
        return
    orig.args = (primary,)
    exc = ctx.sqlalchemy_exception
    if exc is not None and exc.args:
        exc.args = (f"({orig.__class__.__module__}.{orig.__class__.__name__}) {primary}",) + tuple(exc.args[1:])


def create_state_engine(url: str) -> Engine:
    """The engine for ``url`` (``sqlite:///file`` or ``postgresql://...``), with its connection hooks."""
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            _create_private_file(path)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_pre_ping=False,
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - wiring
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:  # pragma: no cover - wiring
            # Writers serialise at BEGIN (no deadlock upgrading a read lock); readers take no lock:
            # in WAL mode a deferred read transaction never waits for a writer.
            if conn.get_execution_options().get("pgs_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

    else:
        engine = create_engine(
            _engine_url(url),
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            pool_timeout=10,
            hide_parameters=True,
            connect_args=_pg_connect_args(url),
        )

    event.listen(engine, "handle_error", _server_message_only)
    return engine


class StoreClosed(RuntimeError):
    """The state store was closed (the bot is stopping): nothing may open a connection to it again."""

    def __init__(self) -> None:
        super().__init__("the state store is closed: the bot is stopping")


class ClosingGate:
    """Refuses every new connection of ``engine`` once shut. A job still running when the bot stops (the
    scheduler does not wait for a hung host) must not open the store again after it was closed: on SQLite
    that recreates its files under a directory being removed. Every connection, the gateways' plain
    ``engine.connect()`` included, passes here."""

    def __init__(self, engine: Engine) -> None:
        self.shut = False
        event.listen(engine, "do_connect", self._refuse_when_shut)

    def _refuse_when_shut(self, *_args: object) -> None:
        if self.shut:
            raise StoreClosed()
