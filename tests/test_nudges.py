"""Nudges (issue 16): the requester's direct message about the outcome, the approvers' one reminder in
the request's thread at half of request_ttl, and an expiry said in the thread. Real HTTP surface, fake
Slack, real PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from bot.slack.nudges import notice_key
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import click, request_kill, wait_state
from tests.harness.waiting import wait_until


@pytest.fixture
def victim(pg):
    app = "nudge-" + uuid.uuid4().hex[:8]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    yield conn, app
    try:
        pg.primary.sql("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    except Exception:
        pass
    conn.close()


def dms(fake, user):
    return fake.messages_in("D" + user[1:])


def test_requester_hears_of_done_and_denied(pg, fake_slack, victim):
    conn, app = victim
    pid = conn.info.backend_pid
    with BotUnderTest({"environments": {"test": env_config(pg)}}, fake_slack) as bot:
        msg = request_kill(bot, "test", app, pid, "Terminate", user="U1", reason="slow")
        click(bot, msg, "Deny", "U2")
        wait_state(bot, msg, "*Denied*")
        dm = wait_until(lambda: dms(fake_slack, "U1"), 10, "a DM to U1")[0]
        assert "denied by <@U2>" in dm.text and f"pid {pid}" in dm.text
        link = fake_slack.calls_for("chat.getPermalink", ok=True)[-1].response["permalink"]
        assert msg.ts.replace(".", "") in link and link in json.dumps(dm.blocks)

        msg = request_kill(bot, "test", app, pid, "Terminate", user="U1", reason="stuck")
        click(bot, msg, "Approve", "U2")
        wait_state(bot, msg, "*Done*", timeout=20)
        done = wait_until(lambda: dms(fake_slack, "U1")[1:], 10, "a second DM")[0]
        assert "approved by <@U2> and done" in done.text and "terminated" in done.text
        time.sleep(1)
        assert len(dms(fake_slack, "U1")) == 2, "one DM per outcome"
        assert not dms(fake_slack, "U2"), "the approver gets no DM"
        fake_slack.assert_clean()


def test_approvers_are_reminded_once_and_expiry_is_said_in_the_thread(pg, fake_slack, victim):
    conn, app = victim
    pid = conn.info.backend_pid
    config = {"environments": {"test": env_config(pg, access={"requesters": ["*"], "approvers": ["U2", "S0DBAS"],
                                                              "request_ttl": "30s"})}}
    fake_slack.usergroups = {"S0DBAS": ["U7"]}
    with BotUnderTest(config, fake_slack, scheduler=True) as bot:
        msg = request_kill(bot, "test", app, pid, "Terminate", user="U1", reason="please")
        created = time.time()

        def thread_posts():
            return [m for m in fake_slack.messages_in(msg.channel) if m.thread_ts == msg.ts]

        reminder = wait_until(thread_posts, 30, "the reminder in the request's thread")[0]
        assert time.time() - created >= 14, "not before half of the request's time to live"
        assert ":bell:" in reminder.text and "<@U2>" in reminder.text and "<!subteam^S0DBAS>" in reminder.text
        assert "still waiting for approval" in reminder.text
        wait_state(bot, msg, "*Expired*", timeout=30)
        expired = wait_until(lambda: [m for m in thread_posts() if "expired" in m.text], 10, "expiry in thread")
        assert len(expired) == 1
        assert len([m for m in thread_posts() if ":bell:" in m.text]) == 1, "the approvers are reminded once"
        dm = wait_until(lambda: dms(fake_slack, "U1"), 10, "the requester's DM")[0]
        assert "expired" in dm.text and "Nothing was done" in dm.text
        assert pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
        events = [e["event"] for e in bot.rt.store.audit_entries(env="test")]
        assert events.count("terminate:reminded") == 1 and "terminate:expired" in events
        fake_slack.assert_clean()


def test_a_restarted_bot_does_not_tell_the_requester_twice(pg, fake_slack, victim, tmp_path):
    """Issue 23 §14: that the requester was told is kept in the state store, not in the process: after a
    restart (or on another replica) a redraw of the same request sends no second DM."""
    conn, app = victim
    pid = conn.info.backend_pid
    state = f"sqlite:///{tmp_path / 'state.db'}"
    with BotUnderTest({"environments": {"test": env_config(pg)}}, fake_slack, state=state) as bot:
        msg = request_kill(bot, "test", app, pid, "Terminate", user="U1", reason="slow")
        click(bot, msg, "Deny", "U2")
        wait_state(bot, msg, "*Denied*")
        wait_until(lambda: dms(fake_slack, "U1"), 10, "a DM to U1")
        bot.restart()
        req = next(r for r in bot.rt.store.requests_by("U1") if r.message_ts == msg.ts)
        updates = len(fake_slack.calls_for("chat.update", ok=True))
        bot.rt.messages.redraw(req)  # what any later redraw of the request does (the hook runs after it)
        wait_until(lambda: len(fake_slack.calls_for("chat.update", ok=True)) > updates, 10, "the redraw")
        assert len(dms(fake_slack, "U1")) == 1, "the requester is told once"
        # it is the state store that remembers (this test's processes share module state; replicas do not)
        assert not bot.rt.store.claim_once(notice_key(req)), "the notice is claimed in the state store"
        fake_slack.assert_clean()
