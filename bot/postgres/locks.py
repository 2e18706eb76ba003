"""Heavyweight locks: who waits for whom, described in words, and the blocking forest, root first.

The tree building is pure (:func:`build_forest`, :func:`blocker_levels`, :func:`behind`) and unit
tested; :func:`read_lock_graph` is the one read (``queries/lock_forest.sql``).

Edges come from ``pg_blocking_pids()``, which also names "soft" blockers: a conflicting request queued
ahead (an ``ALTER TABLE`` waiting for ``AccessExclusiveLock`` blocks every later reader of the table
although it holds nothing yet). Following the edges up from such a reader reaches the ALTER, then the
session whose lock the ALTER waits for: the root to act on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import dict_row

from bot.postgres.activity import _session
from bot.postgres.models import AUTOVACUUM_WORKER, CLIENT_BACKEND, Session
from bot.postgres.pools import Databases
from bot.postgres.sql import features, query

DDL_MODE = "AccessExclusiveLock"


@dataclass(frozen=True, slots=True)
class LockObject:
    """What a lock is on (the object columns of pg_locks), with the names the bot could read."""

    locktype: str
    database: int | None = None
    lock_db: str | None = None
    relation: int | None = None
    rel_name: str | None = None
    page: int | None = None
    tuple: int | None = None
    virtualxid: str | None = None
    transactionid: str | None = None
    classid: int | None = None
    objid: int | None = None
    objsubid: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], prefix: str = "") -> LockObject | None:
        locktype = row.get(prefix + "locktype")
        if locktype is None:
            return None
        return cls(**{f: row.get(prefix + f) for f in cls.__slots__})  # type: ignore[arg-type]

    def relation_words(self, name: Callable[[str], str] = str) -> str:
        if self.rel_name:
            return f"relation {name(self.rel_name)}"
        if self.relation is None:
            return "a relation"
        db = f" in database {name(self.lock_db)}" if self.lock_db else ""
        return f"relation {self.relation}{db} (name not readable from the bot's database)"

    def describe(self, name: Callable[[str], str] = str) -> str:
        """The object in words. ``name`` draws each name from the server (relation, database): a renderer
        passes ``bot.render.common.code``, and then escapes nothing else (the other words are the bot's,
        numbers and lock types)."""
        t = self.locktype
        if t == "relation":
            return self.relation_words(name)
        if t == "extend":
            return f"extending {self.relation_words(name)}"
        if t == "page":
            return f"page {self.page} of {self.relation_words(name)}"
        if t == "tuple":
            return f"row ({self.page},{self.tuple}) of {self.relation_words(name)}"
        if t == "transactionid":
            return f"transaction {self.transactionid}"
        if t == "virtualxid":
            return f"virtual transaction {self.virtualxid}"
        if t == "advisory":
            if self.objsubid == 1 and self.classid is not None and self.objid is not None:
                key = (self.classid << 32) | self.objid
                if key >= 1 << 63:
                    key -= 1 << 64
                return f"advisory lock key {key}"
            return f"advisory lock keys ({self.classid}, {self.objid})"
        if t == "object":
            return f"object {self.objid} of catalog {self.classid}"
        if t == "userlock":
            return f"user lock ({self.classid}, {self.objid})"
        return f"{t} lock"


@dataclass(frozen=True, slots=True)
class LockRef:
    mode: str
    granted: bool
    obj: LockObject
    wait_secs: float | None = None

    def describe(self) -> str:
        return f"{self.mode} on {self.obj.describe()}"


@dataclass(frozen=True, slots=True)
class Waiter:
    """A backend waiting for a lock: who blocks it (pg_blocking_pids), what it wants, for how long."""

    pid: int
    blocked_by: tuple[int, ...]
    wants: LockRef | None = None

    @property
    def wait_secs(self) -> float | None:
        return self.wants.wait_secs if self.wants else None


@dataclass(frozen=True, slots=True)
class Node:
    pid: int
    children: tuple[Node, ...] = ()


@dataclass(frozen=True, slots=True)
class DdlQueue:
    """An AccessExclusiveLock request queued behind a holder with ordinary queries piled up behind it."""

    pid: int  # the session asking for AccessExclusiveLock
    wants: LockRef
    behind: int  # sessions queued behind that request


@dataclass(frozen=True, slots=True)
class Tree:
    root: int
    direct: int
    total: int
    longest_wait: float | None
    children: tuple[Node, ...]
    ddl_queues: tuple[DdlQueue, ...] = ()

    def lines(self) -> list[tuple[int, int]]:
        """(depth, pid) of every node under the root, depth first, children in the tree's order."""
        out: list[tuple[int, int]] = []

        def walk(nodes: Iterable[Node], depth: int) -> None:
            for n in nodes:
                out.append((depth, n.pid))
                walk(n.children, depth + 1)

        walk(self.children, 1)
        return out


