"""Session-watch incidents in the shared incidents table (``pgs_incidents``) with their own ``kind`` values.

Fenced by the alerts' leader lease (:data:`bot.alerts.LEASE_NAME`) like :class:`bot.state.incidents.Incidents` (which also keeps
an Acknowledge, ``payload["ack"]``, through the leader's writes). The difference: several incidents of
one kind may be open on one host (a pile-up per root blocker), told apart by ``payload["key"]``.
"""

from __future__ import annotations

from sqlalchemy import select

from bot.state.incidents import Fence, Incident, Incidents
from bot.state.lease import ALERTS_LEASE
from bot.state.schema import incidents
from bot.watch.model import KINDS
from bot.watch.rules import OpenIncident


def view(inc: Incident) -> OpenIncident:
    """What the pure rules know of an open incident (any kind: the lag watcher's too)."""
    ack = inc.payload.get("ack") or {}
    return OpenIncident(
        id=inc.id, kind=inc.kind, key=inc.payload.get("key", ""), opened_at=inc.opened_at,
        last_update_at=inc.last_update_at, last_reminder_at=inc.last_reminder_at,
        posted=bool(inc.message_ts), acked_by=ack.get("by"), ack_drawn=bool(inc.payload.get("ack_drawn")),
    )


class WatchIncidents(Incidents):
    def __init__(self, store, holder: str, lease_name: str = ALERTS_LEASE, shards: Fence | None = None):
        super().__init__(store, lease_name, holder, shards)

    def open_list(self, env: str | None = None, host: str | None = None) -> list[Incident]:
        def stored() -> list[Incident]:
            stmt = select(incidents).where(incidents.c.open.is_(True), incidents.c.kind.in_(KINDS))
            if env is not None:
                stmt = stmt.where(incidents.c.env == env)
            if host is not None:
                stmt = stmt.where(incidents.c.host == host)
            with self.store.read() as c:
                rows = c.execute(stmt.order_by(incidents.c.opened_at)).mappings().all()
            return [Incident.from_row(r) for r in rows]

        def wanted(i: Incident) -> bool:
            return i.kind in KINDS and env in (None, i.env) and host in (None, i.host)

        return self._either(stored, lambda m: m.open_where(wanted))

    def create_keyed(self, env: str, host: str, kind: str, key: str, channel: str, payload: dict) -> Incident | None:
        """Open an incident; None when this bot is not the leader or the same one is already open."""
        return self._create(env, host, kind, channel, payload, key=key)
