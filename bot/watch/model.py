"""What one watch check of one host saw: frozen rows built from ``watch_host.sql``'s single row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.postgres.models import AUTOVACUUM_WORKER, CLIENT_BACKEND, Category, Session, cannot_signal_reason

# incident kinds (the state store's ``kind`` column holds at most 16 characters)
LOCK_PILEUP = "lock_pileup"
IDLE_TX = "idle_in_tx"
LONG_RUNNING = "long_running"
CONNECTIONS = "connections"
XMIN_HORIZON = "xmin_horizon"
WAL_RECEIVER = "wal_receiver"  # a standby that does not stream (never "behind", so no lag alert)
HOST_UNREACHABLE = "host_unreachable"  # a primary (or a standby no lag watcher checks) that cannot be read
POOL_WAITING = "pool_waiting"  # clients waiting in a PgBouncer pool (issue 25, bot/watch/pool_rules.py)
WRAPAROUND = "wraparound"  # transaction ID wraparound nears (bot.watch.wraparound)
KINDS = (LOCK_PILEUP, IDLE_TX, LONG_RUNNING, CONNECTIONS, XMIN_HORIZON, WAL_RECEIVER, HOST_UNREACHABLE, POOL_WAITING,
         WRAPAROUND)


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="microseconds") if when is not None else None


@dataclass(frozen=True, slots=True)
class WatchSession:
    pid: int
    backend_start: datetime | None
    backend_type: str | None
    user: str | None
    database: str | None
    application: str
    client_addr: str | None
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    query: str
    blocked_by: tuple[int, ...] = ()
    wait_mode: str | None = None
    wait_locktype: str | None = None
    wait_relation: str | None = None
    wait_secs: float | None = None
    query_secs: float | None = None
    xact_secs: float | None = None
    state_secs: float | None = None
    state_change: datetime | None = None
    query_start: datetime | None = None
    xact_start: datetime | None = None
    backend_xmin: str | None = None
    xmin_age: int | None = None
    xid_age: int | None = None
    is_superuser: bool = False
    cannot_signal: str | None = None

    @property
    def key(self) -> str:
        return f"{self.pid}@{iso(self.backend_start)}"

    @property
    def is_client(self) -> bool:
        return self.backend_type == "client backend"

    @property
    def is_idle_in_transaction(self) -> bool:
        return bool(self.state and self.state.startswith("idle in transaction"))

    @property
    def is_autovacuum(self) -> bool:
        return self.backend_type == AUTOVACUUM_WORKER

    @property
    def horizon_age(self) -> int | None:
        ages = [a for a in (self.xmin_age, self.xid_age) if a is not None]
        return max(ages) if ages else None

    def as_session(self, category: Category | None = None) -> Session:
        """The listing's Session (for button tokens and their snapshot)."""
        cats: list[Category] = [category] if category else []
        if not cats:
            if self.is_idle_in_transaction:
                cats.append(Category.IDLE_TX)
            elif self.state == "active":
                cats.append(Category.LONG_RUNNING)
            else:
                cats.append(Category.BLOCKING)
        assert self.backend_start is not None
        return Session(
            pid=self.pid, backend_start=self.backend_start, user=self.user, database=self.database,
            application=self.application, client_addr=self.client_addr, state=self.state,
            wait_event_type=self.wait_event_type, wait_event=self.wait_event, query=self.query,
            blocked_by=self.blocked_by, blocking_count=0, categories=tuple(cats), query_secs=self.query_secs,
            xact_secs=self.xact_secs, state_secs=self.state_secs, is_superuser=self.is_superuser,
            cannot_signal=self.cannot_signal, backend_xmin=self.backend_xmin,
            # the approval is bound to what the alert showed (bot.postgres.signals)
            query_start=self.query_start, xact_start=self.xact_start, state_change=self.state_change,
            backend_type=self.backend_type or CLIENT_BACKEND,
        )

    def facts(self) -> dict:
        """JSON-able, for incident payloads and renderers."""
        return {
            "pid": self.pid, "backend_start": iso(self.backend_start), "user": self.user,
            "database": self.database, "application": self.application, "client_addr": self.client_addr,
            "state": self.state, "query": self.query, "query_secs": self.query_secs,
            "xact_secs": self.xact_secs, "state_secs": self.state_secs, "wait_secs": self.wait_secs,
            "wait_mode": self.wait_mode, "wait_relation": self.wait_relation,
            "cannot_signal": self.cannot_signal, "backend_type": self.backend_type,
        }