@dataclass(frozen=True)
class LockGraph:
    env: str
    host: str
    sessions: dict[int, Session]
    waits: dict[int, Waiter]
    holds_wanted: dict[int, tuple[LockRef, ...]] = field(default_factory=dict)
    read_at: datetime | None = None
    # the server has no pg_locks.waitstart (13): waits are timed from when the waiting query became active
    waits_from_query: bool = False


# ---- pure -------------------------------------------------------------------------------------------


def edges(waits: Mapping[int, Waiter]) -> dict[int, list[int]]:
    """blocker pid -> the pids it blocks directly (in pid order)."""
    out: dict[int, list[int]] = {}
    for pid in sorted(waits):
        for b in set(waits[pid].blocked_by):
            if b in out:
                out[b].append(pid)
            else:
                out[b] = [pid]
    return out


def behind(waits: Mapping[int, Waiter], pid: int) -> tuple[int, int, float | None]:
    """(waiting directly, waiting in total, longest wait in seconds) behind ``pid``."""
    e = edges(waits)
    direct = len(e.get(pid, ()))
    seen: set[int] = set()
    todo = list(e.get(pid, ()))
    while todo:
        p = todo.pop()
        if p in seen or p == pid:
            continue
        seen.add(p)
        todo.extend(e.get(p, ()))
    waits_s = [waits[p].wait_secs for p in seen if p in waits and waits[p].wait_secs is not None]
    return direct, len(seen), (max(waits_s) if waits_s else None)  # type: ignore[type-var]


def blocker_levels(waits: Mapping[int, Waiter], pid: int, max_levels: int = 20) -> list[tuple[int, ...]]:
    """Who blocks ``pid``: its direct blockers, theirs, ... up to the roots (no pid twice)."""
    levels: list[tuple[int, ...]] = []
    seen = {pid}
    current = [pid]
    while current and len(levels) < max_levels:
        nxt: list[int] = []
        for p in current:
            w = waits.get(p)
            for b in w.blocked_by if w else ():
                if b not in seen:
                    seen.add(b)
                    nxt.append(b)
        if not nxt:
            break
        levels.append(tuple(nxt))
        current = nxt
    return levels


def roots_of(waits: Mapping[int, Waiter], pid: int) -> tuple[int, ...]:
    """The roots above ``pid``: blockers in its chain that wait for no one."""
    out = []
    for level in blocker_levels(waits, pid):
        out += [p for p in level if not (waits.get(p) and waits[p].blocked_by)]
    return tuple(dict.fromkeys(out))


