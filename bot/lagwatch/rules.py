"""The lag watcher's incident rules as a pure state machine: measurements in, actions out.

No database, no Slack, no clock of its own (``now`` is passed in): :class:`bot.lagwatch.watcher.LagWatcher`
is the shell that measures on schedule, feeds :func:`on_measurement` / :func:`on_failure`, and carries
out the :class:`Action` s they return (store the incident, post or edit the Slack message).

Per standby:

* lag: a check counts as a breach when it is over the threshold (time and ``min_bytes``) *and* the WAL
  received at the previous check is still not replayed; ``consecutive`` breaches in a row open an
  incident; while open it is edited at most every ``update_every`` and reminded every ``remind_every``
  (:func:`bot.watch.rules.follow_up`, the timing every alert shares);
  the first check under the threshold resolves it (with a note when the standby was promoted).
* unreachable: ``consecutive`` failed checks open an incident; the first successful check resolves it.
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
from bot.watch.incident_models import IncidentPayload, LagFacts, LagLast, Seen
from bot.watch.rules import due as due  # edit / remind timing is bot.watch.rules' (every kind's)

PROMOTED_NOTE = "the standby is no longer in recovery: it was promoted or is not a standby"


class Act(StrEnum):
    OPEN_LAG = "open_lag"
    CONTINUE_LAG = "continue_lag"
    RESOLVE_LAG = "resolve_lag"
    OPEN_UNREACHABLE = "open_unreachable"
    CONTINUE_UNREACHABLE = "continue_unreachable"
    RESOLVE_UNREACHABLE = "resolve_unreachable"


@dataclass(frozen=True)
class Action:
    act: Act
    note: str | None = None  # RESOLVE_LAG: a line put first in "what was done"
    reason_changed: bool = False  # CONTINUE_UNREACHABLE: the error differs from the previous check's


@dataclass
class HostState:
    """What the leader remembers between checks of one standby (lost on restart, on purpose)."""

    breaches: int = 0
    failures: int = 0
    first_failure_at: float | None = None
    last_receive: int | None = None
    last_error: str | None = None
    # nothing open in the store for this standby, known since this state began (it starts again when
    # this replica gains the lease or the environment): a quiet check skips the store (issue 26)
    quiet: bool = False


def on_measurement(st: HostState, m: StandbyLag, alert: LagAlert, open_kinds: set[str]) -> list[Action]:
    """A successful check: update ``st`` and say what to do with the standby's incidents."""
    st.failures, st.first_failure_at = 0, None
    above = m.above(alert)
    # The same check must not count twice for WAL that replays promptly: a breach needs the WAL that
    # had been received at the previous check to be still unreplayed now.
    replay = lsn_to_int(m.replay_lsn)
    stuck = st.last_receive is None or replay is None or replay < st.last_receive
    st.breaches = st.breaches + 1 if (above and stuck) else 0
    st.last_receive = lsn_to_int(m.receive_lsn)

    actions: list[Action] = []
    if UNREACHABLE in open_kinds:
        actions.append(Action(Act.RESOLVE_UNREACHABLE))
    if LAG not in open_kinds:
        if st.breaches >= alert.consecutive:
            actions.append(Action(Act.OPEN_LAG))
    elif above:
        actions.append(Action(Act.CONTINUE_LAG))
    elif not m.in_recovery:
        actions.append(Action(Act.RESOLVE_LAG, note=PROMOTED_NOTE))
    else:
        actions.append(Action(Act.RESOLVE_LAG))
    return actions


def on_failure(st: HostState, reason: str, now: float, alert: LagAlert, open_kinds: set[str]) -> list[Action]:
    """A failed check: update ``st`` and say what to do with the standby's unreachable incident."""
    if st.failures == 0:
        st.first_failure_at = now
    st.failures += 1
    st.breaches, st.last_receive = 0, None
    changed = reason != st.last_error
    st.last_error = reason
    if UNREACHABLE not in open_kinds:
        return [Action(Act.OPEN_UNREACHABLE)] if st.failures >= alert.consecutive else []
    return [Action(Act.CONTINUE_UNREACHABLE, reason_changed=changed)]


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
