"""Scheduled replication-lag alerts, against a real primary + hot standby (the only stand-in is Slack).

Lag is made deterministic: the standby waits forever for conflicting queries
(max_standby_streaming_delay = -1), a standby session conflicts with something the primary does,
and the primary writes. Checks run every second, alerts after 2 checks over a 1 s threshold.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql as pgsql

from tests.harness.bot import BotUnderTest, env_config, fleet_leader
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import post_listing
from tests.harness.lag import (
    SilentServer,
    closed_port,
    hold_replay,
    lag_pair_or_skip,
    primary_writes,
    startup_wait,
)
from tests.harness.pgcluster import ClusterPair
from tests.harness.waiting import wait_until

CHANNEL = "C0LAGALERT"
CHECK_EVERY = 1.0
CONSECUTIVE = 2
THRESHOLD = 1.0
# consecutive checks after the lag passes the threshold, plus scheduling and a loaded 2-core machine
ALERT_WITHIN = THRESHOLD + CONSECUTIVE * CHECK_EVERY + 5


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> Iterator[ClusterPair]:
    """Our own primary + standby: these tests change the standby's settings and hold its replay back."""
    yield from lag_pair_or_skip()


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    f = FakeSlack(token="xoxb-test").start()
    f.usergroups = {"S0DBAS": ["U7"]}
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(autouse=True)
def standby_caught_up(pair):
    """Every test starts and ends with nothing holding the standby back."""
    yield
    pair.standby.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND usename = 'app_user'"
    )
    pair.wait_replayed(timeout=15)


def config(pair, *, extra_standbys: dict[str, str] | None = None, **alert) -> dict:
    env = env_config(
        pair,
        lag_alert={
            "channel": CHANNEL,
            "threshold": f"{THRESHOLD:g}s",
            "check_every": f"{CHECK_EVERY:g}s",
            "consecutive": CONSECUTIVE,
            "remind_every": "1h",
            **alert,
        },
        timeouts={"connect": "1s", "statement": "3s"},
    )
    if extra_standbys:
        env["standbys"] = {**env["standbys"], **extra_standbys}
    return {"environments": {"prod": env}}


def new_table(pair) -> str:
    name = "lag_" + uuid.uuid4().hex[:8]
    pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(pgsql.Identifier(name)))
    pair.primary.sql(
        pgsql.SQL("INSERT INTO {} SELECT g, 'row ' || g FROM generate_series(1, 2000) g").format(pgsql.Identifier(name))
    )
    pair.wait_replayed()
    return name


def writes(pair, n: int = 5) -> None:
    primary_writes(pair, n)


def lock_conflict(pair, table: str) -> psycopg.Connection:
    """A standby session holds ACCESS SHARE in an open transaction; the primary needs ACCESS EXCLUSIVE."""
    return hold_replay(pair, table, application_name="report-lock").holder


def snapshot_conflict(pair, table: str) -> psycopg.Connection:
    """A standby REPEATABLE READ transaction has read the table; the primary deletes rows and vacuums."""
    holder = pair.standby.connect(user="app_user", autocommit=False, application_name="report-snapshot")
    holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    holder.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))).fetchone()
    ident = pgsql.Identifier(table)
    pair.primary.sql(pgsql.SQL("DELETE FROM {} WHERE id <= 1000").format(ident))
    pair.primary.sql(pgsql.SQL("VACUUM {}").format(ident))
    writes(pair)
    return holder


def alerts(fake: FakeSlack, needle: str = "", channel: str = CHANNEL) -> list:
    """Top-level lag-watch messages (any version) in the alert channel that mention ``needle``."""
    return [
        m for m in fake.messages_in(channel)
        if not m.thread_ts
        and any(("eplication lag on" in v["text"] or "Standby unreachable" in v["text"]) for v in m.versions)
        and any(needle in v["text"] for v in m.versions)
    ]


def wait_alert(fake: FakeSlack, needle: str, timeout: float = ALERT_WITHIN):
    return wait_until(lambda: next(iter(alerts(fake, needle)), None), timeout, f"an alert with {needle!r}\n{fake.summary()}")


