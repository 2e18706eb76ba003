"""The watch's incident rules, pure: measurements in, desired incidents and decisions out.

* :func:`conditions` reads one :class:`~bot.watch.model.HostSnapshot` and returns every condition
  over its threshold right now (kind, key, facts, the sessions to offer buttons for).
* :class:`Streaks` counts checks in a row per (host, kind, key): an incident opens after
  ``consecutive`` of them.
* :func:`moves` is every kind's lifecycle (the lag watcher's too): what is true now against what is
  open says open (after ``consecutive`` checks in a row), continue (still true) or resolve (the first
  check without it). :func:`decide` is :func:`moves` with the timing of a continuing incident,
  :func:`follow_up`: update (at most once a minute, or at once after an Acknowledge), remind (every
  ``remind_every``, never once acknowledged). :mod:`bot.lagwatch.rules` runs its lag and unreachable
  incidents on :class:`Streaks` and :func:`moves`, its shell on :func:`follow_up`.
* The host that cannot be read is one kind for both watchers (:func:`cannot_read`: the failed check
  counted, every other run broken; :func:`unreachable_origin`: which watcher reports a host), stored
  under each origin's name (:data:`bot.watch.incident_models.UNREACHABLE_KINDS`).

No clock, no database, no Slack here: every input is an argument, so the rules have unit tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot import session_rules
from bot.config import Environment, IgnoreRule, Watch
from bot.postgres.models import Session
from bot.session_rules import is_ignored, rule_matches  # noqa: F401 - re-exported
from bot.watch.incident_models import UNREACHABLE_KINDS, Origin
from bot.watch.model import (
    CONNECTIONS,
    IDLE_TX,
    LOCK_PILEUP,
    LONG_RUNNING,
    WAL_RECEIVER,
    XMIN_HORIZON,
    HostSnapshot,
    session_facts,
)

UPDATE_EVERY = 60.0  # an open alert is edited in place at most once a minute
MAX_SHOWN = 10  # sessions drawn with buttons in one alert
TOP = 5  # entries of each connections breakdown


# --- ignore (the one matching is bot.session_rules) -------------------------------------------------


def ignored_session(rules: Sequence[IgnoreRule], s: Session) -> bool:
    return session_rules.ignored(rules, s)


# --- conditions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One thing over its threshold on one host now. ``key`` tells incidents of one kind apart."""

    kind: str
    key: str
    facts: dict[str, Any]
    sessions: tuple[Session, ...] = ()  # offered with buttons, worst first
    bulk: tuple[Session, ...] = ()  # connections: the idle sessions a *Terminate these N* covers
    bulk_app: str | None = None

    @property
    def ident(self) -> tuple[str, str]:
        return (self.kind, self.key)


def _roots(pid: int, graph: dict[int, tuple[int, ...]]) -> set[int]:
    """The sessions at the head of ``pid``'s chain of blockers (in a cycle, its members)."""
    reach = _reach(pid, graph)
    roots = {p for p in reach if not graph.get(p)}
    if not roots:  # a deadlock about to be broken: no head, every member blocks the others
        roots = {p for p in reach if p != pid}
    return roots


def _reach(pid: int, graph: dict[int, tuple[int, ...]]) -> set[int]:
    out: set[int] = set()
    stack = list(graph.get(pid, ()))
    while stack:
        p = stack.pop()
        if p in out:
            continue
        out.add(p)
        stack.extend(graph.get(p, ()))
    return out


