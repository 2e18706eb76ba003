"""Small, typed, frozen rows read from PostgreSQL. Rendering and the workflow build on these."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    """Why a session needs attention, most urgent first (the order is the listing's rank)."""

    BLOCKING = "blocking"
    IDLE_TX = "idle-tx"
    LONG_RUNNING = "long-running"
    BLOCKED = "blocked"
    IDLE = "idle"

    @property
    def rank(self) -> int:
        return list(Category).index(self)

    @property
    def label(self) -> str:
        return {
            Category.BLOCKING: "blocking others",
            Category.IDLE_TX: "idle in transaction",
            Category.LONG_RUNNING: "long-running",
            Category.BLOCKED: "waiting on a lock",
            Category.IDLE: "idle",
        }[self]


def cannot_signal_reason(row: Mapping[str, Any]) -> str | None:
    """Why the bot's role may not cancel or terminate this backend, or None if it may.

    The one place this rule is written; every query that lists sessions returns its facts: the
    session's ``is_superuser`` and the bot's ``bot_is_super``, ``bot_can_signal`` (privileges of
    pg_signal_backend) and ``bot_has_privs`` (privileges of the session's role). It mirrors
    PostgreSQL 15's own check (has_privs_of_role, i.e. ``pg_has_role(..., 'USAGE')``): a NOINHERIT
    member of pg_signal_backend cannot signal. An unknown role (NULL) is not refused here; PostgreSQL
    still decides at signal time.
    """
    if row["bot_is_super"]:
        return None
    if row["is_superuser"]:
        return "superuser session (the bot's role is not a superuser)"
    if not row["bot_can_signal"] and row["bot_has_privs"] is False:
        return "the bot's role is not a member of pg_signal_backend"
    return None


# pg_stat_activity states in which a query is running: the only ones where Cancel does something
QUERY_RUNNING_STATES = ("active", "fastpath function call")


def runs_query(state: str | None) -> bool:
    return state in QUERY_RUNNING_STATES


@dataclass(frozen=True, slots=True)
class Session:
    pid: int
    backend_start: datetime
    user: str | None
    database: str | None
    application: str
    client_addr: str | None
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    query: str
    blocked_by: tuple[int, ...]
    blocking_count: int
    categories: tuple[Category, ...]
    query_secs: float | None
    xact_secs: float | None
    state_secs: float | None
    is_superuser: bool = False
    cannot_signal: str | None = None
    backend_xmin: str | None = None
    blocking_total: int | None = None  # for a root blocker: all sessions waiting behind it, directly or not
    longest_wait_secs: float | None = None  # the longest lock wait among them
    # Exact timestamps (microseconds) of what the session was doing when read: an approved signal is
    # bound to them (bot.postgres.signals), so a backend that moved on is not signalled.
    query_start: datetime | None = None
    xact_start: datetime | None = None
    state_change: datetime | None = None

    @property
    def category(self) -> Category:
        return self.categories[0]

    @property
    def is_idle_in_transaction(self) -> bool:
        return bool(self.state and self.state.startswith("idle in transaction"))

    @property
    def runs_query(self) -> bool:
        """A query is running (Cancel stops it); in every other state only Terminate does anything."""
        return runs_query(self.state)

    @property
    def duration(self) -> tuple[str, float | None]:
        """(what, seconds) that matters for this state: query time, idle-in-transaction time or idle time."""
        if self.state == "active":
            return "query", self.query_secs
        if self.is_idle_in_transaction:
            return "idle in transaction", self.state_secs
        if self.state == "idle":
            return "idle", self.state_secs
        return "state", self.state_secs

    @property
    def sort_key(self) -> tuple[int, int, float]:
        return (self.category.rank, -self.blocking_count, -(self.duration[1] or 0.0))


QUERY_HIDDEN = "query text not shown: only full members of this workspace see query texts"


def hide_query(s: Session) -> Session:
    """``s`` without its query text (for a guest or a person from another organisation)."""
    return dataclasses.replace(s, query=QUERY_HIDDEN) if s.query else s


@dataclass(frozen=True, slots=True)
class ServerInfo:
    server_version_num: int
    server_version: str
    max_connections: int
    client_connections: int
    in_recovery: bool
    bot_pid: int
    bot_user: str
    bot_is_superuser: bool
    bot_can_signal: bool
    bot_can_monitor: bool


@dataclass(frozen=True, slots=True)
class Filters:
    """What the user asked to see. Empty ``categories`` means every category."""

    categories: frozenset[str] = frozenset()
    min_seconds: float | None = None
    app: str | None = None
    user: str | None = None
    database: str | None = None

    def wants(self, name: str) -> bool:
        return not self.categories or name in self.categories

    def describe(self) -> str:
        parts = sorted(self.categories)
        if self.min_seconds is not None:
            from bot.durations import format_duration

            parts.append(f"--min {format_duration(self.min_seconds)}")
        for flag, value in (("--app", self.app), ("--user", self.user), ("--db", self.database)):
            if value is not None:
                parts.append(f"{flag} {value}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Listing:
    env: str
    host: str
    server: ServerInfo
    sessions: tuple[Session, ...]
    filters: Filters = field(default_factory=Filters)
    thresholds: dict[str, float] = field(default_factory=dict)
    read_at: datetime | None = None  # when pg_stat_activity was read
    # how long the database took to answer, and whether the server refused the bot a new connection
    # for lack of slots (the listing was then read through the bot's reserved connection)
    read_ms: float | None = None
    out_of_connections: bool = False
    ignored: int = 0  # sessions needing attention hidden by the environment's ``ignore`` rules

    def counts(self) -> dict[Category, int]:
        out = {c: 0 for c in Category}
        for s in self.sessions:
            for c in s.categories:
                out[c] += 1
        return out
