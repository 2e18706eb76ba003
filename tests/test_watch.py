"""Session alerts (issue 14) against a real primary + hot standby; the only stand-in is Slack.

Checks run every second and an alert opens after 2 checks in a row, so every alert is expected within
``consecutive × check_every`` plus scheduling slack on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql as pgsql

from tests.harness.bot import BotUnderTest, env_config, fleet_leader
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import find_button, post_listing
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.harness.waiting import wait_until

CHANNEL = "C0WATCHALERTS"
CHECK_EVERY = 1.0
CONSECUTIVE = 2
ALERT_WITHIN = CONSECUTIVE * CHECK_EVERY + 6
HOSTILE = "<!channel> *bold* `tick` <https://evil.example|click> \x1b[31m"


@pytest.fixture(scope="module")
def pair() -> Iterator[ClusterPair]:
    """Our own pair: these tests hold locks, prepared transactions and many connections."""
    p = start_pair()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    f = FakeSlack(token="xoxb-test").start()
    f.usergroups = {"S0DBAS": ["U7"]}
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(autouse=True)
def clean(pair):
    yield
    for node in (pair.primary, pair.standby):
        if node is not None:
            node.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE backend_type = 'client backend' AND usename = 'app_user'")
    for gid, db in pair.primary.sql("SELECT gid, database FROM pg_prepared_xacts") or []:
        pair.primary.sql(pgsql.SQL("ROLLBACK PREPARED {}").format(pgsql.Literal(gid)), dbname=db)


def config(pair, ignore=None, access=None, **watch) -> dict:
    overrides = {
        "watch": {"channel": CHANNEL, "check_every": f"{CHECK_EVERY:g}s", "consecutive": CONSECUTIVE,
                  "remind_every": "1h", **watch},
        "timeouts": {"connect": "2s", "statement": "3s"},
    }
    if ignore is not None:
        overrides["ignore"] = ignore
    if access is not None:
        overrides["access"] = access
    return {"environments": {"prod": env_config(pair, **overrides)}}


def new_table(pair) -> str:
    name = "w_" + uuid.uuid4().hex[:8]
    ident = pgsql.Identifier(name)
    pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(ident), dbname="appdb")
    pair.primary.sql(pgsql.SQL("INSERT INTO {} SELECT g, 'r' FROM generate_series(1, 10) g").format(ident), dbname="appdb")
    pair.primary.sql(pgsql.SQL("ALTER TABLE {} OWNER TO app_user").format(ident), dbname="appdb")
    return name


def app_conn(pair, app: str, autocommit: bool = True) -> psycopg.Connection:
    return pair.primary.connect(user="app_user", dbname="appdb", autocommit=autocommit, application_name=app)


class Blocked:
    """A statement run on its own connection in a thread (it waits on a lock)."""

    def __init__(self, pair, stmt, app: str = "waiter"):
        self.conn = app_conn(pair, app)
        self.pid = self.conn.info.backend_pid
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(stmt,), daemon=True)
        self.thread.start()

    def _run(self, stmt) -> None:
        try:
            self.conn.execute(stmt)
        except Exception as exc:
            self.error = exc

    def close(self) -> None:
        self.thread.join(10)
        self.conn.close()


def idle_tx_holder(pair, table: str, app: str = "leaky") -> psycopg.Connection:
    c = app_conn(pair, app, autocommit=False)
    c.execute(pgsql.SQL("UPDATE {} SET v = 'held' WHERE id = 1").format(pgsql.Identifier(table)))
    return c


def waiters(pair, table: str, n: int, app: str = "waiter") -> list[Blocked]:
    stmt = pgsql.SQL("UPDATE {} SET v = 'w' WHERE id = 1").format(pgsql.Identifier(table))
    out = [Blocked(pair, stmt, app) for _ in range(n)]
    wait_until(lambda: len(pair.primary.sql(
        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = %s", (app,)) or []) >= n,
        10, f"{n} waiters")
    return out


def alerts(fake: FakeSlack, needle: str = "") -> list:
    return [m for m in fake.messages_in(CHANNEL) if not m.thread_ts and any(needle in v["text"] for v in m.versions)]


def wait_alert(fake: FakeSlack, needle: str, timeout: float = ALERT_WITHIN):
    return wait_until(lambda: next(iter(alerts(fake, needle)), None), timeout, f"an alert with {needle!r}\n{fake.summary()}")


def current(fake, msg):
    return fake.messages[(msg.channel, msg.ts)]


def wait_resolved(fake, msg, timeout: float = 15):
    return wait_until(lambda: current(fake, msg) if current(fake, msg).text.startswith("Resolved") else None,
                      timeout, f"the alert resolved\n{fake.summary()}")


def buttons(msg) -> list[dict]:
    return [el for b in msg.blocks or [] if b.get("type") == "actions" for el in b.get("elements", [])]


def labels(msg) -> list[str]:
    return [b["text"]["text"] for b in buttons(msg)]


def watcher(bot):
    return bot.rt.watch


def wait_checks(bot, n: int, host: str = "primary", timeout: float = 20) -> None:
    w = watcher(bot)
    start = w.checks.get(("prod", host), 0)
    wait_until(lambda: w.checks.get(("prod", host), 0) >= start + n, timeout, f"{n} more checks of {host}")


def approve_through_bot(bot, fake, msg, label: str, requester: str = "U1", approver: str = "U2"):
    """Click ``label`` on the alert, submit the form, approve: the approval message once done."""
    el = find_button(msg, label)
    assert el is not None, (label, labels(msg))
    n_views = len(fake.calls_for("views.open", ok=True))
    assert bot.slack.block_action(el["action_id"], el["value"], user_id=requester, message=msg).status == 200
    opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
    view = opened[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    n_posts = len(fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "incident"}}, user_id=requester)
    assert reply.status == 200 and "errors" not in (reply.body or ""), reply.body
    posts = wait_until(lambda: [c for c in fake.calls_for("chat.postMessage", ok=True)[n_posts:]
                                if "asks to" in json.dumps(c.params.get("blocks"))], 10, "the approval request")
    approval = fake.messages[(posts[0].response["channel"], posts[0].response["ts"])]
    approve = find_button(approval, "Approve")
    assert bot.slack.block_action(approve["action_id"], approve["value"], user_id=approver, message=approval).status == 200
    return approval


def assert_escaped(msg) -> None:
    """No hostile application_name can mention, link or format: only its escaped form appears."""
    every = json.dumps([v for v in msg.versions])
    assert "<!channel>" not in every and "<https://evil" not in every and "\\u001b" not in every, every[:2000]


# --- lock pile-ups --------------------------------------------------------------------------------


def test_pileup_behind_idle_in_transaction_alerts_once_and_an_approved_terminate_resolves_it(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair, lock_pileup={"waiters": 3, "wait": "1h"}), fake, scheduler=True) as bot:
        wait_checks(bot, 1)
        holder = idle_tx_holder(pair, table, app=HOSTILE)
        root = holder.info.backend_pid
        started = time.monotonic()
        blocked = waiters(pair, table, 4)
        msg = wait_alert(fake, "Lock pile-up")
        assert time.monotonic() - started <= ALERT_WITHIN
        body = json.dumps(msg.blocks)
        assert f"waiting behind pid {root}" in msg.text and "4 waiting" in msg.text
        assert "Root blocker" in body and f"*pid {root}*" in body and "idle in transaction" in body
        assert "RowExclusiveLock" in body or "ExclusiveLock" in body
        assert "*4* sessions wait behind it" in body
        assert labels(msg) == [f"Terminate {root}", f"Details {root}", "Acknowledge"], labels(msg)
        assert_escaped(msg)
        target = bot.rt.store.get_target(find_button(msg, f"Terminate {root}")["value"])
        assert target.target.pid == root and target.host == "primary" and target.channel == CHANNEL

        wait_checks(bot, CONSECUTIVE + 1)
        assert len(alerts(fake, "Lock pile-up")) == 1

        approve_through_bot(bot, fake, msg, f"Terminate {root}")
        done = wait_resolved(fake, msg)
        assert not buttons(done), "the buttons must be gone once resolved"
        assert f"root blocker pid {root} terminated by approval of <@U2>" in done.text
        assert "lasted" in done.text
        assert_escaped(done)
        for b in blocked:
            b.close()
        holder.close()
        assert len(alerts(fake, "Lock pile-up")) == 1
        fake.assert_clean()


def test_ddl_queue_is_said_in_words_and_the_root_is_the_reader_not_the_alter(pair, fake):
    table = new_table(pair)
    ident = pgsql.Identifier(table)
    with BotUnderTest(config(pair, lock_pileup={"waiters": 3, "wait": "1h"}), fake, scheduler=True) as bot:
        reader = app_conn(pair, "report", autocommit=False)
        reader.execute(pgsql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        root = reader.info.backend_pid
        alter = Blocked(pair, pgsql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(ident), app="migration")
        wait_until(lambda: pair.primary.sql("SELECT 1 FROM pg_stat_activity WHERE application_name = 'migration' "
                                            "AND wait_event_type = 'Lock'"), 10, "the ALTER waits")
        readers = [Blocked(pair, pgsql.SQL("SELECT count(*) FROM {}").format(ident), app="web") for _ in range(3)]
        msg = wait_alert(fake, "Lock pile-up")
        body = json.dumps(msg.blocks)
        assert f"waiting behind pid {root}" in msg.text, msg.text
        assert "DDL queue" in body and f"pid {alter.pid}" in body and "AccessExclusiveLock" in body
        assert "3 sessions queue behind that request" in body
        assert "AccessShareLock" in body  # what the root holds
        assert labels(msg) == [f"Terminate {root}", f"Details {root}", "Acknowledge"]
        wait_checks(bot, CONSECUTIVE + 1)
        assert len(alerts(fake, "Lock pile-up")) == 1, "one alert for one root, however many wait"
        reader.close()  # the reader lets go by itself
        done = wait_resolved(fake, msg)
        assert f"root blocker pid {root} let go without a signal from the bot" in done.text
        for b in [alter, *readers]:
            b.close()
        fake.assert_clean()


def test_pileup_under_the_threshold_stays_quiet(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair, lock_pileup={"waiters": 5, "wait": "1h"}), fake, scheduler=True) as bot:
        holder = idle_tx_holder(pair, table)
        blocked = waiters(pair, table, 2)
        wait_checks(bot, CONSECUTIVE + 3)
        assert not alerts(fake), fake.summary()
        holder.close()
        for b in blocked:
            b.close()


# --- idle in transaction, long-running --------------------------------------------------------------


def test_idle_in_transaction_alert_opens_with_terminate_and_resolves_when_it_ends(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair, idle_in_transaction="1s"), fake, scheduler=True):
        holder = idle_tx_holder(pair, table, app=HOSTILE)
        pid = holder.info.backend_pid
        msg = wait_alert(fake, "Idle in transaction on prod")
        assert f"pid {pid}" in msg.text
        assert labels(msg) == [f"Terminate {pid}", f"Details {pid}", "Acknowledge"]
        assert_escaped(msg)
        holder.rollback()
        done = wait_resolved(fake, msg)
        assert not buttons(done) and "cleared by itself" in done.text
        holder.close()
        fake.assert_clean()


def test_long_running_alert_offers_cancel_and_an_approved_cancel_resolves_it(pair, fake):
    with BotUnderTest(config(pair, long_running="1s"), fake, scheduler=True) as bot:
        slow = Blocked(pair, "SELECT pg_sleep(60)", app=HOSTILE)
        msg = wait_alert(fake, "Long-running queries on prod")
        assert f"pid {slow.pid}" in msg.text
        assert labels(msg) == [f"Cancel {slow.pid}", f"Terminate {slow.pid}", f"Details {slow.pid}", "Acknowledge"]
        assert_escaped(msg)
        approve_through_bot(bot, fake, msg, f"Cancel {slow.pid}")
        done = wait_resolved(fake, msg)
        assert f"pid {slow.pid} cancelled by approval of <@U2>" in done.text
        slow.close()
        assert isinstance(slow.error, psycopg.errors.QueryCanceled)
        fake.assert_clean()


# --- connections ----------------------------------------------------------------------------------


def test_connection_alert_and_its_bulk_request_terminates_exactly_the_idle_sessions_shown(pair, fake):
    used = pair.primary.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[0][0]
    usable = 1200 - 3
    # a threshold just above what is connected now: 12 idle + 2 busy sessions pass it
    share = 100.0 * (used + 10) / usable
    cfg = config(pair, connections=f"{share:.3f}%")
    idle = [app_conn(pair, HOSTILE) for _ in range(12)]
    other = [app_conn(pair, "other-app") for _ in range(2)]
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        msg = wait_alert(fake, "Connections on prod")
        body = json.dumps(msg.blocks)
        assert "superuser_reserved_connections" in body and "By application" in body
        assert labels(msg) == ["Terminate these 12", "Acknowledge"], labels(msg)
        assert_escaped(msg)
        token = find_button(msg, "Terminate these 12")["value"]
        target = bot.rt.store.get_target(token)
        shown = {s.pid for s in target.target.sessions}
        assert shown == {c.info.backend_pid for c in idle}
        # one of them is used before the approval: it is skipped, the others end
        idle[0].execute("SELECT 1")
        el = find_button(msg, "Terminate these 12")
        n_views = len(fake.calls_for("views.open", ok=True))
        assert bot.slack.block_action(el["action_id"], el["value"], user_id="U1", message=msg).status == 200
        opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
        view = opened[0].params["view"]
        view = json.loads(view) if isinstance(view, str) else view
        assert bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                         state_values={"reason": {"reason": "slots"}}, user_id="U1").status == 200
        approval = wait_until(lambda: next((m for m in fake.messages.values() if "asks to" in json.dumps(m.blocks)), None),
                              10, "approval")
        approve = find_button(approval, "Approve")
        bot.slack.block_action(approve["action_id"], approve["value"], user_id="U2", message=approval)
        pids = [c.info.backend_pid for c in idle]
        wait_until(lambda: pair.primary.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))[0][0] == 1, 30,
            "the 11 unused idle sessions ended\n" + fake.summary())
        alive = {r[0] for r in pair.primary.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'app_user'")}
        assert idle[0].info.backend_pid in alive and all(c.info.backend_pid in alive for c in other)
        done = wait_resolved(fake, msg)
        assert "11 idle sessions terminated by approval of <@U2>" in done.text, done.text
    for c in idle + other:
        c.close()
    fake.assert_clean()


# --- xmin horizon ---------------------------------------------------------------------------------


def test_xmin_horizon_held_by_a_prepared_transaction(pair, fake):
    table = new_table(pair)
    gid = "stuck-" + HOSTILE
    c = app_conn(pair, "tm", autocommit=False)
    c.execute(pgsql.SQL("UPDATE {} SET v = 'p' WHERE id = 2").format(pgsql.Identifier(table)))
    c.execute(pgsql.SQL("PREPARE TRANSACTION {}").format(pgsql.Literal(gid)))
    c.close()
    with BotUnderTest(config(pair, xmin_horizon="1s"), fake, scheduler=True):
        msg = wait_alert(fake, "xmin horizon on prod")
        body = json.dumps(msg.blocks)
        assert "by a prepared transaction" in msg.text and "prepared transaction" in body and "ROLLBACK PREPARED" in body
        assert labels(msg) == ["Acknowledge"]
        assert_escaped(msg)
        pair.primary.sql(pgsql.SQL("ROLLBACK PREPARED {}").format(pgsql.Literal(gid)), dbname="appdb")
        wait_resolved(fake, msg)
        fake.assert_clean()


def test_xmin_horizon_held_by_a_backend_offers_terminate(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair, xmin_horizon="2s"), fake, scheduler=True) as bot:
        c = app_conn(pair, HOSTILE, autocommit=False)
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        c.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))).fetchone()
        pid = c.info.backend_pid
        msg = wait_alert(fake, "xmin horizon on prod")
        assert "by a session" in msg.text and f"pid {pid}" in msg.text
        assert labels(msg) == [f"Terminate {pid}", f"Details {pid}", "Acknowledge"]
        assert_escaped(msg)
        approve_through_bot(bot, fake, msg, f"Terminate {pid}")
        done = wait_resolved(fake, msg)
        assert f"pid {pid} terminated by approval of <@U2>" in done.text
        c.close()
        fake.assert_clean()


# --- ignore -------------------------------------------------------------------------------------------


def test_ignore_rules_hide_sessions_from_listing_and_watch_and_the_listing_says_how_many(pair, fake):
    table = new_table(pair)
    ignore = [{"app": "pg_dump"}, {"user": "app_user", "query": "^SELECT pg_sleep"}]
    with BotUnderTest(config(pair, ignore=ignore, idle_in_transaction="1s", long_running="1s"), fake,
                      scheduler=True) as bot:
        dump = idle_tx_holder(pair, table, app="pg_dump")
        sleeper = Blocked(pair, "SELECT pg_sleep(30)", app="batch")
        wait_until(lambda: pair.primary.sql("SELECT 1 FROM pg_stat_activity WHERE application_name='batch' "
                                            "AND now() - query_start > interval '1.5 s'"), 10, "sleeping")
        wait_checks(bot, CONSECUTIVE + 2)
        assert not alerts(fake), fake.summary()
        listing = post_listing(bot, "prod --min 0s")
        body = json.dumps(listing.blocks)
        assert f"pid {dump.info.backend_pid}" not in body and f"pid {sleeper.pid}" not in body
        assert "2 ignored" in body, body[:1500]
        # not ignored: another app idle in transaction alerts
        other = idle_tx_holder(pair, new_table(pair), app="web")
        msg = wait_alert(fake, "Idle in transaction on prod")
        assert f"pid {other.info.backend_pid}" in msg.text and f"pid {dump.info.backend_pid}" not in json.dumps(msg.blocks)
        pair.primary.sql("SELECT pg_cancel_backend(%s)", (sleeper.pid,))
        sleeper.close()
        for c in (dump, other):
            c.close()


# --- acknowledge, restarts, replicas ------------------------------------------------------------------


def test_acknowledge_records_who_and_stops_reminders(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair, idle_in_transaction="1s", remind_every="2s"), fake, scheduler=True) as bot:
        holder = idle_tx_holder(pair, table)
        msg = wait_alert(fake, "Idle in transaction on prod")
        wait_until(lambda: [m for m in fake.messages_in(CHANNEL) if m.thread_ts == msg.ts], 8, "a reminder")
        el = find_button(msg, "Acknowledge")
        assert bot.slack.block_action(el["action_id"], el["value"], user_id="U5", message=msg).status == 200
        wait_until(lambda: "Acknowledged by <@U5>" in json.dumps(current(fake, msg).blocks), 8, "the alert shows the ack")
        assert "Acknowledge" not in labels(current(fake, msg))
        thread = lambda: [m for m in fake.messages_in(CHANNEL) if m.thread_ts == msg.ts]  # noqa: E731
        n = len(thread())
        time.sleep(4.5)
        assert len(thread()) == n, "no reminder after an acknowledgement"
        # a second click says who took it
        assert bot.slack.block_action(el["action_id"], el["value"], user_id="U6", message=msg).status == 200
        wait_until(lambda: any("already acknowledged" in (r.text or "") for r in fake.responses + fake.ephemerals),
                   8, "already acknowledged")
        holder.close()
        done = wait_resolved(fake, msg)
        assert "Acknowledged by <@U5>" in json.dumps(done.blocks)
        # a forged id acts on nothing
        assert bot.slack.block_action("pgs_watch:ack:nope", "nope", user_id="U5", message=msg).status == 200
        wait_until(lambda: any("not known" in (r.text or "") for r in fake.responses + fake.ephemerals), 8, "refused")


def test_a_restart_mid_incident_neither_repeats_nor_forgets_it(pair, fake):
    table = new_table(pair)
    bot = BotUnderTest(config(pair, idle_in_transaction="1s"), fake, scheduler=True).start()
    try:
        holder = idle_tx_holder(pair, table)
        msg = wait_alert(fake, "Idle in transaction on prod")
        bot.restart()
        wait_checks(bot, CONSECUTIVE + 3)
        assert len(alerts(fake, "Idle in transaction")) == 1, fake.summary()
        holder.close()
        done = wait_resolved(fake, msg)
        assert not buttons(done)
        assert len(alerts(fake, "Idle in transaction")) == 1
    finally:
        bot.close()


@pytest.fixture
def pg_state(pair) -> str:
    name = "pgs_watch_state_" + uuid.uuid4().hex[:6]
    pair.primary.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return f"postgresql://postgres@{pair.primary.host}:{pair.primary.port}/{name}"


def test_two_replicas_post_once_and_only_the_leader_checks(pair, fake, pg_state):
    table = new_table(pair)
    a = BotUnderTest(config(pair, idle_in_transaction="1s"), fake, state=pg_state, scheduler=True).start()
    b = BotUnderTest(config(pair, idle_in_transaction="1s"), fake, state=pg_state, scheduler=True).start()
    try:
        # the environments are sharded across the two (bot/fleet/): one checks prod once they have settled
        leader, (follower,) = fleet_leader([a, b])
        watcher(follower).checks.clear()  # what it checked before b joined and the shares settled
        holder = idle_tx_holder(pair, table)
        msg = wait_alert(fake, "Idle in transaction on prod")
        wait_checks(leader, CONSECUTIVE + 1)
        assert len(alerts(fake, "Idle in transaction")) == 1
        assert not watcher(follower).checks, "the follower must not check"
        leader.rt.scheduler.pause()
        wait_until(lambda: watcher(follower).is_leader(), 2 * CHECK_EVERY + 3, "the follower takes over")
        wait_checks(follower, CONSECUTIVE + 1)
        assert len(alerts(fake, "Idle in transaction")) == 1, "the new leader continues the open incident"
        holder.close()
        wait_resolved(fake, msg)
    finally:
        a.close()
        b.close()


def test_lag_watcher_leaves_watch_incidents_alone(pair, fake):
    """Both watchers share the incidents table: the lag watcher must not close a session alert."""
    table = new_table(pair)
    cfg = config(pair, idle_in_transaction="1s")
    cfg["environments"]["prod"]["lag_alert"] = {"channel": "C0LAG", "check_every": "1s"}
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        holder = idle_tx_holder(pair, table)
        msg = wait_alert(fake, "Idle in transaction on prod")
        lag = bot.rt.lagwatch
        lag._on_leadership()
        wait_checks(bot, 2)
        assert not current(fake, msg).text.startswith(("Closed", "Resolved"))
        holder.close()
        wait_resolved(fake, msg)


# --- host alerts: lag alerts join the machinery --------------------------------------------------------


def test_a_standby_whose_wal_receiver_stops_gets_an_alert_on_the_lag_channel_and_it_resolves(pair, fake):
    conninfo = pair.standby.sql("SHOW primary_conninfo")[0][0]
    cfg = config(pair)
    cfg["environments"]["prod"]["lag_alert"] = {"channel": "C0LAGCHAN", "check_every": "1s", "consecutive": 2}
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        wait_checks(bot, 1, host="replica1")
        pair.standby.sql("ALTER SYSTEM SET primary_conninfo = ''")
        pair.standby.sql("SELECT pg_reload_conf()")
        try:
            msg = wait_until(lambda: next((m for m in fake.messages_in("C0LAGCHAN") if not m.thread_ts
                                           and "WAL receiver not streaming on prod / replica1" in m.text), None),
                             ALERT_WITHIN + 5, "the WAL receiver alert\n" + fake.summary())
            assert labels(msg) == ["Acknowledge"]
        finally:
            pair.standby.sql(pgsql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(pgsql.Literal(conninfo)))
            pair.standby.sql("SELECT pg_reload_conf()")
        pair.wait_streaming(timeout=20)
        done = wait_resolved(fake, msg, timeout=20)
        assert "cleared by itself" in done.text
        assert "password" not in json.dumps([c.params for c in fake.calls])


def test_with_only_lag_alert_a_standby_whose_wal_receiver_stops_gets_one_alert_and_it_resolves(pair, fake):
    """No ``watch:``: the standby is read by the lag watcher only, and its WAL receiver facts move the
    watch's incident (a receiver that does not stream receives nothing, so the standby is never behind)."""
    channel = "C0LAGONLY"
    conninfo = pair.standby.sql("SHOW primary_conninfo")[0][0]
    cfg = {"environments": {"prod": env_config(
        pair, lag_alert={"channel": channel, "check_every": f"{CHECK_EVERY:g}s", "consecutive": CONSECUTIVE,
                         "remind_every": "1h"},
        timeouts={"connect": "2s", "statement": "3s"},
    )}}

    def receiver_alerts() -> list:
        return [m for m in fake.messages_in(channel) if not m.thread_ts
                and any("WAL receiver not streaming on prod / replica1" in v["text"] for v in m.versions)]

    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        assert bot.rt.scheduler.get_job("watch:check:prod:replica1") is None, "one reader of the standby"
        lag = bot.rt.lagwatch
        wait_until(lambda: lag.checks.get(("prod", "replica1"), 0) >= 1, 10, "a lag check of the standby")
        pair.standby.sql("ALTER SYSTEM SET primary_conninfo = ''")
        pair.standby.sql("SELECT pg_reload_conf()")
        try:
            msg = wait_until(lambda: next(iter(receiver_alerts()), None), ALERT_WITHIN + 5,
                             "the WAL receiver alert\n" + fake.summary())
            assert labels(msg) == ["Acknowledge"]
            assert "not running" in msg.text, msg.text
            seen = lag.checks.get(("prod", "replica1"), 0)
            wait_until(lambda: lag.checks.get(("prod", "replica1"), 0) >= seen + CONSECUTIVE + 1, 15, "more checks")
            assert len(receiver_alerts()) == 1, "opened once\n" + fake.summary()
        finally:
            pair.standby.sql(pgsql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(pgsql.Literal(conninfo)))
            pair.standby.sql("SELECT pg_reload_conf()")
        pair.wait_streaming(timeout=20)
        done = wait_resolved(fake, msg, timeout=20)
        assert "cleared by itself" in done.text and not buttons(done)
        assert len(receiver_alerts()) == 1
        others = [m.text for m in fake.messages_in(channel) if not m.thread_ts and m.ts != msg.ts]
        assert not others, f"no other alert (lag, unreachable) for a receiver that stopped: {others}"
        assert "password" not in json.dumps([c.params for c in fake.calls])


