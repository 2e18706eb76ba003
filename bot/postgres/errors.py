"""Why a call to a monitored server failed: :class:`DatabaseUnavailable` and its kinds, and
:func:`explain`, the short secret-free reason for a driver error. Plain text and facts only: the Slack
text is drawn by :mod:`bot.render.errors`."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import errors as pgerrors

from bot.postgres.deadline import NotAnswering
from bot.secrets import scrub


class DatabaseUnavailable(Exception):
    """The server could not be reached or did not answer in time.

    Carries plain text and facts only (``env``, ``host``, ``reason``: may quote the server): ``str()`` and
    :attr:`plain` are the sentence as plain text (logs, an outcome's detail, escaped where it is drawn);
    the Slack text is drawn by :func:`bot.render.errors.unavailable`, which escapes ``reason``."""

    def __init__(self, env: str, host: str, reason: str):
        self.env, self.host, self.reason = env, host, reason
        self.plain = f"{describe_target(env, host)} is unavailable: {reason}"
        super().__init__(self.plain)

    def __str__(self) -> str:
        return self.plain


class UnsupportedServer(DatabaseUnavailable):
    """The server answers, but runs a PostgreSQL older than the bot supports (13): refused, never called
    unreachable. ``reason`` is :func:`bot.postgres.sql.unsupported`'s sentence ("PostgreSQL 12.22 is not
    supported (13 or newer)")."""

    def __init__(self, env: str, host: str, reason: str):
        super().__init__(env, host, reason)
        self.plain = f"{describe_target(env, host)}: {reason}"
        self.args = (self.plain,)


class OutOfConnections(DatabaseUnavailable):
    """The server refused a new connection for lack of slots, and the reserved connection could not serve.
    ``usage``: (used, total) when known; ``why``: why the reserved connection could not serve (the bot's
    own words)."""

    def __init__(self, env: str, host: str, usage: tuple[int, int] | None, why: str | None = None):
        self.usage, self.why = usage, why
        super().__init__(env, host, out_of_connections_reason(usage))
        self.plain = f"{describe_who(env, host)} is {self.reason}{f' ({why})' if why else ''}"
        self.args = (self.plain,)


def out_of_connections_reason(usage: tuple[int, int] | None) -> str:
    """``"out of connections: 137 of 137 in use"``."""
    if usage is None:
        return "out of connections: every connection slot is taken"
    used, total = usage
    return f"out of connections: {used} of {total} in use"


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
    """``prod (primary)``, ``prod standby replica1`` (plain text: :mod:`bot.render.errors` draws the names
    in code spans)."""
    return f"{env} (primary)" if host == "primary" else f"{env} standby {host}"


def describe_who(env: str, host: str) -> str:
    """``prod``, ``prod standby replica1``: the subject of "is out of connections"."""
    return env if host == "primary" else f"{env} standby {host}"


def is_out_of_slots(exc: BaseException | None) -> bool:
    """True for PostgreSQL's refusals for lack of connection slots (SQLSTATE 53300)."""
    if exc is None:
        return False
    if isinstance(exc, pgerrors.TooManyConnections):
        return True
    low = str(exc).lower()
    return "too many clients already" in low or "remaining connection slots are reserved" in low


def explain(exc: BaseException, timeouts: tuple[float, float] | None = None) -> str:
    """A short, secret-free reason for a connection or query failure."""
    connect_t, statement_t = timeouts or (None, None)
    if isinstance(exc, NotAnswering):
        return f"not answering within {exc.seconds:g}s (the query was cancelled and its connection closed)"
    if isinstance(exc, pgerrors.QueryCanceled):
        if statement_t:
            return f"the query did not finish within the {statement_t:g}s statement timeout"
        return "the query was cancelled"
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return f"permission denied ({scrub(str(exc).splitlines()[0])})"
    if isinstance(exc, pgerrors.AdminShutdown | pgerrors.CrashShutdown):
        return "the server is shutting down or restarted"
    if is_out_of_slots(exc):
        return "out of connections: the server refused a new connection (every slot is taken)"
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
