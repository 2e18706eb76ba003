"""The scheduled lag watcher: one APScheduler job per standby, a leader lease, incidents in Slack.

Built by the runtime (``rt.lagwatch``, None when no environment has ``lag_alert``); its jobs are added
by :meth:`LagWatcher.install` and run once ``rt.start_background()`` starts the scheduler:

* the leader lease and the Slack outbox deliverer are the alerts' one shell (:class:`bot.alerts.AlertShell`,
  shared with the session watch): only the holder runs checks, so with several replicas on one
  PostgreSQL state store exactly one posts, and another takes over within two check intervals after the
  leader dies (at once when it stops cleanly and releases the lease).
* ``lagwatch:primary:<env>``: the primary's ``pg_stat_replication`` (a second view of the lag),
  cached for the standby checks so that a slow primary never delays them.
* ``lagwatch:check:<env>:<standby>``: measure one standby and move its incidents along. Every host
  has its own job and the scheduler a thread per host, and every connection and query is bounded by
  the environment's timeouts: an unreachable or hanging host delays nobody else.

The incident rules (when a lag or unreachable incident opens, continues, resolves) are
:mod:`bot.lagwatch.rules`, thin adapters over the lifecycle every alert shares (:mod:`bot.watch.rules`:
``Streaks``, ``moves``, and ``follow_up`` for when a continuing one is edited and reminded; the
unreachable standby is the one "host cannot be read" kind, ``cannot_read``, of origin ``STANDBY``); this
module is their shell: the schedule, the leader lease,
the incidents' records (:mod:`bot.state.incidents`) and the Slack messages. After every check of a
standby, what it saw of the WAL receiver goes to ``receiver`` (given at construction: the session
watch's WAL-receiver alert, :meth:`bot.watch.watcher.Watcher.on_standby_receiver`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from apscheduler.schedulers.base import BaseScheduler
from slack_sdk import WebClient

from bot.alerts import LEASE_NAME, AlertShell
from bot.approval import tokens
from bot.approval.policy import Policy
from bot.config import Config, Environment, LagAlert
from bot.durations import format_duration
from bot.lagwatch import rules
from bot.lagwatch.detect import mark_culprits, measure_standby, primary_views
from bot.lagwatch.drawing import Drawing
from bot.lagwatch.model import PrimaryView, ReceiverFacts, StandbyLag
from bot.lagwatch.rules import LAG, UNREACHABLE, Act, HostState
from bot.metrics import CHECK_FAILURES, OPEN_INCIDENTS, REPLAY_LAG_BYTES, REPLAY_LAG_SECONDS
from bot.postgres.pools import Databases, DatabaseUnavailable, UnsupportedServer
from bot.state.incidents import Incident, Incidents
from bot.state.store import StateStore
from bot.watch import rules as watch_rules
from bot.watch.incident_models import IncidentPayload, LagFacts, Origin, UnreachableFacts
from bot.watch.incidents import view

log = logging.getLogger(__name__)

UPDATE_EVERY = 60.0  # seconds between in-place edits of an open alert
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


@overload
def _utc(ts: float) -> datetime: ...
@overload
def _utc(ts: None) -> None: ...
def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class LagWatcher:
    def __init__(
        self,
        config: Config,
        store: StateStore,
        dbs: Databases,
        client: WebClient,
        scheduler: BaseScheduler,
        policy: Policy,
        shell: AlertShell,
        drawing: Drawing,
        receiver: Callable[[str, str, ReceiverFacts | None], None] | None = None,
    ):
        self.config, self.store, self.dbs, self.client, self.scheduler = config, store, dbs, client, scheduler
        self.render = drawing  # how alerts are drawn (bot.render.lag)
        self.policy = policy
        self.envs: dict[str, Environment] = {
            name: env for name, env in config.environments.items() if env.lag_alert is not None and env.standbys
        }
        self.shell = shell
        self.lease = shell.lease  # one lease for every alert
        if self.envs:
            shell.on_gain(self._on_leadership)
            shell.on_follow(self._on_follow)
        self.holder = self.lease.holder
        # which environments this replica checks (fleet mode: those whose lease it holds; else all)
        self.shards = shell.shards
        self.incidents = Incidents(store, LEASE_NAME, self.holder, self.shards)
        self.shards.on_gain(self._on_gain_env)
        self.shards.on_sweep(self._close_unwatched_of)  # fleet mode: what its taken environments no longer watch
        self._hosts: dict[tuple[str, str], HostState] = {}
        self._host_locks: dict[tuple[str, str], threading.Lock] = {}
        self._primary: dict[str, tuple[float, list[PrimaryView]]] = {}
        self._lock = threading.Lock()
        # after every check of a standby, what it saw of the WAL receiver (None: the standby could not be
        # read), to the session watch's WAL-receiver alert (Watcher.on_standby_receiver): a standby is read
        # once per check and its unreachable alert keeps this watcher's reason
        self.receiver = receiver
        # completed checks per (env, standby) while leader: for health views and tests
        self.checks: dict[tuple[str, str], int] = {}
        self.update_every = UPDATE_EVERY
        # every Slack call of the watcher goes through the one durable outbox (Slack may be down for minutes)
        self.outbox = shell.outbox
        self.slack = shell.outbox.for_incidents(self.incidents, lambda: self.lease.stopped)

    # --- wiring -------------------------------------------------------------------------------------

    def jobs(self) -> list[str]:
        ids = ["alerts:lease", "alerts:outbox"]
        for env, e in self.envs.items():
            ids.append(f"lagwatch:primary:{env}")
            ids += [f"lagwatch:check:{env}:{h}" for h in e.standbys]
        return ids

    def install(self) -> None:
        sched = self.scheduler
        now = datetime.now(UTC)
        self.shell.install(sched)
        for env, e in self.envs.items():
            every = self._alert(env).check_every
            first = now + timedelta(seconds=min(1.0, every))
            sched.add_job(
                self.check_primary, "interval", seconds=every, args=[env], id=f"lagwatch:primary:{env}",
                name=f"lag watch {env} primary", next_run_time=now + timedelta(seconds=0.2), replace_existing=True,
            )
            for host in e.standbys:
                sched.add_job(
                    self.check_standby, "interval", seconds=every, args=[env, host],
                    id=f"lagwatch:check:{env}:{host}", name=f"lag watch {env}/{host}",
                    next_run_time=first, replace_existing=True,
                )

    def stop(self) -> None:
        """Stop checking and hand the lease over at once (another replica takes over at its next renewal)."""
        self.lease.stop()

    # --- leadership ---------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.lease.is_leader()

    def _on_follow(self) -> None:
        """Another instance runs the checks: forget what this one counted."""
        with self._lock:
            self._hosts.clear()
        OPEN_INCIDENTS.set(0)

    def _on_gain_env(self, env: str) -> None:
        """Fleet mode: this replica takes ``env`` over. Its counts start again (the incidents themselves are
        in the store and continue: same message, same thread), and its standbys are checked at once."""
        with self._lock:
            for key in [k for k in self._hosts if k[0] == env]:
                del self._hosts[key]
            self._primary.pop(env, None)
        e = self.envs.get(env)
        if e is None:
            return
        now = datetime.now(UTC)
        for job_id in [f"lagwatch:primary:{env}", *(f"lagwatch:check:{env}:{h}" for h in e.standbys)]:
            job = self.scheduler.get_job(job_id)
            if job is not None:
                job.modify(next_run_time=now)

    def _on_leadership(self) -> None:
        with self._lock:
            self._hosts.clear()
        try:
            for inc in self.incidents.all_open():
                if inc.kind not in (LAG, UNREACHABLE):
                    continue  # another watcher's incident (bot.watch shares the table)
                env = self.envs.get(inc.env)
                if env is None or inc.host not in env.standbys:
                    self._close_unwatched(inc)
            OPEN_INCIDENTS.set(self.incidents.count_open())
        except Exception:
            log.exception("lag watch: could not read open incidents")

    def _close_unwatched_of(self, envs: Collection[str]) -> None:
        """Fleet mode: the lag incidents of ``envs`` (whose leases this replica just took or swept) whose
        standby or lag_alert is no longer configured are closed."""
        try:
            for inc in self.incidents.all_open():
                if inc.env in envs and inc.kind in (LAG, UNREACHABLE):
                    env = self.envs.get(inc.env)
                    if env is None or inc.host not in env.standbys:
                        self._close_unwatched(inc)
        except Exception:
            log.exception("lag watch: could not read open incidents")

    def _close_unwatched(self, inc: Incident) -> None:
        """An incident for a standby that is no longer configured: say so instead of leaving it open."""
        if not self.incidents.resolve(inc, inc.payload.with_(closed="not watched any more")):
            return
        if inc.channel and inc.message_ts:
            text = (
                f"Closed: {inc.env} / {inc.host} is no longer watched (its lag_alert or standby was removed "
                "from the configuration)."
            )
            self.slack.call("chat_update", inc, channel=inc.channel, ts=inc.message_ts, text=text,
                        blocks=[self.render.section(f":information_source: {text}")])

    # --- jobs ---------------------------------------------------------------------------------------

    def _state(self, env: str, host: str) -> tuple[HostState, threading.Lock]:
        with self._lock:
            return (self._hosts.setdefault((env, host), HostState()),
                    self._host_locks.setdefault((env, host), threading.Lock()))

    def _alert(self, env: str) -> LagAlert:
        alert = self.envs[env].lag_alert
        assert alert is not None
        return alert

    def check_primary(self, env: str) -> None:
        if not self.is_leader() or not self.shards.begin(env):
            return
        try:
            self._read_primary(env)
        finally:
            self.shards.end(env)

    def _read_primary(self, env: str) -> None:
        try:
            views = primary_views(self.dbs, env)
        except DatabaseUnavailable as exc:
            CHECK_FAILURES.labels(env, "primary").inc()
            log.log(logging.DEBUG if isinstance(exc, UnsupportedServer) else logging.WARNING, "lag watch: %s", exc.plain)
            self._primary.pop(env, None)
            return
        except Exception:  # never let a bug stop the scheduler
            CHECK_FAILURES.labels(env, "primary").inc()
            log.exception("lag watch: reading the primary of %s failed", env)
            return
        self._primary[env] = (time.monotonic(), views)

    def _fresh_primary(self, env: str) -> list[PrimaryView]:
        entry = self._primary.get(env)
        if entry is None or time.monotonic() - entry[0] > 3 * self._alert(env).check_every + 1:
            return []
        return entry[1]

    def check_standby(self, env: str, host: str) -> None:
        """One scheduled check of one standby."""
        if not self.is_leader() or not self.shards.begin(env):
            return
        st, lock = self._state(env, host)
        if not lock.acquire(blocking=False):
            self.shards.end(env)
            return  # the previous check of this host is still running
        started = time.monotonic()
        try:
            try:
                # the culprits as they may be offered (protect): the access policy marks them
                m = mark_culprits(measure_standby(self.dbs, env, host, self._fresh_primary(env)),
                                  lambda ss: self.policy.mark(env, ss))
            except UnsupportedServer as exc:
                # answered, but too old: refused (logged once by the pools), never an unreachable alert
                log.debug("lag watch: %s", exc.plain)
                return
            except DatabaseUnavailable as exc:
                if self.is_leader():
                    self._hand_receiver(env, host, None)
                    self._on_failure(env, host, st, exc.reason)
                return
            # a check that overran its timeouts is a failure too: the standby is not answering in time
            t = self.envs[env].timeouts
            took = time.monotonic() - started
            if took > t.connect + t.statement + 1:
                if self.is_leader():
                    self._hand_receiver(env, host, None)
                    self._on_failure(env, host, st, f"the check took {took:.1f}s, more than the "
                                     f"{t.connect:g}s connect + {t.statement:g}s statement timeouts")
                return
            if self.is_leader():
                self._hand_receiver(env, host, m.receiver)
                self._on_measurement(m, st)
        except Exception:  # never let a bug stop the scheduler
            if self.lease.stopped:
                # the bot is shutting down under a running check (its pools are closing): not a failure
                log.debug("lag watch: check of %s/%s ended by shutdown", env, host)
                return
            CHECK_FAILURES.labels(env, host).inc()
            log.exception("lag watch: checking %s/%s failed", env, host)
        finally:
            self.checks[(env, host)] = self.checks.get((env, host), 0) + 1
            self.shards.checked(env, started, time.monotonic() - started)
            lock.release()
            self.shards.end(env)

    def _hand_receiver(self, env: str, host: str, facts: ReceiverFacts | None) -> None:
        """What this check saw of the standby's WAL receiver (None: it could not read the standby), to
        the receiver sink when one is wired (the session watch's WAL-receiver alert)."""
        if self.receiver is not None:
            self.receiver(env, host, facts)

    # --- a successful check -------------------------------------------------------------------------

    def _on_measurement(self, m: StandbyLag, st: HostState) -> None:
        alert = self._alert(m.env)
        REPLAY_LAG_SECONDS.labels(m.env, m.host).set(m.lag_secs or 0.0)
        REPLAY_LAG_BYTES.labels(m.env, m.host).set(m.lag_bytes)
        if st.failures:
            log.info("lag watch: %s/%s answers again", m.env, m.host)
        open_ = {} if st.quiet else self.incidents.open_for(m.env, m.host)
        actions = rules.on_measurement(st, m, alert, set(open_))
        st.quiet = not open_ and not actions
        for action in actions:
            if action.act is Act.RESOLVE_UNREACHABLE:
                self._resolve_unreachable(open_[UNREACHABLE])
            elif action.act is Act.OPEN_LAG:
                self._open_lag(m, alert)
            elif action.act is Act.CONTINUE_LAG:
                self._continue_lag(open_[LAG], m, alert)
            elif action.act is Act.RESOLVE_LAG:
                self._resolve_lag(open_[LAG], m, note=action.note)

    def _alert_message(self, inc: Incident, m: StandbyLag, alert: LagAlert,
                       channel: str | None) -> tuple[dict[str, Any], tokens.Memory]:
        """The alert with its buttons; without them while the state store does not answer (no token can
        be issued: the alert itself still goes out)."""
        if channel is not None and not self.incidents.health.degraded:
            try:
                return self._alert_message_in(inc, m, alert, channel)
            except Exception as exc:
                if not self.incidents.health.note(exc):
                    raise
        return self._alert_message_in(inc, m, alert, None)

    def _alert_message_in(self, inc: Incident, m: StandbyLag, alert: LagAlert,
                          channel: str | None) -> tuple[dict[str, Any], tokens.Memory]:
        environment = self.envs[m.env]
        known: tokens.Memory = dict(inc.payload.tokens)
        drawn = tokens.Tokens()
        if channel:
            # reused while valid until the next update (bot.approval.tokens.reissue), else issued afresh
            shown = [(c.key, c.session) for c in m.holding_back[: self.render.MAX_CULPRITS_SHOWN]]
            drawn, known = tokens.reissue(self.store, m.env, m.host, channel, shown, known,
                                          request_ttl=environment.access.request_ttl,
                                          kill=self.policy.signalling_off(m.env) is None)
        msg = self.render.render_lag_alert(
            m,
            alert,
            since=_parse_iso(inc.payload.facts_as(LagFacts).since) or m.since,
            tokens=drawn.kill,
            kill_disabled=self.policy.signalling_off(m.env),
            query_chars=environment.listing.query_chars,
            reminder_every=alert.remind_every,
            details_tokens=drawn.details,
            incident_id=inc.id,
            ack=inc.payload.ack_json(),
        )
        return msg, known

    def _post_alert(self, inc: Incident, m: StandbyLag, alert: LagAlert) -> None:
        """Post the alert message (with buttons) and remember where it is.

        Buttons must carry the channel id Slack reports: with a channel id configured they are drawn at
        once; with a channel name the message is posted first and then edited to add them."""
        channel = alert.channel
        now = time.time()
        by_id = bool(CHANNEL_ID.match(channel))
        msg, known = self._alert_message(inc, m, alert, channel if by_id else None)
        resp = self.slack.call("chat_postMessage", inc, channel=channel, **msg)
        if resp is None:
            self.incidents.save(inc, last_update_at=now)
            return
        self.incidents.save(inc, channel=resp["channel"], message_ts=resp["ts"], last_update_at=now,
                            last_reminder_at=now, payload=inc.payload.with_(tokens=known) if by_id else None)
        if not by_id and m.holding_back:
            msg, known = self._alert_message(inc, m, alert, resp["channel"])
            if self.slack.call("chat_update", inc, channel=resp["channel"], ts=resp["ts"], **msg) is not None:
                self.incidents.save(inc, payload=inc.payload.with_(tokens=known))

    def _open_lag(self, m: StandbyLag, alert: LagAlert) -> None:
        payload = rules.lag_payload(IncidentPayload(), m)
        inc = self.incidents.create(m.env, m.host, LAG, alert.channel, payload)
        if inc is None:
            return
        log.warning(
            "lag watch: %s/%s is %s behind (%d bytes): %s; holding back: %s",
            m.env, m.host, format_duration(m.lag_secs), m.lag_bytes, m.reason.label,
            ", ".join(f"pid {c.session.pid}" for c in m.holding_back) or "nobody found",
        )
        self._set_open_gauge()
        self._post_alert(inc, m, alert)

    def _continue_lag(self, inc: Incident, m: StandbyLag, alert: LagAlert) -> None:
        now = time.time()
        payload = rules.lag_payload(inc.payload, m)
        if inc.message_ts is None and not self.slack.adopt_post(inc):
            # the first post waits in the outbox (Slack down), or failed for good: post again at most once a minute
            if not self.slack.post_waiting(inc) and self._follow_up(inc, alert, now).due:
                inc.payload = payload
                self._post_alert(inc, m, alert)
            else:
                self.incidents.save(inc, payload=payload)
            return
        then = self._follow_up(inc, alert, now)
        if then.edit:
            inc.payload = payload = payload.with_(ack_drawn=True) if then.ack_to_draw else payload
            msg, known = self._alert_message(inc, m, alert, inc.channel)
            if self.slack.call("chat_update", inc, channel=inc.channel, ts=inc.message_ts, **msg) is not None:
                self.incidents.save(inc, last_update_at=now, payload=payload.with_(tokens=known))
            else:
                self.incidents.save(inc, last_update_at=now, payload=payload)
        elif payload != inc.payload:
            self.incidents.save(inc, payload=payload)
        if self._follow_up(inc, alert, now).remind:  # after the writes above: an Acknowledge they found counts
            msg = self.render.render_lag_reminder(m, opened_at=_utc(inc.opened_at), now=_utc(now))
            if self.slack.call("chat_postMessage", inc, channel=inc.channel, thread_ts=inc.message_ts, **msg) is not None:
                self.incidents.save(inc, last_reminder_at=now)

    def what_was_done(self, inc: Incident) -> list[str]:
        """Kills executed through the bot on this standby since the lag began, and culprits that left."""
        start = min(inc.opened_at, (_parse_iso(inc.payload.facts_as(LagFacts).since) or _utc(inc.opened_at)).timestamp())
        lines: list[str] = []
        signalled: set[str] = set()
        try:
            entries = self.store.audit_entries(env=inc.env, limit=500)
        except Exception:
            log.exception("lag watch: could not read the audit log")
            entries = []
        for e in sorted(entries, key=lambda e: e["at"]):
            if e.get("host") != inc.host or e["at"] < start - 1 or not str(e.get("event", "")).endswith(":executed"):
                continue
            action = str(e["event"]).split(":", 1)[0]
            verb = {"terminate": "terminated", "cancel": "cancelled"}.get(action, action)
            people = []
            if e.get("request_id"):
                try:
                    related = self.store.audit_entries(request_id=e["request_id"], limit=50)
                except Exception:
                    related = []
                requested = [r["actor"] for r in related if str(r["event"]).endswith(":requested") and r["actor"]]
                approved = [r["actor"] for r in related if str(r["event"]).endswith(":approved") and r["actor"]]
                if requested:
                    people.append("requested by " + ", ".join(f"<@{a}>" for a in requested))
                if approved:
                    people.append("approved by " + ", ".join(f"<@{a}>" for a in approved))
            who = f" ({'; '.join(people)})" if people else ""
            user = f" · user {self.render.code(e['db_user'])}" if e.get("db_user") else ""
            lines.append(f"pid {e.get('pid')} {verb} through the bot at {self.render.slack_time(_utc(e['at']))}{who}{user}")
            signalled.add(f"{e.get('pid')}@{e.get('backend_start')}")
        for key, s in inc.payload.seen.items():
            if key in signalled or s.key in signalled:
                continue
            label = "held replay back" if s.kind in ("lock", "snapshot") else "was a suspect"
            who = ", ".join(self.render.code(x) for x in (s.user, s.application) if x)
            lines.append(
                f"pid {s.pid}{f' ({who})' if who else ''} {label}; it let go without a signal from the bot"
            )
        return lines

    def _resolve_lag(self, inc: Incident, m: StandbyLag | None, note: str | None = None) -> None:
        payload = rules.resolved_payload(inc.payload, m)
        facts = payload.facts_as(LagFacts)
        if not self.incidents.holds_lease(inc.env):
            return
        done = self.what_was_done(inc)
        if note:
            done = [note, *done]
        now = datetime.now(UTC)
        msg = self.render.render_lag_resolved(
            inc.env,
            inc.host,
            opened_at=_utc(inc.opened_at),
            resolved_at=now,
            since=_parse_iso(facts.since),
            peak_secs=facts.peak_secs,
            peak_bytes=facts.peak_bytes,
            reasons=[r for r in facts.reasons if r != "caught up"],
            done=done,
            last=m,
            ack=inc.payload.ack_json(),
        )
        if not self.slack.edit_landed(inc, msg):
            return  # the incident stays open: the next check (still caught up) edits it again
        if self.incidents.resolve(inc, payload.with_(done=tuple(done))):
            log.info("lag watch: %s/%s caught up; incident resolved", inc.env, inc.host)
            self._set_open_gauge()

    # --- a failed check -----------------------------------------------------------------------------

    def _on_failure(self, env: str, host: str, st: HostState, reason: str) -> None:
        alert = self._alert(env)
        st.quiet = False
        CHECK_FAILURES.labels(env, host).inc()
        for gauge in (REPLAY_LAG_SECONDS, REPLAY_LAG_BYTES):
            try:
                gauge.remove(env, host)
            except KeyError:
                pass
        now = time.time()
        if st.failures == 0:
            log.warning("lag watch: cannot check %s/%s: %s", env, host, reason)
        open_ = self.incidents.open_for(env, host)
        for action in rules.on_failure(st, reason, now, alert, set(open_)):
            if action.act is Act.OPEN_UNREACHABLE:
                self._open_unreachable(env, host, st, reason, alert)
            elif action.act is Act.CONTINUE_UNREACHABLE:
                self._continue_unreachable(open_[UNREACHABLE], reason, st, alert, action.reason_changed, now)

    def _continue_unreachable(
        self, inc: Incident, reason: str, st: HostState, alert: LagAlert, changed: bool, now: float
    ) -> None:
        if inc.message_ts is None and not self.slack.adopt_post(inc):
            # the first post waits in the outbox (Slack down), or failed for good: post again at most once a minute
            if not self.slack.post_waiting(inc) and self._follow_up(inc, alert, now).due:
                self._post_unreachable(inc, reason, st, alert)
            return
        then = self._follow_up(inc, alert, now)
        # an unchanged error is not edited again (only a new one, or a new Acknowledge)
        if then.ack_to_draw or (changed and then.due):
            if then.ack_to_draw:
                inc.payload = inc.payload.with_(ack_drawn=True)
            self._post_unreachable(inc, reason, st, alert)
        if self._follow_up(inc, alert, now).remind:
            since = _parse_iso(inc.payload.facts_as(UnreachableFacts).since) or _utc(inc.opened_at)
            msg = self.render.render_unreachable_reminder(inc.env, inc.host, reason, since=since, now=_utc(now))
            if self.slack.call("chat_postMessage", inc, channel=inc.channel, thread_ts=inc.message_ts, **msg) is not None:
                self.incidents.save(inc, last_reminder_at=now)

    def _open_unreachable(self, env: str, host: str, st: HostState, reason: str, alert: LagAlert) -> None:
        since = _utc(st.first_failure_at or time.time())
        facts = UnreachableFacts(origin=Origin.STANDBY, since=_iso(since), reason=reason)
        inc = self.incidents.create(env, host, UNREACHABLE, alert.channel, IncidentPayload(facts=facts))
        if inc is None:
            return
        self._set_open_gauge()
        self._post_unreachable(inc, reason, st, alert)

    def _post_unreachable(self, inc: Incident, reason: str, st: HostState, alert: LagAlert) -> None:
        now = time.time()
        facts = inc.payload.facts_as(UnreachableFacts)
        since = _parse_iso(facts.since) or _utc(inc.opened_at)
        msg = self.render.render_unreachable_alert(
            inc.env, inc.host, reason, since=since, failures=st.failures,
            check_every=alert.check_every, now=_utc(now), incident_id=inc.id, ack=inc.payload.ack_json(),
        )
        payload = inc.payload.with_(facts=facts.model_copy(update={"reason": reason}))
        if inc.message_ts and inc.channel:
            resp = self.slack.call("chat_update", inc, channel=inc.channel, ts=inc.message_ts, **msg)
            self.incidents.save(inc, last_update_at=now, payload=payload)
            return
        resp = self.slack.call("chat_postMessage", inc, channel=alert.channel, **msg)
        if resp is None:
            self.incidents.save(inc, last_update_at=now, payload=payload)
            return
        self.incidents.save(inc, channel=resp["channel"], message_ts=resp["ts"], last_update_at=now,
                            last_reminder_at=now, payload=payload)

    def _resolve_unreachable(self, inc: Incident) -> None:
        if not self.incidents.holds_lease(inc.env):
            return
        facts = inc.payload.facts_as(UnreachableFacts)
        since = _parse_iso(facts.since) or _utc(inc.opened_at)
        msg = self.render.render_unreachable_resolved(
            inc.env, inc.host, facts.reason or "unknown", since=since,
            resolved_at=datetime.now(UTC), ack=inc.payload.ack_json(),
        )
        if not self.slack.edit_landed(inc, msg):
            return  # stays open: the next successful check edits it again
        if self.incidents.resolve(inc):
            self._set_open_gauge()

    # --- helpers ------------------------------------------------------------------------------------

    def _follow_up(self, inc: Incident, alert: LagAlert, now: float) -> watch_rules.FollowUp:
        """When an open incident is edited and reminded: the rules every alert shares. An Acknowledge (a
        click, written beside the leader) is drawn at once, and stops the reminders."""
        return watch_rules.follow_up(view(inc), now=now, remind_every=alert.remind_every,
                                     update_every=self.update_every)

    def _set_open_gauge(self) -> None:
        try:
            OPEN_INCIDENTS.set(self.incidents.count_open())
        except Exception:
            pass

