"""The watch's pure rules and renderers (issue 14): no server, no Slack."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import IgnoreRule, Watch, parse_config
from bot.postgres.models import Session
from bot.render.watch import render_alert, render_reminder, render_resolved
from bot.watch import rules
from bot.watch.incident_models import Origin
from bot.watch.model import (
    CONNECTIONS,
    HOST_UNREACHABLE,
    IDLE_TX,
    LOCK_PILEUP,
    LONG_RUNNING,
    WAL_RECEIVER,
    XMIN_HORIZON,
    Held,
    HostSnapshot,
    watch_categories,
)
from bot.watch.reads import union_params
from tests.harness.fake_slack import validate_message_blocks

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 1, 0, 0, 123456, tzinfo=UTC)
HOSTILE = "<!channel> *x* `y` <https://e.example|z> \x1b[31m\u202e"


def s(pid: int, *, state="active", app="web", user="u", db="d", query="SELECT 1", blocked_by=(), wait_mode=None,
      wait_secs=None, query_secs=1.0, state_secs=1.0, xact_secs=None, xmin_age=None, backend_type="client backend",
      cannot_signal=None) -> Session:
    return Session(
        pid=pid, backend_start=T0 + timedelta(seconds=pid), backend_type=backend_type, user=user, database=db,
        application=app, client_addr="10.0.0.1", state=state, wait_event_type="Lock" if blocked_by else None,
        wait_event="relation" if blocked_by else None, query=query, blocked_by=tuple(blocked_by), wait_mode=wait_mode,
        wait_relation="t" if blocked_by else None, wait_secs=wait_secs, query_secs=query_secs, xact_secs=xact_secs,
        state_secs=state_secs, xmin_age=xmin_age, cannot_signal=cannot_signal, categories=watch_categories(state),
    )


def snap(*sessions, held=(), prepared=(), slots=(), feedback=(), used=None, max_connections=100, reserved=3,
         taken_at=1000.0) -> HostSnapshot:
    return HostSnapshot(
        env="prod", host="primary", taken_at=taken_at, in_recovery=False, max_connections=max_connections,
        superuser_reserved=reserved, client_connections=len(sessions) if used is None else used,
        sessions=tuple(sessions), held=tuple(held), prepared=tuple(prepared), slots=tuple(slots),
        feedback=tuple(feedback),
    )


def watch(**kw) -> Watch:
    return Watch(channel="C0ALERTS", **kw)


# --- config ---------------------------------------------------------------------------------------


def test_config_names_are_the_contract_and_kinds_default_off():
    cfg = parse_config({"environments": {"prod": {"dsn": "host=x", "watch": {
        "channel": "C0ALERTS", "lock_pileup": {"waiters": 5, "wait": "1m"}, "idle_in_transaction": "15m",
        "long_running": "1h", "connections": "90%", "xmin_horizon": "1h"},
        "ignore": [{"app": "pg_dump"}, {"user": "replicator", "query": "^COPY"}]}}})
    w = cfg.environments["prod"].watch
    assert (w.check_every, w.consecutive, w.remind_every) == (30.0, 2, 900.0)
    assert (w.lock_pileup.waiters, w.lock_pileup.wait, w.idle_in_transaction, w.long_running, w.connections,
            w.xmin_horizon) == (5, 60.0, 900.0, 3600.0, 90.0, 3600.0)
    bare = Watch(channel="C1")
    assert (bare.lock_pileup, bare.idle_in_transaction, bare.long_running, bare.connections, bare.xmin_horizon) == (
        None, None, None, None, None)


@pytest.mark.parametrize("bad,needle", [
    ({"connections": "lots"}, "is not a percentage"),
    ({"connections": "150%"}, "between 1% and 100%"),
    ({"idle_in_transaction": "soon"}, "is not a duration"),
    ({"check_every": "0s"}, "at least 1s"),
    ({"lock_pilup": {}}, "did you mean 'lock_pileup'"),
])
def test_bad_watch_config_names_the_key_and_the_fix(bad, needle):
    from bot.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config({"environments": {"prod": {"dsn": "host=x", "watch": {"channel": "C1", **bad}}}})
    assert needle in str(exc.value) and "environments.prod.watch" in str(exc.value)


def test_ignore_items_need_a_key_and_a_valid_pattern():
    from bot.config import ConfigError

    for item, needle in (({}, "at least one of app, user, db, query"), ({"query": "("}, "not a valid regular expression")):
        with pytest.raises(ConfigError) as exc:
            parse_config({"environments": {"prod": {"dsn": "host=x", "ignore": [item]}}})
        assert needle in str(exc.value) and "environments.prod.ignore[0]" in str(exc.value)


# --- ignore ---------------------------------------------------------------------------------------


def test_ignore_rule_needs_every_key_to_match_and_searches_the_query():
    rule = IgnoreRule(user="replicator", query=r"^COPY\b")
    assert rules.rule_matches(rule, app="x", user="replicator", db="d", query="COPY t TO STDOUT")
    assert not rules.rule_matches(rule, app="x", user="replicator", db="d", query="SELECT 1")
    assert not rules.rule_matches(rule, app="x", user="other", db="d", query="COPY t TO STDOUT")
    assert rules.is_ignored([IgnoreRule(app="a"), IgnoreRule(db="x")], app="b", user=None, db="x", query="")
    assert not rules.is_ignored([IgnoreRule(app="pg_dump")], app="pg_dumpall", user=None, db=None, query=None)


# --- lock pile-ups --------------------------------------------------------------------------------


def pileup(n_direct: int, n_behind_ddl: int = 0, root_state="idle in transaction", wait=5.0):
    root = s(1, state=root_state)
    ddl = s(2, blocked_by=[1], wait_mode="AccessExclusiveLock", wait_secs=wait, query="ALTER TABLE t ADD c int")
    direct = [s(10 + i, blocked_by=[1], wait_mode="RowExclusiveLock", wait_secs=1.0) for i in range(n_direct)]
    queued = [s(100 + i, blocked_by=[2], wait_mode="AccessShareLock", wait_secs=2.0) for i in range(n_behind_ddl)]
    return [root, ddl, *direct, *queued]


def test_pileup_counts_direct_and_transitive_waiters_and_names_the_ddl_queue():
    snapshot = snap(*pileup(2, 4), held=[Held(1, "AccessShareLock", "relation", "t")])
    (c,) = rules.lock_pileups(snapshot, watch(lock_pileup={"waiters": 5, "wait": "1h"}))
    assert c.kind == LOCK_PILEUP and c.key == snapshot.sessions[0].key
    f = c.facts
    assert (f["direct"], f["total"], f["longest_wait"]) == (3, 7, 5.0)
    assert f["ddl"]["pid"] == 2 and f["ddl"]["queued"] == 4
    assert f["held"] == [{"mode": "AccessShareLock", "relation": "t"}]
    assert [x.pid for x in c.sessions] == [1]


def test_pileup_under_both_thresholds_is_quiet_and_a_long_wait_alone_alerts():
    few = snap(*pileup(1))
    assert rules.lock_pileups(few, watch(lock_pileup={"waiters": 5, "wait": "1m"})) == []
    assert len(rules.lock_pileups(few, watch(lock_pileup={"waiters": 5, "wait": "4s"}))) == 1


def test_two_roots_are_two_incidents_and_a_deadlock_cycle_does_not_hang():
    a = [s(1, state="idle in transaction"), *[s(10 + i, blocked_by=[1], wait_secs=1) for i in range(3)]]
    b = [s(2, state="active"), *[s(20 + i, blocked_by=[2], wait_secs=1) for i in range(2)]]
    found = rules.lock_pileups(snap(*a, *b), watch(lock_pileup={"waiters": 2, "wait": "1h"}))
    assert [c.facts["root"]["pid"] for c in found] == [1, 2]
    cycle = snap(s(5, blocked_by=[6], wait_secs=1), s(6, blocked_by=[5], wait_secs=1))
    assert {c.facts["root"]["pid"] for c in rules.lock_pileups(cycle, watch(lock_pileup={"waiters": 1, "wait": "1h"}))} == {5, 6}


def test_an_ignored_root_raises_no_pileup():
    sessions = [s(1, app="pg_dump"), *[s(10 + i, blocked_by=[1], wait_secs=1) for i in range(6)]]
    w = watch(lock_pileup={"waiters": 2, "wait": "1h"})
    assert rules.lock_pileups(snap(*sessions), w, [IgnoreRule(app="pg_dump")]) == []
    assert len(rules.lock_pileups(snap(*sessions), w, [])) == 1


# --- idle in transaction, long-running, connections -------------------------------------------------


def test_idle_tx_and_long_running_are_client_sessions_over_the_threshold_worst_first():
    found = rules.conditions(snap(
        s(1, state="idle in transaction", state_secs=100), s(2, state="idle in transaction", state_secs=300),
        s(3, state="idle in transaction", state_secs=5), s(4, query_secs=7200), s(5, query_secs=10),
        s(6, query_secs=9000, backend_type="autovacuum worker"),
    ), watch(idle_in_transaction="60s", long_running="1h"))
    by_kind = {c.kind: c for c in found}
    assert [x.pid for x in by_kind[IDLE_TX].sessions] == [2, 1]
    assert [x.pid for x in by_kind[LONG_RUNNING].sessions] == [4]


def test_connections_share_of_usable_slots_and_the_bulk_covers_the_app_with_most_idle():
    sessions = [s(i, state="idle", app="api", state_secs=i) for i in range(1, 6)]
    sessions += [s(10 + i, state="idle", app="pg_dump") for i in range(8)]
    sessions += [s(30 + i, state="idle", app="cron") for i in range(3)]
    sessions += [s(40 + i, state="active", app="web") for i in range(74)]
    w = watch(connections="90%")
    # 90 used of 100 - 3 = 97 usable: 92.8%
    (c,) = rules.connections(snap(*sessions), w, [IgnoreRule(app="pg_dump")])
    assert c.kind == CONNECTIONS and (c.facts["used"], c.facts["usable"], c.facts["max"]) == (90, 97, 100)
    assert c.bulk_app == "api" and [x.pid for x in c.bulk] == [5, 4, 3, 2, 1]
    assert rules.connections(snap(*sessions[:80]), w) == []
    (capped,) = rules.connections(snap(*sessions), w, max_bulk=2)
    assert len(capped.bulk) == 2


# --- xmin horizon ---------------------------------------------------------------------------------


def test_xmin_horizon_names_the_oldest_holder_and_slots_age_from_first_seen():
    clock = rules.HorizonClock()
    w = watch(xmin_horizon="1h")
    prepared = {"gid": "tx1", "owner": "app", "database": "d", "xid_age": 50, "secs": 4000.0}
    backend = s(7, state="idle in transaction", xact_secs=100, xmin_age=10)
    slot = {"slot_name": "s1", "slot_type": "logical", "active": False, "xmin": None, "catalog_xmin": "9",
            "xid_age": 80, "retained_bytes": 1e9}
    (c,) = rules.xmin_horizon(snap(backend, prepared=[prepared], slots=[slot], taken_at=0.0), w, clock=clock)
    assert c.facts["oldest"]["type"] == "prepared" and c.facts["count"] == 1 and c.sessions == ()
    # the slot carries no time: it ages from when the watch first saw it
    assert rules.xmin_horizon(snap(slots=[slot], taken_at=10.0), w, clock=clock) == []
    (later,) = rules.xmin_horizon(snap(slots=[slot], taken_at=3700.0), w, clock=clock)
    assert later.facts["oldest"]["type"] == "slot" and later.facts["oldest"]["secs"] == 3700.0
    standby = HostSnapshot(**{**snap(prepared=[prepared]).__dict__, "in_recovery": True})
    assert rules.xmin_horizon(standby, w) == [], "a standby's replayed prepared transaction is the primary's alert"
    old_backend = s(8, state="idle in transaction", xact_secs=4000, xmin_age=12)
    (b,) = rules.xmin_horizon(snap(old_backend), w)
    assert [x.pid for x in b.sessions] == [8]


# --- host alerts (lag alerts join the machinery) -------------------------------------------------


def test_a_standby_that_does_not_stream_is_a_condition_and_a_primary_never_is():
    base = snap()
    standby = HostSnapshot(**{**base.__dict__, "in_recovery": True, "receiver_status": None})
    (c,) = rules.wal_receiver(standby)
    assert c.kind == WAL_RECEIVER and c.facts["status"] == "not running"
    assert rules.wal_receiver(HostSnapshot(**{**standby.__dict__, "receiver_status": "streaming"})) == []
    waiting = HostSnapshot(**{**standby.__dict__, "receiver_status": "waiting", "receiver_silent_secs": 40.0})
    assert rules.wal_receiver(waiting)[0].facts == {"status": "waiting", "silent_secs": 40.0}
    assert rules.wal_receiver(base) == []


def test_lag_only_environments_get_host_alerts_on_the_lag_channel_and_standbys_are_left_to_the_lag_watcher():
    cfg = parse_config({"environments": {
        "lagonly": {"dsn": "host=x", "standbys": {"r1": "host=y"},
                    "lag_alert": {"channel": "C0LAG", "check_every": "5s", "consecutive": 3}},
        "watchonly": {"dsn": "host=x", "standbys": {"r1": "host=y"}, "watch": {"channel": "C0W"}},
        "none": {"dsn": "host=x"}}})
    envs = cfg.environments
    lag_w = rules.effective_watch(envs["lagonly"])
    assert (lag_w.channel, lag_w.check_every, lag_w.consecutive, lag_w.idle_in_transaction) == ("C0LAG", 5.0, 3, None)
    assert rules.effective_watch(envs["none"]) is None
    assert rules.host_alert_channel(envs["lagonly"]) == "C0LAG" and rules.host_alert_channel(envs["watchonly"]) == "C0W"
    assert rules.alerts_unreachable(envs["lagonly"], "primary") and not rules.alerts_unreachable(envs["lagonly"], "r1")
    assert rules.alerts_unreachable(envs["watchonly"], "r1")


# --- consecutive checks and decisions ---------------------------------------------------------------


def cond(kind=IDLE_TX, key=""):
    return rules.Condition(kind, key, {})


def test_streaks_count_checks_in_a_row_and_restart_after_a_gap():
    st = rules.Streaks()
    assert st.advance([cond()]) == {(IDLE_TX, ""): 1}
    assert st.advance([cond(), cond(LOCK_PILEUP, "1@x")]) == {(IDLE_TX, ""): 2, (LOCK_PILEUP, "1@x"): 1}
    assert st.advance([cond(LOCK_PILEUP, "1@x")]) == {(LOCK_PILEUP, "1@x"): 2}
    assert st.advance([cond()]) == {(IDLE_TX, ""): 1}


def inc(kind=IDLE_TX, key="", *, opened=0.0, updated=0.0, reminded=0.0, posted=True, acked=None, drawn=False):
    return rules.OpenIncident("i1", kind, key, opened, updated, reminded, posted, acked, drawn)


def actions_of(decisions):
    return [(d.action, d.kind, d.key) for d in decisions]


def test_open_after_consecutive_checks_and_never_twice():
    c = cond()
    args = dict(now=100.0, consecutive=2, remind_every=900.0)
    assert rules.decide([c], {c.ident: 1}, [], **args) == []
    assert actions_of(rules.decide([c], {c.ident: 2}, [], **args)) == [("open", IDLE_TX, "")]
    assert actions_of(rules.decide([c], {c.ident: 5}, [inc(updated=99.0, reminded=99.0)], **args)) == []


def test_update_at_most_once_a_minute_or_at_once_after_an_acknowledge():
    c = cond()
    args = dict(consecutive=2, remind_every=900.0)
    assert actions_of(rules.decide([c], {}, [inc(updated=50.0)], now=100.0, **args)) == []
    assert actions_of(rules.decide([c], {}, [inc(updated=40.0)], now=100.0, **args)) == [("update", IDLE_TX, "")]
    acked = inc(updated=99.0, reminded=0.0, acked="U5")
    assert actions_of(rules.decide([c], {}, [acked], now=100.0, **args)) == [("update", IDLE_TX, "")]
    drawn = inc(updated=99.0, reminded=0.0, acked="U5", drawn=True)
    assert actions_of(rules.decide([c], {}, [drawn], now=100.0, **args)) == []
    # a first post that failed is retried, once a minute too
    assert actions_of(rules.decide([c], {}, [inc(updated=90.0, posted=False)], now=100.0, **args)) == []
    assert actions_of(rules.decide([c], {}, [inc(updated=30.0, posted=False)], now=100.0, **args)) == [("update", IDLE_TX, "")]


def test_reminders_every_remind_every_until_acknowledged():
    c = cond()
    args = dict(now=1000.0, consecutive=2, remind_every=900.0, update_every=1e9)
    assert actions_of(rules.decide([c], {}, [inc(reminded=50.0)], **args)) == [("remind", IDLE_TX, "")]
    assert actions_of(rules.decide([c], {}, [inc(reminded=200.0)], **args)) == []
    assert actions_of(rules.decide([c], {}, [inc(reminded=50.0, acked="U1", drawn=True)], **args)) == []


def test_resolve_at_the_first_check_without_it_and_a_new_root_is_a_new_incident():
    old = inc(LOCK_PILEUP, "1@a", updated=99.0, reminded=99.0)
    new = cond(LOCK_PILEUP, "2@b")
    got = actions_of(rules.decide([new], {new.ident: 2}, [old], now=100.0, consecutive=2, remind_every=900.0))
    assert got == [("resolve", LOCK_PILEUP, "1@a"), ("open", LOCK_PILEUP, "2@b")]


def test_moves_are_every_kinds_lifecycle_before_timing():
    a, b = cond(), cond(LOCK_PILEUP, "2@b")
    got = rules.moves([a, b], {a.ident: 5, b.ident: 2}, [(LOCK_PILEUP, "1@a"), a.ident], consecutive=2)
    assert [(m.action, m.kind, m.key) for m in got] == [
        ("resolve", LOCK_PILEUP, "1@a"), ("continue", IDLE_TX, ""), ("open", LOCK_PILEUP, "2@b")]
    assert got[1].condition is a and got[0].condition is None
    assert rules.moves([b], {b.ident: 1}, [], consecutive=2) == []


def test_the_host_that_cannot_be_read_is_one_rule_for_both_watchers():
    """cannot_read counts the failed checks in a row (every other run breaks) for either origin; the
    condition's kind is the name its origin is stored under."""
    for origin, kind in ((Origin.HOST, HOST_UNREACHABLE), (Origin.STANDBY, "unreachable")):
        st = rules.Streaks()
        st.advance([cond()])
        c1, counts = rules.cannot_read(st, "timeout", origin)
        assert (c1.kind, c1.facts, counts) == (kind, {"reason": "timeout", "failures": 1}, {(kind, ""): 1})
        c2, counts = rules.cannot_read(st, "refused", origin)
        assert c2.facts == {"reason": "refused", "failures": 2} and counts == {(kind, ""): 2}
        assert [m.action for m in rules.moves([c2], counts, [], consecutive=2)] == ["open"]
        # the first check that reads the host resolves it
        assert [m.action for m in rules.moves([], st.advance([]), [c2.ident], consecutive=2)] == ["resolve"]
    assert rules.unreachable("x", 3) == rules.unreachable("x", 3, Origin.HOST)
    cfg = parse_config({"environments": {
        "lagonly": {"dsn": "host=x", "standbys": {"r1": "host=y"}, "lag_alert": {"channel": "C0LAG"}},
        "watchonly": {"dsn": "host=x", "standbys": {"r1": "host=y"}, "watch": {"channel": "C0W"}}}})
    envs = cfg.environments
    assert rules.unreachable_origin(envs["lagonly"], "r1") is Origin.STANDBY
    assert rules.unreachable_origin(envs["lagonly"], "primary") is Origin.HOST
    assert rules.unreachable_origin(envs["watchonly"], "r1") is Origin.HOST


