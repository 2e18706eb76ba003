"""The transaction ID wraparound detector's pure rules and its alert (no server, no Slack)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.config import ConfigError, IgnoreRule, Watch, parse_config
from bot.render.watch import render_alert, render_reminder, render_resolved
from bot.watch import rules, wraparound
from bot.watch.detectors import DETECTORS
from bot.watch.model import WRAPAROUND
from tests.harness.fake_slack import validate_message_blocks

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 1, 0, 0, 123456, tzinfo=UTC)
HOSTILE = "<!channel> *x* `y` <https://e.example|z> \x1b[31m\u202e"


def session_row(pid: int, *, xmin_age: int | None = None, xid_age: int | None = None, app: str = "web",
                backend_type: str = "client backend", state: str = "idle in transaction") -> dict[str, Any]:
    return {
        "pid": pid, "backend_start": (T0 + timedelta(seconds=pid)).isoformat(), "backend_type": backend_type,
        "usename": "app_user", "datname": "appdb", "application_name": app, "client_addr": "10.0.0.1",
        "state": state, "wait_event_type": None, "wait_event": None, "query": "SELECT 1",
        "state_change": T0.isoformat(), "query_start": T0.isoformat(), "xact_start": T0.isoformat(),
        "query_secs": 100.0, "xact_secs": 100.0, "state_secs": 100.0, "backend_xmin": "750",
        "xmin_age": xmin_age, "xid_age": xid_age, "is_superuser": False, "bot_has_privs": True,
    }


def row(databases: list[tuple[str, int, int]], sessions: list[dict[str, Any]] = (), *, prepared=(), slots=(),
        feedback=(), in_recovery: bool = False) -> dict[str, Any]:
    return {
        "in_recovery": in_recovery, "bot_is_super": True, "bot_can_signal": True,
        "oldest": max((max(x, m) for _, x, m in databases), default=0),
        "databases": [{"datname": n, "xid_age": x, "mxid_age": m} for n, x, m in databases],
        "sessions": list(sessions), "prepared": list(prepared), "slots": list(slots), "feedback": list(feedback),
    }


def reading(*args: Any, **kw: Any) -> wraparound.WraparoundReading:
    return wraparound.reading_from_row("prod", "primary", 1000.0, row(*args, **kw))


def watch(threshold: int = 1000) -> Watch:
    return Watch(channel="C0ALERTS", wraparound={"threshold": threshold})


# --- config ---------------------------------------------------------------------------------------


def test_the_config_key_is_watch_wraparound_threshold_with_a_default_of_one_billion():
    cfg = parse_config({"environments": {"prod": {"dsn": "host=x", "watch": {
        "channel": "C0ALERTS", "wraparound": {}}}}})
    w = cfg.environments["prod"].watch
    assert w is not None and w.wraparound is not None and w.wraparound.threshold == 1_000_000_000
    assert Watch(channel="C1").wraparound is None  # off unless configured, like every kind
    with pytest.raises(ConfigError) as err:
        parse_config({"environments": {"prod": {"dsn": "host=x", "watch": {
            "channel": "C0ALERTS", "wraparound": {"threshold": 0}}}}})
    assert "wraparound" in str(err.value) and "threshold" in str(err.value)


# --- the condition --------------------------------------------------------------------------------


def test_under_the_threshold_or_off_is_quiet():
    r = reading([("appdb", 999, 10), ("postgres", 500, 0)])
    assert wraparound.conditions(r, watch(1000)) == []
    assert wraparound.conditions(reading([("appdb", 5000, 0)]), Watch(channel="C1")) == []


def test_databases_over_the_threshold_by_xid_or_multixact_age_oldest_first():
    r = reading([("a", 1500, 0), ("b", 10, 3000), ("c", 999, 999), ("d", 1000, 0)])
    (cond,) = wraparound.conditions(r, watch(1000))
    assert cond.kind == WRAPAROUND and cond.key == ""
    assert [d["name"] for d in cond.facts["databases"]] == ["b", "a", "d"]
    assert cond.facts["count"] == 3 and cond.facts["worst"] == {"name": "b", "xid_age": 10, "mxid_age": 3000}
    assert cond.facts["threshold"] == 1000


def test_a_standby_mirrors_its_primary_and_never_alerts():
    assert wraparound.conditions(reading([("a", 5000, 0)], in_recovery=True), watch(1000)) == []


def test_the_holders_are_named_oldest_transaction_first_and_the_oldest_client_session_gets_terminate():
    sessions = [session_row(11, xmin_age=1200), session_row(12, xid_age=4000),
                session_row(13, xmin_age=9000, backend_type="autovacuum worker")]
    prepared = [{"gid": "g1", "owner": "o", "database": "appdb", "xid_age": 3000, "secs": 50.0}]
    slots = [{"slot_name": "s1", "slot_type": "logical", "active": False, "xmin": None, "catalog_xmin": "700",
              "xid_age": 2000, "retained_bytes": 1.0}]
    feedback = [{"application_name": "standby1", "client_addr": "10.0.0.2", "xmin": "800", "xid_age": 1500}]
    (cond,) = wraparound.conditions(reading([("appdb", 9500, 0)], sessions, prepared=prepared, slots=slots,
                                            feedback=feedback), watch(1000))
    kinds = [(h["type"], h["xid_age"]) for h in cond.facts["holders"]]
    # an autovacuum worker is not named (a VACUUM's own xmin holds back no other vacuum, as in the xmin alert)
    assert kinds == [("backend", 4000), ("prepared", 3000), ("slot", 2000), ("feedback", 1500), ("backend", 1200)]
    # buttons for client sessions, oldest first
    assert [x.pid for x in cond.sessions] == [12, 11]
    assert cond.sessions[0].backend_start == T0 + timedelta(seconds=12)


def test_ignore_hides_a_session_from_the_holders_as_everywhere():
    sessions = [session_row(11, xmin_age=1200, app="pg_dump"), session_row(12, xmin_age=1100)]
    (cond,) = wraparound.conditions(reading([("appdb", 5000, 0)], sessions), watch(1000),
                                    [IgnoreRule(app="pg_dump")])
    assert [h["session"]["pid"] for h in cond.facts["holders"]] == [12]
    assert [x.pid for x in cond.sessions] == [12]


def test_nothing_holding_the_horizon_is_still_an_alert_that_says_to_vacuum():
    (cond,) = wraparound.conditions(reading([("appdb", 5000, 0)]), watch(1000))
    assert cond.facts["holders"] == [] and cond.sessions == ()
    msg = render_alert(WRAPAROUND, "prod", "primary", cond.facts, incident_id="i1", opened_at=1000.0, now=1060.0)
    assert "VACUUM (FREEZE)" in json.dumps(msg["blocks"])


# --- its lifecycle is the watch's shared rules ----------------------------------------------------


def test_it_opens_after_consecutive_checks_reminds_until_acknowledged_and_resolves_at_the_first_clear_check():
    w = watch(1000)
    streaks = rules.Streaks()
    over = wraparound.conditions(reading([("appdb", 5000, 0)]), w)
    assert rules.decide(over, streaks.advance(over), [], now=0.0, consecutive=2, remind_every=900.0) == []
    (d,) = rules.decide(over, streaks.advance(over), [], now=30.0, consecutive=2, remind_every=900.0)
    assert (d.action, d.kind) == ("open", WRAPAROUND)
    inc = rules.OpenIncident(id="i1", kind=WRAPAROUND, key="", opened_at=30.0, last_update_at=30.0,
                             last_reminder_at=30.0, posted=True)
    acts = rules.decide(over, streaks.advance(over), [inc], now=30.0 + 900.0, consecutive=2, remind_every=900.0)
    assert sorted(x.action for x in acts) == ["remind", "update"]
    acked = rules.OpenIncident(**{**inc.__dict__, "acked_by": "U1", "ack_drawn": True, "last_update_at": 1000.0})
    assert rules.decide(over, streaks.advance(over), [acked], now=1010.0, consecutive=2, remind_every=900.0) == []
    clear = wraparound.conditions(reading([("appdb", 10, 0)]), w)
    (d,) = rules.decide(clear, streaks.advance(clear), [inc], now=1020.0, consecutive=2, remind_every=900.0)
    assert d.action == "resolve"


# --- the alert ------------------------------------------------------------------------------------


def test_the_alert_fits_slack_shows_hostile_names_inert_and_offers_terminate_for_the_oldest_session():
    sessions = [session_row(12, xid_age=4000, app=HOSTILE)]
    prepared = [{"gid": HOSTILE, "owner": HOSTILE, "database": HOSTILE, "xid_age": 3000, "secs": 50.0}]
    (cond,) = wraparound.conditions(reading([(HOSTILE, 5000, 7), ("appdb", 1200, 0)], sessions, prepared=prepared),
                                    watch(1000))
    msg = render_alert(WRAPAROUND, "prod", "primary", cond.facts, incident_id="i1", opened_at=1000.0, now=1060.0,
                       tokens={12: "tok12"}, details_tokens={12: "det12"})
    validate_message_blocks(msg["blocks"])
    every = json.dumps(msg)
    assert "<!channel>" not in every and "<https://e.example" not in every and "\\u001b" not in every
    assert msg["blocks"][0]["text"]["text"] == (
        "Transaction ID wraparound on prod: the oldest database is 5,000 transactions old (2 databases over 1,000)")
    labels = [el["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for el in b["elements"]]
    assert labels == ["Terminate 12", "Details 12", "Acknowledge"]
    assert "ROLLBACK PREPARED" in every and "pid 12" in msg["text"]
    reminder = render_reminder(WRAPAROUND, "prod", "primary", cond.facts, opened_at=1000.0, now=2000.0)
    assert "<!channel>" not in json.dumps(reminder) and "Still open" in reminder["text"]
    done = render_resolved(WRAPAROUND, "prod", "primary", cond.facts, opened_at=1000.0, resolved_at=2000.0,
                           done=["pid 12 terminated by approval of <@U2>"])
    assert done["text"].startswith("Resolved: Transaction ID wraparound on prod")
    assert "<!channel>" not in json.dumps(done)


def test_signalling_off_offers_no_terminate_and_says_why():
    (cond,) = wraparound.conditions(reading([("appdb", 5000, 0)], [session_row(12, xid_age=4000)]), watch(1000))
    msg = render_alert(WRAPAROUND, "prod", "primary", cond.facts, incident_id="i1", opened_at=1000.0, now=1060.0,
                       tokens={}, kill_disabled="signalling is turned off for `prod` (access.allow_kill: false)")
    labels = [el["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for el in b["elements"]]
    assert labels == ["Acknowledge"] and "allow_kill" in json.dumps(msg["blocks"])


def test_the_watch_runs_it_as_a_detector_on_the_primary_only_when_configured():
    from_registry = [d for d in DETECTORS if d.kind == WRAPAROUND]
    assert from_registry == [wraparound.DETECTOR]
    d = wraparound.DETECTOR
    assert d.configured(watch()) and d.reads(watch(), "primary") and not d.reads(watch(), "replica1")
    assert not d.configured(Watch(channel="C1")) and not d.reads(Watch(channel="C1"), "primary")


def test_slots_and_feedback_carry_no_time_so_their_age_counts_from_when_the_detector_first_saw_them():
    slot = {"slot_name": "s1", "slot_type": "logical", "active": False, "xmin": None, "catalog_xmin": "700",
            "xid_age": 2000, "retained_bytes": 1.0}
    clock = rules.HorizonClock()
    for at in (1000.0, 1300.0):
        r = wraparound.reading_from_row("prod", "primary", at, row([("appdb", 5000, 0)], slots=[slot]))
        (cond,) = wraparound.conditions(r, watch(1000), clock=clock)
    assert [(h["type"], h["secs"]) for h in cond.facts["holders"]] == [("slot", 300.0)]