def blocks_text(msg) -> str:
    return json.dumps(msg.blocks)


def action_buttons(msg) -> list[dict]:
    return [el for b in msg.blocks or [] if b.get("type") == "actions" for el in b.get("elements", [])]


def current(fake: FakeSlack, msg):
    return fake.messages[(msg.channel, msg.ts)]


def wait_resolved(fake: FakeSlack, msg, timeout: float = 10):
    return wait_until(
        lambda: current(fake, msg) if current(fake, msg).text.startswith("Resolved") else None,
        timeout,
        f"the alert resolved\n{fake.summary()}",
    )


def watcher(bot: BotUnderTest):
    return bot.rt.lagwatch


def wait_checks(bot: BotUnderTest, n: int, host: str = "replica1", timeout: float = 20) -> None:
    w = watcher(bot)
    start = w.checks.get(("prod", host), 0)
    wait_until(lambda: w.checks.get(("prod", host), 0) >= start + n, timeout, f"{n} more checks of {host}")


def terminate(pair, pid: int) -> None:
    assert pair.standby.sql("SELECT pg_terminate_backend(%s, 3000)", (pid,))[0][0]


# --- detection -----------------------------------------------------------------------------------


def test_idle_primary_with_healthy_standby_raises_no_alert(pair, fake):
    """The last replayed transaction gets older while the primary is idle: that is not lag."""
    writes(pair, 1)
    pair.wait_replayed()
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        # long enough that now() - pg_last_xact_replay_timestamp() is far over the 1 s threshold
        wait_checks(bot, CONSECUTIVE + 3)
        age = pair.standby.sql("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())")[0][0]
        assert age > THRESHOLD * 3
        assert not alerts(fake, ""), fake.summary()
        assert not fake.calls_for("chat.postMessage")
        assert bot.rt.store.engine is not None
        fake.assert_clean()