def lock_pileups(snap: HostSnapshot, watch: Watch, ignore: Sequence[IgnoreRule] = ()) -> list[Condition]:
    cfg = watch.lock_pileup
    if cfg is None:
        return []
    by_pid = {s.pid: s for s in snap.sessions}
    graph = {s.pid: s.blocked_by for s in snap.sessions if s.blocked_by}
    behind: dict[int, list[Session]] = {}
    for s in snap.sessions:
        if not s.blocked_by:
            continue
        for root_pid in _roots(s.pid, graph):
            behind.setdefault(root_pid, []).append(s)
    out = []
    for root_pid, waiters in behind.items():
        root = by_pid.get(root_pid)
        if root is None or root.backend_start is None or ignored_session(ignore, root):
            continue
        direct = [w for w in waiters if root_pid in w.blocked_by]
        longest = max((w.wait_secs or 0.0 for w in waiters), default=0.0)
        if len(waiters) < cfg.waiters and longest < cfg.wait:
            continue
        held = sorted({(h.mode, h.relation) for h in snap.held if h.pid == root_pid}, key=lambda x: (x[1] or "", x[0]))
        # the DDL queue: a waiter asking for AccessExclusiveLock that others queue behind
        ddl = None
        for w in sorted(waiters, key=lambda w: -(w.wait_secs or 0.0)):
            if w.wait_mode == "AccessExclusiveLock":
                queued = sum(1 for x in waiters if w.pid in x.blocked_by or w.pid in _reach(x.pid, graph))
                if queued:
                    ddl = {**session_facts(w), "queued": queued}
                    break
        worst = sorted(waiters, key=lambda w: -(w.wait_secs or 0.0))[:5]
        facts = {
            "root": session_facts(root),
            "root_idle_in_transaction": root.is_idle_in_transaction,
            "held": [{"mode": m, "relation": r} for m, r in held],
            "direct": len(direct),
            "total": len(waiters),
            "longest_wait": longest,
            "ddl": ddl,
            "waiters": [session_facts(w) for w in worst],
            "threshold": {"waiters": cfg.waiters, "wait": cfg.wait},
        }
        out.append(Condition(LOCK_PILEUP, root.key, facts, (root,)))
    out.sort(key=lambda c: -c.facts["total"])
    return out


def _client_offenders(snap: HostSnapshot, ignore: Sequence[IgnoreRule],
                      pred: Callable[[Session], bool]) -> list[Session]:
    return [s for s in snap.sessions if s.is_client and s.backend_start is not None and pred(s)
            and not ignored_session(ignore, s)]


def idle_in_transaction(snap: HostSnapshot, watch: Watch, ignore: Sequence[IgnoreRule] = ()) -> list[Condition]:
    limit = watch.idle_in_transaction
    if limit is None:
        return []
    found = _client_offenders(snap, ignore, lambda s: s.is_idle_in_transaction and (s.state_secs or 0) >= limit)
    if not found:
        return []
    found.sort(key=lambda s: -(s.state_secs or 0))
    facts = {"count": len(found), "threshold": limit, "worst_secs": found[0].state_secs,
             "sessions": [session_facts(s) for s in found[:MAX_SHOWN]]}
    return [Condition(IDLE_TX, "", facts, tuple(found[:MAX_SHOWN]))]


def long_running(snap: HostSnapshot, watch: Watch, ignore: Sequence[IgnoreRule] = ()) -> list[Condition]:
    limit = watch.long_running
    if limit is None:
        return []
    found = _client_offenders(snap, ignore, lambda s: s.state == "active" and (s.query_secs or 0) >= limit)
    if not found:
        return []
    found.sort(key=lambda s: -(s.query_secs or 0))
    facts = {"count": len(found), "threshold": limit, "worst_secs": found[0].query_secs,
             "sessions": [session_facts(s) for s in found[:MAX_SHOWN]]}
    return [Condition(LONG_RUNNING, "", facts, tuple(found[:MAX_SHOWN]))]


