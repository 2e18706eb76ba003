"""The lag watcher's incident rules, pure: measurements in, actions out, on the lifecycle every alert shares.

No database, no Slack, no clock of its own (``now`` is passed in): :class:`bot.lagwatch.watcher.LagWatcher`
is the shell that measures on schedule, feeds :func:`on_measurement` / :func:`on_failure`, and carries
out the :class:`Action` s they return (store the incident, post or edit the Slack message).

Both are thin adapters over the session watch's rules (:mod:`bot.watch.rules`): the checks in a row are
its :class:`~bot.watch.rules.Streaks`, open / continue / resolve its :func:`~bot.watch.rules.moves` (the
core of ``decide``), and when a continuing incident is edited and reminded its ``follow_up`` (asked by
the shell). Per standby:

* lag: a check counts as a breach when it is over the threshold (time and ``min_bytes``) *and* the WAL
  received at the previous check is still not replayed; ``consecutive`` breaches in a row open an
  incident; while open, a check over the threshold continues it and the first check under the threshold
  resolves it (with a note when the standby was promoted).
* unreachable: the one "host cannot be read" kind (:func:`bot.watch.rules.cannot_read`, origin
  :attr:`~bot.watch.incident_models.Origin.STANDBY`): ``consecutive`` failed checks open an incident;
  the first successful check resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.config import LagAlert
from bot.lagwatch.model import StandbyLag, lsn_to_int
from bot.postgres.models import iso
from bot.watch.incident_models import LAG as LAG
from bot.watch.incident_models import UNREACHABLE as UNREACHABLE
from bot.watch.incident_models import IncidentPayload, LagFacts, LagLast, Origin, Seen
from bot.watch.rules import Condition, Streaks, cannot_read, moves
from bot.watch.rules import due as due  # edit / remind timing is bot.watch.rules' (every kind's)

PROMOTED_NOTE = "the standby is no longer in recovery: it was promoted or is not a standby"

# the lag condition of one standby (its facts are the incident's record: lag_payload)
LAGGING = Condition(LAG, "", {})


class Act(StrEnum):
    OPEN_LAG = "open_lag"
    CONTINUE_LAG = "continue_lag"
    RESOLVE_LAG = "resolve_lag"
    OPEN_UNREACHABLE = "open_unreachable"
    CONTINUE_UNREACHABLE = "continue_unreachable"
    RESOLVE_UNREACHABLE = "resolve_unreachable"


# a move of the shared lifecycle (bot.watch.rules.moves) on a kind of this watcher -> what the shell does
ACTS: dict[tuple[str, str], Act] = {
    (LAG, "open"): Act.OPEN_LAG, (LAG, "continue"): Act.CONTINUE_LAG, (LAG, "resolve"): Act.RESOLVE_LAG,
    (UNREACHABLE, "open"): Act.OPEN_UNREACHABLE, (UNREACHABLE, "continue"): Act.CONTINUE_UNREACHABLE,
    (UNREACHABLE, "resolve"): Act.RESOLVE_UNREACHABLE,
}


@dataclass(frozen=True)
class Action:
    act: Act
    note: str | None = None  # RESOLVE_LAG: a line put first in "what was done"
    reason_changed: bool = False  # CONTINUE_UNREACHABLE: the error differs from the previous check's


class HostState:
    """What the leader remembers between checks of one standby (lost on restart, on purpose): the checks
    in a row (:class:`~bot.watch.rules.Streaks`: breaches of the lag, failures to read), and what the
    next check compares with."""

    def __init__(self, breaches: int = 0, failures: int = 0, first_failure_at: float | None = None,
                 last_receive: int | None = None, last_error: str | None = None, quiet: bool = False):
        self.streaks = Streaks({ident: n for ident, n in (((LAG, ""), breaches), ((UNREACHABLE, ""), failures)) if n})
        self.first_failure_at = first_failure_at
        self.last_receive = last_receive
        self.last_error = last_error
        # nothing open in the store for this standby, known since this state began (it starts again when
        # this replica gains the lease or the environment): a quiet check skips the store (issue 26)
        self.quiet = quiet

    @property
    def breaches(self) -> int:
        """Checks in a row over the threshold with the WAL received before still not replayed."""
        return self.streaks.counts.get((LAG, ""), 0)

    @property
    def failures(self) -> int:
        """Checks in a row that could not read the standby."""
        return self.streaks.counts.get((UNREACHABLE, ""), 0)


def _open(open_kinds: set[str]) -> list[tuple[str, str]]:
    """The open incidents of a standby as the lifecycle takes them (the unreachable one moves first)."""
    return [(kind, "") for kind in (UNREACHABLE, LAG) if kind in open_kinds]


def on_measurement(st: HostState, m: StandbyLag, alert: LagAlert, open_kinds: set[str]) -> list[Action]:
    """A successful check: update ``st`` and say what to do with the standby's incidents."""
    above = m.above(alert)
    # The same check must not count twice for WAL that replays promptly: a breach needs the WAL that
    # had been received at the previous check to be still unreplayed now.
    replay = lsn_to_int(m.replay_lsn)
    stuck = st.last_receive is None or replay is None or replay < st.last_receive
    st.last_receive = lsn_to_int(m.receive_lsn)
    st.first_failure_at = None
    # what holds now (an open lag continues while over the threshold); what counts towards opening one
    holding = [LAGGING] if above else []
    counts = st.streaks.advance(holding if stuck else [])  # a read that answered ends the failures too
    actions: list[Action] = []
    for move in moves(holding, counts, _open(open_kinds), consecutive=alert.consecutive):
        act = ACTS[(move.kind, move.action)]
        note = PROMOTED_NOTE if act is Act.RESOLVE_LAG and not m.in_recovery else None
        actions.append(Action(act, note=note))
    return actions


