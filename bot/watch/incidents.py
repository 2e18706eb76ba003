"""Session-watch incidents in the shared incidents table (``pgs_incidents``) with their own ``kind`` values.

Fenced by the watch's own leader lease like :class:`bot.state.incidents.Incidents` (which also keeps
an Acknowledge, ``payload["ack"]``, through the leader's writes). The difference: several incidents of
one kind may be open on one host (a pile-up per root blocker), told apart by ``payload["key"]``.
"""

from __future__ import annotations

from sqlalchemy import select

from bot.state.incidents import Incident, Incidents
from bot.state.schema import incidents
from bot.watch.model import KINDS

LEASE_NAME = "watch"


class WatchIncidents(Incidents):
    def __init__(self, store, holder: str):
        super().__init__(store, LEASE_NAME, holder)

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
