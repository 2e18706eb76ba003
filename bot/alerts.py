"""The one shell every alert runs under: one leader lease and one Slack outbox deliverer.

Built once by the composition root (:class:`bot.runtime.Runtime`, ``rt.alerts``); its jobs are installed
by the first watcher that has something to check (an environment with ``lag_alert`` or ``watch``). The
lag watcher (:mod:`bot.lagwatch.watcher`) and the session watch (:mod:`bot.watch.watcher`) run their
checks under it instead of each holding its own:

* ``alerts:lease``: take or renew the leader lease every ``check_every / 2`` of the smallest
  ``check_every`` of any alert (TTL 1.5 × that; :class:`bot.state.lease.LeaderLease`). Only the holder
  checks, opens, edits and resolves; every incident write is fenced by the same row
  (:class:`bot.state.incidents.Incidents` with :data:`LEASE_NAME`). With several replicas on one
  PostgreSQL state store exactly one instance runs every alert, and another takes over within two
  intervals. The row is named ``lagwatch``, the name the lag watcher's lease had: during a rolling
  upgrade an older replica (whose session watch leads only where its lag watcher leads) and a newer one
  exclude each other.
* ``alerts:outbox``: the leader delivers the durable Slack outbox (:mod:`bot.slack.outbox`) every 2 s;
  every post, edit and thread reply of every alert goes through that one outbox. The shell does not
  know Slack: the composition root hands it a factory of the outbox (a :class:`Deliverer`), and each
  watcher talks to Slack about its incidents through the port it gets from it (:class:`IncidentMessages`).

With a PostgreSQL state store the fleet (:mod:`bot.fleet`) replaces the leader lease: every replica runs
the checks of the environments it owns (``shards.owns(env)``, asked where each check starts; the lease is a
:class:`bot.fleet.shards.FleetLease`), and incidents and outbox claims are fenced by the environment's
lease at this replica's generation. With SQLite one replica checks everything under the leader lease.
What is no longer watched (a kind, host or environment removed from the configuration) is closed by the
watchers' close-unwatched: with the leader lease from ``on_gain``; in fleet mode from the fleet's
``on_sweep`` hooks (the environments a replica takes, and those no replica has any more, taken by the one
sweeper, :class:`bot.fleet.shards.Shards`), which keeps such an environment while its calls wait here.

``on_gain`` / ``on_follow`` hooks of the watchers run in the order they were added: what is open is
read before this instance leads (checks wait for it); an edit made meanwhile waits in the outbox.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bot.config import Config
from bot.fleet.shards import FleetLease, Shards
from bot.state.incidents import Incident, Incidents
from bot.state.lease import ALERTS_LEASE, LeaderLease
from bot.state.store import StateStore

LEASE_NAME = ALERTS_LEASE
DELIVER_EVERY = 2.0  # seconds between the outbox's delivery passes (job ``alerts:outbox``)


class IncidentMessages(Protocol):
    """How a watcher talks to Slack about its incidents (:class:`bot.slack.outbox.IncidentOutbox`)."""

    def call(self, method: str, inc: Incident, **kwargs: Any) -> dict[str, Any] | None:
        """One Web API call (``chat_postMessage``, ``chat_update``; a post with ``thread_ts`` is a thread
        reply): Slack's answer when it landed at once, ``{}`` for an edit or reply kept for later, None
        for a post not delivered yet."""
        ...

    def adopt_post(self, inc: Incident) -> bool:
        """The incident's first post was delivered later: its channel and ts are saved on ``inc``."""
        ...

    def post_waiting(self, inc: Incident) -> bool:
        """The incident's first post still waits to be delivered."""
        ...

    def edit_landed(self, inc: Incident, msg: dict[str, Any]) -> bool:
        """The final edit of the incident's message is kept (or there is no message to edit)."""
        ...


class Deliverer(Protocol):
    """The durable Slack outbox every alert posts through (:class:`bot.slack.outbox.Outbox`)."""

    @property
    def may_send(self) -> Callable[[], bool]: ...

    def deliver(self) -> int:
        """One delivery pass; how many calls landed."""
        ...

    def pending_count(self) -> int: ...

    def pending_envs(self) -> set[str]:
        """The environments of the calls still waiting to be delivered."""
        ...

    def for_incidents(self, incidents: Incidents, stopped: Callable[[], bool]) -> IncidentMessages:
        """The port a watcher sends its incidents' messages through."""
        ...


# builds the outbox: sending while ``may_send()`` (this instance leads), in fleet mode only what it owns
OutboxFactory = Callable[[Callable[[], bool], Shards], Deliverer]


def alert_intervals(config: Config) -> list[float]:
    """The ``check_every`` of every alert configured (lag alerts of environments with standbys, watches)."""
    out = []
    for e in config.environments.values():
        if e.lag_alert is not None:
            out.append(e.lag_alert.check_every)
        if e.watch is not None:
            out.append(e.watch.check_every)
    return out


class AlertShell:
    def __init__(self, config: Config, store: StateStore, outbox: OutboxFactory, instance_id: str,
                 shards: Shards | None = None):
        self.every = min(alert_intervals(config), default=30.0)
        self._gain: list[Callable[[], None]] = []
        self._follow: list[Callable[[], None]] = []
        # which environments this replica checks (fleet mode: those whose lease it holds; else all)
        self.shards = shards if shards is not None else Shards.solo()
        self.lease: LeaderLease | FleetLease = (
            FleetLease(self.shards) if self.shards.fleet else
            LeaderLease(store, LEASE_NAME, instance_id, self.every, label="alerts",
                        duty="the alert checks", on_gain=self._on_gain, on_follow=self._on_follow))
        self.holder = self.lease.holder
        self.outbox = outbox(self.lease.is_leader, self.shards)
        if self.shards.fleet:  # the sweeper keeps a removed environment until its calls are delivered
            self.shards.on_busy(self.outbox.pending_envs)
        self._installed = False

    def on_gain(self, hook: Callable[[], None]) -> None:
        self._gain.append(hook)

    def on_follow(self, hook: Callable[[], None]) -> None:
        self._follow.append(hook)

    def _on_gain(self) -> None:
        for hook in self._gain:
            hook()

    def _on_follow(self) -> None:
        for hook in self._follow:
            hook()

    def is_leader(self) -> bool:
        return self.lease.is_leader()

    @property
    def stopped(self) -> bool:
        return self.lease.stopped

    def install(self, scheduler: Any) -> None:
        """The lease and outbox jobs (once, whichever watcher installs first)."""
        if self._installed:
            return
        self._installed = True
        self.lease.install(scheduler, "alerts:lease", "alerts leader lease")
        scheduler.add_job(self.outbox.deliver, "interval", seconds=DELIVER_EVERY, id="alerts:outbox",
                          name="alerts Slack outbox", replace_existing=True)

    def stop(self) -> None:
        self.lease.stop()