def connections(snap: HostSnapshot, watch: Watch, ignore: Sequence[IgnoreRule] = (),
                max_bulk: int = 500) -> list[Condition]:
    share = watch.connections
    if share is None:
        return []
    usable = max(1, snap.max_connections - snap.superuser_reserved)
    used = snap.client_connections
    if used * 100.0 < share * usable:
        return []
    clients = [s for s in snap.sessions if s.is_client]
    if snap.breakdown is not None:  # counted by the server (only the idle sessions travel)
        by_app, by_user, by_state = ([(k or "", int(n)) for k, n in snap.breakdown.get(x) or []]
                                     for x in ("app", "user", "state"))
    else:
        by_app = Counter(s.application or "" for s in clients).most_common(TOP)
        by_user = Counter(s.user or "" for s in clients).most_common(TOP)
        by_state = Counter(s.state or "" for s in clients).most_common(TOP)
    idle = [s for s in clients if s.state == "idle" and s.backend_start is not None and not ignored_session(ignore, s)]
    idle_by_app = Counter(s.application or "" for s in idle)
    bulk_app: str | None = None
    bulk: tuple[Session, ...] = ()
    if idle_by_app:
        bulk_app = sorted(idle_by_app.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        chosen = sorted((s for s in idle if (s.application or "") == bulk_app), key=lambda s: -(s.state_secs or 0))
        bulk = tuple(chosen[:max_bulk])
    facts = {
        "used": used, "usable": usable, "max": snap.max_connections, "reserved": snap.superuser_reserved,
        "share": round(100.0 * used / usable, 1), "threshold": share,
        "by_app": by_app, "by_user": by_user, "by_state": by_state,
        "bulk_app": bulk_app, "bulk_count": len(bulk), "idle_of_app": idle_by_app.get(bulk_app, 0) if bulk_app else 0,
    }
    return [Condition(CONNECTIONS, "", facts, (), bulk, bulk_app)]


@dataclass
class HorizonClock:
    """Since when each (slot or standby feedback, xmin) has been seen: they carry no time of their own."""

    first_seen: dict[str, float] = field(default_factory=dict)

    def age(self, key: str, now: float) -> float:
        return now - self.first_seen.setdefault(key, now)

    def keep(self, keys: Iterable[str]) -> None:
        wanted = set(keys)
        for k in list(self.first_seen):
            if k not in wanted:
                del self.first_seen[k]


def horizon_holders(snap: HostSnapshot, ignore: Sequence[IgnoreRule] = (), clock: HorizonClock | None = None,
                    ) -> list[dict[str, Any]]:
    """Every holder of the xmin horizon on this host, oldest first (by time held, then transactions behind)."""
    clock = clock if clock is not None else HorizonClock()
    now = snap.taken_at
    holders: list[dict[str, Any]] = []
    for s in snap.sessions:
        if s.horizon_age is None or s.backend_start is None or s.is_autovacuum or ignored_session(ignore, s):
            continue  # (a VACUUM's own xmin holds back no other vacuum)
        secs = s.xact_secs if s.xact_secs is not None else s.query_secs
        holders.append({"type": "backend", "secs": secs or 0.0, "xid_age": s.horizon_age, "key": s.key,
                        "session": session_facts(s), "backend_type": s.backend_type})
    # a standby lists the primary's prepared transactions too (replayed): they are the primary's alert
    for p in () if snap.in_recovery else snap.prepared:
        holders.append({"type": "prepared", "secs": p.get("secs") or 0.0, "xid_age": p.get("xid_age"),
                        "key": f"prepared:{p.get('gid')}", "gid": p.get("gid"), "owner": p.get("owner"),
                        "database": p.get("database")})
    seen = []
    for sl in snap.slots:
        key = f"slot:{sl.get('slot_name')}:{sl.get('xmin')}:{sl.get('catalog_xmin')}"
        seen.append(key)
        holders.append({"type": "slot", "secs": clock.age(key, now), "xid_age": sl.get("xid_age"), "key": key,
                        "slot_name": sl.get("slot_name"), "slot_type": sl.get("slot_type"),
                        "active": sl.get("active"), "retained_bytes": sl.get("retained_bytes"),
                        "xmin": sl.get("xmin"), "catalog_xmin": sl.get("catalog_xmin")})
    for f in snap.feedback:
        key = f"feedback:{f.get('application_name')}:{f.get('client_addr')}:{f.get('xmin')}"
        seen.append(key)
        holders.append({"type": "feedback", "secs": clock.age(key, now), "xid_age": f.get("xid_age"), "key": key,
                        "application": f.get("application_name"), "client_addr": f.get("client_addr"),
                        "xmin": f.get("xmin")})
    clock.keep(seen)
    holders.sort(key=lambda h: (-(h["secs"] or 0.0), -(h["xid_age"] or 0)))
    return holders


def xmin_horizon(snap: HostSnapshot, watch: Watch, ignore: Sequence[IgnoreRule] = (),
                 clock: HorizonClock | None = None) -> list[Condition]:
    limit = watch.xmin_horizon
    if limit is None:
        return []
    holders = horizon_holders(snap, ignore, clock)
    over = [h for h in holders if (h["secs"] or 0.0) >= limit]
    if not over:
        return []
    sessions = []
    by_key = {s.key: s for s in snap.sessions}
    for h in over[:MAX_SHOWN]:
        s = by_key.get(h["key"]) if h["type"] == "backend" else None
        if s is not None and s.is_client:
            sessions.append(s)
    facts = {"threshold": limit, "oldest": over[0], "holders": over[:MAX_SHOWN], "count": len(over)}
    return [Condition(XMIN_HORIZON, "", facts, tuple(sessions))]


def wal_receiver(snap: HostSnapshot) -> list[Condition]:
    """A standby whose WAL receiver is not streaming receives nothing: it is never "behind", so the lag
    alert never fires for it."""
    if not snap.in_recovery or snap.receiver_status == "streaming":
        return []
    facts = {"status": snap.receiver_status or "not running", "silent_secs": snap.receiver_silent_secs}
    return [Condition(WAL_RECEIVER, "", facts)]


def unreachable(reason: str, failures: int, origin: Origin = Origin.HOST) -> Condition:
    """The host cannot be read (the one kind both watchers share; its name is its origin's)."""
    return Condition(UNREACHABLE_KINDS[origin], "", {"reason": reason, "failures": failures})


def effective_watch(environment: Environment) -> Watch | None:
    """What the watch checks for an environment: its ``watch``, or for one with only ``lag_alert`` the
    host alerts (WAL receiver, unreachable primary) on the lag alert's channel and cadence."""
    if environment.watch is not None:
        return environment.watch
    lag = environment.lag_alert
    if lag is None:
        return None
    return Watch(channel=lag.channel, check_every=lag.check_every, consecutive=lag.consecutive,
                 remind_every=lag.remind_every)


def host_alert_channel(environment: Environment) -> str:
    """Host alerts join the lag alerts' channel when there is one."""
    if environment.lag_alert is not None:
        return environment.lag_alert.channel
    assert environment.watch is not None
    return environment.watch.channel


def unreachable_origin(environment: Environment, host: str) -> Origin:
    """Which watcher reports that ``host`` cannot be read: the lag watcher for a standby it checks, the
    session watch for the primary and for a standby no lag watcher checks (one alert per host)."""
    return Origin.HOST if host == "primary" or environment.lag_alert is None else Origin.STANDBY


def alerts_unreachable(environment: Environment, host: str) -> bool:
    """The primary always; a standby only when no lag watcher checks it (the lag watcher reports it)."""
    return unreachable_origin(environment, host) is Origin.HOST


def conditions(snap: HostSnapshot, watch: Watch, ignore: Sequence[IgnoreRule] = (), *, max_bulk: int = 500,
               clock: HorizonClock | None = None) -> list[Condition]:
    """Every condition over its threshold on this host now (one read serves every kind)."""
    return [
        *wal_receiver(snap),
        *lock_pileups(snap, watch, ignore),
        *idle_in_transaction(snap, watch, ignore),
        *long_running(snap, watch, ignore),
        *connections(snap, watch, ignore, max_bulk),
        *xmin_horizon(snap, watch, ignore, clock),
    ]


# --- consecutive checks ---------------------------------------------------------------------------


@dataclass
class Streaks:
    """Checks in a row each (kind, key) has been true on one host. Lost on restart, on purpose: an open
    incident lives in the state store, and a new one needs ``consecutive`` fresh checks."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def advance(self, found: Iterable[Condition]) -> dict[tuple[str, str], int]:
        now = {c.ident for c in found}
        self.counts = {ident: self.counts.get(ident, 0) + 1 for ident in now}
        return dict(self.counts)


def cannot_read(streaks: Streaks, reason: str, origin: Origin = Origin.HOST) -> tuple[Condition, dict[tuple[str, str], int]]:
    """A failed check of a host, for either watcher: the one unreachable condition with the checks in a row
    that failed (this one included), counted; every other condition's run is broken (nothing else is known)."""
    failures = streaks.counts.get((UNREACHABLE_KINDS[origin], ""), 0) + 1
    cond = unreachable(reason, failures, origin)
    return cond, streaks.advance([cond])


# --- decisions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenIncident:
    """What the rules need to know about an open incident (from the state store)."""

    id: str
    kind: str
    key: str
    opened_at: float
    last_update_at: float | None
    last_reminder_at: float | None
    posted: bool
    acked_by: str | None = None
    ack_drawn: bool = False

    @property
    def ident(self) -> tuple[str, str]:
        return (self.kind, self.key)


def due(last: float | None, every: float, now: float) -> bool:
    """Whether ``every`` seconds have passed since ``last`` (never done: due)."""
    return now - (last or 0.0) >= every


@dataclass(frozen=True)
class FollowUp:
    """What an open incident whose condition still holds needs now (every kind, the lag watcher's too)."""

    due: bool  # ``update_every`` has passed since the last edit (or the last try at the first post)
    ack_to_draw: bool  # acknowledged by a click, and its posted message does not say so yet
    remind: bool  # posted, not acknowledged, and ``remind_every`` has passed since the last reminder

    @property
    def edit(self) -> bool:
        """Edit in place at most once a minute, or at once to show a new Acknowledge."""
        return self.due or self.ack_to_draw


def follow_up(inc: OpenIncident, *, now: float, remind_every: float, update_every: float = UPDATE_EVERY) -> FollowUp:
    """Not posted yet (the first post failed): ``due`` says when to try again; posted: edit at most once a
    minute or at once for a new Acknowledge, and remind every ``remind_every`` until acknowledged."""
    return FollowUp(
        due=due(inc.last_update_at, update_every, now),
        ack_to_draw=bool(inc.posted and inc.acked_by and not inc.ack_drawn),
        remind=bool(inc.posted and not inc.acked_by and due(inc.last_reminder_at or inc.opened_at, remind_every, now)),
    )


@dataclass(frozen=True)
class Move:
    """One step of an incident's lifecycle, before any timing: ``open`` (true ``consecutive`` checks in a
    row, nothing open), ``continue`` (open and still true: ``condition`` is what is true now), ``resolve``
    (open, and not true at this check)."""

    action: str  # open | continue | resolve
    kind: str
    key: str
    condition: Condition | None = None


def moves(found: Sequence[Condition], streaks: Mapping[tuple[str, str], int],
          open_: Sequence[tuple[str, str]], *, consecutive: int) -> list[Move]:
    """Every kind's lifecycle: one move per open (kind, key) of ``open_``, in its order (continue or
    resolve), then the opens, in the order of ``found``."""
    by_ident = {c.ident: c for c in found}
    out = [Move("resolve" if by_ident.get(ident) is None else "continue", *ident, by_ident.get(ident))
           for ident in open_]
    opened = set(open_)
    out += [Move("open", c.kind, c.key, c) for c in found
            if c.ident not in opened and streaks.get(c.ident, 0) >= consecutive]
    return out


@dataclass(frozen=True)
class Decision:
    action: str  # open | update | remind | resolve
    kind: str
    key: str
    condition: Condition | None = None
    incident: OpenIncident | None = None


def decide(
    found: Sequence[Condition],
    streaks: dict[tuple[str, str], int],
    open_: Sequence[OpenIncident],
    *,
    now: float,
    consecutive: int,
    remind_every: float,
    update_every: float = UPDATE_EVERY,
) -> list[Decision]:
    """:func:`moves`, a continuing incident edited and reminded as :func:`follow_up` says."""
    out: list[Decision] = []
    steps = moves(found, streaks, [i.ident for i in open_], consecutive=consecutive)
    for inc, step in zip(open_, steps, strict=False):  # one move per open incident, in order
        if step.action == "resolve":
            out.append(Decision("resolve", inc.kind, inc.key, None, inc))
            continue
        then = follow_up(inc, now=now, remind_every=remind_every, update_every=update_every)
        if then.edit:
            out.append(Decision("update", inc.kind, inc.key, step.condition, inc))
        if then.remind:
            out.append(Decision("remind", inc.kind, inc.key, step.condition, inc))
    out += [Decision("open", step.kind, step.key, step.condition) for step in steps[len(open_):]]
    return out
