"""The leader lease of the scheduled checks: with several replicas on one state store, one runs them.

Every alert runs under one :class:`LeaderLease` (:data:`ALERTS_LEASE`, held by
:class:`bot.alerts.AlertShell`; rows in ``pgs_leases`` through :meth:`StateStore.acquire_lease`):

* :meth:`LeaderLease.renew` (a scheduler job every ``every / 2``, where ``every`` is the watcher's
  smallest ``check_every``) takes or renews the lease with a TTL of 1.5 × ``every``. While it is held,
  :meth:`LeaderLease.is_leader` is true until a little under the TTL after the renewal started
  (``0.8 × TTL``), so an instance stops leading before another may take the lease over: another
  replica takes over within two check intervals after the leader dies.
* :meth:`LeaderLease.stop` (also on the scheduler's shutdown) stops leading and releases the lease,
  so another replica takes it at its next renewal.
* ``on_gain`` runs when this instance becomes the leader, ``on_follow`` at every renewal that finds
  another holder.
* **The state store does not answer** (issue 23 §6, :mod:`bot.state.health`): an instance that was
  leading when a renewal failed with an outage error *keeps leading* for as long as the store stays
  unreachable (:attr:`LeaderLease.through_outage`): its checks and alerts go on from memory. Another
  replica that also led, or believes it did, may do the same: duplicate alerts are better than none,
  and every alert posted meanwhile says it may come from more than one replica. An instance that was
  not leading stays a follower. When the store answers again the next renewal decides as usual (the
  lease row ran out meanwhile: the first replica to renew takes it, the other one follows).

The incidents a leader writes are fenced by the same row in the state store
(:class:`bot.state.incidents.Incidents`): the in-memory :meth:`~LeaderLease.is_leader` only decides
whether to run a check.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN

from bot.state.health import StoreHealth, is_outage
from bot.state.store import StateStore

log = logging.getLogger(__name__)

# the one lease every alert runs under (bot.alerts.AlertShell); named as the lag watcher's lease was, so
# that during a rolling upgrade an older replica and a newer one exclude each other
ALERTS_LEASE = "lagwatch"


def _nothing() -> None:
    return None


class LeaderLease:
    def __init__(
        self,
        store: StateStore,
        name: str,
        instance_id: str,
        every: float,
        *,
        label: str,
        duty: str,
        on_gain: Callable[[], None] = _nothing,
        on_follow: Callable[[], None] = _nothing,
        leads_during_gain: bool = False,
    ):
        """``label`` starts every log line ("lag watch"), ``duty`` says what the leader runs ("the standby
        checks"). ``on_gain`` runs before :meth:`is_leader` turns true (checks wait for what it prepares),
        or, with ``leads_during_gain``, once it is true (Slack calls it makes through the outbox may go
        out at once)."""
        self.store = store
        self.name = name
        # Runtime.instance_id can repeat between two runtimes of one process: add our own randomness
        self.holder = f"{instance_id}:{secrets.token_hex(4)}"
        self.ttl = 1.5 * every
        self.renew_every = every / 2
        self.label = label
        self.duty = duty
        self.on_gain = on_gain
        self.on_follow = on_follow
        self.leads_during_gain = leads_during_gain
        self._valid_until = 0.0
        self._through_outage = False
        self._stopped = threading.Event()
        self.health = StoreHealth.of(store)

    def install(self, scheduler: Any, job_id: str, job_name: str) -> None:
        """Renew every ``every / 2`` from now on; stop (and release) when the scheduler shuts down."""
        scheduler.add_job(
            self.renew, "interval", seconds=self.renew_every, id=job_id, name=job_name,
            next_run_time=datetime.now(UTC), replace_existing=True,
        )
        scheduler.add_listener(self._on_shutdown, EVENT_SCHEDULER_SHUTDOWN)

    def _on_shutdown(self, _event: object) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def is_leader(self) -> bool:
        if self._stopped.is_set():
            return False
        return self._through_outage or time.monotonic() < self._valid_until

    @property
    def through_outage(self) -> bool:
        """Leading because the state store stopped answering while this instance led."""
        return self._through_outage and not self._stopped.is_set()

    def renew(self) -> None:
        """Take or renew the lease (the scheduler job)."""
        if self._stopped.is_set():
            return
        started = time.monotonic()
        was = self.is_leader()
        try:
            held = self.store.acquire_lease(self.name, self.holder, self.ttl)
        except Exception as exc:
            if is_outage(exc):
                self.health.note(exc)
                if was and not self._through_outage:
                    # the store is unreachable: the leader goes on (duplicates are better than silence)
                    self._through_outage = True
                    log.warning("%s: the state store is not answering; this instance keeps running %s "
                                "until it is back (another replica may run them too)", self.label, self.duty)
            else:  # keep what we had until it runs out
                log.warning("%s: could not renew the leader lease: %s", self.label, type(exc).__name__)
            return
        if self._through_outage:
            self._through_outage = False
            log.info("%s: the state store answers again; leading by the lease again", self.label)
        if self._stopped.is_set():
            return
        if held:
            # a little under the TTL, so we stop before another replica may take over
            valid_until = started + self.ttl * 0.8
            if self.leads_during_gain:
                self._valid_until = valid_until
            if not was:
                log.info("%s: this instance now runs %s (%s)", self.label, self.duty, self.holder)
                self.on_gain()
            self._valid_until = valid_until
        else:
            self._valid_until = 0.0
            if was:
                log.warning("%s: another instance took over %s", self.label, self.duty)
            self.on_follow()

    def stop(self) -> None:
        """Stop leading and hand the lease over at once (another replica takes it at its next renewal)."""
        if self._stopped.is_set():
            return
        was = self.is_leader()
        self._stopped.set()
        self._valid_until = 0.0
        self._through_outage = False
        if was:
            self._release()

    def _release(self) -> None:
        try:
            self.store.release_lease(self.name, self.holder)
        except Exception as exc:  # the lease expires by itself
            log.warning("%s: could not release the leader lease: %s", self.label, type(exc).__name__)
