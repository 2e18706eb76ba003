"""Names of relations in databases the bot is not connected to.

pg_locks gives a relation as (database oid, relation oid); ``::regclass`` names it only in the database
the query runs in. A session on a standby (or the primary) usually works in another database than the
one in the bot's DSN, so its locks would read "relation 16405". :func:`resolve` looks the names up
through a short-lived connection to the session's own database on the same host, bounded like every
other connection to a monitored server (:func:`bot.postgres.pools.connect_bounded`), and remembers them per (environment, host, database)
for :data:`TTL_S` (failures for :data:`FAILURE_TTL_S`, so a database the bot cannot enter does not slow
every check). What it cannot name reads "relation 16405 in appdb (name not readable)".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from bot.config import Config
from bot.postgres.pools import connect_bounded
from bot.postgres.sql import query

log = logging.getLogger(__name__)

TTL_S = 300.0
FAILURE_TTL_S = 60.0
MAX_DATABASES = 4  # per call: a check never opens more connections than this
MAX_CACHED = 256  # (env, host, db) entries kept

_cache: dict[tuple[str, str, str, str], tuple[float, dict[int, str] | None]] = {}
_lock = threading.Lock()


def unreadable(oid: int, database: str) -> str:
    return f"relation {oid} in {database} (name not readable)"


def _lookup(config: Config, env: str, host: str, database: str, oids: list[int]) -> dict[int, str] | None:
    environment = config.environments[env]
    ct, st = environment.timeouts.connect, environment.timeouts.statement
    dsn = make_conninfo(environment.hosts()[host], dbname=database,
                        options=f"-c statement_timeout={int(st * 1000)}")
    try:
        # bounded like every other call to a monitored server: a frozen backend costs a deadline
        with connect_bounded(dsn, ct, st) as conn:
            rows = conn.execute(query("relation_names", conn), {"oids": oids}).fetchall()
    except psycopg.Error as exc:
        log.info("relation names in %s/%s database %r not readable: %s", env, host, database, type(exc).__name__)
        return None
    return {int(oid): name for oid, name in rows}


def resolve(config: Config, env: str, host: str, wanted: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """``{(database, oid): name}`` for every wanted relation; unreadable ones get :func:`unreadable`."""
    by_db: dict[str, set[int]] = {}
    for database, oid in wanted:
        by_db.setdefault(database, set()).add(int(oid))
    dsn_key = config.environments[env].hosts()[host]
    out: dict[tuple[str, int], str] = {}
    opened = 0
    now = time.monotonic()
    for database, oids in by_db.items():
        key = (env, host, dsn_key, database)
        with _lock:
            hit = _cache.get(key)
        names: dict[int, str] | None = None
        if hit is not None and hit[0] > now and (hit[1] is None or oids <= hit[1].keys()):
            names = hit[1]
        elif opened < MAX_DATABASES:
            opened += 1
            found = _lookup(config, env, host, database, sorted(oids))
            with _lock:
                if len(_cache) >= MAX_CACHED:
                    _cache.clear()
                if found is None:
                    _cache[key] = (now + FAILURE_TTL_S, None)
                else:
                    merged = {**(hit[1] if hit and hit[1] else {}), **found}
                    _cache[key] = (now + TTL_S, merged)
                    found = merged
            names = found
        for oid in oids:
            name = (names or {}).get(oid)
            out[(database, oid)] = name if name else unreadable(oid, database)
    return out


def name_lock_objects(config: Config, env: str, host: str, rows: list[dict[str, Any]]) -> None:
    """Replace the placeholders lag_culprits.sql writes for relations of other databases
    (``relation 16405 in database appdb``) in each row's ``lock_objects`` by their names."""
    wanted = [
        (r["database"], int(r["oid"]))
        for row in rows
        for r in (row.get("foreign_relations") or ())
        if r.get("database") and r.get("oid") is not None
    ]
    if not wanted:
        return
    names = resolve(config, env, host, wanted)
    for row in rows:
        text = row.get("lock_objects")
        if not text:
            continue
        keys = [(r.get("database"), int(r.get("oid") or 0)) for r in row.get("foreign_relations") or ()]
        for key in sorted(keys, key=lambda k: -len(k[0] or "")):  # 'appdb2' before 'appdb'
            if key in names:
                text = text.replace(f"relation {key[1]} in database {key[0]}", names[key])
        row["lock_objects"] = text


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def cached(env: str, host: str, database: str) -> Mapping[int, str] | None:
    """What is cached for a database (tests)."""
    with _lock:
        for (e, h, _, d), (_, names) in _cache.items():
            if (e, h, d) == (env, host, database):
                return names
    return None