def test_an_unreachable_primary_gets_one_alert_without_secrets(pair, fake):
    from tests.harness.lag import closed_port

    cfg = config(pair, idle_in_transaction="1s")
    cfg["environments"]["prod"]["dsn"] = (f"host=127.0.0.1 port={closed_port()} dbname=postgres user=pgsessions_bot "
                                          "password=s3cret-never-shown")
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        msg = wait_alert(fake, "Unreachable: prod primary")
        assert "connection refused" in msg.text or "could not connect" in msg.text, msg.text
        wait_checks(bot, CONSECUTIVE + 2)
        assert len(alerts(fake, "Unreachable")) == 1
        every = json.dumps([c.params for c in fake.calls])
        assert "s3cret-never-shown" not in every
        assert not alerts(fake, "WAL receiver"), "the standby streams"


def test_an_active_root_is_offered_cancel_only_and_a_forged_terminate_on_its_token_is_refused(pair, fake):
    table = new_table(pair)
    with BotUnderTest(config(pair, lock_pileup={"waiters": 3, "wait": "1h"}), fake, scheduler=True) as bot:
        root = app_conn(pair, "busy-root", autocommit=False)
        root.execute(pgsql.SQL("UPDATE {} SET v = 'r' WHERE id = 1").format(pgsql.Identifier(table)))
        busy = threading.Thread(target=lambda: _quietly(root, "SELECT pg_sleep(60)"), daemon=True)
        busy.start()
        blocked = waiters(pair, table, 3)
        msg = wait_alert(fake, "Lock pile-up")
        pid = root.info.backend_pid
        assert labels(msg) == [f"Cancel {pid}", f"Details {pid}", "Acknowledge"], labels(msg)
        token = find_button(msg, f"Cancel {pid}")["value"]
        n = len(fake.calls_for("views.open"))
        assert bot.slack.block_action(f"pgs_kill:terminate:{token}", token, user_id="U1", message=msg).status == 200
        wait_until(lambda: any("is not what this button was issued for" in (r.text or "")
                               for r in fake.responses + fake.ephemerals), 8, "the forged terminate refused")
        assert len(fake.calls_for("views.open")) == n, "no request form for a forged action"
        approve_through_bot(bot, fake, msg, f"Cancel {pid}")
        done = wait_resolved(fake, msg)
        assert f"root blocker pid {pid} cancelled by approval of <@U2>" in done.text, done.text
        busy.join(10)
        root.close()
        for b in blocked:
            b.close()


