"""The state store's gateway to incidents (table ``pgs_incidents``), fenced by the leader lease.

An incident is one Slack message: it is opened once, edited while it lasts and resolved once. At most
one incident per (environment, host, kind) is open (the session watch keys several per kind:
:mod:`bot.watch.incidents`). What an incident keeps besides its columns is a typed
:class:`bot.watch.incident_models.IncidentPayload`, converted to and from the stored JSON here and only
here (:func:`payload_from_json`, :func:`payload_json`: the JSON shape of the previous release, read and
written as it was). The host that cannot be read is one kind in the code
(:class:`~bot.watch.incident_models.UnreachableFacts` with its ``origin``); the ``kind`` column keeps the
name each origin always had (``unreachable``: a standby the lag watcher checks; ``host_unreachable``: a
host the session watch checks), the origin is read from it here and never stored in the payload, so
replicas of the previous release and of this one recognise each other's rows during a rolling upgrade.
An Acknowledge (``ack``) is written by whoever clicks and kept by every later write
of the leader. Every write checks, in the same transaction,
that this bot still holds the leader lease (``FOR UPDATE`` on the lease row on PostgreSQL, which
serialises with :meth:`StateStore.acquire_lease`; SQLite write transactions are exclusive anyway),
so a replica that lost the lease while a check was in flight cannot open a duplicate.

**While the state store does not answer** (issue 23 §6, :mod:`bot.state.health`) the gateway works on
memory (:class:`OutageMemory`, one per store): the open incidents as last read (a snapshot after every
probe that found the store up, and every write of this process), and every incident opened, edited or
resolved meanwhile, with the channel and ts of what was posted. Writes in memory are not fenced (the
instance leads through the outage: :attr:`bot.state.lease.LeaderLease.through_outage`). When the store
answers again, :meth:`OutageMemory.reconcile` writes them before anything reads the store again: an
incident opened during the outage is inserted with its message's ts (later edits and the resolution go
to that message, no second post), one that changed is updated (an Acknowledge clicked meanwhile is kept),
and one that another replica opened for the same thing meanwhile is recorded closed as a duplicate
(:data:`DUPLICATE`: its message is told so by the watcher's outbox hook).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from bot.state.health import StoreHealth
from bot.state.schema import incidents, leases
from bot.state.store import StateStore, new_id
from bot.watch.incident_models import (
    LAG,
    UNREACHABLE_KINDS,
    Ack,
    IncidentPayload,
    Origin,
    facts_from_json,
    facts_json,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# the ``closed`` mark of an incident opened during an outage while another replica had the same one open
DUPLICATE = "duplicate: another replica alerted on the same thing while the state store was down"

# the lag watcher's kinds (its lag, and the unreachable kind of origin STANDBY): their facts are stored at
# the top of the payload (as release 0.1 wrote them); the session watch's kinds keep theirs under "facts"
FLAT_KINDS = (LAG, UNREACHABLE_KINDS[Origin.STANDBY])
# the payload's own fields (the rest of a flat kind's payload are its facts)
PAYLOAD_KEYS = frozenset(IncidentPayload.model_fields) - {"facts"}


def payload_from_json(kind: str, data: Mapping[str, Any]) -> IncidentPayload:
    """The typed payload of an incident of ``kind`` from its stored JSON (any release's: fields this
    release does not know are kept, a field that does not fit is dropped with a warning). The facts of the
    unreachable kind learn their origin from the stored ``kind`` (:func:`facts_from_json`)."""
    own = {k: v for k, v in data.items() if k in PAYLOAD_KEYS}
    if kind in FLAT_KINDS:
        raw: Mapping[str, Any] | None = {k: v for k, v in data.items() if k not in PAYLOAD_KEYS}
        extra: dict[str, Any] = {}
    else:
        raw = (data.get("facts") or {}) if "facts" in data else None
        extra = {k: v for k, v in data.items() if k not in PAYLOAD_KEYS and k != "facts"}
    try:
        payload = IncidentPayload.model_validate({**extra, **own})
    except ValidationError as exc:
        log.warning("incidents: a stored %s payload does not fit (%d errors): reading what fits",
                    kind, exc.error_count())
        fits: dict[str, Any] = {}
        for k, v in own.items():
            try:
                IncidentPayload.model_validate({k: v})
            except ValidationError:
                continue
            fits[k] = v
        payload = IncidentPayload.model_validate({**extra, **fits})
    if raw is not None:
        payload = payload.with_(facts=facts_from_json(kind, raw))
    return payload


def payload_json(kind: str, payload: IncidentPayload) -> str:
    """The stored JSON of a payload: exactly the fields it was given, in the previous release's shape."""
    out = payload.model_dump(mode="json", exclude_unset=True, exclude={"facts"})
    if "facts" in payload.model_fields_set:
        facts = facts_json(payload.facts)
        out = {**facts, **out} if kind in FLAT_KINDS else {**out, "facts": facts}
    return json.dumps(out, default=str)


