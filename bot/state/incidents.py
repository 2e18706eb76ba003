"""The state store's gateway to incidents (table ``pgs_incidents``), fenced by the leader lease.

An incident is one Slack message: it is opened once, edited while it lasts and resolved once. At most
one incident per (environment, host, kind) is open (the session watch keys several per kind:
:mod:`bot.watch.incidents`). An Acknowledge (``payload["ack"]``) is written by whoever clicks and kept
by every later write of the leader. Every write checks, in the same transaction,
that this bot still holds the leader lease (in fleet mode: the environment's lease at this replica's
generation, :class:`Fence`) (``FOR UPDATE`` on the lease row on PostgreSQL, which
serialises with :meth:`StateStore.acquire_lease`; SQLite write transactions are exclusive anyway),
so a replica that lost the lease while a check was in flight cannot open a duplicate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from bot.state.schema import incidents, leases
from bot.state.store import StateStore, new_id

# kinds (bot.lagwatch.rules): "lag" | "unreachable"


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
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> Incident:
        data = dict(row)
        data["payload"] = json.loads(data.get("payload") or "{}")
        data["open"] = bool(data["open"])
        return cls(**data)


def open_incidents(store: StateStore) -> list[Incident]:
    """Every open incident (a read: no lease needed)."""
    with store.read() as c:
        rows = c.execute(select(incidents).where(incidents.c.open.is_(True))).mappings().all()
    return [Incident.from_row(r) for r in rows]


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
        with self.store.tx() as c:
            return self._holds_lease(c, env)

    # --- reads --------------------------------------------------------------------------------------

    def open_for(self, env: str, host: str) -> dict[str, Incident]:
        """The open incidents of one standby by kind."""
        stmt = select(incidents).where(incidents.c.env == env, incidents.c.host == host, incidents.c.open.is_(True))
        with self.store.engine.connect() as c:
            rows = c.execute(stmt.order_by(incidents.c.opened_at)).mappings().all()
        out: dict[str, Incident] = {}
        for r in rows:
            out.setdefault(r["kind"], Incident.from_row(r))
        return out

    def all_open(self) -> list[Incident]:
        return open_incidents(self.store)

    def get(self, incident_id: str) -> Incident | None:
        with self.store.engine.connect() as c:
            row = c.execute(select(incidents).where(incidents.c.id == incident_id)).mappings().first()
        return Incident.from_row(row) if row is not None else None

    def count_open(self) -> int:
        with self.store.engine.connect() as c:
            return int(
                c.execute(select(func.count()).select_from(incidents).where(
                    incidents.c.open.is_(True), incidents.c.kind.in_(("lag", "unreachable"))  # not bot.watch's kinds
                )).scalar_one()
            )

    # --- writes (fenced) ----------------------------------------------------------------------------

    def create(self, env: str, host: str, kind: str, channel: str, payload: dict[str, Any]) -> Incident | None:
        """Open an incident; None when this bot is not the leader or one is already open."""
        now = time.time()
        row = {
            "id": new_id(12),
            "env": env,
            "host": host,
            "kind": kind,
            "open": True,
            "opened_at": now,
            "resolved_at": None,
            "channel": channel,
            "message_ts": None,
            "last_update_at": None,
            "last_reminder_at": None,
            "payload": json.dumps(payload, default=str),
        }
        with self.store.tx() as c:
            if not self._holds_lease(c, env):
                return None
            exists = c.execute(
                select(incidents.c.id).where(
                    incidents.c.env == env,
                    incidents.c.host == host,
                    incidents.c.kind == kind,
                    incidents.c.open.is_(True),
                )
            ).first()
            if exists:
                return None
            c.execute(insert(incidents).values(**row))
        return Incident.from_row({**row, "payload": row["payload"]})

    def save(self, inc: Incident, **values: Any) -> bool:
        """Update an open incident's columns (``payload`` as a dict); False if not leader or closed.

        An Acknowledge recorded meanwhile by a click (``payload["ack"]``, written by whoever clicked, not
        by the leader) is kept: the leader's writes never overwrite it."""
        payload = values.pop("payload", None)
        with self.store.tx() as c:
            if not self._holds_lease(c, inc.env):
                return False
            if payload is not None:
                payload = dict(payload)
                if not payload.get("ack"):
                    row = c.execute(select(incidents.c.payload).where(incidents.c.id == inc.id)).first()
                    stored = json.loads(row[0] or "{}") if row else {}
                    if stored.get("ack"):
                        payload["ack"] = stored["ack"]
                values["payload"] = json.dumps(payload, default=str)
            res = c.execute(
                update(incidents).where(incidents.c.id == inc.id, incidents.c.open.is_(True)).values(**values)
            )
            ok = int(res.rowcount) == 1
        if ok:
            for k, v in values.items():
                setattr(inc, k, json.loads(v) if k == "payload" else v)
        return ok

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
            ack = inc.payload.get("ack")
            if ack:
                return inc, f"<@{ack['by']}> already acknowledged this alert"
            inc.payload["ack"] = {"by": user, "at": time.time()}
            c.execute(update(incidents).where(incidents.c.id == incident_id)
                      .values(payload=json.dumps(inc.payload, default=str)))
        return inc, None

    def resolve(self, inc: Incident, payload: dict[str, Any] | None = None) -> bool:
        """Close an incident exactly once; False if another check (or replica) already did."""
        values: dict[str, Any] = {"open": False, "resolved_at": time.time()}
        if payload is not None:
            values["payload"] = payload
        return self.save(inc, **values)