def _quietly(conn, stmt) -> None:
    try:
        conn.execute(stmt)
    except psycopg.Error:
        pass


# --- Slack's Web API down during a session incident: the durable outbox (issue 13 §3) ------------------

SLACK_DOWN_FOR = 20.0  # seconds: several failed delivery passes, within the outbox's backoff cap


def outbox_pending() -> float:
    from bot.metrics import REGISTRY

    return REGISTRY.get_sample_value("pgsessions_slack_outbox_pending") or 0.0


@pytest.mark.parametrize("outage", ["connection-refused", "http-500"])
def test_slack_down_during_a_session_incident_alert_and_resolution_arrive_once_each_in_order(pair, fake, outage):
    table = new_table(pair)
    with BotUnderTest(config(pair, idle_in_transaction="1s"), fake, scheduler=True) as bot:
        w = watcher(bot)
        wait_checks(bot, 1)
        port = fake.port
        if outage == "connection-refused":
            fake.stop()
        else:
            for method in ("chat.postMessage", "chat.update"):
                fake.fail_next(method, status=500, times=10_000)
        down_at = time.monotonic()
        holder = idle_tx_holder(pair, table)
        wait_until(lambda: w.incidents.open_list("prod", "primary"), ALERT_WITHIN, "the idle-in-transaction incident")
        wait_until(lambda: outbox_pending() >= 1, 10, "the alert kept in the outbox (and the backlog metric)")
        holder.rollback()
        wait_until(lambda: not w.incidents.open_list("prod", "primary"), 15, "the incident resolved while Slack is down")
        assert w.outbox.pending_count() == 2 and outbox_pending() == 2  # the alert and its resolution
        time.sleep(max(0.0, SLACK_DOWN_FOR - (time.monotonic() - down_at)))
        assert w.outbox.pending_count() == 2, "nothing was lost or given up during the outage"
        if outage == "connection-refused":
            fake.start(port)  # Slack answers again at the same address
        else:
            fake.clear_faults()
        msg = wait_alert(fake, "", timeout=45)
        done = wait_resolved(fake, msg, timeout=45)
        assert "Idle in transaction on prod" in msg.versions[0]["text"], "the alert itself, then its resolution"
        assert "cleared by itself" in done.text and not buttons(done)
        assert len(alerts(fake)) == 1, "duplicate alert:\n" + fake.summary()
        chat = [c.method for c in fake.calls if c.ok and c.method.startswith("chat.")]
        assert chat == ["chat.postMessage", "chat.update"], fake.summary()
        wait_until(lambda: outbox_pending() == 0, 10, "the backlog metric back to 0")
        holder.close()
        fake.assert_clean()