def test_lock_conflict_alert_names_the_culprit_and_resolves_after_an_approved_terminate(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        wait_checks(bot, 1)
        holder = lock_conflict(pair, table)
        started = time.monotonic()
        pid = holder.info.backend_pid
        assert wait_until(lambda: startup_wait(pair) == "Lock/relation", 5, "the startup process waits on the lock")
        msg = wait_alert(fake, "lock conflict")
        took = time.monotonic() - started
        assert took <= ALERT_WITHIN, took
        body = blocks_text(msg)
        assert f"pid {pid}" in msg.text and f"*pid {pid}*" in body
        assert "replica1" in msg.text and "prod" in msg.text
        assert "AccessShareLock" in body and table in body and "AccessExclusiveLock" in body
        assert "max_standby_streaming_delay = -1" in body
        assert "received, not yet replayed" in body and "Behind since" in body
        labels = [b["text"]["text"] for b in action_buttons(msg)]
        # idle in transaction: Terminate only; Acknowledge as on every alert
        assert labels == [f"Terminate {pid}", f"Details {pid}", "Acknowledge"], labels
        token = action_buttons(msg)[0]["value"]
        target = bot.rt.store.get_target(token)
        assert target.env == "prod" and target.host == "replica1" and target.target.pid == pid
        assert target.channel == CHANNEL

        # through the approval workflow: U1 asks, U2 approves
        reply = bot.slack.block_action(action_buttons(msg)[0]["action_id"], None, user_id="U1", message=msg)
        assert reply.status == 200
        view_call = fake.wait_for("views.open", ok=True)
        view = view_call.params["view"]
        view = json.loads(view) if isinstance(view, str) else view
        reply = bot.slack.view_submission(
            view.get("callback_id") or "pgs_kill_request", private_metadata=view["private_metadata"],
            state_values={"reason": {"reason": "holds replay of prod back"}}, user_id="U1",
        )
        assert reply.status == 200
        approval = wait_until(
            lambda: next((m for m in fake.messages.values() if "asks to" in json.dumps(m.blocks)), None), 10, "the approval request"
        )
        approve = next(el for b in approval.blocks if b.get("type") == "actions" for el in b["elements"]
                       if el["text"]["text"] == "Approve")
        assert bot.slack.block_action(approve["action_id"], approve["value"], user_id="U2", message=approval).status == 200

        done = wait_resolved(fake, msg)
        assert not action_buttons(done), "the buttons must be gone once resolved"
        body = blocks_text(done)
        assert f"pid {pid} terminated through the bot" in body
        assert "requested by <@U1>" in body and "approved by <@U2>" in body
        assert "lock conflict" in body and "Lasted" in body
        assert len(alerts(fake, "")) == 1
        holder.close()
        fake.assert_clean()


def test_the_alert_is_on_time_when_the_standby_reports_only_every_10_seconds(pair, fake):
    """wal_receiver_status_interval = 10s (the default): the primary's replay_lag moves only when the
    standby reports, so it is aged by the time since that report (issue 14: lag alerts get faster)."""
    table = new_table(pair)
    pair.standby.sql("ALTER SYSTEM SET wal_receiver_status_interval = '10s'")
    pair.standby.sql("SELECT pg_reload_conf()")
    try:
        wait_until(lambda: pair.standby.sql("SHOW wal_receiver_status_interval")[0][0] == "10s", 5, "10s")
        with BotUnderTest(config(pair), fake, scheduler=True) as bot:
            wait_checks(bot, 1)
            holder = lock_conflict(pair, table)  # the primary writes, then stays quiet
            started = time.monotonic()
            msg = wait_alert(fake, "lock conflict", timeout=30)
            took = time.monotonic() - started
            assert took <= ALERT_WITHIN, f"the alert came {took:.1f}s after the stall"
            assert f"pid {holder.info.backend_pid}" in msg.text
            holder.close()
            wait_resolved(fake, msg)
    finally:
        pair.standby.sql("ALTER SYSTEM RESET wal_receiver_status_interval")
        pair.standby.sql("SELECT pg_reload_conf()")


def test_snapshot_conflict_alert_names_the_culprit_is_kept_current_and_resolves_when_it_ends(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair, remind_every="2s"), fake, scheduler=True) as bot:
        watcher(bot).update_every = 1.5  # 60 s in production: edited at most once a minute
        wait_checks(bot, 1)
        holder = snapshot_conflict(pair, table)
        started = time.monotonic()
        pid = holder.info.backend_pid
        assert wait_until(
            lambda: startup_wait(pair) == "IPC/RecoveryConflictSnapshot", 5, "the startup process waits on the snapshot"
        )
        msg = wait_alert(fake, "snapshot conflict")
        assert time.monotonic() - started <= ALERT_WITHIN
        body = blocks_text(msg)
        assert f"*pid {pid}*" in body and "its snapshot (xmin" in body and "report-snapshot" in body
        assert any(b["text"]["text"] == f"Terminate {pid}" for b in action_buttons(msg))

        # while it lasts: the same message is edited as the lag grows, reminders go to its thread
        first = msg.versions[0]
        edited = wait_until(
            lambda: msg if any(v["text"] != first["text"] for v in msg.versions[1:]) else None,
            6, "an in-place update with the new lag",
        )
        assert f"pid {pid}" in edited.text
        tokens = [el["value"] for b in first["blocks"] if b["type"] == "actions" for el in b["elements"]]
        assert [b["value"] for b in action_buttons(edited)] == tokens, "the same session keeps its button token"
        reminder = wait_until(
            lambda: next((m for m in fake.messages_in(CHANNEL) if m.thread_ts == msg.ts), None),
            6, "a reminder in the thread",
        )
        assert "Still" in reminder.text and f"pid {pid}" in reminder.text
        assert len(alerts(fake)) == 1
        updates = [c for c in fake.calls_for("chat.update") if c.params.get("ts") == msg.ts]
        span = updates[-1].time - fake.calls_for("chat.postMessage")[0].time
        assert len(updates) <= span / 1.5 + 1, "edited more often than update_every"

        terminate(pair, pid)
        done = wait_resolved(fake, msg)
        assert not action_buttons(done)
        body = blocks_text(done)
        assert "snapshot conflict" in body
        assert f"pid {pid} (`app_user`, `report-snapshot`) held replay back; it let go without a signal" in body
        holder.close()
        fake.assert_clean()


