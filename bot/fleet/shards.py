"""Which environments this replica checks: :class:`Shards`, the one predicate the watchers consult.

With a PostgreSQL state store (``fleet`` mode) every replica registers with a heartbeat
(``pgs_replicas``) and holds a lease per environment it checks (``pgs_env_leases``, through
:class:`bot.state.shards.ShardStore`). :meth:`Shards.tick`, a scheduler job every ``lease / 4``:

1. beats (``seen_at``) and reads the live replicas (seen within ``lease``) and the lease table;
2. computes its share by rendezvous hashing over the live replicas (:mod:`bot.fleet.assign`): every
   replica computes the same owners, so one replica joining or leaving moves only its share;
3. releases what it holds and no longer should (it stops checking them first), renews what it holds,
   and takes what it should own once its lease is free or has run out (a new generation).

:meth:`Shards.owns` is true for an environment from a successful renewal or take until 0.8 × lease after
the tick began, so this replica stops before another may take over. A replica killed with SIGKILL stops
beating: its leases run out and the others take its environments within ``1.25 × lease``. A replica
that stops cleanly hands everything over at once (:meth:`stop`).

When the state store cannot be reached, the replica keeps checking the environments it owned (nobody
else can take them meanwhile through that store) and says so once in the log.

Fencing: :meth:`fence` (inside an incident write's transaction) and :meth:`held_clause` (in an outbox
claim's conditional UPDATE) check the environment's lease row holds this replica at the generation this
replica took it with, so a replica that lost an environment (a pause, a partition) never writes an
incident or sends an outbox row for it after another took over.

Closing what is no longer watched (:meth:`on_sweep` hooks: the watchers' close-unwatched). A replica that
takes environments runs them for those (a host or kind removed from the configuration). An environment
removed from the configuration has no owner any more, so one live replica, the *sweeper* (the rendezvous
owner of :data:`SWEEP_KEY` among the live replicas), looks for them when it becomes the sweeper and then
every :data:`SWEEP_EVERY` s: an environment with open incidents (or calls still waiting in the outbox,
:meth:`on_busy`) that is not in its configuration and whose lease has run out or never existed is *taken*
(a new generation, as any take), its incidents closed through the hooks (fenced like every incident write)
and its lease kept while the outbox still has calls of it to deliver, then released. An environment whose
lease another live replica holds (it still has it configured, in a rolling configuration change) is left
alone. Two replicas that both believe they sweep (a membership change) cannot both close: the
environment's lease admits one.

With the SQLite state store there is one replica: :meth:`Shards.solo` owns every environment and the
watchers keep their leader leases, as before (the alert shell's ``on_gain`` closes what is not watched).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN
from prometheus_client import Counter
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from bot.config import Config
from bot.fleet.assign import Lease, owner, plan
from bot.metrics import (
    FLEET_CHECKS,
    FLEET_CHECKS_PER_SECOND,
    FLEET_CYCLE_SECONDS,
    FLEET_HANDOVERS,
    FLEET_OWNED,
    FLEET_REPLICAS,
)
from bot.state.incidents import open_incidents
from bot.state.shards import ShardStore
from bot.state.store import StateStore

log = logging.getLogger(__name__)

LEASE_PER_CHECK_EVERY = 0.75  # the default lease: 0.75 x the smallest check_every
VALID_FOR = 0.8  # owns() holds until this share of the lease after a tick began
SWEEP_KEY = "\x00fleet:sweep"  # a pseudo-environment (no configured name has a NUL): its owner sweeps
SWEEP_EVERY = 60.0  # seconds between the sweeper's looks for environments nobody watches any more


def watched_envs(config: Config) -> dict[str, float]:
    """The environments with scheduled checks and their smallest ``check_every``."""
    out: dict[str, float] = {}
    for name, e in config.environments.items():
        everies = [a.check_every for a in (e.watch, e.lag_alert) if a is not None]
        if everies:
            out[name] = min(everies)
    return out


def replica_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Shards:
    def __init__(self, store: StateStore | None, envs: dict[str, float], *, lease: float | None = None,
                 label: str | None = None):
        """``store`` None: the one replica (SQLite), owning every environment. ``envs``: the watched
        environments and their check interval."""
        self.store = store
        self.gateway = ShardStore(store) if store is not None else None
        self.envs = sorted(envs)
        self.every = min(envs.values(), default=30.0)
        self.ttl = lease if lease is not None else max(0.5, LEASE_PER_CHECK_EVERY * self.every)
        self.tick_every = self.ttl / 4
        self.label = label or replica_label()
        self.id = f"{self.label}:{secrets.token_hex(3)}"
        self._owned: dict[str, int] = {}  # env -> generation
        self._valid_until = 0.0
        self._joined = False
        self._store_down = False
        self._lock = threading.Lock()
        # checks running now per environment (begin / end): an environment is released only once its
        # checks have ended, so two replicas never check it at the same time
        self._running: dict[str, int] = {}
        self._idle = threading.Condition(self._lock)
        self._counted: dict[str, Counter] = {}  # FLEET_CHECKS' child per environment, looked up once
        self._stopped = threading.Event()
        self._on_gain: list[Callable[[str], None]] = []
        # closing what is no longer watched: hooks(envs), the outbox's environments with calls waiting
        self._on_sweep: list[Callable[[frozenset[str]], None]] = []
        self._on_busy: list[Callable[[], set[str]]] = []
        self._configured = frozenset(self.envs)
        self._swept: set[str] = set()  # environments not configured here, held to close their incidents
        self._sweeper = False  # this replica was the sweeper at its last tick
        self._sweep_at = 0.0  # monotonic time of the last look
        self._sweep_again = False  # an environment's lease was still held by someone: look at the next tick
        self.sweep_every = SWEEP_EVERY
        # the hooks post to Slack: once installed they run on a thread of their own, never in the tick
        # (a slow Slack must not hold up the lease renewals); driven by hand (tests), in the tick
        self._sweep_in_thread = False
        self._sweep_pending: set[str] = set()
        self._sweep_running = False
        # checks per second and cycle time
        self._checks = 0
        self._rate_at = time.monotonic()
        self._rate_checks = 0
        self._round_start: float | None = None
        self._round_end = 0.0
        if self.fleet:
            FLEET_OWNED.set(0)
        else:
            FLEET_OWNED.set(len(self.envs))
            FLEET_REPLICAS.set(1)

    @classmethod
    def for_config(cls, config: Config, store: StateStore) -> Shards:
        """Fleet mode on a PostgreSQL state store, else the one replica."""
        envs = watched_envs(config)
        if store.is_sqlite:
            return cls(None, envs)
        return cls(store, envs, lease=config.fleet.lease)

    @classmethod
    def solo(cls, envs: dict[str, float] | None = None) -> Shards:
        return cls(None, envs or {})

    @property
    def fleet(self) -> bool:
        return self.gateway is not None

    # --- what the watchers ask ----------------------------------------------------------------------

    def owns(self, env: str) -> bool:
        """This replica runs ``env``'s checks now (always, for the one replica of a SQLite store)."""
        if not self.fleet:
            return True
        return not self._stopped.is_set() and env in self._owned and time.monotonic() < self._valid_until

    def begin(self, env: str) -> bool:
        """Where a check of ``env`` starts: true (and counted as running until :meth:`end`) when this
        replica owns it now. A release waits for the checks that began (a quarter of the lease at most)."""
        if not self.fleet:
            return True
        with self._lock:
            if not self.owns(env):
                return False
            self._running[env] = self._running.get(env, 0) + 1
            return True

    def end(self, env: str) -> None:
        """Where a check that :meth:`begin` let start ends."""
        if not self.fleet:
            return
        with self._lock:
            left = self._running.get(env, 0) - 1
            if left > 0:
                self._running[env] = left
            else:
                self._running.pop(env, None)
                self._idle.notify_all()

    def owns_any(self) -> bool:
        """This replica owns at least one environment now (always, for the one replica of a SQLite store)."""
        if not self.fleet:
            return True
        return not self._stopped.is_set() and bool(self._owned) and time.monotonic() < self._valid_until

    def alive(self) -> bool:
        """Fleet mode: this replica has joined and is not stopping (the watchers' "leader" test)."""
        return self._joined and not self._stopped.is_set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def generation(self, env: str) -> int | None:
        """The generation of this replica's lease on ``env``, while it owns it."""
        if not self.owns(env):
            return None
        return self._owned.get(env)

    def owned(self) -> list[str]:
        return sorted(e for e in self._owned if self.owns(e))

    def on_gain(self, callback: Callable[[str], None]) -> None:
        """``callback(env)`` runs when this replica takes an environment, before :meth:`owns` turns true."""
        self._on_gain.append(callback)

    def on_sweep(self, callback: Callable[[frozenset[str]], None]) -> None:
        """``callback(envs)`` closes the open incidents of ``envs`` this replica's configuration does not
        watch (a kind, a host, the whole environment), with their leases held (fleet mode): the
        environments this replica just took, and those the sweeper took because no replica has them."""
        self._on_sweep.append(callback)

    def on_busy(self, callback: Callable[[], set[str]]) -> None:
        """``callback()``: the environments with calls still waiting to be delivered (the outbox); the
        sweeper keeps an environment it took until they are."""
        self._on_busy.append(callback)

    @property
    def sweeper(self) -> bool:
        """Fleet mode: this replica closes what the environments nobody watches any more left open."""
        return self._sweeper and not self._stopped.is_set()

    def swept(self) -> list[str]:
        """The environments not configured here that this replica holds to close what they left open."""
        return sorted(self._swept)

    def fence(self, c: Connection, env: str) -> bool:
        """In an incident write's transaction: this replica still holds ``env`` at its generation."""
        gen = self.generation(env)
        if gen is None or self.gateway is None:
            return False
        return self.gateway.holds(c, env, self.id, gen)

    def held_clause(self, env: str) -> ColumnElement[bool] | None:
        """For an outbox claim's conditional UPDATE; None when this replica does not own ``env``."""
        gen = self.generation(env)
        if gen is None or self.gateway is None:
            return None
        return self.gateway.held_clause(env, self.id, gen, time.time())

    # --- metrics ------------------------------------------------------------------------------------

    def checked(self, env: str, started: float, secs: float) -> None:
        """One scheduled check of ``env`` ran (``started``: its monotonic start)."""
        counter = self._counted.get(env)
        if counter is None:
            counter = self._counted[env] = FLEET_CHECKS.labels(env)
        counter.inc()
        with self._lock:
            self._checks += 1
            end = started + secs
            if self._round_start is None or started - self._round_start > self.every / 2:
                if self._round_start is not None:
                    FLEET_CYCLE_SECONDS.set(max(0.0, self._round_end - self._round_start))
                self._round_start, self._round_end = started, end
            else:
                self._round_end = max(self._round_end, end)

    def _rate(self) -> None:
        now = time.monotonic()
        with self._lock:
            span = now - self._rate_at
            if span < self.every:
                return
            FLEET_CHECKS_PER_SECOND.set((self._checks - self._rate_checks) / span)
            self._rate_at, self._rate_checks = now, self._checks

    # --- the job ------------------------------------------------------------------------------------

    def install(self, scheduler: Any) -> None:
        """Tick every ``lease / 4`` from now on (fleet mode); stop and hand over on the scheduler's shutdown."""
        self._sweep_in_thread = True
        if not self.fleet:
            scheduler.add_job(self._rate, "interval", seconds=max(1.0, self.every), id="fleet:rate",
                              name="fleet metrics", replace_existing=True)
            return
        scheduler.add_job(self.tick, "interval", seconds=self.tick_every, id="fleet:tick",
                          name="fleet heartbeat and environment leases", next_run_time=datetime.now(UTC),
                          replace_existing=True)
        scheduler.add_listener(self._on_shutdown, EVENT_SCHEDULER_SHUTDOWN)

    def _on_shutdown(self, _event: object) -> None:
        self.stop()

    @property
    def store_down(self) -> bool:
        """The last tick could not reach the state store (the environments owned are kept meanwhile)."""
        return self._store_down

    def tick(self) -> None:
        """Beat, then release, renew and take environment leases (the scheduler job)."""
        gw = self.gateway
        if gw is None or self._stopped.is_set():
            return
        started = time.monotonic()
        now = time.time()
        try:
            live = gw.beat(self.id, self.label, len(self._owned), self.ttl, now)
            leases = gw.leases()
            p = plan(self.id, self.envs, live, leases, now)
            sweeper = owner(SWEEP_KEY, set(live) | {self.id}) == self.id
            keep, sweep_take, open_envs = self._sweep_plan(sweeper, leases, now, started)
            # a lease released earlier (or run out) that this replica does not think it owns is not
            # released again: a removed environment keeps its last holder's row for good
            stale = {e for e in p.release if leases[e].expires_at < now and e not in self._owned}
            release = p.release - keep - stale
            if release:
                with self._lock:  # stop checking them before the store says they are free
                    for env in release:
                        self._owned.pop(env, None)
                    # and let the checks that began end first; one still running past the wait keeps its
                    # lease until the next tick (nobody may check the environment meanwhile)
                    self._idle.wait_for(lambda: not self._running.keys() & release, self.ttl / 4)
                    free = release - self._running.keys()
                if free:
                    gw.release(self.id, free)
            held = gw.renew(self.id, p.renew | keep, self.ttl, now)
            held.update(gw.take(self.id, p.take | sweep_take, self.ttl, now))
        except Exception as exc:
            if self._stopped.is_set():
                return
            if not self._store_down:
                log.warning("fleet: the state store cannot be reached (%s): this replica keeps checking the %d "
                            "environments it owned", type(exc).__name__, len(self._owned))
            self._store_down = True
            with self._lock:
                if self._owned:
                    self._valid_until = started + VALID_FOR * self.ttl
            self._rate()
            return
        if self._store_down:
            log.info("fleet: the state store answers again")
            self._store_down = False
        if self._stopped.is_set():
            return
        swept = {e for e in held if e not in self._configured}
        with self._lock:
            before = dict(self._owned)
        gained = sorted(e for e, g in held.items() if before.get(e) != g and e not in swept)
        lost = sorted(e for e in before if e not in held and e not in release)
        with self._lock:
            self._owned = {e: g for e, g in held.items() if e not in gained}
            self._valid_until = started + VALID_FOR * self.ttl
            self._joined = True
            self._swept = swept
            self._sweeper = sweeper
        for env in gained:
            for cb in self._on_gain:
                try:
                    cb(env)
                except Exception:
                    log.exception("fleet: preparing %s failed", env)
        with self._lock:
            self._owned.update({e: held[e] for e in gained})
        # close what is not watched: in the environments just taken (a host or kind removed), and in those
        # the sweeper holds (the environment removed); with their leases held, so fenced
        self._sweep(frozenset(gained) | (swept & open_envs if open_envs is not None else swept))
        if swept - before.keys():
            log.info("fleet: %s closes what %d environment(s) no replica watches left open: %s", self.id,
                     len(swept - before.keys()), _few(sorted(swept - before.keys())))
        if gained:
            FLEET_HANDOVERS.labels("gained").inc(len(gained))
            log.info("fleet: %s now checks %d environment(s): %s", self.id, len(gained), _few(gained))
        handed = release - self._configured
        if release - handed:
            FLEET_HANDOVERS.labels("released").inc(len(release - handed))
            log.info("fleet: %s handed over %d environment(s): %s", self.id, len(release - handed),
                     _few(sorted(release - handed)))
        if lost:
            FLEET_HANDOVERS.labels("lost").inc(len(lost))
            log.warning("fleet: %s lost %d environment(s) to another replica: %s", self.id, len(lost), _few(lost))
        FLEET_OWNED.set(len(self._owned) - len(swept))
        FLEET_REPLICAS.set(len(set(live) | {self.id}))
        self._rate()

    def _sweep_plan(self, sweeper: bool, leases: dict[str, Lease], now: float,
                    started: float) -> tuple[set[str], set[str], set[str] | None]:
        """The sweeper's share of a tick: (environments it keeps holding, those it takes, the environments
        with open incidents, None when it did not look). Not the sweeper: nothing (what it held is
        released with the rest of what it does not want)."""
        if not sweeper:
            self._sweep_again = False
            return set(), set(), None
        due = (not self._sweeper or self._sweep_again or bool(self._swept)
               or started - self._sweep_at >= self.sweep_every)
        if not due:
            return set(), set(), None
        self._sweep_at = started
        try:
            open_envs = {i.env for i in open_incidents(self.store)} if self.store is not None else set()
            busy: set[str] = set()
            for cb in self._on_busy:
                busy |= cb()
        except Exception as exc:  # the leases are renewed all the same; the sweep is tried at the next tick
            log.warning("fleet: could not look for what is no longer watched: %s", type(exc).__name__)
            self._sweep_again = True
            return set(self._swept), set(), None
        keep, take, again = set(), set(), False
        for env in (open_envs | busy) - self._configured:
            lease = leases.get(env)
            if lease is None or lease.expires_at < now:
                take.add(env)  # nobody holds it (a take is conditional: a replica that was faster wins)
            elif lease.holder == self.id:
                keep.add(env)
            else:
                again = True  # another replica still holds it: it has it configured, or it swept it
        self._sweep_again = again
        return keep, take, open_envs

    def _sweep(self, envs: frozenset[str]) -> None:
        """Run the close-unwatched hooks for ``envs``: on the sweep thread once installed (one at a time,
        what comes meanwhile joins the next round), else here."""
        if not envs or not self._on_sweep:
            return
        if not self._sweep_in_thread:
            self._close_unwatched(envs)
            return
        with self._lock:
            self._sweep_pending |= envs
            if self._sweep_running:
                return
            self._sweep_running = True
        threading.Thread(target=self._sweep_rounds, name="fleet-sweep", daemon=True).start()

    def _sweep_rounds(self) -> None:
        while True:
            with self._lock:
                envs = frozenset(self._sweep_pending)
                self._sweep_pending = set()
                if not envs or self._stopped.is_set():
                    self._sweep_running = False
                    return
            self._close_unwatched(envs)

    def _close_unwatched(self, envs: frozenset[str]) -> None:
        for cb in self._on_sweep:
            try:
                cb(envs)
            except Exception:
                log.exception("fleet: closing what is no longer watched failed")

    def stop(self) -> None:
        """Stop checking and hand every environment over at once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._lock:
            self._owned = {}
            self._swept = set()
            self._valid_until = 0.0
            self._idle.wait_for(lambda: not self._running, self.ttl / 4)  # the checks that began end first
        FLEET_OWNED.set(0)
        if self.gateway is not None and self._joined:
            try:
                self.gateway.leave(self.id)
            except Exception as exc:  # the leases run out by themselves
                log.warning("fleet: could not hand the environments over: %s", type(exc).__name__)


def _few(envs: list[str], n: int = 10) -> str:
    return ", ".join(envs[:n]) + (f" and {len(envs) - n} more" if len(envs) > n else "")


class FleetLease:
    """What a watcher asks of its leader lease, answered by the fleet: with environments sharded every
    replica "leads" the environments it owns (:meth:`Shards.owns`, asked where each check starts), and
    :meth:`is_leader` says it owns at least one. Same surface as :class:`bot.state.lease.LeaderLease`
    as the watchers use it."""

    def __init__(self, shards: Shards):
        self.shards = shards
        self.holder = shards.id

    def install(self, scheduler: Any, job_id: str, job_name: str) -> None:
        """Nothing to renew: the fleet's tick (installed once by the runtime) is the heartbeat."""
        return None

    @property
    def stopped(self) -> bool:
        return self.shards.stopped

    def is_leader(self) -> bool:
        return self.shards.owns_any()

    @property
    def through_outage(self) -> bool:
        """Leading through a state-store outage: the environments this replica owned are still checked
        (as :attr:`bot.state.lease.LeaderLease.through_outage` for one leader)."""
        return self.shards.store_down and self.shards.owns_any()

    def stop(self) -> None:
        self.shards.stop()