@dataclass
class Incident:
    id: str
    env: str
    host: str
    kind: str
    open: bool
    opened_at: float
    resolved_at: float | None
    channel: str | None
    message_ts: str | None
    last_update_at: float | None
    last_reminder_at: float | None
    payload: IncidentPayload = field(default_factory=IncidentPayload)

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> Incident:
        return cls(
            id=str(row["id"]), env=str(row["env"]), host=str(row["host"]), kind=str(row["kind"]),
            open=bool(row["open"]), opened_at=float(row["opened_at"]), resolved_at=row["resolved_at"],
            channel=row["channel"], message_ts=row["message_ts"], last_update_at=row["last_update_at"],
            last_reminder_at=row["last_reminder_at"],
            payload=payload_from_json(str(row["kind"]), json.loads(row["payload"] or "{}")),
        )


def open_incidents(store: StateStore) -> list[Incident]:
    """Every open incident (a read: no lease needed)."""
    with store.read() as c:
        rows = c.execute(select(incidents).where(incidents.c.open.is_(True))).mappings().all()
    return [Incident.from_row(r) for r in rows]


def _row(inc: Incident) -> dict[str, Any]:
    return {
        "id": inc.id, "env": inc.env, "host": inc.host, "kind": inc.kind, "open": inc.open,
        "opened_at": inc.opened_at, "resolved_at": inc.resolved_at, "channel": inc.channel,
        "message_ts": inc.message_ts, "last_update_at": inc.last_update_at,
        "last_reminder_at": inc.last_reminder_at, "payload": payload_json(inc.kind, inc.payload),
    }


def _copy(inc: Incident) -> Incident:
    return replace(inc)  # the payload is frozen: sharing it is safe


_MEMORIES: weakref.WeakKeyDictionary[StateStore, OutageMemory] = weakref.WeakKeyDictionary()
_MEMORIES_LOCK = threading.Lock()


