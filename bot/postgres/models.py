"""Small, typed, frozen rows read from PostgreSQL. Rendering and the workflow build on these."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.durations import format_duration
from bot.postgres.pooler_models import PooledVia, PoolerNote


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


CLIENT_BACKEND = "client backend"
AUTOVACUUM_WORKER = "autovacuum worker"
WRAPAROUND_MARK = "(to prevent wraparound)"  # pg_stat_activity.query of an anti-wraparound autovacuum run

# The superuser roles managed services keep for themselves: their sessions are superuser sessions that
# the customer's roles (never superuser there) cannot signal.
PROVIDER_ROLES = {"rdsadmin": "RDS/Aurora", "cloudsqladmin": "Cloud SQL", "azuresu": "Azure"}


def superuser_session_reason(user: str | None) -> str:
    """Why a superuser's session cannot be signalled by a non-superuser role, naming the provider when
    the session is a managed service's own (plain text: escaped where drawn). The one place this text
    is written; the access policy may call it for sessions it protects."""
    provider = PROVIDER_ROLES.get(user or "")
    if provider:
        return f"superuser session of the provider ({user}, {provider}): cannot be signalled by a non-superuser role"
    return "superuser session (the bot's role is not a superuser)"


def is_wraparound_run(query: str | None) -> bool:
    return WRAPAROUND_MARK in (query or "")


def autovacuum_reason(row: Mapping[str, Any]) -> str | None:
    """Why the bot may not cancel this autovacuum worker, or None. Terminate is never offered for one.

    ``bot_can_signal_autovacuum`` is the bot's privilege of ``pg_signal_autovacuum_worker`` (NULL
    before PostgreSQL 18, where the role does not exist and only a superuser may signal a worker)."""
    query = row.get("query")
    if query is None or query.startswith("<insufficient privilege>"):
        return "an autovacuum worker the bot's role cannot read (it needs pg_read_all_stats)"
    if is_wraparound_run(query):
        return ("an autovacuum run to prevent wraparound: it is not cancelled, because it restarts at once "
                "and must finish (it protects the database from transaction ID wraparound)")
    if row.get("bot_is_super") or row.get("bot_can_signal_autovacuum"):
        return None
    if row.get("bot_can_signal_autovacuum") is None:
        return ("cancelling an autovacuum worker needs a superuser bot role here: the grant "
                "pg_signal_autovacuum_worker exists from PostgreSQL 18 on")
    return "cancelling an autovacuum worker needs pg_signal_autovacuum_worker, which the bot's role lacks"


def cannot_signal_reason(row: Mapping[str, Any]) -> str | None:
    """Why the bot's role may not cancel or terminate this backend, or None if it may.

    The one place this rule is written; every query that lists sessions returns its facts: the
    session's ``is_superuser`` and the bot's ``bot_is_super``, ``bot_can_signal`` (privileges of
    pg_signal_backend) and ``bot_has_privs`` (privileges of the session's role); for an autovacuum
    worker (``backend_type``) also its ``query`` and ``bot_can_signal_autovacuum``
    (:func:`autovacuum_reason`). It mirrors PostgreSQL's own check (has_privs_of_role, i.e.
    ``pg_has_role(..., 'USAGE')``): a NOINHERIT member of pg_signal_backend cannot signal. An unknown
    role (NULL) is not refused here; PostgreSQL still decides at signal time.
    """
    if row.get("backend_type") == AUTOVACUUM_WORKER:
        return autovacuum_reason(row)
    if row["bot_is_super"]:
        return None
    if row["is_superuser"]:
        return superuser_session_reason(row.get("usename"))
    if not row["bot_can_signal"] and row["bot_has_privs"] is False:
        return "the bot's role is not a member of pg_signal_backend"
    return None


# pg_stat_activity states in which a query is running: the only ones where Cancel does something
QUERY_RUNNING_STATES = ("active", "fastpath function call")


def runs_query(state: str | None) -> bool:
    return state in QUERY_RUNNING_STATES


def iso(when: datetime | None) -> str | None:
    """Full microsecond precision: a millisecond-rounded backend_start never matches."""
    return when.isoformat(timespec="microseconds") if when is not None else None


def _datetime(value: Any) -> datetime | None:
    """A timestamp as psycopg returns it, or as ISO text (the watch's statements return JSON)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class Session:
    """One backend as a statement on ``pg_stat_activity`` read it: THE session type of the bot.

    The listing, Details, the lock tree, the lag watcher's culprits and every watch alert hold this one
    type, built by :meth:`from_row` (the columns a statement does not return stay at their defaults);
    a button token stores the snapshot :func:`bot.approval.targets.session_snapshot` makes of it."""

    pid: int
    # None only for a backend the bot's role may not read (pg_read_all_stats): the watch still sees it
    # as the blocker of a lock waiter, and offers no button for it
    backend_start: datetime | None
    user: str | None
    database: str | None
    application: str
    client_addr: str | None
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    query: str
    blocked_by: tuple[int, ...] = ()
    blocking_count: int = 0
    categories: tuple[Category, ...] = ()  # why it needs attention, most urgent first (never empty once read)
    query_secs: float | None = None
    xact_secs: float | None = None
    state_secs: float | None = None
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
    # the client's port as PostgreSQL sees it, and the pooler that opened this session with the client
    # linked to it now (issue 25; None for a direct connection or without poolers configured)
    client_port: int | None = None
    via: PooledVia | None = None
    # "client backend", "autovacuum worker" (shown when it blocks others), any other process in the lock
    # tree and Details; None: not readable by the bot's role
    backend_type: str | None = CLIENT_BACKEND
    # the lock it waits for (the watch's pile-ups): mode, lock type, relation name, for how long
    wait_mode: str | None = None
    wait_locktype: str | None = None
    wait_relation: str | None = None
    wait_secs: float | None = None
    # transaction ids: its own (backend_xid) and its snapshot's (backend_xmin), and their ages in
    # transactions (the xmin horizon, wraparound, the lag watcher's snapshot conflicts, Details)
    backend_xid: str | None = None
    xid_age: int | None = None
    xmin_age: int | None = None
    # Details only: what the one-session read adds (backend_secs: clear-db's too, how long it is connected)
    query_id: int | None = None
    client_hostname: str | None = None
    backend_secs: float | None = None
    # one of the bot's own connections (clear-db never terminates them; Details offers no button)
    is_bot: bool = False

    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        categories: Iterable[Category] = (),
        *,
        blocking_count: int | None = None,
        redact: Callable[[str], str] | None = None,
        signal_facts: Mapping[str, Any] | None = None,
    ) -> Session:
        """The one way a row of a statement on ``pg_stat_activity`` becomes a :class:`Session`.

        Columns keep ``pg_stat_activity``'s names (``usename``, ``datname``, ``application_name``, ...);
        one the statement does not return keeps the field's default; timestamps may be ISO text.
        ``categories`` are the reader's (each read has its own rule); ``blocking_count`` overrides the
        row's; ``redact`` is applied to the query text shown (``cannot_signal`` is decided on the text as
        read); ``signal_facts`` adds the bot's facts :func:`cannot_signal_reason` needs when the statement
        returns them once, not on every row."""
        facts = {**row, **signal_facts} if signal_facts else row
        query = row.get("query") or ""
        return cls(
            pid=int(row["pid"]),
            backend_start=_datetime(row.get("backend_start")),
            user=row.get("usename"),
            database=row.get("datname"),
            application=row.get("application_name") or "",
            client_addr=row.get("client_addr"),
            state=row.get("state"),
            wait_event_type=row.get("wait_event_type"),
            wait_event=row.get("wait_event"),
            query=redact(query) if redact is not None else query,
            blocked_by=tuple(int(p) for p in row.get("blocked_by") or ()),
            blocking_count=int(row.get("blocking_count") or 0) if blocking_count is None else blocking_count,
            categories=tuple(categories),
            query_secs=row.get("query_secs"),
            xact_secs=row.get("xact_secs"),
            state_secs=row.get("state_secs"),
            is_superuser=bool(facts.get("is_superuser")),
            cannot_signal=cannot_signal_reason(facts),
            backend_xmin=row.get("backend_xmin"),
            blocking_total=row.get("blocking_total"),
            longest_wait_secs=row.get("longest_wait_secs"),
            query_start=_datetime(row.get("query_start")),
            xact_start=_datetime(row.get("xact_start")),
            state_change=_datetime(row.get("state_change")),
            client_port=row.get("client_port"),
            backend_type=row.get("backend_type"),
            wait_mode=row.get("wait_mode"),
            wait_locktype=row.get("wait_locktype"),
            wait_relation=row.get("wait_relation"),
            wait_secs=row.get("wait_secs"),
            backend_xid=row.get("backend_xid"),
            xid_age=row.get("xid_age"),
            xmin_age=row.get("xmin_age"),
            query_id=row.get("query_id"),
            client_hostname=row.get("client_hostname"),
            backend_secs=row.get("backend_secs"),
            is_bot=bool(row.get("is_bot")),
        )

    @property
    def started(self) -> datetime:
        """``backend_start`` where a read guarantees one (every read but the watch's lock blockers and
        the lock tree's server processes); a session without one raises."""
        if self.backend_start is None:
            raise ValueError(f"session {self.pid} has no backend_start")
        return self.backend_start

    @property
    def key(self) -> str:
        """Identity across reads: pids are reused, (pid, backend_start) are not."""
        return f"{self.pid}@{iso(self.backend_start)}"

    @property
    def is_client(self) -> bool:
        return self.backend_type == CLIENT_BACKEND

    @property
    def horizon_age(self) -> int | None:
        """How many transactions old the oldest of its xid and snapshot is (what holds the horizon back)."""
        ages = [a for a in (self.xmin_age, self.xid_age) if a is not None]
        return max(ages) if ages else None

    @property
    def is_autovacuum(self) -> bool:
        return self.backend_type == AUTOVACUUM_WORKER

    @property
    def is_wraparound_run(self) -> bool:
        return self.is_autovacuum and is_wraparound_run(self.query)

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
        if runs_query(self.state):
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
    bot_can_read_stats: bool = False  # privileges of pg_read_all_stats (pg_monitor includes them)
    bot_can_signal_autovacuum: bool | None = None  # pg_signal_autovacuum_worker (PostgreSQL 18+; None: no such role)


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
    poolers: tuple[PoolerNote, ...] = ()  # the host's poolers: idle pool members per pool, or why unread

    def counts(self) -> dict[Category, int]:
        out = {c: 0 for c in Category}
        for s in self.sessions:
            for c in s.categories:
                out[c] += 1
        return out
