"""The lag watcher's pure parts: what counts as lag, which conflict it is, and the messages' Slack limits."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import LagAlert
from bot.lagwatch.detect import classify, match_primary_view, pick_culprits
from bot.lagwatch.model import PrimaryView, Reason, StandbyLag, Unreachable, lsn_to_int
from bot.render.common import FALLBACK_TEXT, MAX_BLOCKS, SECTION_TEXT
from bot.render.lag import (
    render_lag_alert,
    render_lag_listing,
    render_lag_reminder,
    render_lag_resolved,
    render_unreachable_alert,
    render_unreachable_resolved,
)
from tests.harness.fake_slack import validate_message_blocks

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
ALERT = LagAlert(channel="C0LAG", threshold=30, check_every=30, consecutive=2)


def measurement(**kw) -> StandbyLag:
    base = dict(
        env="prod", host="replica1", measured_at=NOW, in_recovery=True, receive_lsn="0/3000100",
        replay_lsn="0/3000000", lag_bytes=256, replay_age=120.0, last_replay_at=NOW - timedelta(seconds=120),
        replay_paused=False, receiver_status="streaming", slot_name="s1", wal_receiver_name="walreceiver",
        max_standby_streaming_delay="-1", recovery_min_apply_delay="0", startup_pid=42,
        startup_wait="Lock/relation", reason=Reason.LOCK,
    )
    base.update(kw)
    return StandbyLag(**base)


def row(pid: int, **kw) -> dict:
    base = dict(
        pid=pid, backend_start=NOW - timedelta(minutes=5, microseconds=pid), usename="app", datname="appdb",
        application_name="report", client_addr="10.0.0.5", state="idle in transaction", wait_event_type="Client",
        wait_event="ClientRead", query="SELECT * FROM big WHERE secret = 'x'" + " " * 5000 + "-- end", query_secs=300.0,
        xact_secs=301.0, state_secs=299.0, backend_xmin=None, holds_lock=True, lock_modes="AccessShareLock",
        lock_objects="public.big", wanted_modes="AccessExclusiveLock", old_snapshot=False, xmin_age=None,
        xmin_behind=None, is_suspect=True, is_superuser=False, bot_is_super=False, bot_can_signal=True, bot_has_privs=True,
    )
    base.update(kw)
    return base


def texts(msg: dict) -> str:
    return json.dumps(msg)


# --- what counts as lag ----------------------------------------------------------------------------


def test_an_old_replay_timestamp_is_not_lag_when_nothing_waits_to_be_replayed():
    m = measurement(lag_bytes=0, receive_lsn="0/3000000", replay_age=3600.0, reason=Reason.NONE)
    assert not m.behind and m.lag_secs == 0.0 and not m.above(ALERT)


def test_the_primarys_replay_lag_is_preferred_and_min_bytes_applies():
    view = PrimaryView(NOW, "walreceiver", "s1", "streaming", "async", None, 45.0, 0.001, 0.001, 512, "0/3000200", "0/3000000")
    m = measurement(primary=view)
    assert m.lag_secs == 45.0 and m.above(ALERT)
    assert m.since == NOW - timedelta(seconds=45)
    assert not m.above(LagAlert(channel="C", threshold=30, min_bytes=1024))
    assert not measurement(primary=replace(view, replay_lag=10.0)).above(ALERT)
    assert measurement(primary=replace(view, replay_lag=None)).lag_secs == 120.0  # NULL: unknown, fall back


def test_a_standby_that_is_not_in_recovery_is_never_behind():
    assert not measurement(in_recovery=False).behind


def test_a_delayed_standby_alerts_only_beyond_its_configured_delay():
    m = measurement(apply_delay_secs=100.0, reason=Reason.APPLY_DELAY, startup_wait="Timeout/RecoveryApplyDelay")
    assert m.lag_secs == 120.0 and not m.above(ALERT)
    assert replace(m, replay_age=131.0).above(ALERT)
    assert "alerts count only the lag beyond it" in texts(render_lag_alert(m, ALERT, since=None))


@pytest.mark.parametrize(
    ("wait_type", "wait", "paused", "expected"),
    [
        ("Lock", "relation", False, Reason.LOCK),
        ("IPC", "RecoveryConflictSnapshot", False, Reason.SNAPSHOT),
        ("BufferPin", "BufferPin", False, Reason.BUFFER_PIN),
        ("Timeout", "RecoveryApplyDelay", False, Reason.APPLY_DELAY),
        ("IPC", "RecoveryPause", False, Reason.PAUSED),
        (None, None, True, Reason.PAUSED),
        (None, None, False, Reason.UNKNOWN),
        ("IO", "WALRead", False, Reason.UNKNOWN),
    ],
)
def test_the_startup_process_wait_event_says_which_conflict(wait_type, wait, paused, expected):
    assert classify(wait_type, wait, paused, behind=True) == expected


def test_lsn_positions():
    assert lsn_to_int("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert lsn_to_int(None) is None
    assert lsn_to_int("0/10") > lsn_to_int("0/F")


def test_culprits_follow_the_conflict_and_suspects_fill_in():
    rows = [
        row(1),
        row(2, holds_lock=False, old_snapshot=True, backend_xmin="700", xmin_age=50, xmin_behind=3, state="active"),
        row(3, holds_lock=False, old_snapshot=True, backend_xmin="650", xmin_age=90, xmin_behind=43, state="active"),
    ]
    direct, suspects = pick_culprits(Reason.LOCK, rows)
    assert [c.session.pid for c in direct] == [1] and not suspects
    assert "holds AccessShareLock on public.big" in direct[0].why
    direct, _ = pick_culprits(Reason.SNAPSHOT, rows)
    assert [c.session.pid for c in direct] == [3, 2], "oldest snapshot first"
    assert "43 transactions older" in direct[0].why
    direct, suspects = pick_culprits(Reason.BUFFER_PIN, rows)
    assert not direct and [c.session.pid for c in suspects] == [1, 3, 2]
    assert all(c.kind == "suspect" for c in suspects)
    direct, suspects = pick_culprits(Reason.LOCK, [rows[1]])
    assert not direct and [c.session.pid for c in suspects] == [2], "no lock holder found: suspects instead"


def test_the_primary_row_is_matched_by_slot_then_by_name():
    a = PrimaryView(NOW, "walreceiver", "slot_a", "streaming", "async", None, 1.0, None, None, 0, None, None)
    b = PrimaryView(NOW, "replica-b", None, "streaming", "async", None, 2.0, None, None, 0, None, None)
    assert match_primary_view([b, a], "slot_a", "replica-b") is a
    assert match_primary_view([a, b], None, "replica-b") is b
    assert match_primary_view([a, replace(a, slot_name=None)], None, "walreceiver") is None, "ambiguous name"


# --- messages --------------------------------------------------------------------------------------


def culprits(n: int, reason: Reason = Reason.LOCK):
    direct, suspects = pick_culprits(reason, [row(1000 + i) for i in range(n)])
    return direct or suspects


def check_limits(msg: dict) -> None:
    assert 0 < len(msg["blocks"]) <= MAX_BLOCKS
    assert msg["text"] and len(msg["text"]) <= FALLBACK_TEXT
    for b in msg["blocks"]:
        if b["type"] == "section":
            assert len(b["text"]["text"]) <= SECTION_TEXT
    assert validate_message_blocks(msg["blocks"]) == []


@pytest.mark.parametrize("n", [0, 1, 9, 10, 25])
def test_alert_stays_within_slack_limits_and_names_the_culprits(n):
    found = culprits(n)
    m = measurement(culprits=found)
    tokens = {c.session.pid: f"tok{c.session.pid}" for c in found}
    msg = render_lag_alert(m, ALERT, since=m.since, tokens=tokens, query_chars=300, reminder_every=900)
    check_limits(msg)
    body = texts(msg)
    assert "2m behind" in msg["text"] and "lock conflict" in msg["text"]
    if n:
        assert f"Terminate {found[0].session.pid}" in body and "pid 1000" in msg["text"]
    if n > 10:
        assert f"{n - 10} more not shown" in body
    if n:
        assert "secret = 'x'" in body  # query text as read (redaction happens where rows are read)


def test_alert_without_culprits_says_so_and_suspects_are_labelled():
    check_limits(render_lag_alert(measurement(), ALERT, since=None))
    assert "No session on the standby looks responsible" in texts(render_lag_alert(measurement(), ALERT, since=None))
    suspects = culprits(2, Reason.UNKNOWN)
    msg = render_lag_alert(measurement(reason=Reason.UNKNOWN, suspects=suspects, startup_wait=None), ALERT, since=None)
    assert "No direct culprit found" in texts(msg) and "suspects: pid 1000, 1001" in msg["text"]


def test_kill_disabled_shows_why_instead_of_buttons():
    m = measurement(culprits=culprits(2))
    msg = render_lag_alert(m, ALERT, since=None, tokens={}, kill_disabled="signalling is turned off")
    assert not [b for b in msg["blocks"] if b["type"] == "actions"]
    assert "signalling is turned off" in texts(msg)


def test_resolved_has_no_buttons_and_says_what_was_done():
    msg = render_lag_resolved(
        "prod", "replica1", opened_at=NOW, resolved_at=NOW + timedelta(minutes=4), since=NOW - timedelta(minutes=1),
        peak_secs=300, peak_bytes=5_000_000, reasons=["lock conflict"],
        done=["pid 1 terminated through the bot (requested by <@U1>; approved by <@U2>)"] * 30,
    )
    check_limits(msg)
    assert not [b for b in msg["blocks"] if b["type"] == "actions"]
    assert "Lasted 5m" in texts(msg) and "4.8 MB" in texts(msg) and "lock conflict" in texts(msg)


def test_reminder_and_unreachable_messages():
    m = measurement(culprits=culprits(1))
    r = render_lag_reminder(m, opened_at=NOW - timedelta(minutes=15), now=NOW)
    check_limits(r)
    assert "open for 15m" in r["text"] and "pid 1000" in r["text"]
    u = render_unreachable_alert("prod", "replica1", "connection refused", since=NOW, failures=3, check_every=30, now=NOW)
    check_limits(u)
    assert "connection refused" in u["text"]


def test_listing_of_many_standbys_stays_within_limits():
    results = []
    for i in range(12):
        results.append(measurement(host=f"replica{i}", culprits=culprits(10)))
    results.append(Unreachable("prod", "gone", "connection refused", NOW))
    results.append(measurement(host="idle", lag_bytes=0, reason=Reason.NONE, replay_age=4000.0))
    tokens = {(f"replica{i}", 1000 + j): f"t{i}-{j}" for i in range(12) for j in range(10)}
    msg = render_lag_listing("prod", results, alert=ALERT, tokens=tokens)
    check_limits(msg)
    body = texts(msg)
    for i in range(12):
        assert f"*replica{i}*" in body, "every standby gets its line, culprits only where room is left"
    assert "*gone* unreachable" in body and "*idle* caught up" in body


def test_a_null_replay_lag_reads_as_not_reported_yet():
    from bot.render.lag import primary_text

    view = PrimaryView(NOW, "walreceiver", "s1", "streaming", "async", None, None, None, None, 512, "0/3000200", "0/3000000")
    text = primary_text(measurement(primary=view))
    assert "replay_lag not reported yet" in text and "NULL" not in text


def test_an_unreachable_standby_alert_offers_acknowledge_and_then_says_who_took_it():
    since = NOW - timedelta(minutes=3)
    fresh = render_unreachable_alert("prod", "replica1", "connection refused", since=since, failures=3,
                                     check_every=10, now=NOW, incident_id="inc1")
    validate_message_blocks(fresh["blocks"])
    assert '"pgs_watch:ack:inc1"' in json.dumps(fresh["blocks"])
    taken = render_unreachable_alert("prod", "replica1", "connection refused", since=since, failures=4,
                                     check_every=10, now=NOW, incident_id="inc1", ack={"by": "U5", "at": NOW.timestamp()})
    assert "pgs_watch:ack" not in json.dumps(taken["blocks"]) and "Acknowledged by <@U5>" in json.dumps(taken["blocks"])
    done = render_unreachable_resolved("prod", "replica1", "connection refused", since=since, resolved_at=NOW,
                                       ack={"by": "U5"})
    assert "Acknowledged by <@U5>" in json.dumps(done["blocks"])
