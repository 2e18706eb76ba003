"""The thin shell around :mod:`bot.watch.rules`: scheduler jobs, leader lease, state store, Slack.

Jobs (added by :func:`install`; they run once the scheduler starts):

* the leader lease and the Slack outbox deliverer are the alerts' one shell (:class:`bot.alerts.AlertShell`,
  shared with the lag watcher). Only the holder checks: with several replicas on one PostgreSQL state
  store exactly one posts, and another takes over within two intervals.
* ``watch:check:<env>:<host>``: one read of the host (``watch_host.sql``: one statement, one
  ``pg_stat_activity`` read for every kind), the rules, then each decision: open (post), update (edit
  in place, at most once a minute), remind (in the thread, until acknowledged), resolve (edit to
  resolved with how long and what was done, buttons removed). A host per job, every call bounded by the
  environment's timeouts: a hung host delays nobody else. A failed read decides nothing (an open
  incident stays open; the lag watcher reports unreachable standbys).
* No job reads the standbys of an environment with only ``lag_alert``: the lag watcher reads them, and
  after each of its checks hands what it saw of the WAL receiver to :meth:`Watcher.on_standby_receiver`
  (given to it by the composition root, :class:`bot.runtime.Runtime`), which moves their WAL_RECEIVER
  incident the same way.

Every post, edit and thread reply of the watch goes through the shell's durable Slack outbox
(:mod:`bot.slack.outbox`): when Slack's Web API fails for minutes, alerts and their resolutions are
kept and land in order when it answers again.

Incidents live in the state store (``pgs_incidents``, kinds from :mod:`bot.watch.model`): a restart
neither repeats nor forgets one. Consecutive-check counts are in memory and start again after a restart.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from bot.alerts import AlertShell
from bot.approval import tokens
from bot.approval.models import BulkTarget
from bot.approval.policy import Policy
from bot.approval.targets import session_ref
from bot.bulk.targets import STATE_LIKE, TERMINATE_BULK
from bot.config import Config, Environment, Watch
from bot.lagwatch.model import ReceiverFacts
from bot.metrics import CHECK_FAILURES
from bot.postgres.models import Session, runs_query
from bot.postgres.pools import Databases, DatabaseUnavailable, UnsupportedServer
from bot.state.incidents import Incident
from bot.state.store import StateStore
from bot.watch import pool_rules, rules
from bot.watch.detectors import DETECTORS, Detector
from bot.watch.drawing import Drawing
from bot.watch.incident_models import IncidentPayload, LockPileupFacts, Origin, Seen, facts_json, facts_of
from bot.watch.incidents import WatchIncidents, view
from bot.watch.model import (
    CONNECTIONS,
    HOST_UNREACHABLE,
    LOCK_PILEUP,
    WAL_RECEIVER,
    HostSnapshot,
    iso,
)
from bot.watch.reads import SharedReads

log = logging.getLogger(__name__)

CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


class HostState:
    def __init__(self) -> None:
        self.streaks = rules.Streaks()
        self.clock = rules.HorizonClock()
        self.lock = threading.Lock()


class Watcher:
    def __init__(self, config: Config, store: StateStore, dbs: Databases, scheduler: BaseScheduler,
                 shell: AlertShell, policy: Policy, drawing: Drawing):
        self.config, self.store, self.dbs, self.scheduler = config, store, dbs, scheduler
        self.render = drawing  # how alerts are drawn (bot.render.watch)
        # what may be offered (protect:, allow_kill): the access policy answers, on every path
        self.policy = policy
        # environments with ``watch``, and those with only ``lag_alert`` (their host alerts: WAL receiver,
        # unreachable primary)
        self.watches: dict[str, Watch] = {}
        for n, e in config.environments.items():
            w = rules.effective_watch(e)
            if w is not None:
                self.watches[n] = w
        self.envs: dict[str, Environment] = {n: config.environments[n] for n in self.watches}
        # the detectors beyond the shared read each environment turns on (bot.watch.detectors)
        self.detectors: dict[str, list[Detector]] = {
            n: [d for d in DETECTORS if d.configured(w)] for n, w in self.watches.items()}
        # one lease for every alert (the lag watcher's too); gaining it: what is open is read first, then
        # checks may run (a check skips the store for a quiet host)
        self.shell = shell
        self.lease = shell.lease
        if self.envs:
            shell.on_gain(self._on_leadership)
        self.holder = self.lease.holder
        # which environments this replica checks (fleet mode: those whose lease it holds; else all)
        self.shards = shell.shards
        self.incidents = WatchIncidents(store, self.holder, shards=self.shards)
        self.shards.on_gain(self._on_gain_env)
        self.shards.on_sweep(self._close_unwatched)  # fleet mode: what its taken environments no longer watch
        self._hosts: dict[tuple[str, str], HostState] = {}
        # hosts with an open incident, read from the store when this instance becomes the leader and kept
        # while it leads (only the leader opens and resolves): a quiet host costs no state-store read
        self._open_hosts: set[tuple[str, str]] = set()
        self._refused: set[tuple[str, str]] = set()  # hosts whose PostgreSQL is too old (logged once)
        self._lock = threading.Lock()
        self.update_every = rules.UPDATE_EVERY
        # completed checks per (env, host) while leader, and the last check's duration: for tests and bench
        self.checks: dict[tuple[str, str], int] = {}
        self.last_check_secs: dict[tuple[str, str], float] = {}
        # every Slack call of the watch goes through the one durable outbox (Slack may be down for minutes)
        self.outbox = shell.outbox
        self.slack = shell.outbox.for_incidents(self.incidents, lambda: self.lease.stopped)
        # one read per server per check, shared by the environments that reach it alike
        self.reads = SharedReads(dbs, self.envs, self.hosts)

    # --- wiring -------------------------------------------------------------------------------------

    def install(self) -> None:
        sched = self.scheduler
        now = datetime.now(UTC)
        self.shell.install(sched)
        for env in self.envs:
            every = self.watches[env].check_every
            for host in self.hosts(env):
                sched.add_job(self.check, "interval", seconds=every, args=[env, host], id=f"watch:check:{env}:{host}",
                              name=f"watch {env}/{host}", next_run_time=now + timedelta(seconds=min(0.5, every)),
                              replace_existing=True)

    def stop(self) -> None:
        self.lease.stop()

    # --- leadership ---------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.lease.is_leader()

    def _on_gain_env(self, env: str) -> None:
        """Fleet mode: this replica takes ``env`` over. Its counts start again; its hosts are read against
        the store at their next check (an incident another replica opened continues here: same message,
        same thread), and they are checked at once."""
        if env not in self.envs:
            return
        hosts = self.hosts(env)
        with self._lock:
            for host in self.envs[env].hosts():
                self._hosts.pop((env, host), None)
                self._open_hosts.add((env, host))
        now = datetime.now(UTC)
        for host in hosts:
            job = self.scheduler.get_job(f"watch:check:{env}:{host}")
            if job is not None:
                job.modify(next_run_time=now)

    def _on_leadership(self) -> None:
        """Before this instance leads: close what is no longer watched, then learn which hosts have an
        open incident."""
        self._close_unwatched()
        try:
            hosts = {(i.env, i.host) for i in self.incidents.open_list()}
        except Exception:
            hosts = {(e, h) for e, environment in self.envs.items() for h in environment.hosts()}
        with self._lock:
            self._hosts.clear()
            self._open_hosts = hosts

    def _close_unwatched(self, envs: Collection[str] | None = None) -> None:
        """Incidents of a kind, host or environment no longer watched: say so instead of leaving them open.
        ``envs``: only theirs (fleet mode: the environments whose leases this replica just took or swept)."""
        try:
            for inc in self.incidents.open_list():
                if envs is not None and inc.env not in envs:
                    continue
                e = self.envs.get(inc.env)
                if e is not None and inc.host in e.hosts() and self._kind_on(self.watches[inc.env], inc.kind):
                    continue
                if self.incidents.resolve(inc, inc.payload.with_(closed="not watched any more")) and inc.message_ts:
                    msg = self.render.render_closed(inc.kind, inc.env, inc.host, "no longer watched (removed from the configuration)")
                    self.slack.call("chat_update", inc, channel=inc.channel, ts=inc.message_ts, **msg)
        except Exception:
            log.exception("watch: could not read open incidents")

    @staticmethod
    def _kind_on(w: Watch, kind: str) -> bool:
        return {
            "lock_pileup": w.lock_pileup is not None, "idle_in_tx": w.idle_in_transaction is not None,
            "long_running": w.long_running is not None, "connections": w.connections is not None,
            "xmin_horizon": w.xmin_horizon is not None, "wal_receiver": True, "host_unreachable": True,
            "pool_waiting": w.pool_waiting is not None,
        }.get(kind, False) or any(d.kind == kind and d.configured(w) for d in DETECTORS)

    # --- one check ----------------------------------------------------------------------------------

    def _state(self, env: str, host: str) -> HostState:
        with self._lock:
            return self._hosts.setdefault((env, host), HostState())

    @contextmanager
    def _checking(self, env: str, host: str, doing: str, count: bool = False,
                  begun: bool = False) -> Iterator[HostState | None]:
        """One check of a host: its state, or None when the previous check of it still runs. Counted in
        ``checks`` / ``last_check_secs``; an error is logged and counted as a check failure (not when
        the bot is shutting down under it). ``begun``: the check was let start by ``shards.begin``, and
        ends with this block."""
        st = self._state(env, host)
        if not st.lock.acquire(blocking=False):
            if begun:
                self.shards.end(env)
            yield None
            return
        started = time.monotonic()
        try:
            yield st
        except Exception:
            if not self.lease.stopped:
                CHECK_FAILURES.labels(env, host).inc()
                log.exception("watch: %s %s/%s failed", doing, env, host)
        finally:
            self.checks[(env, host)] = self.checks.get((env, host), 0) + 1
            self.last_check_secs[(env, host)] = time.monotonic() - started
            if count:
                self.shards.checked(env, started, self.last_check_secs[(env, host)])
            st.lock.release()
            if begun:
                self.shards.end(env)

    def check(self, env: str, host: str) -> None:
        if not self.is_leader() or not self.shards.begin(env):
            return
        with self._checking(env, host, "checking", count=True, begun=True) as st:
            if st is None:
                return  # the previous check of this host is still running
            # the host's poolers (pool_waiting) are read beside the database, each bounded
            pool_reads = pool_rules.start(self.dbs, env, host, self.watches.get(env))
            try:
                snap = self.reads.read(env, host)
            except UnsupportedServer as exc:
                # answered, but too old: refused (said once per host), never an unreachable alert
                CHECK_FAILURES.labels(env, host).inc()
                if (env, host) not in self._refused:
                    self._refused.add((env, host))
                    log.error("watch: %s/%s not watched: %s", env, host, exc.reason)
                return
            except DatabaseUnavailable as exc:
                CHECK_FAILURES.labels(env, host).inc()
                log.warning("watch: cannot check %s/%s: %s", env, host, exc.reason)
                if self.is_leader() and rules.alerts_unreachable(self.envs[env], host):
                    self.on_failure(env, host, exc.reason, st)
                return
            extra, unknown = self._detect(env, host)
            if self.is_leader():
                snap = pool_rules.read_pools(self.dbs, snap, pool_reads, self.watches.get(env))
                self.on_snapshot(snap, st, extra, unknown)

    def _detect(self, env: str, host: str) -> tuple[list[rules.Condition], tuple[str, ...]]:
        """The conditions of the detectors that read this host (:data:`bot.watch.detectors.DETECTORS`), and
        the kinds this check knows nothing about (their read failed: their incidents neither move nor resolve)."""
        w = self.watches[env]
        found: list[rules.Condition] = []
        unknown: list[str] = []
        for detector in self.detectors[env]:
            if not detector.reads(w, host):
                continue
            try:
                found += detector.detect(self.dbs, env, host, self.envs[env], w)
            except DatabaseUnavailable as exc:
                CHECK_FAILURES.labels(env, host).inc()
                log.warning("watch: cannot read %s of %s/%s: %s", detector.kind, env, host, exc.reason)
                unknown.append(detector.kind)
        return found, tuple(unknown)

    def on_snapshot(self, snap: HostSnapshot, st: HostState, extra: list[rules.Condition] | None = None,
                    unknown: tuple[str, ...] = ()) -> None:
        environment = self.envs[snap.env]
        w = self.watches[snap.env]
        # the sessions as they may be offered (protect): the access policy marks them, per environment
        snap = replace(snap, sessions=tuple(self.policy.mark(snap.env, snap.sessions)))
        found = rules.conditions(snap, w, environment.ignore, max_bulk=environment.access.max_bulk, clock=st.clock)
        found = pool_rules.without_pool_members(found, snap) + pool_rules.pool_waiting(snap, w, environment.ignore)
        self._move(snap, st, found + list(extra or ()), w, unknown=unknown)

    def _move(self, snap: HostSnapshot, st: HostState, found: list[rules.Condition], w: Watch,
              kinds: tuple[str, ...] | None = None, unknown: tuple[str, ...] = ()) -> None:
        """Count the checks in a row, then open, update, remind and resolve this host's incidents (only
        those of ``kinds`` when given, none of ``unknown``: not read this time) by what was found."""
        streaks = st.streaks.advance(found)
        key = (snap.env, snap.host)
        if not found and key not in self._open_hosts:
            return  # nothing true and nothing open here (known since this instance became the leader)
        open_incs = self.incidents.open_list(snap.env, snap.host)
        if kinds is not None:
            open_incs = [i for i in open_incs if i.kind in kinds]
        if unknown:
            open_incs = [i for i in open_incs if i.kind not in unknown]
        views = [view(i) for i in open_incs]
        by_id = {i.id: i for i in open_incs}
        now = time.time()
        decisions = rules.decide(found, streaks, views, now=now, consecutive=w.consecutive,
                                 remind_every=w.remind_every, update_every=self.update_every)
        for d in decisions:
            inc = by_id.get(d.incident.id) if d.incident else None
            if d.action == "open":
                self._open(snap, d.condition, w)  # type: ignore[arg-type]
            elif d.action == "update" and inc is not None:
                self._update(snap, inc, d.condition, w)  # type: ignore[arg-type]
            elif d.action == "remind" and inc is not None:
                self._remind(inc, d.condition, now)  # type: ignore[arg-type]
            elif d.action == "resolve" and inc is not None:
                self._resolve(inc)
        with self._lock:
            if any(d.action == "open" for d in decisions) or self.incidents.open_list(snap.env, snap.host):
                self._open_hosts.add(key)
            else:
                self._open_hosts.discard(key)

    def on_standby_receiver(self, env: str, host: str, receiver: ReceiverFacts | None) -> None:
        """The WAL-receiver alert of a standby this watch does not read (an environment with only
        ``lag_alert``): the lag watcher hands over what each of its checks saw of the standby's WAL
        receiver (None: that check could not read the standby), and the WAL_RECEIVER incident moves as
        for a standby the watch reads: it opens after ``consecutive`` checks that find the receiver not
        streaming, and resolves at the first check that finds it streaming. A check that could not read
        the standby breaks the run and decides nothing (the lag watcher alerts on unreachable standbys).
        Only the watch's leader acts (its lease fences the incidents)."""
        if env not in self.envs or host in self.hosts(env) or host not in self.envs[env].hosts():
            return  # read by this watch itself, or not a standby of a watched environment
        if not self.is_leader() or not self.shards.owns(env):
            return
        with self._checking(env, host, "acting on the WAL receiver of") as st:
            if st is None:
                return  # the previous hand-over for this host is still being acted on
            if receiver is None:
                st.streaks.advance([])
                return
            snap = HostSnapshot(env=env, host=host, taken_at=time.time(), in_recovery=receiver.in_recovery,
                                max_connections=0, superuser_reserved=0, client_connections=0, sessions=(),
                                receiver_status=receiver.status, receiver_silent_secs=receiver.silent_secs)
            self._move(snap, st, rules.wal_receiver(snap), self.watches[env], kinds=(WAL_RECEIVER,))

    def hosts(self, env: str) -> list[str]:
        """The hosts read by this watch: all of an environment with ``watch``; only the primary of one
        with just ``lag_alert`` (the lag watcher reads its standbys and hands their WAL receiver over to
        :meth:`on_standby_receiver`; a second reader of a failing standby would blur the reason its
        unreachable alert gives)."""
        e = self.envs[env]
        return list(e.hosts()) if e.watch is not None else ["primary"]

    def _channel(self, env: str, kind: str) -> str:
        if kind in (WAL_RECEIVER, HOST_UNREACHABLE):
            return rules.host_alert_channel(self.envs[env])
        return self.watches[env].channel

    def on_failure(self, env: str, host: str, reason: str, st: HostState) -> None:
        """A failed read: only the unreachable incident moves (nothing else is known, nothing resolves). The
        rule is the lag watcher's too (:func:`bot.watch.rules.cannot_read`, here of origin ``HOST``)."""
        w = self.watches[env]
        cond, streaks = rules.cannot_read(st.streaks, reason, Origin.HOST)
        open_incs = [i for i in self.incidents.open_list(env, host) if i.kind == cond.kind]
        by_id = {i.id: i for i in open_incs}
        snap = HostSnapshot(env=env, host=host, taken_at=time.time(), in_recovery=False, max_connections=0,
                            superuser_reserved=0, client_connections=0, sessions=())
        for d in rules.decide([cond], streaks, [view(i) for i in open_incs], now=time.time(),
                              consecutive=w.consecutive, remind_every=w.remind_every, update_every=self.update_every):
            inc = by_id.get(d.incident.id) if d.incident else None
            if d.action == "open":
                self._open(snap, cond, w)
            elif d.action == "update" and inc is not None:
                self._update(snap, inc, cond, w)
            elif d.action == "remind" and inc is not None:
                self._remind(inc, cond, time.time())
        with self._lock:
            self._open_hosts.add((env, host))

    # --- tokens -------------------------------------------------------------------------------------

    @staticmethod
    def _root_actions(s: Session) -> tuple[str, ...]:
        """A pile-up's root gets one button (Cancel while a query runs, else Terminate): its token says so."""
        return ("cancel",) if runs_query(s.state) else ("terminate",)

    def _bulk(self, inc: Incident, cond: rules.Condition,
              channel: str) -> tuple[str | None, list[dict[str, Any]], dict[str, str]]:
        """The connections alert's *Terminate these N*: a bulk target covering exactly the idle sessions shown."""
        if cond.kind != CONNECTIONS or not cond.bulk or self.policy.signalling_off(inc.env):
            return None, [], {}
        sessions = [
            session_ref(s, state_change=s.state_change).model_dump()
            for s in cond.bulk
            if not self.policy.protected(inc.env, s)  # protect: never offered, so never in the snapshot
        ]
        if not sessions:
            return None, [], {}
        ident = ",".join(sorted(x["pid"].__str__() + "@" + str(x["backend_start"]) for x in sessions))
        payload = {
            "actions": [TERMINATE_BULK], "category": "idle", "state_like": STATE_LIKE["idle"],
            "filters": f"idle --app {cond.bulk_app}", "app": cond.bulk_app, "user": None, "database": None,
            "min_seconds": None, "listed_at": time.time(), "sessions": sessions, "source": f"watch:{inc.id}",
        }
        # the same sessions keep their token only while it still works at the next update (it ages like
        # every button: access.request_ttl from the read it came from)
        token, kept = tokens.reissue_bulk(self.store, inc.env, inc.host, channel, BulkTarget.model_validate(payload),
                                          ident, inc.payload.bulk,
                                          max_age=self.envs[inc.env].access.request_ttl / 2)
        return token, sessions, kept

    def _message(self, inc: Incident, cond: rules.Condition,
                 channel: str | None) -> tuple[dict[str, Any], IncidentPayload]:
        """The alert with its buttons; without them while the state store does not answer (no token can
        be issued: the alert itself still goes out)."""
        if channel is not None and not self.incidents.health.degraded:
            try:
                return self._message_in(inc, cond, channel)
            except Exception as exc:
                if not self.incidents.health.note(exc):
                    raise
        return self._message_in(inc, cond, None)

    def _message_in(self, inc: Incident, cond: rules.Condition,
                    channel: str | None) -> tuple[dict[str, Any], IncidentPayload]:
        environment = self.envs[inc.env]
        w = self.watches[inc.env]
        known: tokens.Memory = dict(inc.payload.tokens)
        drawn = tokens.Tokens()
        if channel:
            # reused while valid until the next update (bot.approval.tokens.reissue), else issued afresh
            shown = [(s.key, s) for s in cond.sessions if s.backend_start is not None]
            drawn, known = tokens.reissue(
                self.store, inc.env, inc.host, channel, shown, known,
                request_ttl=environment.access.request_ttl, kill=self.policy.signalling_off(inc.env) is None,
                actions=self._root_actions if cond.kind == LOCK_PILEUP else None)
        bulk_token, bulk_sessions, bulk = self._bulk(inc, cond, channel) if channel else (None, [], {})
        ack = inc.payload.ack_json()
        msg = self.render.render_alert(
            inc.kind, inc.env, inc.host, cond.facts, incident_id=inc.id, opened_at=inc.opened_at, now=time.time(),
            tokens=drawn.kill, details_tokens=drawn.details, bulk_token=bulk_token, bulk_sessions=bulk_sessions,
            kill_disabled=self.policy.signalling_off(inc.env), ack=ack,
            query_chars=environment.listing.query_chars, remind_every=w.remind_every,
        )
        seen = dict(inc.payload.seen)
        for s in cond.sessions:
            seen.setdefault(s.key, Seen(pid=s.pid, backend_start=iso(s.backend_start), user=s.user,
                                        application=s.application))
        payload = inc.payload.with_(facts=facts_of(inc.kind, cond.facts), tokens=known,
                                    bulk=bulk or inc.payload.bulk, ack_drawn=ack is not None, seen=seen)
        return msg, payload

    # --- decisions ----------------------------------------------------------------------------------

    def _open(self, snap: HostSnapshot, cond: rules.Condition, w: Watch) -> None:
        inc = self.incidents.create_keyed(snap.env, snap.host, cond.kind, cond.key, self._channel(snap.env, cond.kind),
                                          IncidentPayload(facts=facts_of(cond.kind, cond.facts)))
        if inc is None:
            return
        log.warning("watch: %s on %s/%s opened (%s)", cond.kind, snap.env, snap.host, cond.key or "-")
        self._post(inc, cond, w)

    def _post(self, inc: Incident, cond: rules.Condition, w: Watch) -> None:
        now = time.time()
        channel = self._channel(inc.env, inc.kind)
        known_id = CHANNEL_ID.match(channel) is not None
        msg, payload = self._message(inc, cond, channel if known_id else None)
        resp = self.slack.call("chat_postMessage", inc, channel=channel, **msg)
        if resp is None:
            self.incidents.save(inc, last_update_at=now, payload=payload)
            return
        self.incidents.save(inc, channel=resp["channel"], message_ts=resp["ts"], last_update_at=now,
                            last_reminder_at=now, payload=payload)
        if not known_id:
            # a channel name: buttons must carry the channel id Slack answered with
            msg, payload = self._message(inc, cond, resp["channel"])
            if self.slack.call("chat_update", inc, channel=resp["channel"], ts=resp["ts"], **msg) is not None:
                self.incidents.save(inc, payload=payload)

    def _update(self, snap: HostSnapshot, inc: Incident, cond: rules.Condition, w: Watch) -> None:
        if not inc.message_ts and not self.slack.adopt_post(inc):
            # the first post waits in the outbox (Slack down), or failed for good: post again only then
            if self.slack.post_waiting(inc):
                self.incidents.save(inc, last_update_at=time.time())
            else:
                self._post(inc, cond, w)
            return
        now = time.time()
        msg, payload = self._message(inc, cond, inc.channel)
        if self.slack.call("chat_update", inc, channel=inc.channel, ts=inc.message_ts, **msg) is not None:
            self.incidents.save(inc, last_update_at=now, payload=payload)
        else:
            self.incidents.save(inc, last_update_at=now)

    def _remind(self, inc: Incident, cond: rules.Condition, now: float) -> None:
        msg = self.render.render_reminder(inc.kind, inc.env, inc.host, cond.facts, opened_at=inc.opened_at, now=now)
        if self.slack.call("chat_postMessage", inc, channel=inc.channel, thread_ts=inc.message_ts, **msg) is not None:
            self.incidents.save(inc, last_reminder_at=now)

    def _resolve(self, inc: Incident) -> None:
        if not self.incidents.holds_lease(inc.env):
            return
        done = self.what_was_done(inc)
        now = time.time()
        msg = self.render.render_resolved(inc.kind, inc.env, inc.host, facts_json(inc.payload.facts),
                                     opened_at=inc.opened_at, resolved_at=now, done=done, ack=inc.payload.ack_json())
        if not self.slack.edit_landed(inc, msg):
            return  # stays open: the next check (condition still clear) edits it again
        if self.incidents.resolve(inc, inc.payload.with_(done=tuple(done))):
            log.info("watch: %s on %s/%s resolved", inc.kind, inc.env, inc.host)

    def what_was_done(self, inc: Incident) -> list[str]:
        """Signals sent through the bot on this host while the incident was open, from the audit log."""
        try:
            entries = self.store.audit_entries(env=inc.env, limit=1000)
        except Exception:
            log.exception("watch: could not read the audit log")
            return []
        root = inc.payload.facts_as(LockPileupFacts).root
        root_key = root.key if root is not None else None
        seen = inc.payload.seen
        bulk_pids: dict[str, list[int]] = {}
        lines: list[str] = []
        approvers_cache: dict[str, list[str]] = {}

        def approvers(request_id: str | None) -> str:
            if not request_id:
                return ""
            if request_id not in approvers_cache:
                try:
                    related = self.store.audit_entries(request_id=request_id, limit=50)
                except Exception:
                    related = []
                approvers_cache[request_id] = [r["actor"] for r in related
                                               if str(r["event"]).endswith(":approved") and r["actor"]]
            who = approvers_cache[request_id]
            return f" by approval of {', '.join(f'<@{a}>' for a in who)}" if who else " through the bot"

        for e in sorted(entries, key=lambda e: e["at"]):
            if e.get("host") != inc.host or e["at"] < inc.opened_at - 1:
                continue
            event = str(e.get("event", ""))
            action, _, result = event.partition(":")
            key = f"{e.get('pid')}@{e.get('backend_start')}"
            if action in ("cancel", "terminate") and result == "executed":
                verb = "terminated" if action == "terminate" else "cancelled"
                if root_key and key == root_key:
                    lines.append(f"root blocker pid {e.get('pid')} {verb}{approvers(e.get('request_id'))}")
                elif key in seen or not root_key:
                    lines.append(f"pid {e.get('pid')} {verb}{approvers(e.get('request_id'))}")
            elif action == TERMINATE_BULK and result in ("ended", "gone") and inc.kind == CONNECTIONS:
                bulk_pids.setdefault(e.get("request_id") or "", []).append(int(e.get("pid") or 0))
        for request_id, pids in bulk_pids.items():
            lines.append(f"{len(pids)} idle sessions terminated{approvers(request_id)}")
        if inc.kind == LOCK_PILEUP and not lines:
            lines.append(f"root blocker pid {root.pid if root is not None else None} let go without a signal from the bot")
        return lines
