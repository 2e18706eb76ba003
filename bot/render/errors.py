"""Domain errors drawn as Slack text: the facts an error carries, with every string from a server escaped
here (the domain's errors carry plain text only)."""

from __future__ import annotations

from bot.postgres.errors import DatabaseUnavailable, OutOfConnections, UnsupportedServer
from bot.render.common import code, esc


def target(env: str, host: str) -> str:
    """```prod` (primary)``, ```prod` standby `replica1```."""
    return f"{code(env)} (primary)" if host == "primary" else f"{code(env)} standby {code(host)}"


def who(env: str, host: str) -> str:
    """```prod```, ```prod` standby `replica1```: the subject of "is out of connections"."""
    return code(env) if host == "primary" else f"{code(env)} standby {code(host)}"


def unavailable(exc: DatabaseUnavailable) -> str:
    """What a person reads about a server that could not serve (mrkdwn): ```prod` (primary) is unavailable:
    connection refused``, ```prod` standby `r1` is out of connections: 137 of 137 in use (why)``, ```prod`
    (primary): PostgreSQL 12.22 is not supported (13 or newer)``."""
    if isinstance(exc, OutOfConnections):
        return f"{who(exc.env, exc.host)} is {esc(exc.reason)}{f' ({esc(exc.why)})' if exc.why else ''}"
    if isinstance(exc, UnsupportedServer):
        return f"{target(exc.env, exc.host)}: {esc(exc.reason)}"
    return f"{target(exc.env, exc.host)} is unavailable: {esc(exc.reason)}"
