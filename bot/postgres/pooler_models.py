"""What a PgBouncer admin console said (issue 25): small, typed, frozen rows.

Kept apart from :mod:`bot.postgres.models` so that a listing's session can name the pooler's client
(:class:`PooledVia`) without the reads of :mod:`bot.postgres.pgbouncer` being imported there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

KILL_CLIENT_SINCE = (1, 24)  # KILL_CLIENT <id> and a stable client id (PgBouncer 1.24.0, January 2025)


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version) if version else "?"


def kill_client_refusal(version: tuple[int, ...]) -> str | None:
    """Why Disconnect client cannot be offered on this PgBouncer, or None."""
    if version >= KILL_CLIENT_SINCE:
        return None
    return (
        f"PgBouncer {version_text(version)} has no `KILL_CLIENT` (1.24 and newer): Disconnect client is not offered; "
        "Terminate of the server connection still is"
    )


@dataclass(frozen=True, slots=True)
class PoolerClient:
    """One row of ``SHOW CLIENTS``: a client connected to the pooler."""

    ptr: str
    id: int | None  # 1.24+: stable while the client is connected (pointers are reused)
    user: str
    database: str
    state: str
    addr: str | None
    port: int | None
    application: str
    connect_time: datetime | None
    wait_secs: float  # how long the client has waited for a server connection (0 when it has one)
    link: str  # ptr of the server connection linked to it now, "" when none


@dataclass(frozen=True, slots=True)
class PoolerServer:
    """One row of ``SHOW SERVERS``: a server connection the pooler holds."""

    ptr: str
    pid: int  # remote_pid: the backend's pid
    user: str
    database: str
    state: str
    local_port: int | None  # the pooler's side: pg_stat_activity.client_port
    link: str  # ptr of the client linked to it now, "" for a server idle in the pool
    application: str


@dataclass(frozen=True, slots=True)
class PoolStat:
    """One row of ``SHOW POOLS`` (with the pool size of ``SHOW DATABASES``)."""

    database: str
    user: str
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    sv_used: int
    maxwait_secs: float
    pool_mode: str
    pool_size: int | None

    @property
    def name(self) -> str:
        return f"{self.user}/{self.database}"


@dataclass(frozen=True, slots=True)
class PooledVia:
    """A server session opened by a pooler, and the client linked to it at the read (None: idle in the pool)."""

    pooler: str
    pool: str  # user/database
    pool_mode: str | None
    version: tuple[int, ...]
    client: PoolerClient | None
    read_at: datetime | None = None

    @property
    def kill_client_refusal(self) -> str | None:
        if self.client is None:
            return "no client is linked to this server connection"
        if self.client.id is None:
            return kill_client_refusal(self.version) or "this PgBouncer shows no client id"
        return kill_client_refusal(self.version)


@dataclass(frozen=True, slots=True)
class PoolerNote:
    """What a listing says about one pooler: its idle pool members per pool, or why it was not read."""

    name: str
    host: str
    version: tuple[int, ...] = ()
    idle_members: tuple[tuple[str, int], ...] = ()  # (pool, count), pools with members only
    error: str | None = None  # plain text: escaped where drawn
