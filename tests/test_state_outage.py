"""Alerts never go dark (issue 23 §6): the bot's PostgreSQL state store is stopped and started again under
a running bot. The replica that led goes on checking and alerting (saying that another replica may post
the same alert), /healthz and ``pgsessions_state_store_up`` say the store is down, one alert says it and
is resolved when the store returns, the incidents are reconciled with what was posted (later edits go to
the same message, no second post), and the outcome of a signal sent during the outage is kept until it
is written, never recorded as "interrupted, not retried"."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest

from bot.approval.models import OutcomeStatus, RequestState
from bot.metrics import REGISTRY
from bot.render.store import OUTAGE_NOTE, STORE_BACK, STORE_DOWN
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import find_button, post_listing
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.harness.waiting import wait_until
from tests.test_watch import approve_through_bot

CHANNEL = "C0OUTAGEALERTS"
HOSTILE = "<!channel> *bold* `tick` <https://evil.example|click> :fire: #general"


@pytest.fixture(scope="module")
def store_pg() -> Iterator[ClusterPair]:
    p = start_pair(standby=False)
    try:
        if p.external:
            pytest.skip("needs a managed server to stop and start")
        p.primary.sql("CREATE DATABASE pgs_state")
        yield p
    finally:
        p.stop()


@pytest.fixture
def state(store_pg) -> Iterator[str]:
    """A fresh state database per test on the server the test stops and starts."""
    store_pg.primary.sql("DROP DATABASE IF EXISTS pgs_state WITH (FORCE)")
    store_pg.primary.sql("CREATE DATABASE pgs_state")
    yield f"postgresql://postgres@{store_pg.primary.host}:{store_pg.primary.port}/pgs_state"
    store_pg.primary.start()  # a no-op when it runs


def store_sql(store_pg: ClusterPair, query: str, params: tuple = ()) -> list:
    return store_pg.primary.sql(query, params, dbname="pgs_state") or []


def config(pg) -> dict:
    return {"environments": {"prod": env_config(
        pg,
        watch={"channel": CHANNEL, "check_every": "1s", "consecutive": 2, "remind_every": "1h",
               "idle_in_transaction": "1s"},
        lag_alert={"channel": CHANNEL, "threshold": "1h", "check_every": "1s"},
        timeouts={"connect": "2s", "statement": "3s"},
    )}}


def healthz(bot) -> tuple[int, str]:
    with urllib.request.urlopen(f"{bot.url}/healthz", timeout=5) as resp:
        return resp.status, resp.read().decode()


def store_up() -> float | None:
    return REGISTRY.get_sample_value("pgsessions_state_store_up")


def top_posts(fake, needle: str) -> list:
    return [m for m in fake.messages_in(CHANNEL) if not m.thread_ts and any(needle in v["text"] for v in m.versions)]


def current(fake, msg):
    return fake.messages[(msg.channel, msg.ts)]


def labels(msg) -> list[str]:
    return [el["text"]["text"] for b in msg.blocks or [] if b.get("type") == "actions" for el in b["elements"]]


def test_an_incident_while_the_store_is_down_is_alerted_and_resolved_on_the_same_message(pg, store_pg, state,
                                                                                         fake_slack):
    with BotUnderTest(config(pg), fake_slack, state=state, scheduler=True) as bot:
        wait_until(lambda: bot.rt.watch is not None and bot.rt.watch.is_leader(), 20, "the watch leads")
        assert healthz(bot) == (200, "ok\nstate store: up\n")
        store_pg.primary.stop()
        holder = None
        try:
            wait_until(lambda: store_up() == 0.0, 15, "pgsessions_state_store_up = 0")
            status, body = healthz(bot)
            assert status == 200 and "state store: down" in body, (status, body)
            down = wait_until(lambda: next(iter(top_posts(fake_slack, STORE_DOWN)), None), 15,
                              f"the store-down alert\n{fake_slack.summary()}")
            time.sleep(3)  # the leader keeps leading past the lease's TTL (1.5 × check_every)
            assert bot.rt.watch.is_leader() and bot.rt.watch.lease.through_outage
            lag = bot.rt.lagwatch
            assert lag is not None and lag.is_leader() and lag.lease.through_outage
            checked = lag.checks.get(("prod", "replica1"), 0)
            wait_until(lambda: lag.checks.get(("prod", "replica1"), 0) >= checked + 2, 15,
                       "the standby checked while the store is down")
            assert REGISTRY.get_sample_value("pgsessions_replay_lag_seconds",
                                             {"env": "prod", "standby": "replica1"}) is not None, "the lag gauge"

            holder = pg.primary.connect(user="app_user", dbname="appdb", autocommit=False, application_name=HOSTILE)
            holder.execute("CREATE TEMP TABLE t_outage (x int)")  # a transaction left open: idle in transaction
            pid = holder.info.backend_pid
            alert = wait_until(lambda: next(iter(top_posts(fake_slack, "Idle in transaction on prod")), None), 20,
                               f"the idle-in-transaction alert while the store is down\n{fake_slack.summary()}")
            assert f"pid {pid}" in alert.text
            assert OUTAGE_NOTE in json.dumps(alert.blocks), "the alert says it may come from several replicas"
            assert not [x for x in labels(alert) if x.startswith(("Terminate", "Cancel"))], \
                "no signal button without the store (no token can be issued)"
            every = json.dumps(alert.versions)
            assert "<!channel>" not in every and "<https://evil" not in every
            assert len(top_posts(fake_slack, STORE_DOWN)) == 1, "one store-down alert"
        finally:
            store_pg.primary.start()
        try:
            wait_until(lambda: store_up() == 1.0, 30, "pgsessions_state_store_up = 1")
            assert healthz(bot) == (200, "ok\nstate store: up\n")
            wait_until(lambda: current(fake_slack, down).text.startswith(f":white_check_mark: {STORE_BACK}"), 15,
                       "the store-down alert resolved")
            rows = store_sql(store_pg, "SELECT open, message_ts, channel FROM pgs_incidents WHERE kind = 'idle_in_tx'")
            assert rows == [(True, alert.ts, alert.channel)], "the incident is recorded with the message it posted"
            holder.rollback()
            wait_until(lambda: current(fake_slack, alert).text.startswith("Resolved"), 20,
                       f"the alert resolved on its own message\n{fake_slack.summary()}")
            assert len(top_posts(fake_slack, "Idle in transaction on prod")) == 1, "no second post"
            # the incident closes right after its resolution edit lands (the close follows the edit by design)
            closed = wait_until(
                lambda: store_sql(store_pg, "SELECT open FROM pgs_incidents WHERE kind = 'idle_in_tx'") == [(False,)],
                10, "the incident recorded resolved")
            assert closed
            assert len(top_posts(fake_slack, STORE_DOWN)) == 1
            assert not fake_slack.calls_for("chat.postMessage", ok=False)
            fake_slack.assert_clean()
        finally:
            if holder is not None:
                holder.close()


def test_an_outcome_of_a_terminate_sent_while_the_store_is_down_is_kept_and_wins_over_interrupted(
        pg, store_pg, state, fake_slack, monkeypatch):
    """Approved, then the store stops before the bot acts: the session is terminated, the outcome waits in
    memory; another replica's housekeeping takes the request for interrupted when the store returns, and
    the kept outcome replaces that once this replica writes it."""
    monkeypatch.setenv("PGSESSIONS_INTERRUPTED_AFTER", "1")
    fake_slack.usergroups = {"S0DBAS": ["U7"]}
    app = "outage-victim"
    victim = pg.primary.connect(user="app_user", dbname="appdb", autocommit=True, application_name=app)
    victim.execute("SELECT 1")
    pid = victim.info.backend_pid
    cfg = {"environments": {"prod": env_config(pg, timeouts={"connect": "2s", "statement": "3s"})}}
    a = BotUnderTest(cfg, fake_slack, state=state, scheduler=True).start()
    b = BotUnderTest(cfg, fake_slack, state=state).start()  # another replica (its housekeeping by hand)
    try:
        msg = post_listing(a, f"prod idle --app {app} --min 0s")
        assert find_button(msg, f"Terminate {pid}") is not None, msg.blocks
        fake_slack.delay("chat.update", 4)  # the approval's redraw is slow: the store stops meanwhile
        approval = approve_through_bot(a, fake_slack, msg, f"Terminate {pid}")
        wait_until(lambda: store_sql(store_pg, "SELECT state FROM pgs_requests") == [("executing",)], 10,
                   "the request approved and executing")
        # this replica writes nothing back until the test says so
        a.rt.scheduler.pause_job("state:health")
        a.rt.scheduler.pause_job("pgs-requests-housekeeping")
        store_pg.primary.stop()
        fake_slack.delay("chat.update", 0)
        wait_until(lambda: not pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)), 30,
                   "the session terminated while the store is down")
        kept = wait_until(lambda: [rid for what, _w, rid in a.rt.workflow._unsaved if what.startswith("the outcome")],
                          40, "the outcome kept in memory")
        rid = kept[0]
        store_pg.primary.start()
        # another replica's recovery comes first: the request is 'interrupted' for a moment
        time.sleep(1.5)
        wait_until(lambda: b.rt.workflow.recover_interrupted(), 20, "the other replica's recovery")
        assert store_sql(store_pg, "SELECT outcome_status FROM pgs_requests WHERE id = %s", (rid,)) == [
            (OutcomeStatus.INTERRUPTED.value,)]
        a.rt.scheduler.resume_job("state:health")
        a.rt.scheduler.resume_job("pgs-requests-housekeeping")
        wait_until(lambda: not a.rt.workflow.holds_unsaved(rid), 30, "the kept outcome written")
        req = a.rt.store.get_request(rid)
        assert req is not None and req.state == RequestState.DONE, req
        assert req.outcome is not None and req.outcome.status == OutcomeStatus.DONE, req.outcome
        events = [e["event"] for e in a.rt.store.audit_entries(request_id=rid, limit=50)]
        assert "terminate:executed" in events and "terminate:outcome_kept" in events, events
        # the message says what happened
        wait_until(lambda: current(fake_slack, approval).text.endswith(": done"), 20,
                   f"the approval message says done\n{fake_slack.summary()}")
    finally:
        fake_slack.delay("chat.update", 0)
        store_pg.primary.start()
        b.close()
        a.close()
        victim.close()