# --- rendering ------------------------------------------------------------------------------------


def rendered_conditions():
    w = watch(lock_pileup={"waiters": 1, "wait": "1h"}, idle_in_transaction="1s", long_running="1s",
              connections="1%", xmin_horizon="1s")
    sessions = [s(1, state="idle in transaction", app=HOSTILE, user=HOSTILE, db=HOSTILE, query=HOSTILE, xact_secs=10,
                  xmin_age=3, state_secs=10),
                *[s(10 + i, blocked_by=[1], app=HOSTILE, wait_mode="AccessExclusiveLock" if i == 0 else "RowExclusiveLock",
                    wait_secs=3, query=HOSTILE) for i in range(60)],
                *[s(100 + i, app=HOSTILE, query_secs=100, query=HOSTILE) for i in range(30)],
                *[s(200 + i, state="idle", app=HOSTILE) for i in range(40)]]
    prepared = [{"gid": HOSTILE, "owner": HOSTILE, "database": HOSTILE, "xid_age": 5, "secs": 50.0}]
    slots = [{"slot_name": HOSTILE, "slot_type": "physical", "active": True, "xmin": "5", "catalog_xmin": None,
              "xid_age": 5, "retained_bytes": 10.0}]
    feedback = [{"application_name": HOSTILE, "client_addr": "10.0.0.2", "xmin": "7", "xid_age": 4}]
    found = rules.conditions(snap(*sessions, held=[Held(1, "RowExclusiveLock", "relation", HOSTILE)],
                                  prepared=prepared, slots=slots, feedback=feedback), w)
    standby = HostSnapshot(**{**snap().__dict__, "in_recovery": True, "receiver_status": HOSTILE})
    return [*found, *rules.wal_receiver(standby), rules.unreachable("could not connect: " + HOSTILE, 3)]