class OutageMemory:
    """The incidents of one state store as this process knows them, for while the store does not answer."""

    def __init__(self, store: StateStore):
        self.store = store
        self._lock = threading.Lock()
        self.open: dict[str, Incident] = {}  # id -> the open incident as last read or written
        self.changed: dict[str, Incident] = {}  # id -> written during the outage, in order
        self.created: set[str] = set()  # ids opened during the outage
        self.duplicates: list[Incident] = []  # opened during the outage, recorded closed as duplicates
        # told of every incident that reconcile() closed as a duplicate (its message says so)
        self.on_duplicate: list[Callable[[Incident], None]] = []

    @classmethod
    def of(cls, store: StateStore) -> OutageMemory:
        with _MEMORIES_LOCK:
            mem = _MEMORIES.get(store)
            if mem is None:
                mem = _MEMORIES[store] = cls(store)
                health = StoreHealth.of(store)
                health.while_up(mem.snapshot)
                health.on_catch_up("the incidents", mem.reconcile)
            return mem

    # --- while the store answers --------------------------------------------------------------------

    def snapshot(self) -> None:
        """Read every open incident (after a probe that found the store up)."""
        found = {i.id: i for i in open_incidents(self.store)}
        with self._lock:
            if not self.changed:
                self.open = found

    def remember(self, inc: Incident) -> None:
        """A write of this process that landed in the store."""
        with self._lock:
            if inc.open:
                self.open[inc.id] = _copy(inc)
            else:
                self.open.pop(inc.id, None)

    # --- while it does not --------------------------------------------------------------------------

    def open_where(self, pred: Callable[[Incident], bool]) -> list[Incident]:
        with self._lock:
            return sorted((_copy(i) for i in self.open.values() if pred(i)), key=lambda i: i.opened_at)

    def get(self, incident_id: str) -> Incident | None:
        with self._lock:
            inc = self.open.get(incident_id) or self.changed.get(incident_id)
            return _copy(inc) if inc is not None else None

    def create(self, inc: Incident, same: Callable[[Incident], bool]) -> Incident | None:
        with self._lock:
            if any(same(i) for i in self.open.values()):
                return None
            self.open[inc.id] = _copy(inc)
            self.changed[inc.id] = _copy(inc)
            self.created.add(inc.id)
        return inc

    def save(self, inc: Incident, values: dict[str, Any]) -> bool:
        with self._lock:
            held = self.open.get(inc.id)
            if held is None:
                return False
            for k, v in values.items():
                setattr(held, k, v)
            if not held.open:
                self.open.pop(inc.id, None)
            self.changed.pop(inc.id, None)
            self.changed[inc.id] = _copy(held)  # keep the order of the latest change
        for k, v in values.items():
            setattr(inc, k, v)
        return True

    # --- when it answers again ----------------------------------------------------------------------

    def reconcile(self) -> None:
        """Write what changed during the outage (the catch-up hook); raises when the store fails again
        (what is left is tried at the next probe). Not fenced by a lease: this is what was posted."""
        with self._lock:
            pending = list(self.changed.values())
        for inc in pending:
            duplicate = self._write(inc)
            with self._lock:
                if self.changed.get(inc.id) == inc:
                    del self.changed[inc.id]
                self.created.discard(inc.id)
                if duplicate:
                    self.open.pop(inc.id, None)
            if duplicate:
                log.warning("incidents: %s on %s/%s was also alerted by another replica while the state "
                            "store was down; recorded as a duplicate", inc.kind, inc.env, inc.host)
                for fn in self.on_duplicate:
                    try:
                        fn(inc)
                    except Exception:
                        log.exception("incidents: telling a duplicate alert failed")
        with self._lock:
            if self.changed:
                raise RuntimeError("incidents changed while they were being written")
        self.snapshot()

    def _write(self, inc: Incident) -> bool:
        """Write one incident; True when it was recorded closed as a duplicate."""
        with self.store.tx() as c:
            stmt = select(incidents).where(incidents.c.id == inc.id)
            if not self.store.is_sqlite:
                stmt = stmt.with_for_update()
            row = c.execute(stmt).mappings().first()
            if row is None:
                same = [
                    Incident.from_row(r)
                    for r in c.execute(select(incidents).where(
                        incidents.c.env == inc.env, incidents.c.host == inc.host, incidents.c.kind == inc.kind,
                        incidents.c.open.is_(True),
                    )).mappings()
                ]
                if inc.open and any(i.payload.key == inc.payload.key for i in same):
                    closed = replace(inc, open=False, resolved_at=time.time(),
                                     payload=inc.payload.with_(closed=DUPLICATE))
                    c.execute(insert(incidents).values(**_row(closed)))
                    return True
                c.execute(insert(incidents).values(**_row(inc)))
                return False
            stored = Incident.from_row(row)
            values = _row(inc)
            del values["id"]
            if stored.payload.ack is not None and inc.payload.ack is None:
                values["payload"] = payload_json(inc.kind, inc.payload.with_(ack=stored.payload.ack))
            if not stored.open:
                return False  # resolved by someone else meanwhile: that stands
            c.execute(update(incidents).where(incidents.c.id == inc.id).values(**values))
        return False


class Fence(Protocol):
    """The fleet's per-environment fence (:class:`bot.fleet.shards.Shards`): with environments sharded
    across replicas, an incident is written only by the replica holding its environment's lease at the
    generation it took it with."""

    @property
    def fleet(self) -> bool: ...

    def fence(self, c: Connection, env: str) -> bool: ...


