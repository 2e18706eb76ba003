"""What one watch check of one host saw: frozen rows built from ``watch_host.sql``'s single row. Its
sessions are the one :class:`~bot.postgres.models.Session`; :func:`session_facts` is what an incident
keeps of one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.postgres.models import Category, Session
from bot.postgres.models import iso as iso  # the watcher's
from bot.watch.incident_models import HOST_UNREACHABLE as HOST_UNREACHABLE  # the watch's unreachable

# incident kinds (the state store's ``kind`` column holds at most 16 characters)
LOCK_PILEUP = "lock_pileup"
IDLE_TX = "idle_in_tx"
LONG_RUNNING = "long_running"
CONNECTIONS = "connections"
XMIN_HORIZON = "xmin_horizon"
WAL_RECEIVER = "wal_receiver"  # a standby that does not stream (never "behind", so no lag alert)
# HOST_UNREACHABLE: a primary (or a standby no lag watcher checks) that cannot be read: the one unreachable
# kind both watchers share, stored under this name when the session watch found it (bot.watch.incident_models)
POOL_WAITING = "pool_waiting"  # clients waiting in a PgBouncer pool (issue 25, bot/watch/pool_rules.py)
WRAPAROUND = "wraparound"  # transaction ID wraparound nears (bot.watch.wraparound)
KINDS = (LOCK_PILEUP, IDLE_TX, LONG_RUNNING, CONNECTIONS, XMIN_HORIZON, WAL_RECEIVER, HOST_UNREACHABLE, POOL_WAITING,
         WRAPAROUND)


def watch_categories(state: str | None) -> tuple[Category, ...]:
    """The category an alert's session is drawn and snapshotted with (its button token's): idle in
    transaction, a running query, else what holds others back."""
    if state and state.startswith("idle in transaction"):
        return (Category.IDLE_TX,)
    if state == "active":
        return (Category.LONG_RUNNING,)
    return (Category.BLOCKING,)


def session_facts(s: Session) -> dict[str, Any]:
    """What an incident keeps of a session (JSON-able: incident payloads and their renderers)."""
    return {
        "pid": s.pid, "backend_start": iso(s.backend_start), "user": s.user,
        "database": s.database, "application": s.application, "client_addr": s.client_addr,
        "state": s.state, "query": s.query, "query_secs": s.query_secs,
        "xact_secs": s.xact_secs, "state_secs": s.state_secs, "wait_secs": s.wait_secs,
        "wait_mode": s.wait_mode, "wait_relation": s.wait_relation,
        "cannot_signal": s.cannot_signal, "backend_type": s.backend_type,
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
    sessions: tuple[Session, ...]
    held: tuple[Held, ...] = ()
    prepared: tuple[dict[str, Any], ...] = ()
    slots: tuple[dict[str, Any], ...] = ()
    feedback: tuple[dict[str, Any], ...] = ()
    # client connections by application / user / state (top 5 each), read only while the share is crossed;
    # None: count them from ``sessions`` (then every client session must be in it)
    breakdown: dict[str, Any] | None = None
    receiver_status: str | None = None  # pg_stat_wal_receiver.status on a standby (None: no receiver)
    receiver_silent_secs: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def session_from_row(row: Mapping[str, Any], bot_is_super: bool, bot_can_signal: bool,
                     redact: Callable[[str], str] | None = None,
                     bot_can_signal_autovacuum: bool | None = None) -> Session:
    """A session of the watch's statements (``watch_host.sql``, ``pool_holders.sql``, ``wraparound.sql``):
    the bot's own facts come once per statement, not on every row."""
    facts = {
        "bot_is_super": bot_is_super, "bot_can_signal": bot_can_signal,
        "bot_can_signal_autovacuum": bot_can_signal_autovacuum,
        "is_superuser": bool(row.get("is_superuser")), "bot_has_privs": row.get("bot_has_privs"),
    }
    return Session.from_row(row, watch_categories(row.get("state")), blocking_count=0, redact=redact,
                            signal_facts=facts)


def snapshot_from_row(env: str, host: str, taken_at: float, row: dict[str, Any],
                      redact: Callable[[str], str] | None = None) -> HostSnapshot:
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
