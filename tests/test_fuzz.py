"""Property-based tests: whatever text or payload arrives, the bot answers as Slack expects and signals nothing.

Slack expects HTTP 200 for every request it signed (anything else shows the user an error) and the
bot rejects unsigned or badly signed ones with 401; a 500 is never right. Payloads are attacker-shaped:
unknown action ids, tampered button values, missing fields, wrong types, huge strings. A victim
session is watched throughout: no payload may get a signal sent to it or a request into 'executing'.
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.approval.models import RequestState
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import alive, answer_with, click, find_button, post_listing, request_kill, wait_state

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)


@pytest.fixture(scope="module")
def fake():
    from tests.harness.fake_slack import FakeSlack

    f = FakeSlack(token="xoxb-test").start()
    f.trigger_ttl = None
    yield f
    f.stop()


@pytest.fixture(scope="module")
def victim(pg):
    app = "fuzz-victim-" + uuid.uuid4().hex[:8]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    yield conn, app
    conn.close()


@pytest.fixture(scope="module")
def bot(pg, fake):
    cfg = {"environments": {"test": env_config(pg), "other": env_config(pg)}}
    b = BotUnderTest(cfg, fake).start()
    yield b
    b.close()


@pytest.fixture(scope="module")
def drawn(bot, victim):
    """A real listing with a real button for the victim (its token is the one thing worth tampering with)."""
    _, app = victim
    msg = post_listing(bot, f"test --app {app} --min 0s")
    pid = victim[0].info.backend_pid
    button = find_button(msg, f"Terminate {pid}")
    assert button is not None
    return msg, button


def nothing_signalled(bot, pg, victim):
    assert alive(pg.primary, victim[0].info.backend_pid), "a fuzzed request signalled the victim"
    acted = bot.rt.store.requests_in((RequestState.EXECUTING, RequestState.DONE, RequestState.FAILED))
    assert not acted, f"a fuzzed request reached {acted[0]['state']}"


# --- strategies ------------------------------------------------------------------------------------

words = st.sampled_from(
    ["test", "other", "prod", "replica1", "active", "idle", "idle-tx", "blocked", "lag", "pending", "audit",
     "help", "clear-db", "--min", "--app", "--user", "--db", "--older", "10m", "0s", "-1s", "99999999999h",
     "appdb", "'", '"', "`", "<!channel>", "*", "%", "%(x)s", ";", "--", "\\", "\x00", "é", "\u202e"]
)
command_text = st.one_of(
    st.lists(words, max_size=8).map(" ".join),
    st.text(max_size=200),
    st.text(min_size=3000, max_size=6000, alphabet=st.characters(codec="utf-8")),
)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=50))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=4)),
    max_leaves=12,
)


# --- commands --------------------------------------------------------------------------------------


@FUZZ
@given(text=command_text)
def test_any_command_text_is_answered_200(bot, pg, victim, text):
    reply = bot.command(text)
    assert reply.status == 200, (reply.status, reply.body[:300])
    nothing_signalled(bot, pg, victim)


# --- interactions ----------------------------------------------------------------------------------


def action_ids(token: str):
    return st.one_of(
        st.sampled_from(
            [f"pgs_kill:terminate:{token}", f"pgs_kill:cancel:{token}", f"pgs_kill:kill:{token}",
             f"pgs_kill:terminate:{token}x", "pgs_kill:terminate:", "pgs_kill:", "pgs_req:approve:" + token,
             "pgs_req:approve:nope", "pgs_req:approve:", "pgs_req:nuke:abc", "pgs_req:withdraw:" + token, "unknown", ""]
        ),
        st.text(max_size=300),
        st.builds(lambda t: f"pgs_kill:terminate:{t}", st.text(max_size=80)),
        st.builds(lambda t: f"pgs_req:approve:{t}", st.text(max_size=80)),
    )


def mutated_payload(draw, token: str):
    """A block_actions / view_submission payload with fields removed, retyped or replaced."""
    kind = draw(st.sampled_from(["block_actions", "view_submission", "view_closed", "shortcut", "bogus", None]))
    action = {
        "action_id": draw(action_ids(token)),
        "value": draw(st.one_of(st.just(token), st.text(max_size=100), json_values,
                                st.builds(lambda n: json.dumps({"pid": n, "env": "other"}), st.integers()),
                                st.text(min_size=5000, max_size=20000))),
        "block_id": draw(st.one_of(st.text(max_size=20), json_values)),
        "type": "button",
    }
    payload: dict = {
        "type": kind,
        "user": {"id": draw(st.sampled_from(["U1", "U2", "U7", "", "UBOT"])), "team_id": "T1"},
        "team": {"id": "T1", "domain": "testteam"},
        "api_app_id": "A0PGSESS",
        "token": "legacy-verification-token",
        "trigger_id": "1.2.abc",
        "channel": {"id": draw(st.sampled_from(["C1", "C2", ""]))},
        "container": {"type": "message", "channel_id": "C1", "message_ts": "1.000001"},
        "actions": [action],
        "view": {
            "id": "V1", "type": "modal", "callback_id": draw(st.sampled_from(["pgs_kill_request", "other", ""])),
            "private_metadata": draw(st.one_of(
                st.just(json.dumps({"token": token, "action": "terminate", "channel": "C1"})),
                st.builds(lambda a, c: json.dumps({"token": token, "action": a, "channel": c}),
                          st.text(max_size=20), json_values),
                json_values.map(json.dumps),
                st.text(max_size=4000),
            )),
            "state": {"values": draw(st.one_of(
                st.just({"reason": {"reason": {"type": "plain_text_input", "value": "fuzz"}}}),
                st.dictionaries(st.text(max_size=10), json_values, max_size=3),
            ))},
        },
    }
    for key in draw(st.lists(st.sampled_from(list(payload)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del payload[key]
        else:
            payload[key] = draw(json_values)
    if draw(st.booleans()) and isinstance(payload.get("actions"), list):
        for key in draw(st.lists(st.sampled_from(list(action)), max_size=2, unique=True)):
            action.pop(key, None)
    return payload


@FUZZ
@given(data=st.data())
def test_malformed_interactions_get_200_and_signal_nothing(bot, pg, victim, drawn, data):
    _, button = drawn
    payload = mutated_payload(data.draw, button["value"])
    body = json.dumps(payload)
    reply = bot.slack._send_payload(payload, {})
    assert reply.status == 200, (reply.status, reply.body[:300], body[:300])
    nothing_signalled(bot, pg, victim)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(st.text(max_size=500), st.binary(max_size=500)),
       how=st.sampled_from(["unsigned", "bad_signature", "stale"]))
def test_unsigned_or_forged_requests_get_401(bot, pg, victim, drawn, body, how):
    _, button = drawn
    if isinstance(body, str) and body.startswith("x"):
        body = "payload=" + json.dumps({"type": "block_actions", "actions": [
            {"action_id": button["action_id"], "value": button["value"]}], "user": {"id": "U2"}})
    opts = {"unsigned": {"sign_request": False}, "bad_signature": {"bad_signature": True},
            "stale": {"stale": True}}[how]
    reply = bot.slack.post(body, **opts)
    assert reply.status == 401, (reply.status, reply.body[:200])
    nothing_signalled(bot, pg, victim)


def test_after_fuzzing_the_real_flow_still_works(bot, pg, fake, victim, drawn):
    """The bot still serves a real request afterwards, so the fuzz assertions were not vacuous."""
    conn, app = victim
    pid = conn.info.backend_pid
    msg = request_kill(bot, "test", app, pid)
    req_id = find_button(msg, "Approve")["value"]
    assert bot.rt.store.get_request(req_id).target.pid == pid
    click(bot, msg, "Withdraw", "U1")
    wait_state(bot, msg, "ithdrawn")
    assert alive(pg.primary, pid)


# --- forged buttons --------------------------------------------------------------------------------


@pytest.fixture
def fresh_bot(pg, fake_slack):
    cfg = {"environments": {"test": env_config(pg), "other": env_config(pg)}}
    b = BotUnderTest(cfg, fake_slack).start()
    yield b
    b.close()


def test_forged_button_values_are_refused(fresh_bot, pg, fake_slack):
    bot = fresh_bot
    a = pg.primary.connect(user="app_user", dbname="appdb", application_name="forge-a-" + uuid.uuid4().hex[:6])
    b = pg.primary.connect(user="app_user", dbname="appdb", application_name="forge-b-" + uuid.uuid4().hex[:6])
    try:
        for c in (a, b):
            c.execute("SELECT 1")
        app_a = a.execute("SHOW application_name").fetchone()[0]
        pid_a, pid_b = a.info.backend_pid, b.info.backend_pid
        msg = post_listing(bot, f"test --app {app_a} --min 0s")
        token = find_button(msg, f"Terminate {pid_a}")["value"]
        # 1. a value that names another pid/environment instead of the token
        forged = json.dumps({"pid": pid_b, "env": "other"})
        bot.slack.block_action(f"pgs_kill:terminate:{token}", forged, message=msg)
        answer_with(fake_slack, "not one the bot drew")
        # 2. an action id carrying a pid instead of a token the bot issued
        bot.slack.block_action(f"pgs_kill:terminate:{pid_b}", str(pid_b), message=msg)
        answer_with(fake_slack, "not known to the bot")
        # 3. a made-up request id on the Approve button
        bot.slack.block_action("pgs_req:approve:abc123", "abc123", user_id="U2", message=msg)
        answer_with(fake_slack, "does not exist")
        assert not fake_slack.calls_for("views.open")
        # 4. a real token with a form whose metadata claims another pid and environment: the server's
        #    snapshot decides, so only A can be acted on
        bot.slack.block_action(f"pgs_kill:terminate:{token}", token, message=msg)
        fake_slack.wait_for("views.open", ok=True)
        meta = {"token": token, "action": "terminate", "channel": "C1", "pid": pid_b, "env": "other",
                "backend_start": "2000-01-01T00:00:00+00:00"}
        n = len(fake_slack.calls_for("chat.postMessage", ok=True))
        reply = bot.slack.view_submission("pgs_kill_request", private_metadata=json.dumps(meta),
                                          state_values={"reason": {"reason": "forged"}})
        assert reply.status == 200
        fake_slack.wait_for("chat.postMessage", ok=True, since=0,
                            predicate=lambda c: len(fake_slack.calls_for("chat.postMessage", ok=True)) > n)
        post = fake_slack.calls_for("chat.postMessage", ok=True)[-1]
        req_msg = fake_slack.messages[(post.response["channel"], post.response["ts"])]
        req_id = find_button(req_msg, "Approve")["value"]
        req = bot.rt.store.get_request(req_id)
        assert req.env == "test" and req.target.pid == pid_a
        bot.slack.block_action(find_button(req_msg, "Approve")["action_id"], req_id, user_id="U2", message=req_msg)
        wait_state(bot, req_msg, "*Done*")
        assert alive(pg.primary, pid_b), "the pid named in the forged metadata was signalled"
        assert not alive(pg.primary, pid_a)
        # 5. the token is bound to its action: a cancel built from a terminate token of an idle session
        #    is refused or acts on A only (never on B)
        assert alive(pg.primary, pid_b)
    finally:
        for c in (a, b):
            try:
                c.close()
            except psycopg.Error:
                pass