def test_a_lag_alert_is_acknowledged_like_every_alert_and_its_reminders_stop(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair, remind_every="2s"), fake, scheduler=True) as bot:
        wait_checks(bot, 1)
        holder = snapshot_conflict(pair, table)
        msg = wait_alert(fake, "snapshot conflict")
        thread = lambda: [m for m in fake.messages_in(CHANNEL) if m.thread_ts == msg.ts]  # noqa: E731
        reminder = wait_until(lambda: next(iter(thread()), None), 8, "a reminder in the thread")
        assert "Acknowledge the alert to stop these reminders" in reminder.text
        el = next(b for b in action_buttons(msg) if b["text"]["text"] == "Acknowledge")
        assert bot.slack.block_action(el["action_id"], el["value"], user_id="U5", message=msg).status == 200
        # drawn at once (not after update_every, a minute), without the button
        wait_until(lambda: "Acknowledged by <@U5>" in blocks_text(current(fake, msg)), 8, "the alert shows the ack")
        assert "Acknowledge" not in [b["text"]["text"] for b in action_buttons(current(fake, msg))]
        wait_until(lambda: any("acknowledged this alert" in m.text for m in thread()), 8, "the ack in the thread")
        n = len(thread())
        time.sleep(4.5)
        assert len(thread()) == n, "no reminder after an acknowledgement"
        holder.close()
        done = wait_resolved(fake, msg, timeout=20)
        assert "Acknowledged by <@U5>" in blocks_text(done)
        fake.assert_clean()


def test_unreachable_standbys_get_their_own_alerts_and_do_not_delay_the_others(pair, fake):
    silent = SilentServer()
    extra = {
        "refused": f"host=127.0.0.1 port={closed_port()} dbname=postgres user=pgsessions_bot",
        "silent": f"host=127.0.0.1 port={silent.port} dbname=postgres user=pgsessions_bot password=s3cret-never-shown",
    }
    table = new_table(pair)
    try:
        with BotUnderTest(config(pair, extra_standbys=extra), fake, scheduler=True) as bot:
            refused = wait_alert(fake, "Standby unreachable: prod / refused")
            assert "connection refused" in refused.text
            silent_alert = wait_alert(fake, "Standby unreachable: prod / silent")
            assert "connect timeout" in silent_alert.text or "no connection" in silent_alert.text, silent_alert.text
            # the real standby is still checked every second while the others fail
            w = watcher(bot)
            before, t0 = w.checks.get(("prod", "replica1"), 0), time.monotonic()
            holder = lock_conflict(pair, table)
            started = time.monotonic()
            msg = wait_alert(fake, "Replication lag on prod / replica1")
            assert time.monotonic() - started <= ALERT_WITHIN
            rate = (w.checks[("prod", "replica1")] - before) / (time.monotonic() - t0)
            assert rate >= 0.5 / CHECK_EVERY, f"replica1 checked {rate:.2f}/s next to unreachable hosts"
            assert f"pid {holder.info.backend_pid}" in msg.text
            assert len(alerts(fake, "Standby unreachable")) == 2, "one alert per unreachable standby"
            every = json.dumps([c.params for c in fake.calls])
            assert "s3cret-never-shown" not in every and "password" not in every
            holder.close()
            wait_resolved(fake, msg)
            fake.assert_clean()
    finally:
        silent.close()


def test_a_stopped_standby_is_reported_and_resolved_when_it_is_back(pair, fake):
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        wait_checks(bot, 1)
        pair.standby.stop()
        try:
            msg = wait_alert(fake, "Standby unreachable: prod / replica1")
        finally:
            pair.standby.start()
        done = wait_until(lambda: current(fake, msg) if "reachable again" in current(fake, msg).text else None, 15, "reachable again")
        assert "Resolved" in done.text
        assert len(alerts(fake, "Standby unreachable")) == 1
        pair.wait_streaming()
        fake.assert_clean()


# --- incidents across restarts and replicas -------------------------------------------------------


