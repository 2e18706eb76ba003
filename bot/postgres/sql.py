"""SQL lives in ``queries/*.sql`` beside this module and is loaded by name.

Values are always bound as parameters (``%(name)s``); nothing is ever formatted into SQL text.

One statement per file, written for the newest supported PostgreSQL. Where an older major version lacks
something a statement uses, an override file beside it serves the older range, the way pg_activity
picks its queries: ``<name>.pre<N>.sql`` is used on servers whose ``server_version_num`` is below ``N``
(e.g. ``lock_forest.pre140000.sql`` on PostgreSQL 13, which has no ``pg_locks.waitstart``). Among several
overrides of a name the one with the lowest ``N`` above the server's version wins. The version is the
one the server reported when the connection started (``conn.info.server_version``, libpq's
``PQserverVersion``: read once per connection, no round trip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeAlias

import psycopg
from psycopg import _queries as psycopg_queries

# a connection to a monitored server (rows as tuples unless a cursor asks for dicts)
Conn: TypeAlias = psycopg.Connection[Any]
# one row read with psycopg.rows.dict_row
Row: TypeAlias = dict[str, Any]

MIN_SERVER_VERSION = 130000  # the oldest PostgreSQL the bot supports (13)

# psycopg parses a statement's %(name)s placeholders once per text and caches the result, but only for
# texts up to 4 KiB (psycopg._queries.MAX_CACHED_STATEMENT_LENGTH). The watch's statements run on every
# check of every host and are longer (watch_host.sql: 10 KiB): parsing them again each time was a tenth
# of a check's CPU (issue 26). The texts are this package's own, a bounded set (the cache keeps 128).
MAX_STATEMENT_CHARS = 32 * 1024
if getattr(psycopg_queries, "MAX_CACHED_STATEMENT_LENGTH", MAX_STATEMENT_CHARS) < MAX_STATEMENT_CHARS:
    psycopg_queries.MAX_CACHED_STATEMENT_LENGTH = MAX_STATEMENT_CHARS
_OVERRIDE = re.compile(r"^(?P<name>[a-z0-9_]+)\.pre(?P<bound>\d{6})\.sql$")


@cache
def _text(filename: str) -> str:
    path = resources.files(__package__).joinpath("queries", filename)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no SQL file named {filename} in bot/postgres/queries") from None


@cache
def overrides() -> dict[str, tuple[int, ...]]:
    """Every statement that has older-version files, and their bounds (ascending)."""
    found: dict[str, list[int]] = {}
    for entry in resources.files(__package__).joinpath("queries").iterdir():
        m = _OVERRIDE.match(entry.name)
        if m:
            found.setdefault(m["name"], []).append(int(m["bound"]))
    return {name: tuple(sorted(bounds)) for name, bounds in found.items()}


def filename(name: str, server_version: int | None = None) -> str:
    """The file that serves ``name`` on a server of ``server_version`` (``server_version_num``; None: the
    newest)."""
    if server_version is not None:
        for bound in overrides().get(name, ()):
            if server_version < bound:
                return f"{name}.pre{bound}.sql"
    return f"{name}.sql"


def query(name: str, server: Conn | int | None = None) -> str:
    """The text of ``queries/<name>.sql``, or of its override for the server's version when ``server`` (a
    connection, or a ``server_version_num``) is given."""
    version = server if isinstance(server, int) or server is None else server.info.server_version
    return _text(filename(name, version))


@cache
def _bytes(filename: str) -> bytes:
    return _text(filename).encode("utf-8")


def statement(name: str, server: Conn | int | None = None) -> bytes:
    """:func:`query` as one ``bytes`` object per file, for a statement run without parameters.

    psycopg keys a connection's prepared statements on the bytes it sends. A ``str`` run without
    parameters is encoded afresh on every execute, and each connection keeps its own copy of the text
    (with parameters, psycopg's parse cache hands every connection one shared copy): the lag watcher's
    statements on 2000 held connections were 5 MiB of duplicates (issue 26). These bytes are shared."""
    version = server if isinstance(server, int) or server is None else server.info.server_version
    return _bytes(filename(name, version))


# --- what each version has ------------------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """What a server's major version enables in the bot (``pgsessions check`` lists it)."""

    server_version_num: int

    @property
    def lock_wait_start(self) -> bool:
        """``pg_locks.waitstart`` (14+); before, a lock wait is measured from the waiting query's start."""
        return self.server_version_num >= 140000

    @property
    def query_id(self) -> bool:
        """``pg_stat_activity.query_id`` (14+), shown in Details."""
        return self.server_version_num >= 140000

    @property
    def terminate_waits(self) -> bool:
        """``pg_terminate_backend(pid, timeout)`` (14+); before, the bot polls for the backend's exit."""
        return self.server_version_num >= 140000

    @property
    def reserved_connections(self) -> bool:
        """``reserved_connections`` / ``pg_use_reserved_connections`` (16+)."""
        return self.server_version_num >= 160000

    @property
    def signal_autovacuum_worker(self) -> bool:
        """The role ``pg_signal_autovacuum_worker`` (18+); before, only a superuser signals autovacuum."""
        return self.server_version_num >= 180000

    def described(self) -> list[tuple[str, bool, int, str]]:
        """(feature, present, the major version it came in, what it means here) for every feature."""
        return [
            ("lock wait start", self.lock_wait_start, 14,
             "lock waits timed from pg_locks.waitstart" if self.lock_wait_start
             else "no pg_locks.waitstart: a lock wait is timed from when the waiting query became active"),
            ("query_id", self.query_id, 14,
             "query_id in Details" if self.query_id else "no pg_stat_activity.query_id: Details shows none"),
            ("terminate with timeout", self.terminate_waits, 14,
             "Terminate waits for the exit with pg_terminate_backend(pid, timeout)" if self.terminate_waits
             else "no pg_terminate_backend(pid, timeout): Terminate polls for the backend's exit"),
            ("reserved connections", self.reserved_connections, 16,
             "reserved_connections / pg_use_reserved_connections" if self.reserved_connections
             else "no reserved_connections: only superusers have reserved slots"),
            ("pg_signal_autovacuum_worker", self.signal_autovacuum_worker, 18,
             "a role with pg_signal_autovacuum_worker may cancel autovacuum" if self.signal_autovacuum_worker
             else "no pg_signal_autovacuum_worker: only a superuser may cancel autovacuum"),
        ]

    def enabled(self) -> str:
        """``"enables lock wait start, query_id, ...; not pg_signal_autovacuum_worker (18+)"``"""
        found = self.described()
        have = [name for name, present, _, _ in found if present]
        lack = [f"{name} ({since}+)" for name, present, since, _ in found if not present]
        return "enables " + (", ".join(have) or "none of the newer features") + (
            f"; not {', '.join(lack)}" if lack else "")


def features(server: Conn | int) -> Features:
    return Features(server if isinstance(server, int) else server.info.server_version)


def version_text(server_version_num: int, server_version: str | None = None) -> str:
    """``"13.23"`` from the server's ``server_version`` (its first word), else from the number."""
    word = (server_version or "").split(" ")[0]
    if word:
        return word
    major, minor = divmod(server_version_num, 10000)
    if major >= 10:
        return f"{major}.{minor}"
    return f"{major}.{minor // 100}.{minor % 100}"  # 9.6.24 is 90624


def unsupported(server_version_num: int, server_version: str | None = None) -> str | None:
    """Why the bot refuses a server of this version (``"PostgreSQL 12.22 is not supported (13 or newer)"``),
    or None when it is supported."""
    if server_version_num >= MIN_SERVER_VERSION:
        return None
    return (f"PostgreSQL {version_text(server_version_num, server_version)} is not supported "
            f"({MIN_SERVER_VERSION // 10000} or newer)")


def unsupported_conn(conn: Conn) -> str | None:
    """:func:`unsupported` for the server behind ``conn`` (what it reported when the connection started).
    A version libpq does not know (0: a connection gone bad) refuses nothing: the next statement says why."""
    version = conn.info.server_version
    if not version:
        return None
    return unsupported(version, conn.info.parameter_status("server_version"))