def on_failure(st: HostState, reason: str, now: float, alert: LagAlert, open_kinds: set[str]) -> list[Action]:
    """A failed check: update ``st`` and say what to do with the standby's unreachable incident (the lag
    incident neither continues nor resolves: nothing is known of it)."""
    cond, counts = cannot_read(st.streaks, reason, Origin.STANDBY)  # the lag's run of breaches ends here
    if st.failures == 1:
        st.first_failure_at = now
    st.last_receive = None
    changed = reason != st.last_error
    st.last_error = reason
    open_ = [ident for ident in _open(open_kinds) if ident == cond.ident]
    return [Action(ACTS[(move.kind, move.action)], reason_changed=changed and move.action == "continue")
            for move in moves([cond], counts, open_, consecutive=alert.consecutive)]


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def lag_payload(payload: IncidentPayload, m: StandbyLag) -> IncidentPayload:
    """An open lag incident's record after one more measurement: the peaks, the earliest ``since``, every
    reason seen, every session seen holding replay back, and the last measurement."""
    f = payload.facts_as(LagFacts)
    since = m.since
    known = _parse_iso(f.since)
    reasons = f.reasons if m.reason.label in f.reasons else (*f.reasons, m.reason.label)
    facts = f.model_copy(update={
        "peak_secs": max(float(f.peak_secs or 0.0), m.lag_secs or 0.0),
        "peak_bytes": max(int(f.peak_bytes or 0), m.lag_bytes),
        "reasons": reasons,
        "last": LagLast(lag_secs=m.lag_secs, lag_bytes=m.lag_bytes, reason=m.reason.value, at=_iso(m.measured_at)),
        **({"since": _iso(since)} if since is not None and (known is None or since < known) else {}),
    })
    seen = dict(payload.seen)
    for c in m.holding_back:
        seen.setdefault(c.key, Seen(pid=c.session.pid, backend_start=iso(c.session.backend_start),
                                    user=c.session.user, application=c.session.application, kind=c.kind))
    return payload.with_(facts=facts, seen=seen)


def resolved_payload(payload: IncidentPayload, m: StandbyLag | None) -> IncidentPayload:
    """The record of a lag incident as it resolves: what is true now must not rewrite history (the worst
    and the reasons seen stay)."""
    if m is None:
        return payload
    p = lag_payload(payload, m)
    before = payload.facts_as(LagFacts)
    facts = p.facts_as(LagFacts)
    return p.with_(facts=facts.model_copy(update={"reasons": before.reasons or facts.reasons}), seen=payload.seen)
