"""Replication lag on demand, for the lag tests and the lag bench.

Lag is made deterministic: the standby waits forever for conflicting queries
(``max_standby_streaming_delay = -1``), a standby session reads a table in an open transaction (it holds
ACCESS SHARE), the primary takes ACCESS EXCLUSIVE on that table (``ALTER TABLE ... ADD COLUMN``) and
keeps writing. The standby's startup process then waits on the lock ("Lock/relation") with WAL received
and not replayed, until the session lets go.

- :func:`lag_cluster` starts a primary + standby of the caller's own, set up for that; tests use
  :func:`lag_pair_or_skip` in a module-scoped ``pair`` fixture.
- :func:`hold_replay` does the stall and returns the standby session doing it (:class:`Stall`).
- :class:`SilentServer` / :func:`closed_port` stand in for standbys that never answer / refuse.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql as pgsql

from tests.harness.pgcluster import APP_DB, ClusterPair, start_pair
from tests.harness.waiting import wait_until

READER = "app_user"  # the role of the standby sessions that hold replay back
WRITES_TABLE = "lag_writes"  # what the primary writes to once the standby has stopped replaying


class NoLagPair(Exception):
    """The servers at hand cannot be made to lag (no standby, or external servers that are not ours)."""


@contextmanager
def lag_cluster(bindir: str | None = None, tools_bindir: str | None = None) -> Iterator[ClusterPair]:
    """A managed primary + hot standby of the caller's own, whose replay can be held back (from the server
    binaries in ``bindir``, default the machine's: see :func:`start_pair`)."""
    p = start_pair(bindir=bindir, tools_bindir=tools_bindir)
    try:
        if p.standby is None or p.external:
            raise NoLagPair("lag tests need a managed primary + standby")
        p.set_standby_delay("-1")
        if p.primary.connect().info.server_version >= 140000:
            p.primary.sql(pgsql.SQL("GRANT pg_read_all_data TO {}").format(pgsql.Identifier(READER)))
        else:  # no pg_read_all_data before 14: every table the tests create is readable by the reader
            for db in ("postgres", APP_DB):
                p.primary.sql(pgsql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT ON TABLES TO {}")
                              .format(pgsql.Identifier(READER)), dbname=db)
            p.wait_replayed()
        yield p
    finally:
        p.stop()


def lag_pair_or_skip() -> Iterator[ClusterPair]:
    """Body of a module-scoped ``pair`` fixture: ``yield from lag_pair_or_skip()``."""
    import pytest  # here, not at the top: the bench imports this module too

    try:
        with lag_cluster() as p:
            yield p
    except NoLagPair as exc:
        pytest.skip(str(exc))


@dataclass
class Stall:
    """A standby session holding replay back, and the primary's last write the standby replayed."""

    holder: psycopg.Connection
    marker: datetime  # commit time (on the primary) of the last write before replay stopped

    @property
    def pid(self) -> int:
        return self.holder.info.backend_pid

    def close(self) -> None:
        self.holder.close()


def primary_writes(pair: ClusterPair, n: int = 5, *, user: str | None = None, dbname: str | None = None) -> None:
    """``n`` small committed writes on the primary (WAL for the standby to receive)."""
    with pair.primary.connect(user=user, dbname=dbname) as conn:
        _ensure_writes_table(conn)
        for _ in range(n):
            conn.execute(pgsql.SQL("INSERT INTO {} DEFAULT VALUES").format(pgsql.Identifier(WRITES_TABLE)))


def _ensure_writes_table(conn: psycopg.Connection) -> None:
    conn.execute(pgsql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
    ).format(pgsql.Identifier(WRITES_TABLE)))


def hold_replay(
    pair: ClusterPair,
    table: str,
    *,
    application_name: str = "lag-holder",
    user: str = READER,
    owner: str | None = None,
    dbname: str | None = None,
    writes: int = 5,
) -> Stall:
    """Stop the standby's replay at ``table`` (which the standby must already have).

    A standby session of ``user`` reads ``table`` in an open transaction; the primary (as ``owner``, the
    admin by default) writes a marker row, adds a column to ``table`` and makes ``writes`` more writes.
    With ``max_standby_streaming_delay = -1`` the marker is the last transaction the standby replays.
    """
    ident = pgsql.Identifier(table)
    holder = pair.standby.connect(user=user, dbname=dbname, autocommit=False, application_name=application_name)
    try:
        holder.execute(pgsql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        writes_ident = pgsql.Identifier(WRITES_TABLE)
        with pair.primary.connect(user=owner, dbname=dbname) as conn:
            _ensure_writes_table(conn)
            marker = conn.execute(
                pgsql.SQL("INSERT INTO {} DEFAULT VALUES RETURNING at").format(writes_ident)
            ).fetchone()[0]
            column = pgsql.Identifier("extra_" + uuid.uuid4().hex[:6])
            conn.execute(pgsql.SQL("ALTER TABLE {} ADD COLUMN {} int").format(ident, column))
            for _ in range(writes):
                conn.execute(pgsql.SQL("INSERT INTO {} DEFAULT VALUES").format(writes_ident))
    except BaseException:
        holder.close()
        raise
    return Stall(holder=holder, marker=marker)


def startup_wait(pair: ClusterPair) -> str | None:
    """What the standby's startup process waits on ("Lock/relation" while replay is held at a lock)."""
    rows = pair.standby.sql(
        "SELECT wait_event_type || '/' || wait_event FROM pg_stat_activity WHERE backend_type = 'startup'"
    )
    return rows[0][0] if rows else None


def replay_stopped_at(pair: ClusterPair, timeout: float = 5) -> float:
    """When replay stopped, from the standby (epoch seconds): its last replayed commit, once the startup
    process waits on the lock with received WAL not yet replayed."""

    def behind():
        row = pair.standby.sql(
            "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())::float8, "
            "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint, "
            "(SELECT wait_event FROM pg_stat_activity WHERE backend_type = 'startup')"
        )[0]
        return row if row[1] and row[1] > 0 and row[2] == "relation" else None

    return float(wait_until(behind, timeout, "the standby stops replaying", every=0.005)[0])


class SilentServer:
    """A TCP port that accepts connections (the kernel completes the handshake) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