def test_a_restart_neither_repeats_nor_forgets_an_open_incident(pair, fake):
    table = new_table(pair)
    bot = BotUnderTest(config(pair), fake, scheduler=True).start()
    try:
        holder = lock_conflict(pair, table)
        msg = wait_alert(fake, "lock conflict")
        bot.restart()
        wait_checks(bot, CONSECUTIVE + 3)
        assert len(alerts(fake, "")) == 1, "the restarted bot posted the incident again:\n" + fake.summary()
        terminate(pair, holder.info.backend_pid)
        done = wait_resolved(fake, msg)
        assert not action_buttons(done)
        assert len(alerts(fake, "")) == 1
        holder.close()
        fake.assert_clean()
    finally:
        bot.close()


@pytest.fixture
def pg_state(pair) -> str:
    name = "pgs_lag_state_" + uuid.uuid4().hex[:6]
    pair.primary.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return f"postgresql://postgres@{pair.primary.host}:{pair.primary.port}/{name}"


def test_two_bots_on_one_state_store_post_once_and_the_second_takes_over(pair, fake, pg_state):
    table = new_table(pair)
    a = BotUnderTest(config(pair), fake, state=pg_state, scheduler=True).start()
    b = BotUnderTest(config(pair), fake, state=pg_state, scheduler=True).start()
    try:
        # the environments are sharded across the two (bot/fleet/): one checks prod once they have settled
        leader, (follower,) = fleet_leader([a, b])
        follower.rt.lagwatch.checks.clear()  # what it checked before b joined and the shares settled
        assert not watcher(follower).is_leader()
        holder = lock_conflict(pair, table)
        msg = wait_alert(fake, "lock conflict")
        wait_checks(leader, CONSECUTIVE + 2)
        assert len(alerts(fake, "")) == 1, fake.summary()
        assert not follower.rt.lagwatch.checks, "the follower must not check"

        # the leader hangs (its scheduler stops running jobs, the lease is not released)
        leader.rt.scheduler.pause()
        hung = time.monotonic()
        wait_until(lambda: watcher(follower).is_leader(), 2 * CHECK_EVERY + 2, "the follower takes over")
        assert time.monotonic() - hung <= 2 * CHECK_EVERY + 1.5
        wait_checks(follower, CONSECUTIVE + 1)
        assert len(alerts(fake, "")) == 1, "the new leader must continue the open incident, not post another"
        terminate(pair, holder.info.backend_pid)
        done = wait_resolved(fake, msg)
        assert not action_buttons(done)
        holder.close()
    finally:
        a.close()
        b.close()
    fake.assert_clean()


def test_a_clean_stop_hands_the_lease_over_at_once(pair, fake, pg_state):
    a = BotUnderTest(config(pair), fake, state=pg_state, scheduler=True).start()
    b = BotUnderTest(config(pair), fake, state=pg_state, scheduler=True).start()
    try:
        leader, (follower,) = fleet_leader([a, b])
        leader.stop()
        stopped = time.monotonic()
        wait_until(lambda: watcher(follower).is_leader(), 2 * CHECK_EVERY + 2, "the follower takes over")
        # released, not expired: the next renewal (every check_every / 2) takes it
        assert time.monotonic() - stopped <= CHECK_EVERY
    finally:
        a.close()
        b.close()


# --- on demand -----------------------------------------------------------------------------------


