"""The lag watcher's incident rules (bot/lagwatch/rules.py): measurements in, actions out, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.config import LagAlert
from bot.lagwatch import rules
from bot.lagwatch.model import Reason, StandbyLag
from bot.lagwatch.rules import LAG, PROMOTED_NOTE, UNREACHABLE, Act, Action, HostState
from bot.watch.incident_models import IncidentPayload, LagFacts

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
ALERT = LagAlert(channel="C0LAG", threshold=30, check_every=30, consecutive=2)


def m(receive="0/3000100", replay="0/3000000", lag_bytes=256, age=120.0, in_recovery=True, reason=Reason.LOCK,
      at=NOW) -> StandbyLag:
    return StandbyLag(
        env="prod", host="replica1", measured_at=at, in_recovery=in_recovery, receive_lsn=receive,
        replay_lsn=replay, lag_bytes=lag_bytes, replay_age=age, last_replay_at=at - timedelta(seconds=age),
        replay_paused=False, receiver_status="streaming", slot_name="s1", wal_receiver_name="walreceiver",
        max_standby_streaming_delay="-1", recovery_min_apply_delay="0", startup_pid=42,
        startup_wait="Lock/relation", reason=reason,
    )


CAUGHT_UP = dict(receive="0/3000100", replay="0/3000100", lag_bytes=0, age=0.5, reason=Reason.NONE)


def test_a_lag_incident_opens_after_consecutive_stuck_breaches():
    st = HostState()
    assert rules.on_measurement(st, m(), ALERT, set()) == []
    assert st.breaches == 1
    assert rules.on_measurement(st, m(), ALERT, set()) == [Action(Act.OPEN_LAG)]


def test_wal_that_replays_between_checks_is_not_a_breach():
    """Over the threshold twice, but what was received at the first check has been replayed since."""
    st = HostState()
    rules.on_measurement(st, m(receive="0/3000100", replay="0/3000000"), ALERT, set())
    assert rules.on_measurement(st, m(receive="0/4000000", replay="0/3000200"), ALERT, set()) == []
    assert st.breaches == 0


def test_a_check_under_the_threshold_resets_the_count():
    st = HostState()
    rules.on_measurement(st, m(), ALERT, set())
    rules.on_measurement(st, m(**CAUGHT_UP), ALERT, set())
    assert st.breaches == 0
    assert rules.on_measurement(st, m(), ALERT, set()) == []


def test_min_bytes_keeps_a_small_lag_from_counting():
    st = HostState()
    alert = ALERT.model_copy(update={"min_bytes": 1_000_000, "consecutive": 1})
    assert rules.on_measurement(st, m(), alert, set()) == []


def test_an_open_lag_incident_continues_then_resolves():
    st = HostState(breaches=5)
    assert rules.on_measurement(st, m(), ALERT, {LAG}) == [Action(Act.CONTINUE_LAG)]
    assert rules.on_measurement(st, m(**CAUGHT_UP), ALERT, {LAG}) == [Action(Act.RESOLVE_LAG)]


def test_a_promoted_standby_resolves_with_a_note():
    st = HostState()
    out = rules.on_measurement(st, m(in_recovery=False, **{k: v for k, v in CAUGHT_UP.items()}), ALERT, {LAG})
    assert out == [Action(Act.RESOLVE_LAG, note=PROMOTED_NOTE)]


def test_unreachable_opens_after_consecutive_failures_and_resolves_on_success():
    st = HostState(breaches=1, last_receive=5)
    assert rules.on_failure(st, "timeout", 100.0, ALERT, set()) == []
    assert st.first_failure_at == 100.0 and st.breaches == 0 and st.last_receive is None
    assert rules.on_failure(st, "timeout", 130.0, ALERT, set()) == [Action(Act.OPEN_UNREACHABLE)]
    assert st.first_failure_at == 100.0 and st.failures == 2
    assert rules.on_failure(st, "timeout", 160.0, ALERT, {UNREACHABLE}) == [
        Action(Act.CONTINUE_UNREACHABLE, reason_changed=False)
    ]
    assert rules.on_failure(st, "refused", 190.0, ALERT, {UNREACHABLE}) == [
        Action(Act.CONTINUE_UNREACHABLE, reason_changed=True)
    ]
    out = rules.on_measurement(st, m(**CAUGHT_UP), ALERT, {UNREACHABLE})
    assert out == [Action(Act.RESOLVE_UNREACHABLE)]
    assert st.failures == 0 and st.first_failure_at is None


def test_both_incidents_move_in_one_check():
    st = HostState(breaches=1, last_receive=None)
    out = rules.on_measurement(st, m(), ALERT, {UNREACHABLE})
    assert out == [Action(Act.RESOLVE_UNREACHABLE), Action(Act.OPEN_LAG)]


def test_due():
    assert rules.due(None, 60, 1.7e9)  # never done: due
    assert not rules.due(100.0, 60, 150.0)
    assert rules.due(100.0, 60, 160.0)


def test_the_incident_record_keeps_peaks_the_earliest_since_and_every_reason():
    first = rules.lag_payload(IncidentPayload(), m(age=120.0, lag_bytes=500))
    first_f = first.facts_as(LagFacts)
    assert first_f.peak_secs == 120.0 and first_f.peak_bytes == 500 and list(first_f.reasons) == [Reason.LOCK.label]
    assert first_f.since is not None
    since = datetime.fromisoformat(first_f.since)
    assert since == NOW - timedelta(seconds=120)
    later = rules.lag_payload(first, m(age=60.0, lag_bytes=100, reason=Reason.SNAPSHOT, at=NOW + timedelta(seconds=30)))
    later_f = later.facts_as(LagFacts)
    assert later_f.peak_secs == 120.0 and later_f.peak_bytes == 500
    assert later_f.since == first_f.since, "a later, shorter lag must not move the start"
    assert list(later_f.reasons) == [Reason.LOCK.label, Reason.SNAPSHOT.label]
    assert later_f.last is not None and later_f.last.lag_bytes == 100


def test_resolving_keeps_history():
    open_ = rules.lag_payload(IncidentPayload(), m(reason=Reason.LOCK))
    resolved = rules.resolved_payload(open_, m(**CAUGHT_UP))
    open_f, resolved_f = open_.facts_as(LagFacts), resolved.facts_as(LagFacts)
    assert resolved_f.reasons == open_f.reasons and resolved_f.peak_secs == open_f.peak_secs
    assert resolved_f.last is not None and resolved_f.last.lag_bytes == 0
    assert rules.resolved_payload(open_, None) is open_


def test_the_lag_lifecycle_runs_on_the_shared_rules():
    """The lag watcher's counts are the shared Streaks (breaches of the lag, failures to read under the one
    unreachable kind), so a failed check breaks a run of breaches and a check that answers breaks the failures."""
    st = HostState()
    rules.on_measurement(st, m(), ALERT, set())
    assert st.streaks.counts == {(LAG, ""): 1}
    rules.on_failure(st, "timeout", 1.0, ALERT, set())
    assert st.streaks.counts == {(UNREACHABLE, ""): 1}
    rules.on_measurement(st, m(), ALERT, set())
    assert st.streaks.counts == {(LAG, ""): 1} and st.first_failure_at is None
