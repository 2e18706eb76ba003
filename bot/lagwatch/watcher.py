"""The scheduled lag watcher: one APScheduler job per standby, a leader lease, incidents in Slack.

Jobs (added by :func:`install`, run once ``rt.start_background()`` starts the scheduler):

* ``lagwatch:lease``: take or renew the leader lease every ``check_every / 2`` (of the smallest
  ``check_every``) with a TTL of 1.5 × that interval. Only the holder runs checks, so with several
  replicas on one PostgreSQL state store exactly one posts, and another takes over within two check
  intervals after the leader dies (at once when it stops cleanly and releases the lease).
* ``lagwatch:primary:<env>``: the primary's ``pg_stat_replication`` (a second view of the lag),
  cached for the standby checks so that a slow primary never delays them.
* ``lagwatch:check:<env>:<standby>``: measure one standby and move its incidents along. Every host
  has its own job and the scheduler a thread per host, and every connection and query is bounded by
  the environment's timeouts: an unreachable or hanging host delays nobody else.

Incident rules, per standby:

* lag: opens after ``consecutive`` checks in a row over the threshold (time and ``min_bytes``, and
  only while received WAL is not yet replayed); while open, the alert is edited in place at most once a
  minute and a reminder is posted in its thread every ``remind_every``; it resolves at the first check
  under the threshold, with how long it lasted and what was done (kills executed through the bot).
* unreachable: opens after ``consecutive`` failed checks, resolves at the first successful one.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN

from bot.approval.targets import issue_details_tokens, issue_session_tokens, reusable_token
from bot.config import Environment, LagAlert
from bot.durations import format_duration
from bot.lagwatch.detect import measure_standby, primary_views
from bot.lagwatch.incidents import LAG, UNREACHABLE, Incident, Incidents
from bot.lagwatch.model import Culprit, PrimaryView, StandbyLag, lsn_to_int
from bot.metrics import CHECK_FAILURES, OPEN_INCIDENTS, REPLAY_LAG_BYTES, REPLAY_LAG_SECONDS
from bot.postgres.pools import DatabaseUnavailable
from bot.render import lag as render
from bot.slack import outbox as slack_outbox

log = logging.getLogger(__name__)

LEASE_NAME = "lagwatch"
UPDATE_EVERY = 60.0  # seconds between in-place edits of an open alert
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def kill_disabled_reason(environment: Environment, env: str) -> str | None:
    if not environment.access.allow_kill:
        return f"signalling is turned off for `{env}` (access.allow_kill: false)"
    return None


@dataclass
class HostState:
    """What the leader remembers between checks of one standby (lost on restart, on purpose)."""

    breaches: int = 0
    failures: int = 0
    first_failure_at: float | None = None
    last_receive: int | None = None
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class LagWatcher:
    def __init__(self, rt):
        self.rt = rt
        # Runtime.instance_id can repeat between two runtimes of one process: add our own randomness
        self.holder = f"{rt.instance_id}:{secrets.token_hex(4)}"
        self.envs: dict[str, Environment] = {
            name: env for name, env in rt.config.environments.items() if env.lag_alert is not None and env.standbys
        }
        self.min_every = min((e.lag_alert.check_every for e in self.envs.values()), default=30.0)  # type: ignore[union-attr]
        self.lease_ttl = 1.5 * self.min_every
        self.renew_every = self.min_every / 2
        self.incidents = Incidents(rt.store, LEASE_NAME, self.holder)
        self._valid_until = 0.0
        self._hosts: dict[tuple[str, str], HostState] = {}
        self._primary: dict[str, tuple[float, list[PrimaryView]]] = {}
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        # completed checks per (env, standby) while leader: for health views and tests
        self.checks: dict[tuple[str, str], int] = {}
        self.update_every = UPDATE_EVERY
        # every Slack call of the watcher goes through the durable outbox (Slack may be down for minutes)
        self.outbox = slack_outbox.Outbox(rt.store, lambda: rt.client, may_send=self.is_leader)

    # --- wiring -------------------------------------------------------------------------------------

    def jobs(self) -> list[str]:
        ids = ["lagwatch:lease", "lagwatch:outbox"]
        for env, e in self.envs.items():
            ids.append(f"lagwatch:primary:{env}")
            ids += [f"lagwatch:check:{env}:{h}" for h in e.standbys]
        return ids

    def install(self) -> None:
        sched = self.rt.scheduler
        now = datetime.now(UTC)
        sched.add_job(
            self.renew_lease, "interval", seconds=self.renew_every, id="lagwatch:lease",
            name="lag watch leader lease", next_run_time=now, replace_existing=True,
        )
        sched.add_job(
            self.outbox.deliver, "interval", seconds=slack_outbox.DELIVER_EVERY, id="lagwatch:outbox",
            name="lag watch Slack outbox", replace_existing=True,
        )
        for env, e in self.envs.items():
            every = e.lag_alert.check_every  # type: ignore[union-attr]
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
        sched.add_listener(self._on_shutdown, EVENT_SCHEDULER_SHUTDOWN)

    def _on_shutdown(self, _event) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop checking and hand the lease over at once (another replica takes over at its next renewal)."""
        if self._stopped.is_set():
            return
        was_leader = self.is_leader()
        self._stopped.set()
        self._valid_until = 0.0
        if was_leader:
            try:
                self.rt.store.release_lease(LEASE_NAME, self.holder)
            except Exception as exc:  # noqa: BLE001 - shutting down; the lease expires by itself
                log.warning("could not release the lag-watch lease: %s", type(exc).__name__)

    # --- leadership ---------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return not self._stopped.is_set() and time.monotonic() < self._valid_until

    def renew_lease(self) -> None:
        if self._stopped.is_set():
            return
        started = time.monotonic()
        was = self.is_leader()
        try:
            held = self.rt.store.acquire_lease(LEASE_NAME, self.holder, self.lease_ttl)
        except Exception as exc:  # noqa: BLE001 - state store down: keep what we had until it runs out
            log.warning("lag watch: could not renew the leader lease: %s", type(exc).__name__)
            return
        if self._stopped.is_set():
            return
        if held:
            # a little under the TTL, so we stop before another replica may take over
            self._valid_until = started + self.lease_ttl * 0.8
            if not was:
                log.info("lag watch: this instance now runs the standby checks (%s)", self.holder)
                self._on_leadership()
        else:
            self._valid_until = 0.0
            if was:
                log.warning("lag watch: another instance took over the standby checks")
            with self._lock:
                self._hosts.clear()
            OPEN_INCIDENTS.set(0)

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
        except Exception:  # noqa: BLE001
            log.exception("lag watch: could not read open incidents")

    def _close_unwatched(self, inc: Incident) -> None:
        """An incident for a standby that is no longer configured: say so instead of leaving it open."""
        if not self.incidents.resolve(inc, {**inc.payload, "closed": "not watched any more"}):
            return
        if inc.channel and inc.message_ts:
            text = (
                f"Closed: {inc.env} / {inc.host} is no longer watched (its lag_alert or standby was removed "
                "from the configuration)."
            )
            self._slack("chat_update", inc, channel=inc.channel, ts=inc.message_ts, text=text,
                        blocks=[render.section(f":information_source: {text}")])

    # --- jobs ---------------------------------------------------------------------------------------

    def _state(self, env: str, host: str) -> HostState:
        with self._lock:
            return self._hosts.setdefault((env, host), HostState())

    def _alert(self, env: str) -> LagAlert:
        alert = self.envs[env].lag_alert
        assert alert is not None
        return alert

    def check_primary(self, env: str) -> None:
        if not self.is_leader():
            return
        try:
            views = primary_views(self.rt.dbs, env)
        except DatabaseUnavailable as exc:
            CHECK_FAILURES.labels(env, "primary").inc()
            log.warning("lag watch: %s", exc)
            self._primary.pop(env, None)
            return
        except Exception:  # noqa: BLE001 - never let a bug stop the scheduler
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
        if not self.is_leader():
            return
        st = self._state(env, host)
        if not st.lock.acquire(blocking=False):
            return  # the previous check of this host is still running
        try:
            started = time.monotonic()
            try:
                m = measure_standby(self.rt.dbs, env, host, self._fresh_primary(env))
            except DatabaseUnavailable as exc:
                if self.is_leader():
                    self._on_failure(env, host, st, exc.reason)
                return
            # a check that overran its timeouts is a failure too: the standby is not answering in time
            t = self.envs[env].timeouts
            took = time.monotonic() - started
            if took > t.connect + t.statement + 1:
                if self.is_leader():
                    self._on_failure(env, host, st, f"the check took {took:.1f}s, more than the "
                                     f"{t.connect:g}s connect + {t.statement:g}s statement timeouts")
                return
            if self.is_leader():
                self._on_measurement(m, st)
        except Exception:  # noqa: BLE001 - never let a bug stop the scheduler
            if self._stopped.is_set():
                # the bot is shutting down under a running check (its pools are closing): not a failure
                log.debug("lag watch: check of %s/%s ended by shutdown", env, host)
                return
            CHECK_FAILURES.labels(env, host).inc()
            log.exception("lag watch: checking %s/%s failed", env, host)
        finally:
            self.checks[(env, host)] = self.checks.get((env, host), 0) + 1
            st.lock.release()

    # --- a successful check -------------------------------------------------------------------------

    def _on_measurement(self, m: StandbyLag, st: HostState) -> None:
        alert = self._alert(m.env)
        REPLAY_LAG_SECONDS.labels(m.env, m.host).set(m.lag_secs or 0.0)
        REPLAY_LAG_BYTES.labels(m.env, m.host).set(m.lag_bytes)
        if st.failures:
            log.info("lag watch: %s/%s answers again", m.env, m.host)
        st.failures, st.first_failure_at = 0, None
        above = m.above(alert)
        # The same check must not count twice for WAL that replays promptly: a breach needs the WAL that
        # had been received at the previous check to be still unreplayed now.
        replay = lsn_to_int(m.replay_lsn)
        stuck = st.last_receive is None or replay is None or replay < st.last_receive
        st.breaches = st.breaches + 1 if (above and stuck) else 0
        st.last_receive = lsn_to_int(m.receive_lsn)

        open_ = self.incidents.open_for(m.env, m.host)
        if UNREACHABLE in open_:
            self._resolve_unreachable(open_[UNREACHABLE])
        inc = open_.get(LAG)
        if inc is None:
            if st.breaches >= alert.consecutive:
                self._open_lag(m, alert)
        elif above:
            self._continue_lag(inc, m, alert)
        elif not m.in_recovery:
            self._resolve_lag(inc, m, note="the standby is no longer in recovery: it was promoted or is not a standby")
        else:
            self._resolve_lag(inc, m)

    def _payload_with(self, payload: dict, m: StandbyLag) -> dict:
        p = dict(payload)
        secs = m.lag_secs or 0.0
        p["peak_secs"] = max(float(p.get("peak_secs") or 0.0), secs)
        p["peak_bytes"] = max(int(p.get("peak_bytes") or 0), m.lag_bytes)
        since = m.since
        known = _parse_iso(p.get("since"))
        if since is not None and (known is None or since < known):
            p["since"] = _iso(since)
        reasons = list(p.get("reasons") or [])
        if m.reason.label not in reasons:
            reasons.append(m.reason.label)
        p["reasons"] = reasons
        seen = dict(p.get("seen") or {})
        for c in m.holding_back:
            seen.setdefault(
                c.key,
                {
                    "pid": c.session.pid,
                    "backend_start": c.session.backend_start.isoformat(timespec="microseconds"),
                    "user": c.session.user,
                    "application": c.session.application,
                    "kind": c.kind,
                },
            )
        p["seen"] = seen
        p["last"] = {"lag_secs": m.lag_secs, "lag_bytes": m.lag_bytes, "reason": m.reason.value,
                     "at": _iso(m.measured_at)}
        return p

    def _tokens(self, inc: Incident, m: StandbyLag, channel: str) -> tuple[dict[int, str], dict]:
        """Button tokens for the sessions shown, reusing those issued for the same (pid, backend_start)
        while they are young and the session still does what their snapshot says (else fresh ones)."""
        environment = self.envs[m.env]
        if kill_disabled_reason(environment, m.env):
            return {}, {}
        known: dict = dict(inc.payload.get("tokens") or {})
        shown = list(m.holding_back[: render.MAX_CULPRITS_SHOWN])
        tokens: dict[int, str] = {}
        fresh: list[Culprit] = []
        for c in shown:
            tok = known.get(c.key)
            if (
                tok
                and known.get(f"channel:{c.key}") == channel
                and reusable_token(self.rt.store.get_target(tok), c.session, environment.access.request_ttl)
            ):
                tokens[c.session.pid] = tok
            else:
                fresh.append(c)
        if fresh:
            issued = issue_session_tokens(self.rt.store, m.env, m.host, [c.session for c in fresh], channel, None)
            for c in fresh:
                if c.session.pid in issued:
                    tokens[c.session.pid] = issued[c.session.pid]
                    known[c.key] = issued[c.session.pid]
                    known[f"channel:{c.key}"] = channel
        return tokens, known

    def _details_tokens(self, m: StandbyLag, channel: str, known: dict) -> dict[int, str]:
        """Details tokens for the sessions shown (signalable or not), reused across updates; kept in ``known``."""
        out: dict[int, str] = {}
        fresh: list[Culprit] = []
        for c in m.holding_back[: render.MAX_CULPRITS_SHOWN]:
            tok = known.get(f"details:{c.key}")
            target = self.rt.store.get_target(tok) if tok else None
            if target is not None and target["channel"] == channel:
                out[c.session.pid] = tok
            else:
                fresh.append(c)
        if fresh:
            issued = issue_details_tokens(self.rt.store, m.env, m.host, [c.session for c in fresh], channel, None)
            for c in fresh:
                out[c.session.pid] = known[f"details:{c.key}"] = issued[c.session.pid]
        return out

    def _alert_message(self, inc: Incident, m: StandbyLag, alert: LagAlert, channel: str | None) -> tuple[dict, dict]:
        environment = self.envs[m.env]
        tokens, known = self._tokens(inc, m, channel) if channel else ({}, dict(inc.payload.get("tokens") or {}))
        if channel and not known:  # signalling is off: keep the Details tokens issued earlier
            known = {k: v for k, v in (inc.payload.get("tokens") or {}).items() if k.startswith("details:")}
        details = self._details_tokens(m, channel, known) if channel else {}
        msg = render.render_lag_alert(
            m,
            alert,
            since=_parse_iso(inc.payload.get("since")) or m.since,
            tokens=tokens,
            kill_disabled=kill_disabled_reason(environment, m.env),
            query_chars=environment.listing.query_chars,
            reminder_every=alert.remind_every,
            details_tokens=details,
        )
        return msg, known

    def _post_alert(self, inc: Incident, m: StandbyLag, alert: LagAlert) -> None:
        """Post the alert message (with buttons) and remember where it is."""
        channel = alert.channel
        now = time.time()
        if CHANNEL_ID.match(channel):
            msg, known = self._alert_message(inc, m, alert, channel)
            resp = self._slack("chat_postMessage", inc, channel=channel, **msg)
            if resp is None:
                self.incidents.save(inc, last_update_at=now)
                return
            payload = {**inc.payload, "tokens": known}
            self.incidents.save(inc, channel=resp["channel"], message_ts=resp["ts"], last_update_at=now,
                                last_reminder_at=now, payload=payload)
            return
        # a channel name: buttons must carry the channel id Slack reports, which we learn by posting
        msg, _ = self._alert_message(inc, m, alert, None)
        resp = self._slack("chat_postMessage", inc, channel=channel, **msg)
        if resp is None:
            self.incidents.save(inc, last_update_at=now)
            return
        self.incidents.save(inc, channel=resp["channel"], message_ts=resp["ts"], last_update_at=now,
                            last_reminder_at=now)
        if m.holding_back:
            msg, known = self._alert_message(inc, m, alert, resp["channel"])
            if self._slack("chat_update", inc, channel=resp["channel"], ts=resp["ts"], **msg) is not None:
                self.incidents.save(inc, payload={**inc.payload, "tokens": known})

    def _open_lag(self, m: StandbyLag, alert: LagAlert) -> None:
        payload = self._payload_with({}, m)
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
        payload = self._payload_with(inc.payload, m)
        if inc.message_ts is None and not self._adopt_post(inc):
            # the first post waits in the outbox (Slack down), or failed for good: post again at most once a minute
            if not self._post_waiting(inc) and now - (inc.last_update_at or 0) >= self.update_every:
                inc.payload = payload
                self._post_alert(inc, m, alert)
            else:
                self.incidents.save(inc, payload=payload)
            return
        if now - (inc.last_update_at or 0) >= self.update_every:
            inc.payload = payload
            msg, known = self._alert_message(inc, m, alert, inc.channel)
            if self._slack("chat_update", inc, channel=inc.channel, ts=inc.message_ts, **msg) is not None:
                self.incidents.save(inc, last_update_at=now, payload={**payload, "tokens": known})
            else:
                self.incidents.save(inc, last_update_at=now, payload=payload)
        elif payload != inc.payload:
            self.incidents.save(inc, payload=payload)
        if now - (inc.last_reminder_at or inc.opened_at) >= alert.remind_every:
            msg = render.render_lag_reminder(m, opened_at=_utc(inc.opened_at), now=_utc(now))  # type: ignore[arg-type]
            if self._slack("chat_postMessage", inc, channel=inc.channel, thread_ts=inc.message_ts, **msg) is not None:
                self.incidents.save(inc, last_reminder_at=now)

    def what_was_done(self, inc: Incident) -> list[str]:
        """Kills executed through the bot on this standby since the lag began, and culprits that left."""
        start = min(inc.opened_at, (_parse_iso(inc.payload.get("since")) or _utc(inc.opened_at)).timestamp())  # type: ignore[union-attr]
        lines: list[str] = []
        signalled: set[str] = set()
        try:
            entries = self.rt.store.audit_entries(env=inc.env, limit=500)
        except Exception:  # noqa: BLE001
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
                    related = self.rt.store.audit_entries(request_id=e["request_id"], limit=50)
                except Exception:  # noqa: BLE001
                    related = []
                requested = [r["actor"] for r in related if str(r["event"]).endswith(":requested") and r["actor"]]
                approved = [r["actor"] for r in related if str(r["event"]).endswith(":approved") and r["actor"]]
                if requested:
                    people.append("requested by " + ", ".join(f"<@{a}>" for a in requested))
                if approved:
                    people.append("approved by " + ", ".join(f"<@{a}>" for a in approved))
            who = f" ({'; '.join(people)})" if people else ""
            user = f" · user {render.code(e['db_user'])}" if e.get("db_user") else ""
            lines.append(f"pid {e.get('pid')} {verb} through the bot at {render.slack_time(_utc(e['at']))}{who}{user}")
            signalled.add(f"{e.get('pid')}@{e.get('backend_start')}")
        for key, s in (inc.payload.get("seen") or {}).items():
            if key in signalled or f"{s.get('pid')}@{s.get('backend_start')}" in signalled:
                continue
            label = "held replay back" if s.get("kind") in ("lock", "snapshot") else "was a suspect"
            who = ", ".join(render.code(x) for x in (s.get("user"), s.get("application")) if x)
            lines.append(
                f"pid {s.get('pid')}{f' ({who})' if who else ''} {label}; it let go without a signal from the bot"
            )
        return lines

    def _resolve_lag(self, inc: Incident, m: StandbyLag | None, note: str | None = None) -> None:
        payload = inc.payload if m is None else self._payload_with(inc.payload, m)
        if m is not None:
            # what is true now should not rewrite history: keep the worst and the reasons
            payload["reasons"] = inc.payload.get("reasons") or payload["reasons"]
            payload["seen"] = inc.payload.get("seen") or {}
        if not self.incidents.holds_lease():
            return
        done = self.what_was_done(inc)
        if note:
            done = [note, *done]
        now = datetime.now(UTC)
        msg = render.render_lag_resolved(
            inc.env,
            inc.host,
            opened_at=_utc(inc.opened_at),  # type: ignore[arg-type]
            resolved_at=now,
            since=_parse_iso(payload.get("since")),
            peak_secs=payload.get("peak_secs"),
            peak_bytes=payload.get("peak_bytes"),
            reasons=[r for r in payload.get("reasons") or [] if r != "caught up"],
            done=done,
            last=m,
        )
        if not self._edit_landed(inc, msg):
            return  # the incident stays open: the next check (still caught up) edits it again
        if self.incidents.resolve(inc, {**payload, "done": done}):
            log.info("lag watch: %s/%s caught up; incident resolved", inc.env, inc.host)
            self._set_open_gauge()

    # --- a failed check -----------------------------------------------------------------------------

    def _on_failure(self, env: str, host: str, st: HostState, reason: str) -> None:
        alert = self._alert(env)
        CHECK_FAILURES.labels(env, host).inc()
        for gauge in (REPLAY_LAG_SECONDS, REPLAY_LAG_BYTES):
            try:
                gauge.remove(env, host)
            except KeyError:
                pass
        now = time.time()
        if st.failures == 0:
            st.first_failure_at = now
            log.warning("lag watch: cannot check %s/%s: %s", env, host, reason)
        st.failures += 1
        st.breaches, st.last_receive = 0, None
        changed = reason != st.last_error
        st.last_error = reason
        inc = self.incidents.open_for(env, host).get(UNREACHABLE)
        if inc is None:
            if st.failures >= alert.consecutive:
                self._open_unreachable(env, host, st, reason, alert)
            return
        since = _parse_iso(inc.payload.get("since")) or _utc(inc.opened_at)
        if inc.message_ts is None and not self._adopt_post(inc):
            # the first post waits in the outbox (Slack down), or failed for good: post again at most once a minute
            if not self._post_waiting(inc) and now - (inc.last_update_at or 0) >= self.update_every:
                self._post_unreachable(inc, reason, st, alert)
            return
        if changed and now - (inc.last_update_at or 0) >= self.update_every:
            self._post_unreachable(inc, reason, st, alert)
        if now - (inc.last_reminder_at or inc.opened_at) >= alert.remind_every:
            msg = render.render_unreachable_reminder(env, host, reason, since=since, now=_utc(now))  # type: ignore[arg-type]
            if self._slack("chat_postMessage", inc, channel=inc.channel, thread_ts=inc.message_ts, **msg) is not None:
                self.incidents.save(inc, last_reminder_at=now)

    def _open_unreachable(self, env: str, host: str, st: HostState, reason: str, alert: LagAlert) -> None:
        since = _utc(st.first_failure_at or time.time())
        inc = self.incidents.create(env, host, UNREACHABLE, alert.channel, {"since": _iso(since), "reason": reason})
        if inc is None:
            return
        self._set_open_gauge()
        self._post_unreachable(inc, reason, st, alert)

    def _post_unreachable(self, inc: Incident, reason: str, st: HostState, alert: LagAlert) -> None:
        now = time.time()
        since = _parse_iso(inc.payload.get("since")) or _utc(inc.opened_at)
        msg = render.render_unreachable_alert(
            inc.env, inc.host, reason, since=since, failures=st.failures,  # type: ignore[arg-type]
            check_every=alert.check_every, now=_utc(now),  # type: ignore[arg-type]
        )
        payload = {**inc.payload, "reason": reason}
        if inc.message_ts and inc.channel:
            resp = self._slack("chat_update", inc, channel=inc.channel, ts=inc.message_ts, **msg)
            self.incidents.save(inc, last_update_at=now, payload=payload)
            return
        resp = self._slack("chat_postMessage", inc, channel=alert.channel, **msg)
        if resp is None:
            self.incidents.save(inc, last_update_at=now, payload=payload)
            return
        self.incidents.save(inc, channel=resp["channel"], message_ts=resp["ts"], last_update_at=now,
                            last_reminder_at=now, payload=payload)

    def _resolve_unreachable(self, inc: Incident) -> None:
        if not self.incidents.holds_lease():
            return
        since = _parse_iso(inc.payload.get("since")) or _utc(inc.opened_at)
        msg = render.render_unreachable_resolved(
            inc.env, inc.host, inc.payload.get("reason") or "unknown", since=since,  # type: ignore[arg-type]
            resolved_at=datetime.now(UTC),
        )
        if not self._edit_landed(inc, msg):
            return  # stays open: the next successful check edits it again
        if self.incidents.resolve(inc):
            self._set_open_gauge()

    # --- helpers ------------------------------------------------------------------------------------

    def _set_open_gauge(self) -> None:
        try:
            OPEN_INCIDENTS.set(self.incidents.count_open())
        except Exception:  # noqa: BLE001
            pass

    def _adopt_post(self, inc: Incident) -> bool:
        """True when the incident's first post was delivered by the outbox (its channel and ts are saved)."""
        try:
            state, channel, ts = self.outbox.post_state(inc.id)
        except Exception:  # noqa: BLE001 - state store down: ask again at the next check
            return False
        if state != slack_outbox.DELIVERED or not ts:
            return False
        return self.incidents.save(inc, channel=channel, message_ts=ts, last_reminder_at=time.time())

    def _post_waiting(self, inc: Incident) -> bool:
        try:
            return self.outbox.post_state(inc.id)[0] == slack_outbox.PENDING
        except Exception:  # noqa: BLE001
            return True  # cannot tell: do not post twice

    def _edit_landed(self, inc: Incident, msg: dict) -> bool:
        """Queue the final edit of the incident's message in the outbox (delivered in order, after a post
        still waiting); True once it is kept, or when there is no message to edit."""
        if self._stopped.is_set():
            return False
        if not (inc.message_ts or self._adopt_post(inc) or self._post_waiting(inc)):
            return True  # its post failed for good: nothing to edit
        return self.outbox.send(slack_outbox.UPDATE, inc.id, inc.channel or "", msg, ts=inc.message_ts).kept

    def _slack(self, method: str, inc: Incident, **kwargs) -> dict | None:
        """One Web API call through the outbox: Slack's answer when it landed at once; ``{}`` for an edit
        or thread reply kept for later (it is delivered in order when Slack answers again, so it is not
        queued twice); None for a post not delivered yet (its ts comes from the outbox later) or a call
        that could not even be kept."""
        if self._stopped.is_set():
            return None
        channel = kwargs.pop("channel")
        if method == "chat_update":
            op, ts = slack_outbox.UPDATE, kwargs.pop("ts")
        elif "thread_ts" in kwargs:
            op, ts = slack_outbox.THREAD_REPLY, kwargs.pop("thread_ts")
        else:
            op, ts = slack_outbox.POST, None
        sent = self.outbox.send(op, inc.id, channel, kwargs, ts=ts)
        if sent.response is None and sent.kept and op != slack_outbox.POST:
            return {}  # an edit or a reminder kept in the outbox is done for the watcher: it lands in order
        return sent.response


def install(rt) -> LagWatcher | None:
    """Add the lag-watch jobs to ``rt.scheduler`` (once); None when no environment has ``lag_alert``."""
    existing = rt.extensions.get("lagwatch")
    if existing is not None:
        return existing  # type: ignore[return-value]
    watcher = LagWatcher(rt)
    if not watcher.envs:
        return None
    watcher.install()
    rt.extensions["lagwatch"] = watcher
    return watcher

