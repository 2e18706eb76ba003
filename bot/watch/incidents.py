"""Session-watch incidents in the shared incidents table (``pgs_incidents``) with their own ``kind`` values.

Fenced by the alerts' leader lease (:data:`bot.alerts.LEASE_NAME`) like :class:`bot.state.incidents.Incidents` (which also keeps
an Acknowledge, the payload's ``ack``, through the leader's writes). The difference: several incidents of
one kind may be open on one host (a pile-up per root blocker), told apart by the payload's ``key``.
"""

from __future__ import annotations

from bot.state.incidents import Fence, Incident, Incidents
from bot.state.lease import ALERTS_LEASE
from bot.state.store import StateStore
from bot.watch.incident_models import IncidentPayload
from bot.watch.model import KINDS
from bot.watch.rules import OpenIncident


def view(inc: Incident) -> OpenIncident:
    """What the pure rules know of an open incident (any kind: the lag watcher's too)."""
    ack = inc.payload.ack
    return OpenIncident(
        id=inc.id, kind=inc.kind, key=inc.payload.key, opened_at=inc.opened_at,
        last_update_at=inc.last_update_at, last_reminder_at=inc.last_reminder_at,
        posted=bool(inc.message_ts), acked_by=ack.by if ack is not None else None, ack_drawn=inc.payload.ack_drawn,
    )


class WatchIncidents(Incidents):
    def __init__(self, store: StateStore, holder: str, lease_name: str = ALERTS_LEASE, shards: Fence | None = None):
        super().__init__(store, lease_name, holder, shards)

    def open_list(self, env: str | None = None, host: str | None = None) -> list[Incident]:
        """The session watch's open incidents (of one environment, one host), oldest first."""
        return self.open_of(KINDS, env, host)

    def create_keyed(self, env: str, host: str, kind: str, key: str, channel: str,
                     payload: IncidentPayload) -> Incident | None:
        """Open an incident; None when this bot is not the leader or the same one is already open."""
        return self._create(env, host, kind, channel, payload, key=key)