def test_environments_on_the_same_server_share_one_read_and_each_decides_with_its_own_thresholds(pair, fake):
    """Two environments reach the primary alike: one statement per check serves both (the read asks for the
    lower threshold), yet only the one whose threshold the idle transaction crosses alerts."""
    table = new_table(pair)
    cfg = config(pair, idle_in_transaction="1s")
    strict = cfg["environments"]["prod"]
    lenient = json.loads(json.dumps(strict))
    lenient["watch"]["idle_in_transaction"] = "1h"
    cfg["environments"] = {"prod": strict, "prod-lenient": lenient}
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        w = watcher(bot)
        assert w.reads.sharing("prod", "primary") == 2
        holder = idle_tx_holder(pair, table)
        msg = wait_alert(fake, "Idle in transaction on prod")
        wait_until(lambda: w.checks.get(("prod-lenient", "primary"), 0) >= 4, 20, "checks of prod-lenient")
        assert not alerts(fake, "prod-lenient"), fake.summary()
        checks = sum(n for (e, h), n in w.checks.items() if h == "primary")
        # each check of either environment took the other's read or sent the one both used
        assert w.reads.statements("prod", "primary") < checks, (w.reads.statements("prod", "primary"), checks)
        holder.rollback()
        wait_resolved(fake, msg)
        holder.close()
        fake.assert_clean()


# --- protect (issue 23 §11) ----------------------------------------------------------------------------


def test_an_alert_offers_no_signal_for_a_protected_session_and_says_why(pair, fake):
    cfg = config(pair, idle_in_transaction="1s")
    cfg["protect"] = {"applications": ["guarded"]}
    # both idle in transaction before the first check: the alert's first post shows both
    guarded = idle_tx_holder(pair, new_table(pair), app="guarded")
    other = idle_tx_holder(pair, new_table(pair), app="web")
    with BotUnderTest(cfg, fake, scheduler=True):
        msg = wait_alert(fake, "Idle in transaction on prod")
        wait_until(lambda: f"pid {guarded.info.backend_pid}" in json.dumps(current(fake, msg).blocks)
                   and f"pid {other.info.backend_pid}" in json.dumps(current(fake, msg).blocks), 10, "both shown")
        msg = current(fake, msg)
        body = json.dumps(msg.blocks)
        assert (f"pid {guarded.info.backend_pid} cannot be signalled from chat: protected: application guarded"
                in body), body[:2000]
        assert f"Terminate {guarded.info.backend_pid}" not in labels(msg)
        assert f"Terminate {other.info.backend_pid}" in labels(msg)
        for c in (guarded, other):
            c.close()