def _dump(msg) -> str:
    return msg["text"] + json.dumps(msg["blocks"], ensure_ascii=False)


@pytest.mark.parametrize("kind", [LOCK_PILEUP, IDLE_TX, LONG_RUNNING, CONNECTIONS, XMIN_HORIZON, WAL_RECEIVER,
                                  HOST_UNREACHABLE])
def test_every_alert_fits_slack_and_shows_hostile_names_inert(kind):
    c = next(c for c in rendered_conditions() if c.kind == kind)
    tokens = {x.pid: f"tok{x.pid}" for x in c.sessions}
    bulk = [{"pid": x.pid, "state_secs": 1} for x in c.bulk]
    for msg in (
        render_alert(kind, "prod", "primary", c.facts, incident_id="inc1", opened_at=0.0, now=100.0, tokens=tokens,
                     bulk_token="btok" if bulk else None, bulk_sessions=bulk),
        render_alert(kind, "prod", "replica1", c.facts, incident_id="inc1", opened_at=0.0, now=100.0,
                     ack={"by": "U5", "at": 50.0}),
        render_reminder(kind, "prod", "primary", c.facts, opened_at=0.0, now=1000.0),
        render_resolved(kind, "prod", "primary", c.facts, opened_at=0.0, resolved_at=100.0,
                        done=["root blocker pid 1 terminated by approval of <@U2>"]),
    ):
        assert validate_message_blocks(msg["blocks"]) == [], validate_message_blocks(msg["blocks"])
        text = _dump(msg)
        assert "<!channel>" not in text and "<https://e.example" not in text and "\x1b" not in text
        assert "\u202e" not in text.replace("[U+202E]", "")
        mrkdwn = [b["text"]["text"] for b in msg["blocks"] if b.get("type") == "section"]
        assert all("`y`" not in t for t in mrkdwn)