def test_lag_command_shows_every_standby(pair, fake):
    table = new_table(pair)
    extra = {"refused": f"host=127.0.0.1 port={closed_port()} dbname=postgres user=pgsessions_bot"}
    with BotUnderTest(config(pair, extra_standbys=extra), fake) as bot:
        posted = bot.listing("prod lag", channel="C1")
        text = json.dumps(posted["blocks"])
        assert "Replication lag on prod" in posted["text"]
        assert "*replica1* caught up" in text
        assert "*refused* unreachable" in text and "connection refused" in text

        holder = lock_conflict(pair, table)
        wait_until(lambda: startup_wait(pair) == "Lock/relation", 5, "lag")
        posted = bot.listing("prod lag", channel="C1")
        text = json.dumps(posted["blocks"])
        assert "lock conflict" in text and f"*pid {holder.info.backend_pid}*" in text
        buttons = [el for b in posted["blocks"] if b["type"] == "actions" for el in b["elements"]]
        hpid = holder.info.backend_pid
        assert [b["text"]["text"] for b in buttons] == [f"Terminate {hpid}", f"Details {hpid}"]
        target = bot.rt.store.get_target(buttons[0]["value"])
        assert target.host == "replica1" and target.channel == "C1"
        # Details of the culprit, read on the standby at the click
        reply = bot.slack.block_action(buttons[1]["action_id"], buttons[1]["value"], user_id="U1", message=posted)
        assert reply.status == 200
        opened = fake.wait_for("views.open", ok=True)
        vid = opened.response["view"]["id"]
        detail = wait_until(lambda: (lambda t: t if "Reading pid" not in t else None)(
            json.dumps(fake.views[vid].view["blocks"])), 10, "the details view")
        assert f"*pid {hpid}*" in detail and "`prod` / `replica1` (standby)" in detail
        assert "idle in transaction" in detail and "AccessShareLock" in detail
        assert "pgsessions_bot" not in posted["text"] and "port=" not in text
        holder.close()
        fake.assert_clean()


def test_lag_command_when_no_standby_answers(pair, fake):
    cfg = config(pair)
    cfg["environments"]["prod"]["standbys"] = {
        "refused": f"host=127.0.0.1 port={closed_port()} dbname=postgres user=pgsessions_bot"
    }
    with BotUnderTest(cfg, fake) as bot:
        reply = bot.command("prod lag", channel_id="C1", user_id="U1")
        assert reply.status == 200
        r = fake.wait_for_response(reply.response_name, predicate=lambda r: "Could not read" in (r.text or ""))
        assert r.response_type == "ephemeral" and "refused" in r.text
        assert not fake.calls_for("chat.postMessage")


def test_many_culprits_stay_within_slack_limits_in_a_channel_given_by_name(pair, fake):
    """Twenty sessions hold the same lock: the alert names what fits in 50 blocks and says how many more.
    The channel is configured by name, so the buttons get the channel id Slack answers with."""
    table = new_table(pair)
    holders = []
    try:
        for _ in range(20):
            c = pair.standby.connect(user="app_user", autocommit=False, application_name="many")
            c.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))).fetchone()
            holders.append(c)
        with BotUnderTest(config(pair, channel="ops-lag"), fake, scheduler=True) as bot:
            wait_checks(bot, 1)
            pair.primary.sql(pgsql.SQL("TRUNCATE {}").format(pgsql.Identifier(table)))
            writes(pair)
            def session_buttons(m) -> list[dict]:  # Acknowledge is there from the first post; these come with the edit
                return [b for b in action_buttons(m) if b["text"]["text"] != "Acknowledge"]

            msg = wait_until(
                lambda: next((m for m in alerts(fake, "lock conflict", channel="ops-lag") if session_buttons(m)), None),
                ALERT_WITHIN,
                "an alert with buttons",
            )
            assert len(msg.blocks) <= 50
            assert "10 more not shown" in blocks_text(msg)
            assert "Holding replay back* (20 sessions)" in blocks_text(msg)
            target = bot.rt.store.get_target(session_buttons(msg)[0]["value"])
            assert target.channel == msg.channel
            for c in holders:
                c.close()
            wait_resolved(fake, msg)
            assert len(alerts(fake, channel="ops-lag")) == 1
            fake.assert_clean()
    finally:
        for c in holders:
            c.close()


