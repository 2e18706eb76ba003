"""The App Home tab (issue 16), through signed Events API requests and Socket Mode envelopes against the
fake Slack's views.publish, with real PostgreSQL."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import request_kill, wait_state
from tests.harness.slack_requests import socket_envelope


@pytest.fixture
def victim(pg):
    app = "home-" + uuid.uuid4().hex[:8]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    yield conn, app
    try:
        pg.primary.sql("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    except Exception:
        pass
    conn.close()


def published(fake, user, since=0, timeout=20):
    """The next views.publish for ``user`` (after ``since`` publishes of any user); its view."""
    call = fake.wait_for("views.publish", lambda c: c.params.get("user_id") == user, timeout=timeout, ok=True,
                         since=since)
    return call.params["view"], fake.calls.index(call)


def text_of(view) -> str:
    return json.dumps(view["blocks"])


def button_in(view, action_id):
    for block in view["blocks"]:
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            if el.get("action_id") == action_id:
                return el
    return None


def executed(bot, request_id):
    return [e for e in bot.rt.store.audit_entries(limit=200, request_id=request_id) if e["event"].endswith(":executed")]


def test_home_for_an_approver_and_approving_from_it(pg, fake_slack, victim):
    conn, app = victim
    pid = conn.info.backend_pid
    fake_slack.usergroups = {"S0DBAS": ["U7"]}
    with BotUnderTest({"environments": {"test": env_config(pg)}}, fake_slack) as bot:
        msg = request_kill(bot, "test", app, pid, "Terminate", user="U1", reason="home <b>reason</b>")
        request_id = bot.rt.store.requests_in(("pending",))[0].id
        started = time.monotonic()
        reply = bot.slack.app_home_opened("U2")
        assert reply.status == 200 and time.monotonic() - started < 2
        view, at = published(fake_slack, "U2")
        assert view["type"] == "home" and len(view["blocks"]) <= 100
        body = text_of(view)
        assert "Waiting for you" in body and "<@U1>" in body and f"pid {pid}" in body
        assert "home &lt;b&gt;reason&lt;/b&gt;" in body  # the reason is data
        assert msg.ts.replace(".", "") in body, "a link to the request message"
        assert "Environments" in body and "connections" in body and "`test`" in body
        approve = button_in(view, f"pgs_req:approve:{request_id}")
        assert approve is not None and button_in(view, f"pgs_req:deny:{request_id}") is not None
        # the approver of a group sees it too; the requester does not (self_approval is off)
        requester_view, _ = (bot.slack.app_home_opened("U1"), published(fake_slack, "U1"))[1]
        assert button_in(requester_view, f"pgs_req:approve:{request_id}") is None
        assert "Your requests" in text_of(requester_view) and "waiting for approval" in text_of(requester_view)

        # the same button clicked by someone who is not an approver (a forged Home click) does nothing
        stored = fake_slack.home_views["U2"].view
        bot.slack.block_action(approve["action_id"], approve["value"], user_id="U3", view=stored)
        refused, _ = published(fake_slack, "U3")
        assert "you are not an approver for `test`" in text_of(refused), "the refusal is shown on the Home tab"
        assert bot.rt.store.get_request(request_id).state == "pending" and not bot.rt.store.approvers_of(request_id)
        # Approve from Home: the same handler and checks as the channel's button
        n = len(fake_slack.calls)
        assert bot.slack.block_action(approve["action_id"], approve["value"], user_id="U2", view=stored).status == 200
        wait_state(bot, msg, "*Done*", timeout=20)
        assert not pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
        after, _ = published(fake_slack, "U2", since=n)
        assert button_in(after, f"pgs_req:approve:{request_id}") is None
        assert "Nothing is waiting for your approval" in text_of(after)
        # a second click on the stale Home button does nothing more
        bot.slack.block_action(approve["action_id"], approve["value"], user_id="U2", view=stored)
        time.sleep(1)
        assert len(executed(bot, request_id)) == 1
        fake_slack.assert_clean()


def test_home_for_a_person_who_may_see_nothing(pg, fake_slack, victim):
    conn, app = victim
    config = {"environments": {"test": env_config(pg, access={"viewers": ["U1", "U2"], "requesters": ["U1"], "approvers": ["U2"]})}}
    with BotUnderTest(config, fake_slack) as bot:
        request_kill(bot, "test", app, conn.info.backend_pid, "Terminate", user="U1", reason="r")
        bot.slack.app_home_opened("U9")
        view, _ = published(fake_slack, "U9")
        body = text_of(view)
        assert "Nothing is waiting for your approval" in body
        assert "You have made no requests recently" in body
        assert "There is no environment you may see" in body
        assert "`test`" not in body and "pgs_req:" not in body
        # a Home opened on the Messages tab publishes nothing
        n = len(fake_slack.calls_for("views.publish"))
        bot.slack.app_home_opened("U9", tab="messages")
        time.sleep(1)
        assert len(fake_slack.calls_for("views.publish")) == n
        fake_slack.assert_clean()


def test_home_with_an_unreachable_standby(pg, fake_slack):
    if getattr(pg, "standby", None) is None:
        pytest.skip("needs the streaming standby")
    # a server that accepts TCP connections and never answers: only the connect timeout ends it
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    port = hole.getsockname()[1]
    try:
        env = env_config(pg, standbys={"ghost": f"host=127.0.0.1 port={port} dbname=postgres user=x"},
                         timeouts={"connect": "3s", "statement": "3s"})
        with BotUnderTest({"environments": {"test": env}}, fake_slack) as bot:
            started = time.monotonic()
            reply = bot.slack.app_home_opened("U2")
            ack = time.monotonic() - started
            assert reply.status == 200 and ack < 1.5, f"the ack waited for the servers ({ack:.1f}s)"
            view, _ = published(fake_slack, "U2", timeout=30)
            took = time.monotonic() - started
            body = text_of(view)
            assert "*ghost* (standby): :warning: unreachable" in body, body
            assert "*replica1* (standby):" in body and "replay" in body.split("*replica1*")[1]
            assert "*primary*:" in body and "connections" in body.split("*primary*")[1]
            assert took < 12, f"one hung host delayed the Home tab ({took:.1f}s)"
            # Refresh publishes again
            n = len(fake_slack.calls)
            bot.slack.block_action("pgs_home:refresh", "refresh", user_id="U2", view=fake_slack.home_views["U2"].view)
            published(fake_slack, "U2", since=n, timeout=30)
            fake_slack.assert_clean()
    finally:
        hole.close()


def test_home_over_socket_mode(pg, fake_slack):
    from tests.harness.socket_mode import FakeSocketMode

    with FakeSocketMode() as sm:
        fake_slack.app_token, fake_slack.socket_mode_url = "xapp-test-socket", sm.url
        with BotUnderTest({"environments": {"test": env_config(pg)}}, fake_slack, app_token="xapp-test-socket") as bot:
            sm.wait_connected()
            envelope = socket_envelope(bot.slack.event_payload(bot.slack.home_event("U2")))
            sm.deliver(envelope)
            view, _ = published(fake_slack, "U2")
            assert "Environments" in text_of(view) and "`test`" in text_of(view)
