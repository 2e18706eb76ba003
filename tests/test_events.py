"""Events API over HTTP: url_verification, retries processed once, and `@pgsessions` mentions answered in
the mention's thread, with the slash command's rules (issue 16). Channel defaults too.

Everything goes through the bot's real HTTP surface (signed JSON Events API requests) against the fake
Slack Web API and real PostgreSQL.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import click, find_button, wait_state
from tests.harness.slack_requests import new_event_id
from tests.harness.waiting import wait_until


def cfg(pg, access=None, **top):
    env = env_config(pg, access=access or {"requesters": ["*"], "approvers": ["U2", "S0DBAS"]})
    return {"environments": {"test": env}, **top}


@pytest.fixture
def bot(pg, fake_slack):
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    b = BotUnderTest(cfg(pg), fake_slack).start()
    yield b
    b.close()
    fake_slack.assert_clean()


@pytest.fixture
def victim(pg):
    app = "victim-" + uuid.uuid4().hex[:8]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    yield conn, app
    try:
        pg.primary.sql("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    except Exception:
        pass
    conn.close()


def posts_since(fake, n):
    return fake.calls_for("chat.postMessage", ok=True)[n:]


def stored(fake, call):
    return fake.messages[(call.response["channel"], call.response["ts"])]


def ephemeral(fake, user, needle, timeout=15):
    def find():
        return next((e for e in fake.ephemerals if e.ephemeral_user == user and needle in (e.text or "")), None)

    return wait_until(find, timeout, f"an ephemeral to {user} with {needle!r}\n{fake.summary()}")


# --- plumbing ---------------------------------------------------------------------------------------


def test_url_verification_is_answered_with_its_challenge_and_must_be_signed(bot):
    reply = bot.slack.url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    assert reply.status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in reply.body
    forged = bot.slack.url_verification("abc", bad_signature=True)
    assert forged.status == 401 and "abc" not in forged.body


def test_a_retried_event_is_processed_once(bot, victim):
    _, app = victim
    fake = bot.fake
    n = len(fake.calls_for("chat.postMessage", ok=True))
    event = bot.slack.mention_event(f"test --app {app} --min 0s")
    eid = new_event_id()
    first = bot.slack.send_event(event, event_id=eid)
    assert first.status == 200
    wait_until(lambda: posts_since(fake, n), 15, "the listing")
    # Slack did not see the ack in time (say) and sends the same event again, twice
    for retry in (1, 2):
        again = bot.slack.send_event(event, event_id=eid, retry_num=retry)
        assert again.status == 200
    time.sleep(1.5)
    assert len(posts_since(fake, n)) == 1, fake.summary()
    # a different event with the same text is a new request
    bot.slack.send_event(bot.slack.mention_event(f"test --app {app} --min 0s"))
    wait_until(lambda: len(posts_since(fake, n)) == 2, 15, "the second listing")


def test_forged_event_is_refused(bot):
    n = len(bot.fake.calls)
    reply = bot.slack.app_mention("test", bad_signature=True)
    assert reply.status == 401
    time.sleep(0.5)
    assert not [c for c in bot.fake.calls[n:] if c.method.startswith("chat.")]


# --- mentions ---------------------------------------------------------------------------------------


def test_mention_in_a_channel_answers_in_a_new_thread(bot, victim):
    conn, app = victim
    fake = bot.fake
    n = len(fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.app_mention(f"test idle --app {app} --min 0s", channel_id="C5", ts="1700000100.000100")
    assert reply.status == 200
    call = wait_until(lambda: posts_since(fake, n), 15, "the listing")[0]
    assert call.params["channel"] == "C5"
    assert call.params["thread_ts"] == "1700000100.000100"
    msg = stored(fake, call)
    assert str(conn.info.backend_pid) in json.dumps(msg.blocks)
    assert find_button(msg, f"Terminate {conn.info.backend_pid}") is not None


def test_mention_in_a_thread_answers_in_that_thread_and_its_buttons_work(bot, victim, pg):
    conn, app = victim
    pid = conn.info.backend_pid
    fake = bot.fake
    n = len(fake.calls_for("chat.postMessage", ok=True))
    bot.slack.app_mention(f"test --app {app} --min 0s", user_id="U1", channel_id="C1",
                          ts="1700000200.000200", thread_ts="1700000000.000001")
    call = wait_until(lambda: posts_since(fake, n), 15, "the listing")[0]
    assert call.params["thread_ts"] == "1700000000.000001"
    msg = stored(fake, call)
    assert msg.thread_ts == "1700000000.000001"
    # the Terminate button of a thread answer opens the same request form and runs the same workflow
    n_views = len(fake.calls_for("views.open", ok=True))
    click(bot, msg, f"Terminate {pid}", "U1")
    view = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")[0].params["view"]
    n = len(fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "incident 42"}}, user_id="U1")
    assert reply.status == 200 and "errors" not in (reply.body or ""), reply.body
    request = stored(fake, wait_until(lambda: posts_since(fake, n), 10, "the approval request")[0])
    click(bot, request, "Approve", "U2")
    wait_state(bot, request, "*Done*", timeout=20)
    assert not pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))


def test_mention_with_a_bad_command_answers_the_person_in_the_thread(bot):
    fake = bot.fake
    n = len(fake.calls_for("chat.postMessage"))
    bot.slack.app_mention("nosuchenv idle", user_id="U3", channel_id="C1", ts="1700000300.000300")
    e = ephemeral(fake, "U3", "Unknown environment `nosuchenv`")
    assert e.thread_ts == "1700000300.000300" and e.channel == "C1"
    bot.slack.app_mention("test --min banana", user_id="U3", channel_id="C1", ts="1700000301.000300")
    ephemeral(fake, "U3", "`banana` is not a duration")
    assert not fake.calls_for("chat.postMessage")[n:], "a bad command posts nothing in the channel"


def test_mention_serves_every_command_form_in_the_thread(bot):
    fake = bot.fake
    thread = "1700000350.000350"
    bot.slack.app_mention("pending", user_id="U3", channel_id="C1", ts="1700000351.000351", thread_ts=thread)
    e = wait_until(lambda: next((m for m in fake.ephemerals if m.ephemeral_user == "U3"), None), 15, "pending")
    assert e.thread_ts == thread and "No open kill requests" in json.dumps(e.blocks)
    bot.slack.app_mention("audit test --since 1d", user_id="U3", channel_id="C1", ts="1700000352.000352",
                          thread_ts=thread)
    e = ephemeral(fake, "U3", "Audit log for test")
    assert e.thread_ts == thread
    n = len(fake.calls_for("chat.postMessage", ok=True))
    bot.slack.app_mention("test lag", user_id="U3", channel_id="C1", ts="1700000353.000353", thread_ts=thread)
    call = wait_until(lambda: posts_since(fake, n), 20, "the lag answer")[0]
    assert call.params["thread_ts"] == thread and "lag" in json.dumps(call.params).lower()


def test_mention_alone_gives_the_help(bot):
    bot.slack.app_mention("", user_id="U3", channel_id="C1", ts="1700000400.000400")
    e = ephemeral(bot.fake, "U3", "*Usage*")
    assert e.thread_ts == "1700000400.000400"


def test_mentions_in_the_bots_own_messages_are_ignored(bot):
    fake = bot.fake
    n = len(fake.calls)
    bot.slack.app_mention("test", user_id="UBOT", channel_id="C1")
    bot.slack.app_mention("test", user_id="U1", channel_id="C1", bot_id="BBOT")
    time.sleep(1.5)
    assert not [c for c in fake.calls[n:] if c.method.startswith("chat.")], fake.summary()


def test_mention_from_a_user_who_may_not_view(pg, fake_slack):
    config = cfg(pg, access={"viewers": ["U1", "U2"], "requesters": ["U1"], "approvers": ["U2"]})
    with BotUnderTest(config, fake_slack) as bot:
        n = len(fake_slack.calls_for("chat.postMessage"))
        bot.slack.app_mention("test", user_id="U9", channel_id="C1", ts="1700000500.000500")
        e = ephemeral(fake_slack, "U9", "you are not allowed to see sessions of `test` (access.viewers)")
        assert e.thread_ts == "1700000500.000500"
        time.sleep(0.5)
        assert not fake_slack.calls_for("chat.postMessage")[n:]
        # a viewer of the environment gets the listing in the thread
        bot.slack.app_mention("test", user_id="U1", channel_id="C1", ts="1700000501.000500")
        call = wait_until(lambda: fake_slack.calls_for("chat.postMessage", ok=True)[n:], 15, "listing")[0]
        assert call.params["thread_ts"] == "1700000501.000500"


def test_mention_respects_the_environments_channels(pg, fake_slack):
    config = cfg(pg, access={"requesters": ["*"], "approvers": ["U2"], "channels": ["COPS"]})
    with BotUnderTest(config, fake_slack) as bot:
        bot.slack.app_mention("test", user_id="U1", channel_id="C1", ts="1700000600.000600")
        ephemeral(fake_slack, "U1", "can only be used in <#COPS>")
        n = len(fake_slack.calls_for("chat.postMessage", ok=True))
        bot.slack.app_mention("test", user_id="U1", channel_id="COPS", ts="1700000601.000600")
        call = wait_until(lambda: fake_slack.calls_for("chat.postMessage", ok=True)[n:], 15, "listing")[0]
        assert call.params["channel"] == "COPS" and call.params["thread_ts"] == "1700000601.000600"


# --- channel defaults ---------------------------------------------------------------------------------


def test_channel_default_environment(pg, fake_slack, victim):
    _, app = victim
    config = cfg(pg, channels_default_env={"C0123": "test"})
    with BotUnderTest(config, fake_slack) as bot:
        fake = fake_slack
        # `/pgsessions` alone in the channel lists its environment
        n = len(fake.calls_for("chat.postMessage", ok=True))
        reply = bot.slack.slash("", channel_id="C0123", user_id="U1")
        assert reply.status == 200
        call = wait_until(lambda: posts_since(fake, n), 15, "the default listing")[0]
        assert call.params["channel"] == "C0123" and "test" in json.dumps(call.params)
        # filters alone apply to the default environment
        n = len(fake.calls_for("chat.postMessage", ok=True))
        bot.slack.slash(f"--app {app} --min 0s", channel_id="C0123", user_id="U1")
        call = wait_until(lambda: posts_since(fake, n), 15, "the filtered listing")[0]
        assert app in json.dumps(call.params)
        # help still works
        reply = bot.slack.slash("help", channel_id="C0123", user_id="U1")
        assert "*Usage*" in reply.body
        # `@pgsessions` alone lists it too, in the mention's thread
        n = len(fake.calls_for("chat.postMessage", ok=True))
        bot.slack.app_mention("", channel_id="C0123", ts="1700000700.000700")
        call = wait_until(lambda: posts_since(fake, n), 15, "the mention listing")[0]
        assert call.params["channel"] == "C0123" and call.params["thread_ts"] == "1700000700.000700"
        # elsewhere `/pgsessions` alone is still the help
        reply = bot.slack.slash("", channel_id="C1", user_id="U1")
        assert "*Usage*" in reply.body


# --- Socket Mode ------------------------------------------------------------------------------------


@pytest.fixture
def socket_bot(pg, fake_slack):
    from tests.harness.socket_mode import FakeSocketMode

    with FakeSocketMode() as sm:
        fake_slack.app_token = "xapp-test-socket"
        fake_slack.socket_mode_url = sm.url
        b = BotUnderTest(cfg(pg), fake_slack, app_token="xapp-test-socket").start()
        try:
            sm.wait_connected()
            yield b, sm
        finally:
            b.close()


def test_socket_mode_mention_and_retry_processed_once(socket_bot, victim):
    from tests.harness.slack_requests import socket_envelope

    bot, sm = socket_bot
    _, app = victim
    fake = bot.fake
    n = len(fake.calls_for("chat.postMessage", ok=True))
    payload = bot.slack.event_payload(bot.slack.mention_event(f"test --app {app} --min 0s", ts="1700000800.000800"))
    envelope = socket_envelope(payload)
    ack = sm.deliver(envelope)
    assert ack["envelope_id"] == envelope["envelope_id"]
    call = wait_until(lambda: posts_since(fake, n), 15, "the listing")[0]
    assert call.params["thread_ts"] == "1700000800.000800" and app in json.dumps(call.params)
    # Slack redelivers the same event in a new envelope (retry_attempt 1): acknowledged, not run again
    again = socket_envelope(payload, retry_attempt=1, retry_reason="timeout")
    sm.deliver(again)
    time.sleep(1.5)
    assert len(posts_since(fake, n)) == 1, fake.summary()