def test_a_lock_in_another_database_is_named_not_numbered(pair, fake):
    # the bot connects to `postgres`; the standby session locks a table in `appdb`: pg_locks only gives
    # its oid there, so the bot looks the name up through a connection to appdb on the standby
    from bot.postgres import relnames

    relnames.clear_cache()
    table = "lag_" + uuid.uuid4().hex[:8]
    ident = pgsql.Identifier(table)
    pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int)").format(ident), user="app_user", dbname="appdb")
    pair.primary.sql(pgsql.SQL("INSERT INTO {} VALUES (1)").format(ident), user="app_user", dbname="appdb")
    pair.wait_replayed()
    holder = pair.standby.connect(user="app_user", dbname="appdb", autocommit=False, application_name="report-appdb")
    try:
        holder.execute(pgsql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        with BotUnderTest(config(pair), fake, scheduler=True):
            pair.primary.sql(pgsql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(ident), user="app_user",
                             dbname="appdb")
            writes(pair)
            msg = wait_alert(fake, "lock conflict")
            body = blocks_text(msg)
            assert table in body, body
            assert re.search(r"relation \d+", body) is None, body
            assert relnames.cached("prod", "replica1", "appdb"), "the name comes from the cache next time"
    finally:
        holder.close()


def test_a_relation_whose_database_cannot_be_entered_reads_not_readable(pair):
    from bot.config import parse_config
    from bot.postgres import relnames

    relnames.clear_cache()
    cfg = parse_config({"environments": {"prod": env_config(pair)}}, environ={})
    names = relnames.resolve(cfg, "prod", "replica1", [("no_such_db_xyz", 16405)])
    assert names == {("no_such_db_xyz", 16405): "relation 16405 in no_such_db_xyz (name not readable)"}
    rows = [{"lock_objects": "relation 16405 in database no_such_db_xyz, tuple",
             "foreign_relations": [{"database": "no_such_db_xyz", "oid": 16405}]}]
    relnames.name_lock_objects(cfg, "prod", "replica1", rows)
    assert rows[0]["lock_objects"] == "relation 16405 in no_such_db_xyz (name not readable), tuple"


def test_an_approved_cancel_of_a_culprit_that_moved_on_signals_nothing_and_says_so(pair, fake):
    # the alert lists a standby query (Q1) that holds replay back; before the Cancel is approved Q1 ends
    # and the same backend starts Q2: the approval covers Q1 only, so Q2 runs on and the message says so
    import threading

    from tests.harness.flows import click, wait_state

    table = new_table(pair)
    ident = pgsql.Identifier(table)
    holder = pair.standby.connect(user="app_user", autocommit=True, application_name="report-moves-on")
    pid = holder.info.backend_pid
    runs: dict[str, dict] = {}

    def run(name: str, stmt: pgsql.Composable) -> None:
        runs[name] = {}

        def go() -> None:
            try:
                holder.execute(stmt)
                runs[name]["done"] = True
            except psycopg.Error as exc:
                runs[name]["error"] = exc

        threading.Thread(target=go, daemon=True).start()

    def running(needle: str) -> bool:
        rows = pair.standby.sql("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,))
        return bool(rows) and rows[0][0] == "active" and needle in (rows[0][1] or "")

    try:
        with BotUnderTest(config(pair), fake, scheduler=True) as bot:
            wait_checks(bot, 1)
            run("Q1", pgsql.SQL("SELECT pg_sleep(60) FROM (SELECT count(*) FROM {}) s /* Q1 */").format(ident))
            wait_until(lambda: running("Q1"), 5, "Q1 on the standby")
            pair.primary.sql(pgsql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(ident))
            writes(pair)
            msg = wait_alert(fake, "lock conflict")
            assert f"*pid {pid}*" in blocks_text(msg) and "Q1" in blocks_text(msg)
            labels = [b["text"]["text"] for b in action_buttons(msg)]
            assert f"Cancel {pid}" in labels, labels

            # U1 asks for the Cancel shown in the alert
            n_views = len(fake.calls_for("views.open", ok=True))
            assert click(bot, msg, f"Cancel {pid}", "U1").status == 200
            opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
            view = opened[0].params["view"]
            view = json.loads(view) if isinstance(view, str) else view
            reply = bot.slack.view_submission(
                view.get("callback_id") or "pgs_kill_request", private_metadata=view["private_metadata"],
                state_values={"reason": {"reason": "holds replay of prod back"}}, user_id="U1",
            )
            assert reply.status == 200
            approval = wait_until(
                lambda: next((m for m in fake.messages.values() if "asks to" in json.dumps(m.blocks)), None), 10,
                "the approval request",
            )

            # Q1 ends (someone else cancelled it) and the same backend starts Q2
            pair.standby.sql("SELECT pg_cancel_backend(%s)", (pid,))
            wait_until(lambda: runs["Q1"], 10, "Q1 to end")
            run("Q2", pgsql.SQL("SELECT pg_sleep(30) /* Q2 */"))
            wait_until(lambda: running("Q2"), 5, "Q2 on the standby")

            assert click(bot, approval, "Approve", "U2").status == 200
            done = wait_state(bot, approval, "*Not done*")
            text = json.dumps(done.blocks)
            assert "nothing was signalled" in text and "moved on" in text, text
            assert "it is now active, running a query" in text, text
            time.sleep(0.3)
            assert not runs["Q2"], f"Q2 was signalled: {runs['Q2']}"
            assert running("Q2"), "Q2 runs on"
            events = [e["event"] for e in bot.rt.store.audit_entries(limit=100)]
            assert "cancel:moved" in events and "cancel:executed" not in events, events
            fake.assert_clean()
    finally:
        pair.standby.sql("SELECT pg_terminate_backend(%s)", (pid,))
        holder.close()


# --- ignore and protect on lag culprits (issue 23 §11-§12, issue 22 §4) ------------------------------


def test_an_ignored_culprit_is_not_named_in_the_alert_nor_the_lag_command_but_counted(pair, fake):
    """The lag is still alerted (the standby is behind whoever holds it); the ignored session is not named,
    not offered buttons, and the alert says one was left out."""
    table = new_table(pair)
    cfg = config(pair)
    cfg["environments"]["prod"]["ignore"] = [{"app": "report-lock"}]
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        wait_checks(bot, 1)
        holder = lock_conflict(pair, table)
        pid = holder.info.backend_pid
        msg = wait_alert(fake, "lock conflict")
        body = blocks_text(msg)
        assert f"pid {pid}" not in body and f"pid {pid}" not in msg.text, body[:2000]
        assert "1 more matches the environment's `ignore` rules, not shown" in body, body[:2000]
        assert [b["text"]["text"] for b in action_buttons(msg)] == ["Acknowledge"]
        listing = post_listing(bot, "prod lag")
        text = blocks_text(listing)
        assert f"pid {pid}" not in text and "1 more matches the environment's `ignore` rules" in text, text[:2000]
        holder.close()
        wait_resolved(fake, msg, timeout=20)


def test_a_protected_culprit_is_named_but_offered_no_signal(pair, fake):
    table = new_table(pair)
    cfg = config(pair)
    cfg["protect"] = {"roles": ["app_user"]}
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        wait_checks(bot, 1)
        holder = lock_conflict(pair, table)
        pid = holder.info.backend_pid
        msg = wait_alert(fake, "lock conflict")
        body = blocks_text(msg)
        assert f"*pid {pid}*" in body
        assert f"pid {pid} cannot be signalled from chat: protected: role app_user" in body, body[:2000]
        assert [b["text"]["text"] for b in action_buttons(msg)] == [f"Details {pid}", "Acknowledge"]
        holder.close()
        wait_resolved(fake, msg, timeout=20)


def test_a_quiet_standby_costs_no_state_store_read_per_check(pair, fake):
    """Issue 26: a standby with nothing open, known since this replica took the lease, is checked without
    reading its incidents from the state store every time (a per-check read was a fifth of a check's CPU)."""
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        lw = bot.rt.lagwatch
        assert lw is not None
        key = ("prod", "replica1")
        wait_until(lambda: lw.checks.get(key, 0) >= 1, 20, "the first check")
        reads: list[tuple[str, str]] = []
        real = lw.incidents.open_for

        def counted(env: str, host: str):
            reads.append((env, host))
            return real(env, host)

        lw.incidents.open_for = counted  # type: ignore[method-assign]
        start = lw.checks.get(key, 0)
        wait_until(lambda: lw.checks.get(key, 0) >= start + 4, 20, "four more checks")
        assert len(reads) <= 1, reads
        assert not lw.incidents.all_open()
