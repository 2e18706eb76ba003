"""The watch's reads: one statement per server per check, shared by environments that reach it alike.

Several environments may name the same server with the same connection string and timeouts (the same
server, database and role, so the same rows are visible): a view of one cluster per team, or per access
rule. Their checks fire at the same instants, and each would send the same ``watch_host.sql``, whose
cost on the server grows with the number of backends (``pg_stat_activity`` copies every backend's entry).
Here a check joins a read of its server already in flight, or takes one that started less than
``reuse`` seconds ago (a quarter of the group's smallest ``check_every``, at most :data:`REUSE_MAX`),
instead of sending its own.

The shared read asks for what any environment of the group needs (the lowest thresholds, every kind
any of them watches, the longest query text): the statement sends a superset, and the rules in
:mod:`bot.watch.rules` decide per environment with its own thresholds, ``ignore`` rules and redaction.
The read goes through the pool of the group's first (environment, host), so a server costs one pool
and one connection however many environments name it (the database metrics of the read carry that
environment's labels). A failed read fails every check that shared it, with the same reason (each
check says it for its own environment). An environment alone on its server reads as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import dict_row

from bot.config import Environment
from bot.postgres.pools import Databases, DatabaseUnavailable, UnsupportedServer
from bot.postgres.redact import redact
from bot.postgres.sql import query
from bot.watch import rules
from bot.watch.model import HostSnapshot, snapshot_from_row

REUSE_MAX = 1.0  # seconds: the oldest read a check may take instead of its own
WAIT_MARGIN = 3.0  # seconds a check waits for a shared read beyond its timeouts (the read is bounded itself)

Params = dict[str, Any]


def read_params(environment: Environment) -> Params:
    """What ``watch_host.sql`` needs to send only the sessions one environment's rules may look at."""
    w = rules.effective_watch(environment)
    assert w is not None
    return {
        "query_chars": max(environment.listing.query_chars, 200),
        "idle_tx_secs": w.idle_in_transaction,
        "long_running_secs": w.long_running,
        "xmin_secs": w.xmin_horizon,
        "share": w.connections,
        "locks": w.lock_pileup is not None,
    }


def union_params(each: Iterable[Params]) -> Params:
    """One read that serves several environments: every kind any of them watches, the lowest threshold."""
    items = list(each)

    def lowest(key: str) -> float | None:
        values = [p[key] for p in items if p[key] is not None]
        return min(values) if values else None

    return {
        "query_chars": max(p["query_chars"] for p in items),
        "idle_tx_secs": lowest("idle_tx_secs"),
        "long_running_secs": lowest("long_running_secs"),
        "xmin_secs": lowest("xmin_secs"),
        "share": lowest("share"),
        "locks": any(p["locks"] for p in items),
    }


def read_row(dbs: Databases, env: str, host: str, params: Params) -> dict[str, Any]:
    """One read of one host: one statement (see watch_host.sql)."""
    with dbs.connection(env, host, op="watch") as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query("watch_host", conn), params)
            row = cur.fetchone()
    if row is None:  # the statement always returns one row
        raise DatabaseUnavailable(env, host, "the watch read returned nothing")
    return row


_DONE = threading.Event()  # what a finished read's ``done`` becomes: set, and one for all
_DONE.set()


@dataclass
class _Read:
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    row: dict[str, Any] | None = None
    taken_at: float = 0.0
    unavailable: str | None = None  # why the server could not be read
    unsupported: bool = False  # ... because its PostgreSQL is too old (UnsupportedServer)
    failed: BaseException | None = None


@dataclass(frozen=True)
class _Group:
    params: Params
    reuse: float
    wait: float
    via: tuple[str, str]  # the (environment, host) whose pool sends the group's reads: one pool per server


class SharedReads:
    """Reads for the watched (environment, host)s; see the module's docstring."""

    def __init__(self, dbs: Databases, envs: Mapping[str, Environment], hosts: Callable[[str], Iterable[str]]):
        self.dbs = dbs
        self.envs = envs
        members: dict[Any, list[tuple[str, str]]] = {}
        for env in envs:
            for host in hosts(env):
                members.setdefault(dbs.server_key(env, host), []).append((env, host))
        self._key: dict[tuple[str, str], Any] = {}
        self._groups: dict[Any, _Group] = {}
        for key, ms in members.items():
            everies = []
            for env, host in ms:
                self._key[(env, host)] = key
                w = rules.effective_watch(envs[env])
                assert w is not None
                everies.append(w.check_every)
            t = envs[ms[0][0]].timeouts
            self._groups[key] = _Group(
                params=union_params(read_params(envs[e]) for e, _ in ms),
                reuse=min(REUSE_MAX, min(everies) / 4),
                wait=t.connect + t.statement + WAIT_MARGIN,
                via=ms[0],
            )
        self._last: dict[Any, _Read] = {}
        self._lock = threading.Lock()
        self._sent: dict[Any, int] = {}  # statements sent per server (for tests and the bench)

    def sharing(self, env: str, host: str) -> int:
        """How many watched (environment, host)s share this one's reads."""
        key = self._key[(env, host)]
        return sum(1 for k in self._key.values() if k == key)

    def statements(self, env: str | None = None, host: str = "primary") -> int:
        """Reads sent to this (environment, host)'s server so far; to every server when ``env`` is None."""
        if env is None:
            return sum(self._sent.values())
        return self._sent.get(self._key[(env, host)], 0)

    def read(self, env: str, host: str) -> HostSnapshot:
        key = self._key[(env, host)]
        group = self._groups[key]
        now = time.monotonic()
        with self._lock:
            r = self._last.get(key)
            mine = r is None or (r.done.is_set() and now - r.started > group.reuse)
            if mine:
                r = self._last[key] = _Read(started=now)
                self._sent[key] = self._sent.get(key, 0) + 1
        assert r is not None
        if mine:
            try:
                r.row = read_row(self.dbs, *group.via, group.params)
                r.taken_at = time.time()
            except DatabaseUnavailable as exc:
                r.unavailable = exc.reason
                r.unsupported = isinstance(exc, UnsupportedServer)
            except Exception as exc:
                r.failed = exc
            finally:
                r.done.set()
                r.done = _DONE  # the last read of every server is kept: not its Event too (0.9 KiB, issue 26)
        elif not r.done.wait(group.wait):
            raise DatabaseUnavailable(env, host, f"not answering within {group.wait:g}s (a shared read of it)")
        if r.unavailable is not None:
            raise (UnsupportedServer if r.unsupported else DatabaseUnavailable)(env, host, r.unavailable)
        if r.failed is not None:
            raise RuntimeError(f"the shared read of {env}/{host} failed") from r.failed
        assert r.row is not None
        environment = self.envs[env]
        return snapshot_from_row(env, host, r.taken_at, r.row, redact if environment.redact_queries else None)