def test_pileup_buttons_terminate_only_an_idle_in_transaction_root_and_cancel_otherwise():
    idle = next(c for c in rendered_conditions() if c.kind == LOCK_PILEUP)
    msg = render_alert(LOCK_PILEUP, "prod", "primary", idle.facts, incident_id="i", opened_at=0, now=1,
                       tokens={1: "tok1"})
    labels = [e["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels == ["Terminate 1", "Acknowledge"]
    active = rules.lock_pileups(snap(s(1), *[s(10 + i, blocked_by=[1], wait_secs=1) for i in range(3)]),
                                watch(lock_pileup={"waiters": 2, "wait": "1h"}))[0]
    msg = render_alert(LOCK_PILEUP, "prod", "primary", active.facts, incident_id="i", opened_at=0, now=1,
                       tokens={1: "tok1"})
    labels = [e["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels == ["Cancel 1", "Acknowledge"]
    assert "Acknowledge" not in _dump(render_resolved(LOCK_PILEUP, "prod", "primary", active.facts, opened_at=0,
                                                      resolved_at=5, done=[]))


def test_signalling_off_draws_no_session_or_bulk_buttons_and_says_why():
    c = next(c for c in rendered_conditions() if c.kind == CONNECTIONS)
    msg = render_alert(CONNECTIONS, "prod", "primary", c.facts, incident_id="i", opened_at=0, now=1,
                       bulk_token=None, bulk_sessions=[{"pid": 1}], kill_disabled="signalling is turned off")
    labels = [e["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels == ["Acknowledge"] and "is not offered: signalling is turned off" in _dump(msg)


def test_the_listing_summary_says_how_many_sessions_ignore_hid():
    from bot.postgres.models import Listing, ServerInfo
    from bot.render.listing import render_listing

    info = ServerInfo(server_version_num=150000, server_version="15.0", max_connections=100, client_connections=5,
                      in_recovery=False, bot_pid=1, bot_user="bot", bot_is_superuser=False, bot_can_signal=True,
                      bot_can_monitor=True)
    shown = json.dumps(render_listing(Listing(env="prod", host="primary", server=info, sessions=(), ignored=3))["blocks"])
    assert "3 ignored" in shown and "`ignore` rules" in shown
    none = json.dumps(render_listing(Listing(env="prod", host="primary", server=info, sessions=()))["blocks"])
    assert "ignored" not in none


def test_a_read_shared_by_environments_asks_for_every_kind_any_watches_at_the_lowest_threshold():
    a = {"query_chars": 300, "idle_tx_secs": 60.0, "long_running_secs": None, "xmin_secs": 3600.0,
         "share": 90.0, "locks": False}
    b = {"query_chars": 200, "idle_tx_secs": 900.0, "long_running_secs": 30.0, "xmin_secs": None,
         "share": None, "locks": True}
    assert union_params([a, b]) == {"query_chars": 300, "idle_tx_secs": 60.0, "long_running_secs": 30.0,
                                    "xmin_secs": 3600.0, "share": 90.0, "locks": True}
    off = {**b, "long_running_secs": None, "locks": False}
    assert union_params([off])["long_running_secs"] is None and union_params([off])["locks"] is False
