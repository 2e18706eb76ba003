"""Faults: Slack rate limits and outages, a database that goes away, a bot killed mid-action.

Each test injects one fault at a known point and checks the outcome a person would see: the message
arrives once, the error names the environment, the other environments keep working, and a request
interrupted between approval and signal ends in one definite state without signalling the backend.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy import text as sqltext

from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import (
    ServeProcess,
    alive,
    answer_with,
    click,
    find_button,
    post_listing,
    request_kill,
    wait_state,
    wait_until,
    write_config,
)
from tests.harness.pgcluster import start_pair

# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flaky_pg():
    """A primary of our own (no standby) that the tests stop and start; the shared `pg` is never stopped."""
    pair = start_pair(standby=False)
    try:
        yield pair
    finally:
        pair.stop()


def config(pg, flaky_pg=None) -> dict:
    envs = {"steady": env_config(pg, timeouts={"connect": "2s", "statement": "5s"})}
    if flaky_pg is not None:
        envs["flaky"] = env_config(flaky_pg, timeouts={"connect": "2s", "statement": "5s"})
    return {"environments": envs}


@pytest.fixture
def bot(pg, fake_slack):
    b = BotUnderTest(config(pg), fake_slack).start()
    yield b
    b.close()


def idle_session(node, prefix: str = "victim"):
    app = f"{prefix}-{uuid.uuid4().hex[:8]}"
    conn = node.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    return conn, app


@pytest.fixture
def victim(pg):
    conn, app = idle_session(pg.primary)
    yield conn, app
    try:
        pg.primary.sql("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    except psycopg.Error:
        pass
    conn.close()


def ok_posts(fake, channel: str = "C1") -> list:
    return [c for c in fake.calls_for("chat.postMessage", ok=True) if c.response["channel"] == channel]


# --- Slack answers 429 / 500 -----------------------------------------------------------------------

FAULTS = [
    pytest.param({"status": 429, "retry_after": 1, "times": 1}, id="429-retry-after-1"),
    pytest.param({"status": 429, "retry_after": 0, "times": 3}, id="429x3"),
    pytest.param({"status": 500, "times": 2}, id="500x2"),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_listing_arrives_once_despite_slack_faults(bot, fake_slack, victim, fault):
    _, app = victim
    fake_slack.fail_next("chat.postMessage", **fault)
    reply = bot.command(f"steady --app {app} --min 0s")
    assert reply.status == 200
    wait_until(lambda: ok_posts(fake_slack), 20, "the listing\n" + fake_slack.summary())
    time.sleep(0.5)  # room for a duplicate to show up
    failed = fake_slack.calls_for("chat.postMessage", ok=False)
    assert len(failed) == fault["times"], "the fault was not exercised"
    posts = ok_posts(fake_slack)
    assert len(posts) == 1, f"{len(posts)} listings arrived"
    assert len(fake_slack.messages_in("C1")) == 1
    assert app in json.dumps(posts[0].params)
    fake_slack.assert_clean()


@pytest.mark.parametrize("fault", FAULTS)
def test_approval_update_arrives_once_despite_slack_faults(bot, fake_slack, victim, pg, fault):
    conn, app = victim
    pid = conn.info.backend_pid
    msg = request_kill(bot, "steady", app, pid)
    updates_before = len(fake_slack.calls_for("chat.update", ok=True))
    fake_slack.fail_next("chat.update", **fault)
    assert click(bot, msg, "Approve", "U2").status == 200
    done = wait_state(bot, msg, "*Done*", timeout=20)
    assert len(fake_slack.calls_for("chat.update", ok=False)) == fault["times"], "the fault was not exercised"
    assert not alive(pg.primary, pid)
    time.sleep(0.3)
    # executing + done: each redraw landed once, on the same message; no new message was posted instead
    assert len(fake_slack.calls_for("chat.update", ok=True)) - updates_before == 2
    assert len(fake_slack.messages_in("C1")) == 2  # the listing and the approval request
    assert find_button(done, "Approve") is None
    executed = [e for e in bot.rt.store.audit_entries(env="steady", limit=50) if e["event"] == "terminate:executed"]
    assert len(executed) == 1, "the backend must be signalled once"


# --- the database goes away ------------------------------------------------------------------------


@pytest.fixture
def two_env_bot(pg, flaky_pg, fake_slack):
    flaky_pg.primary.start()
    b = BotUnderTest(config(pg, flaky_pg), fake_slack).start()
    yield b
    b.close()
    flaky_pg.primary.start()


def _lock_listing(node):
    """Hold a lock the listing query must wait for (server_info and sessions read pg_roles)."""
    conn = node.connect(autocommit=False)
    conn.execute("LOCK TABLE pg_catalog.pg_authid IN ACCESS EXCLUSIVE MODE")
    return conn


def test_database_stops_in_the_middle_of_a_listing(two_env_bot, flaky_pg, fake_slack):
    bot = two_env_bot
    post_listing(bot, "flaky --min 0s")  # a warm pooled connection
    locker = _lock_listing(flaky_pg.primary)
    try:
        reply = bot.command("flaky --min 0s")
        assert reply.status == 200
        # the listing is now waiting on the lock inside PostgreSQL
        # (asked on the locker's own connection: a new one would wait on pg_authid too)
        wait_until(
            lambda: locker.execute(
                "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'pg_catalog.pg_authid'::regclass"
            ).fetchall(),
            4, "the listing waiting on pg_authid",
        )
        flaky_pg.primary.stop(mode="fast")
    finally:
        try:
            locker.close()
        except psycopg.Error:
            pass
    answer = answer_with(fake_slack, "Could not list sessions")
    assert "`flaky`" in answer.text and "unavailable" in answer.text
    assert "host=" not in answer.text and "password" not in answer.text.lower()
    # the other environment is served meanwhile
    msg = post_listing(bot, "steady --min 0s")
    assert "steady" in json.dumps(msg.blocks)
    # a listing while it is down says so quickly
    started = time.monotonic()
    n = len(fake_slack.responses)
    bot.command("flaky")
    answer = wait_until(
        lambda: [r for r in fake_slack.responses[n:] if "Could not list sessions" in (r.text or "")], 10, "answer"
    )[0]
    assert "`flaky`" in answer.text and time.monotonic() - started < 6
    # and it recovers when the database returns
    flaky_pg.primary.start()
    msg = post_listing(bot, "flaky --min 0s")
    assert "flaky" in json.dumps(msg.blocks)


def test_database_stops_in_the_middle_of_a_kill(two_env_bot, flaky_pg, fake_slack):
    bot = two_env_bot
    conn, app = idle_session(flaky_pg.primary)
    pid = conn.info.backend_pid
    msg = request_kill(bot, "flaky", app, pid)
    request_id = find_button(msg, "Approve")["value"]
    flaky_pg.primary.stop(mode="fast")
    conn.close()
    assert click(bot, msg, "Approve", "U2").status == 200
    done = wait_state(bot, msg, "Not done", timeout=20)
    text = json.dumps(done.blocks)
    assert "unavailable" in text and "`flaky`" in text, text[:1500]
    req = bot.rt.store.get_request(request_id)
    assert req.state == "failed" and req.outcome.status == "unavailable"
    assert not req.outcome.signalled
    # other environments keep working, and flaky recovers
    post_listing(bot, "steady --min 0s")
    flaky_pg.primary.start()
    msg = post_listing(bot, "flaky --min 0s")
    assert "flaky" in json.dumps(msg.blocks)


# --- the bot is killed between approval and signal -----------------------------------------------


def test_bot_killed_between_approval_and_signal(pg, fake_slack, tmp_path: Path):
    state = tmp_path / "state.db"
    cfg = {**config(pg), "state": f"sqlite:///{state}"}
    path = write_config(tmp_path / "pgsessions.yml", cfg)
    env = {"PGSESSIONS_INTERRUPTED_AFTER": "1"}
    conn, app = idle_session(pg.primary)
    pid = conn.info.backend_pid
    bot = ServeProcess(path, fake_slack, env=env).start()
    try:
        msg = request_kill(bot, "steady", app, pid)
        request_id = find_button(msg, "Approve")["value"]
        # the handler redraws the message ("acting now") after 'executing' and before the signal:
        # hold it there, then kill the process
        fake_slack.delay("chat.update", 5)
        n = len(fake_slack.calls)
        assert click(bot, msg, "Approve", "U2").status == 200
        engine = create_engine(f"sqlite:///{state}")

        def req_state():
            with engine.connect() as c:
                return c.execute(sqltext("SELECT state FROM pgs_requests WHERE id = :i"), {"i": request_id}).scalar()

        wait_until(lambda: req_state() == "executing", 10, "state 'executing'", every=0.01)
        time.sleep(0.5)  # the redraw is now held in the fake (5 s), the signal not yet sent
        assert not [c for c in fake_slack.calls[n:] if c.method == "chat.update"], "the redraw was not held"
        bot.kill()
        fake_slack.delay("chat.update", 0)
        assert req_state() == "executing"
        assert alive(pg.primary, pid), "the signal must not have been sent before the kill"

        bot = ServeProcess(path, fake_slack, env=env).start()
        wait_until(lambda: req_state() == "failed", 20, "recovery of the interrupted request\n" + bot.output())
        with engine.connect() as c:
            outcome = json.loads(c.execute(sqltext("SELECT outcome FROM pgs_requests WHERE id = :i"),
                                           {"i": request_id}).scalar())
        assert outcome["status"] == "interrupted"
        final = wait_state(bot, msg, "not retried", timeout=10)
        assert "Not done" in json.dumps(final.blocks)
        time.sleep(1)
        assert alive(pg.primary, pid), "an interrupted request must never be signalled"
        with engine.connect() as c:
            events = [r[0] for r in c.execute(sqltext("SELECT event FROM pgs_audit WHERE request_id = :i"),
                                              {"i": request_id})]
        assert "terminate:executed" not in events and "terminate:interrupted" in events
        engine.dispose()
    finally:
        bot.kill()
        conn.close()