class Incidents:
    def __init__(self, store: StateStore, lease_name: str, holder: str, shards: Fence | None = None):
        self.store = store
        self.lease_name = lease_name
        self.holder = holder
        # fleet mode: every write is fenced by the environment's lease instead of the leader lease
        self.shards = shards if shards is not None and shards.fleet else None
        self.health = StoreHealth.of(store)
        self.memory = OutageMemory.of(store)

    def _either(self, stored: Callable[[], T], in_memory: Callable[[OutageMemory], T]) -> T:
        """``stored()`` while the store answers; ``in_memory(memory)`` while it does not (also when
        ``stored`` meets the outage)."""
        if not self.health.degraded:
            try:
                return stored()
            except Exception as exc:
                if not self.health.note(exc):
                    raise
        return in_memory(self.memory)

    # --- fencing ------------------------------------------------------------------------------------

    def _holds_lease(self, c: Connection, env: str | None = None) -> bool:
        if self.shards is not None:
            return env is not None and self.shards.fence(c, env)
        stmt = select(leases).where(leases.c.name == self.lease_name)
        if not self.store.is_sqlite:
            stmt = stmt.with_for_update()
        row = c.execute(stmt).mappings().first()
        return row is not None and row["holder"] == self.holder and row["expires_at"] >= time.time()

    def holds_lease(self, env: str | None = None) -> bool:
        """True while this bot holds the lease; while the store does not answer, the instance that led
        goes on (its in-memory leadership decided to run the check)."""
        def stored() -> bool:
            with self.store.tx() as c:
                return self._holds_lease(c, env)
        return self._either(stored, lambda _m: True)

    # --- reads --------------------------------------------------------------------------------------

    def open_for(self, env: str, host: str) -> dict[str, Incident]:
        """The open incidents of one standby by kind."""
        def stored() -> list[Incident]:
            stmt = select(incidents).where(incidents.c.env == env, incidents.c.host == host,
                                           incidents.c.open.is_(True))
            with self.store.engine.connect() as c:
                rows = c.execute(stmt.order_by(incidents.c.opened_at)).mappings().all()
            return [Incident.from_row(r) for r in rows]
        found = self._either(stored, lambda m: m.open_where(lambda i: i.env == env and i.host == host))
        out: dict[str, Incident] = {}
        for inc in found:
            out.setdefault(inc.kind, inc)
        return out

    def open_of(self, kinds: tuple[str, ...], env: str | None = None, host: str | None = None) -> list[Incident]:
        """The open incidents of ``kinds`` (of one environment, one host), oldest first."""
        def stored() -> list[Incident]:
            stmt = select(incidents).where(incidents.c.open.is_(True), incidents.c.kind.in_(kinds))
            if env is not None:
                stmt = stmt.where(incidents.c.env == env)
            if host is not None:
                stmt = stmt.where(incidents.c.host == host)
            with self.store.read() as c:
                rows = c.execute(stmt.order_by(incidents.c.opened_at)).mappings().all()
            return [Incident.from_row(r) for r in rows]

        def wanted(i: Incident) -> bool:
            return i.kind in kinds and env in (None, i.env) and host in (None, i.host)

        return self._either(stored, lambda m: m.open_where(wanted))

    def all_open(self) -> list[Incident]:
        return self._either(lambda: open_incidents(self.store), lambda m: m.open_where(lambda _i: True))

    def get(self, incident_id: str) -> Incident | None:
        def stored() -> Incident | None:
            with self.store.engine.connect() as c:
                row = c.execute(select(incidents).where(incidents.c.id == incident_id)).mappings().first()
            return Incident.from_row(row) if row is not None else None
        return self._either(stored, lambda m: m.get(incident_id))

    def count_open(self) -> int:
        def stored() -> int:
            with self.store.engine.connect() as c:
                return int(
                    c.execute(select(func.count()).select_from(incidents).where(
                        incidents.c.open.is_(True), incidents.c.kind.in_(FLAT_KINDS)  # not bot.watch's kinds
                    )).scalar_one()
                )
        return self._either(stored, lambda m: len(m.open_where(lambda i: i.kind in FLAT_KINDS)))

    # --- writes (fenced) ----------------------------------------------------------------------------

    def create(self, env: str, host: str, kind: str, channel: str,
               payload: IncidentPayload | None = None) -> Incident | None:
        """Open an incident; None when this bot is not the leader or one is already open."""
        return self._create(env, host, kind, channel, payload or IncidentPayload(), key=None)

    def _create(self, env: str, host: str, kind: str, channel: str, payload: IncidentPayload,
                key: str | None) -> Incident | None:
        """Open an incident (one per env, host, kind; with ``key``, one per env, host, kind and key)."""
        if key is not None:
            payload = payload.with_(key=key)
        inc = Incident(id=new_id(12), env=env, host=host, kind=kind, open=True, opened_at=time.time(),
                       resolved_at=None, channel=channel, message_ts=None, last_update_at=None,
                       last_reminder_at=None, payload=payload)
        row = _row(inc)

        def same(other: Incident) -> bool:
            return (other.env, other.host, other.kind) == (env, host, kind) and other.open and (
                key is None or other.payload.key == key)

        def stored() -> Incident | None:
            with self.store.tx() as c:
                if not self._holds_lease(c, env):
                    return None
                rows = c.execute(
                    select(incidents).where(
                        incidents.c.env == env,
                        incidents.c.host == host,
                        incidents.c.kind == kind,
                        incidents.c.open.is_(True),
                    )
                ).mappings().all()
                if any(same(Incident.from_row(r)) for r in rows):
                    return None
                c.execute(insert(incidents).values(**row))
            self.memory.remember(inc)
            return inc

        return self._either(stored, lambda m: m.create(inc, same))

    def save(self, inc: Incident, *, payload: IncidentPayload | None = None, **values: Any) -> bool:
        """Update an open incident's columns and its payload; False if not leader or closed.

        An Acknowledge recorded meanwhile by a click (``ack``, written by whoever clicked, not by the
        leader) is kept: the leader's writes never overwrite it."""

        def stored() -> bool:
            vals = dict(values)
            p = payload
            with self.store.tx() as c:
                if not self._holds_lease(c, inc.env):
                    return False
                if p is not None:
                    if p.ack is None:
                        row = c.execute(select(incidents.c.payload).where(incidents.c.id == inc.id)).first()
                        held = payload_from_json(inc.kind, json.loads(row[0] or "{}")) if row else None
                        if held is not None and held.ack is not None:
                            p = p.with_(ack=held.ack)
                    vals["payload"] = payload_json(inc.kind, p)
                res = c.execute(
                    update(incidents).where(incidents.c.id == inc.id, incidents.c.open.is_(True)).values(**vals)
                )
                ok = int(res.rowcount) == 1
            if ok:
                for k, v in vals.items():
                    setattr(inc, k, p if k == "payload" else v)
                self.memory.remember(inc)
            return ok

        def in_memory(m: OutageMemory) -> bool:
            vals: dict[str, Any] = dict(values)
            if payload is not None:
                vals["payload"] = payload
            return m.save(inc, vals)

        return self._either(stored, in_memory)

    def acknowledge(self, incident_id: str, user: str) -> tuple[Incident | None, str | None]:
        """Record who took an open incident (any kind: it stops the reminders); (incident, None), or
        (incident or None, why nothing changed). Not fenced: whoever clicks writes it."""
        with self.store.tx() as c:
            stmt = select(incidents).where(incidents.c.id == incident_id)
            if not self.store.is_sqlite:
                stmt = stmt.with_for_update()
            row = c.execute(stmt).mappings().first()
            if row is None:
                return None, "this alert is not known to the bot"
            inc = Incident.from_row(row)
            if not inc.open:
                return inc, "this alert is already resolved"
            ack = inc.payload.ack
            if ack is not None:
                return inc, f"<@{ack.by}> already acknowledged this alert"
            inc.payload = inc.payload.with_(ack=Ack(by=user, at=time.time()))
            c.execute(update(incidents).where(incidents.c.id == incident_id)
                      .values(payload=payload_json(inc.kind, inc.payload)))
        return inc, None

    def resolve(self, inc: Incident, payload: IncidentPayload | None = None) -> bool:
        """Close an incident exactly once; False if another check (or replica) already did."""
        return self.save(inc, payload=payload, open=False, resolved_at=time.time())
