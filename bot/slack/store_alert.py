"""One alert while the bot's state store does not answer, and its resolution (issue 23 §6).

Told by the health monitor after every probe (:meth:`bot.state.health.StoreHealth.on_probe`). Posted
once per outage, by a replica that leads the checks (the leader goes on leading through the outage:
:attr:`bot.state.lease.LeaderLease.through_outage`), to the alerts channel (:func:`alert_channel`: the
first environment's ``lag_alert.channel``, else its ``watch.channel``), directly through the Web API:
the durable outbox lives in the store that is down. A post that fails is tried again at the next probe.
When the store answers again and what memory held is written, the same message is edited to say so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bot.config import Config
from bot.render.store import render_store_back, render_store_down
from bot.state.health import StoreHealth

log = logging.getLogger(__name__)

RETRY_EVERY = 10.0  # seconds between two tries of a post or an edit that Slack refused


def alert_channel(config: Config) -> str | None:
    """Where the store-down alert goes: the lag alerts' channel of the first environment that has one,
    else the first session watch's channel; None without either (nobody would be alerted anyway)."""
    envs = list(config.environments.values())
    for e in envs:
        if e.lag_alert is not None:
            return e.lag_alert.channel
    for e in envs:
        if e.watch is not None:
            return e.watch.channel
    return None


class StoreDownAlert:
    def __init__(self, health: StoreHealth, client: Callable[[], Any], channel: str, leads: Callable[[], bool],
                 replica: str):
        self.health = health
        self._client = client
        self.channel = channel
        self.leads = leads
        self.replica = replica
        self._lock = threading.Lock()
        self.posted: tuple[str, str, float] | None = None  # (channel, ts, down since) of the alert
        self._next_try = 0.0

    def on_probe(self, up: bool) -> None:
        if not self._lock.acquire(blocking=False):
            return
        try:
            if time.time() < self._next_try:
                return
            if self.health.degraded and self.posted is None and self.leads():
                since = self.health.down_since or time.time()
                resp = self._call(lambda c: c.chat_postMessage(channel=self.channel,
                                                                **render_store_down(since, replica=self.replica)))
                if resp is not None:
                    self.posted = (str(resp.get("channel") or self.channel), str(resp["ts"]), since)
                    log.warning("state store: the store-down alert is posted in %s", self.channel)
            elif up and self.posted is not None:
                channel, ts, since = self.posted
                back = self.health.last_outage[1] if self.health.last_outage else time.time()
                msg = render_store_back(since, back, replica=self.replica)
                if self._call(lambda c: c.chat_update(channel=channel, ts=ts, **msg)) is not None:
                    self.posted = None
        finally:
            self._lock.release()

    def _call(self, fn: Callable[[Any], Any]) -> dict[str, Any] | None:
        try:
            resp = fn(self._client())
        except Exception as exc:
            self._next_try = time.time() + RETRY_EVERY
            log.warning("state store: the store-down alert could not be sent: %s", type(exc).__name__)
            return None
        return resp.data if hasattr(resp, "data") else dict(resp)
