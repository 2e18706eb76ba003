"""Whether the bot's state store answers, and what happens while it does not (issue 23 §6: alerts never go dark).

One :class:`StoreHealth` per :class:`~bot.state.store.StateStore` (:meth:`StoreHealth.of`). Its job
(``state:health``, every ``PROBE_EVERY`` s, installed by the runtime) reads the store once
(:attr:`probe_read`, by default ``SELECT 1``); every gateway that meets an *outage error*
(:func:`is_outage`: the store cannot be reached or does not answer in time) calls :meth:`StoreHealth.note`.

* **Down**: the first outage error or failed probe turns :attr:`StoreHealth.degraded` on. From then on
  the incidents gateway (:mod:`bot.state.incidents`) and the Slack outbox (:mod:`bot.slack.outbox`) keep
  what they do in memory instead of waiting for the store, and the leader lease (:mod:`bot.state.lease`)
  keeps a leader leading: the replica that led goes on checking and alerting (another replica may do
  the same: duplicates are better than silence, and every alert says so).
* **Back**: a probe that answers runs the *catch-up* hooks (:meth:`StoreHealth.on_catch_up`: the
  incidents reconciled with what was posted, the Slack calls kept in memory written to the outbox, the
  outcomes of signals sent meanwhile), in order; only when every one of them succeeded is the store up
  again (:attr:`degraded` off), so nothing reads the store before what memory holds is in it.
* ``pgsessions_state_store_up`` is 1 while the store answers and nothing waits in memory, else 0;
  ``/healthz`` says ``state store: down`` in its body (still 200: see docs/operating.md).

Nothing here talks to Slack: the store-down alert (:mod:`bot.slack.store_alert`) registers itself with
:meth:`StoreHealth.on_probe`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.metrics import STATE_STORE_UP
from bot.state.store import StateStore

log = logging.getLogger(__name__)

PROBE_EVERY = 2.0  # seconds between two probes of the store

# The store cannot be reached or did not answer in time (connection refused or cut, statement or pool
# timeout). Any other error (a constraint, a bug) is not an outage and is raised as before.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, PoolTimeout, ConnectionError,
                                                   TimeoutError)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the state store is not answering."""
    return isinstance(exc, OUTAGE_ERRORS)


_REGISTRY: weakref.WeakKeyDictionary[StateStore, StoreHealth] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


class StoreHealth:
    def __init__(self, store: StateStore):
        self.store = store
        self._lock = threading.Lock()
        self._degraded = False
        self._up = True
        self.down_since: float | None = None
        self.last_outage: tuple[float, float] | None = None  # (down since, back at) of the last outage
        self._catch_up: list[tuple[str, Callable[[], None]]] = []
        self._while_up: list[Callable[[], None]] = []
        self._on_probe: list[Callable[[bool], None]] = []
        self.probe_read: Callable[[], None] = self._select_one
        STATE_STORE_UP.set(1)

    @classmethod
    def of(cls, store: StateStore) -> StoreHealth:
        """The one monitor of ``store``."""
        with _REGISTRY_LOCK:
            health = _REGISTRY.get(store)
            if health is None:
                health = _REGISTRY[store] = cls(store)
            return health

    # --- state --------------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """The store did not answer, and what was kept in memory meanwhile is not all in it yet."""
        return self._degraded

    @property
    def up(self) -> bool:
        """The store answers and nothing waits in memory for it."""
        return self._up and not self._degraded

    def note(self, exc: BaseException) -> bool:
        """A gateway met ``exc``: True (and the store is taken for down) when it is an outage error."""
        if not is_outage(exc):
            return False
        self._went_down(type(exc).__name__)
        return True

    def _went_down(self, why: str) -> None:
        with self._lock:
            self._up = False
            if self._degraded:
                return
            self._degraded = True
            self.down_since = time.time()
        STATE_STORE_UP.set(0)
        log.error("state store: not answering (%s): alerts go on from memory until it is back", why)

    # --- hooks --------------------------------------------------------------------------------------

    def on_catch_up(self, name: str, fn: Callable[[], None]) -> None:
        """``fn`` writes what was kept in memory while the store was down; it raises when it could not
        (it is called again at the next probe). Hooks run in the order they were added."""
        self._catch_up.append((name, fn))

    def while_up(self, fn: Callable[[], None]) -> None:
        """``fn`` runs after every probe that found the store up and nothing waiting (a snapshot of what
        memory needs when the store goes down)."""
        self._while_up.append(fn)

    def on_probe(self, fn: Callable[[bool], None]) -> None:
        """``fn(up)`` after every probe (the store-down alert)."""
        self._on_probe.append(fn)

    # --- the probe ----------------------------------------------------------------------------------

    def _select_one(self) -> None:
        with self.store.read() as c:
            c.execute(text("SELECT 1"))

    def probe(self) -> bool:
        """One probe (the scheduler job): True when the store is up afterwards."""
        try:
            self.probe_read()
        except Exception as exc:
            if not is_outage(exc):
                log.warning("state store: probe failed: %s", type(exc).__name__)
            self._went_down(type(exc).__name__)
            self._tell(False)
            return False
        self._up = True
        if self._degraded and not self._run_catch_up():
            self._tell(False)
            return False
        for fn in self._while_up:
            try:
                fn()
            except Exception as exc:
                if self.note(exc):
                    self._tell(False)
                    return False
                log.exception("state store: a snapshot after the probe failed")
        self._tell(True)
        return True

    def _run_catch_up(self) -> bool:
        for name, fn in self._catch_up:
            try:
                fn()
            except Exception as exc:
                if is_outage(exc):
                    self._up = False
                log.warning("state store: answers again, but %s could not be written yet (%s): trying again",
                            name, type(exc).__name__)
                return False
        with self._lock:
            since = self.down_since or time.time()
            self._degraded = False
            self.down_since = None
            self.last_outage = (since, time.time())
        STATE_STORE_UP.set(1)
        log.warning("state store: answers again after %.0fs; what was kept in memory is written", time.time() - since)
        return True

    def _tell(self, up: bool) -> None:
        for fn in self._on_probe:
            try:
                fn(up)
            except Exception:
                log.exception("state store: a probe hook failed")

    def status_line(self) -> str:
        """For ``/healthz``: ``state store: up`` or ``state store: down (since …)``."""
        if self.up:
            return "state store: up"
        since = self.down_since
        if since is None:
            return "state store: down"
        return f"state store: down for {time.time() - since:.0f}s (alerts go on from memory)"

    def install(self, scheduler: Any) -> None:
        scheduler.add_job(self.probe, "interval", seconds=PROBE_EVERY, id="state:health",
                          name="state store health", replace_existing=True, max_instances=1)