@dataclass(frozen=True, slots=True)
class Held:
    pid: int
    mode: str
    locktype: str
    relation: str | None


@dataclass(frozen=True)
class HostSnapshot:
    env: str
    host: str
    taken_at: float
    in_recovery: bool
    max_connections: int
    superuser_reserved: int
    client_connections: int
    sessions: tuple[WatchSession, ...]
    held: tuple[Held, ...] = ()
    prepared: tuple[dict, ...] = ()
    slots: tuple[dict, ...] = ()
    feedback: tuple[dict, ...] = ()
    # client connections by application / user / state (top 5 each), read only while the share is crossed;
    # None: count them from ``sessions`` (then every client session must be in it)
    breakdown: dict | None = None
    receiver_status: str | None = None  # pg_stat_wal_receiver.status on a standby (None: no receiver)
    receiver_silent_secs: float | None = None
    extra: dict = field(default_factory=dict)


def session_from_row(row: dict, bot_is_super: bool, bot_can_signal: bool, redact=None,
                     bot_can_signal_autovacuum: bool | None = None) -> WatchSession:
    query = row.get("query") or ""
    facts = {
        "bot_is_super": bot_is_super, "bot_can_signal": bot_can_signal,
        "bot_can_signal_autovacuum": bot_can_signal_autovacuum,
        "is_superuser": bool(row.get("is_superuser")), "bot_has_privs": row.get("bot_has_privs"),
        "backend_type": row.get("backend_type"), "usename": row.get("usename"), "query": row.get("query"),
    }
    if redact is not None:
        query = redact(query)
    return WatchSession(
        pid=int(row["pid"]),
        backend_start=_dt(row.get("backend_start")),
        backend_type=row.get("backend_type"),
        user=row.get("usename"),
        database=row.get("datname"),
        application=row.get("application_name") or "",
        client_addr=row.get("client_addr"),
        state=row.get("state"),
        wait_event_type=row.get("wait_event_type"),
        wait_event=row.get("wait_event"),
        query=query,
        blocked_by=tuple(int(p) for p in row.get("blocked_by") or ()),
        wait_mode=row.get("wait_mode"),
        wait_locktype=row.get("wait_locktype"),
        wait_relation=row.get("wait_relation"),
        wait_secs=row.get("wait_secs"),
        query_secs=row.get("query_secs"),
        xact_secs=row.get("xact_secs"),
        state_secs=row.get("state_secs"),
        state_change=_dt(row.get("state_change")),
        query_start=_dt(row.get("query_start")),
        xact_start=_dt(row.get("xact_start")),
        backend_xmin=row.get("backend_xmin"),
        xmin_age=row.get("xmin_age"),
        xid_age=row.get("xid_age"),
        is_superuser=bool(row.get("is_superuser")),
        cannot_signal=cannot_signal_reason(facts),
    )


def snapshot_from_row(env: str, host: str, taken_at: float, row: dict, redact=None) -> HostSnapshot:
    sup, sig = bool(row["bot_is_super"]), bool(row["bot_can_signal"])
    av = row.get("bot_can_signal_autovacuum")
    return HostSnapshot(
        env=env,
        host=host,
        taken_at=taken_at,
        in_recovery=bool(row["in_recovery"]),
        max_connections=int(row["max_connections"]),
        superuser_reserved=int(row["superuser_reserved"]),
        client_connections=int(row["client_connections"]),
        sessions=tuple(session_from_row(r, sup, sig, redact, av) for r in row.get("sessions") or ()),
        held=tuple(
            Held(int(h["pid"]), h.get("mode") or "?", h.get("locktype") or "?", h.get("relname"))
            for h in row.get("held") or ()
        ),
        prepared=tuple(row.get("prepared") or ()),
        slots=tuple(row.get("slots") or ()),
        feedback=tuple(row.get("feedback") or ()),
        receiver_status=row.get("receiver_status"),
        receiver_silent_secs=row.get("receiver_silent_secs"),
        breakdown=row.get("breakdown") or ({"app": [], "user": [], "state": []} if "breakdown" in row else None),
    )