def build_forest(waits: Mapping[int, Waiter]) -> list[Tree]:
    """The blocking forest: one tree per root blocker, worst first (most waiting behind, then longest wait).

    A root blocks others and waits for no one. A waiter blocked by several sessions appears under the
    first one reached; it counts for every root above it. Sessions in a wait cycle (a deadlock not yet
    broken by the detector) get the lowest pid of the cycle as their root.
    """
    e = edges(waits)
    roots = [b for b in e if not (waits.get(b) and waits[b].blocked_by)]
    reached: set[int] = set()
    for r in roots:
        reached |= _descendants(e, r)
    for p in sorted(waits):  # cycles: nothing above them is a root
        if waits[p].blocked_by and p not in reached:
            roots.append(p)
            reached |= _descendants(e, p) | {p}
    trees = []
    for r in roots:
        seen = {r}
        children = _grow(e, r, seen)
        total = len(seen) - 1
        waits_s = [waits[p].wait_secs for p in seen - {r} if p in waits and waits[p].wait_secs is not None]
        ddl = tuple(
            DdlQueue(p, waits[p].wants, len(_descendants(e, p) - {p}))  # type: ignore[arg-type]
            for p in sorted(seen - {r})
            if p in waits and (w := waits[p].wants) is not None and w.mode == DDL_MODE and e.get(p)
        )
        trees.append(Tree(r, len(e.get(r, ())), total, max(waits_s) if waits_s else None, children, ddl))  # type: ignore[type-var]
    trees.sort(key=lambda t: (-t.total, -(t.longest_wait or 0.0), t.root))
    return trees


def _descendants(e: Mapping[int, list[int]], pid: int) -> set[int]:
    seen: set[int] = set()
    todo = list(e.get(pid, ()))
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(e.get(p, ()))
    return seen


def _grow(e: Mapping[int, list[int]], pid: int, seen: set[int]) -> tuple[Node, ...]:
    """Children of ``pid`` breadth first, so that a waiter sits under the nearest blocker reached first."""
    order: list[tuple[int, int]] = []  # (parent, child)
    queue = [pid]
    while queue:
        p = queue.pop(0)
        for c in e.get(p, ()):
            if c not in seen:
                seen.add(c)
                order.append((p, c))
                queue.append(c)
    kids: dict[int, list[int]] = {}
    for p, c in order:
        kids.setdefault(p, []).append(c)

    def make(p: int) -> tuple[Node, ...]:
        return tuple(Node(c, make(c)) for c in kids.get(p, ()))

    return make(pid)


# ---- reading ----------------------------------------------------------------------------------------


def _lock_ref(d: Mapping[str, Any], granted: bool = True) -> LockRef:
    return LockRef(d["mode"], granted, LockObject.from_row(d) or LockObject(str(d.get("locktype"))), d.get("wait_secs"))


def graph_from_rows(env: str, host: str, rows: list[dict[str, Any]], redact_queries: bool = False) -> LockGraph:
    sessions: dict[int, Session] = {}
    waits: dict[int, Waiter] = {}
    holds: dict[int, tuple[LockRef, ...]] = {}
    read_at = None
    for row in rows:
        pid = row["pid"]
        session = _session(row, redact_queries)
        kind = row.get("backend_type") or ""
        # an autovacuum worker has its own rule (Cancel only, never a wraparound run: cannot_signal_reason)
        if kind not in (CLIENT_BACKEND, AUTOVACUUM_WORKER) and session.cannot_signal is None:
            session = replace(
                session, cannot_signal=f"it is a {kind or 'server process'}, not a client session"
                + (" (replay on the standby)" if kind == "startup" else "")
            )
        sessions[pid] = session
        read_at = row.get("read_at") or read_at
        if row["blocked_by"]:
            obj = LockObject.from_row(row, "want_")
            wants = LockRef(row["want_mode"], False, obj, row.get("wait_secs")) if obj else None
            waits[pid] = Waiter(pid, tuple(row["blocked_by"]), wants)
        raw = row.get("holds_wanted")
        if isinstance(raw, str):
            raw = json.loads(raw)
        if raw:
            holds[pid] = tuple(_lock_ref(d) for d in raw)
    return LockGraph(env, host, sessions, waits, holds, read_at or datetime.now(UTC))


def read_lock_graph(dbs: Databases, env: str, host: str = "primary", query_chars: int = 600) -> LockGraph:
    environment = dbs.config.environments[env]
    with dbs.connection(env, host, op="lock_forest") as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query("lock_forest", conn), {"query_chars": query_chars})
            rows = cur.fetchall()
        from_query = not features(conn).lock_wait_start
    return replace(graph_from_rows(env, host, rows, environment.redact_queries), waits_from_query=from_query)
