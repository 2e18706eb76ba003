"""Cancel / Terminate from chat, only after an authorized second person approves, never the wrong backend.

Everything goes through the bot's HTTP surface with signed block_actions / view_submission payloads,
against real PostgreSQL; both state backends (SQLite and PostgreSQL) run the core flows.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import text as sqltext

from bot.approval.models import RequestState, SessionTarget
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import post_listing, request_message_saved

# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_state_url(pg):
    name = "pgs_state_approval"
    pg.primary.sql(f"DROP DATABASE IF EXISTS {name}")
    pg.primary.sql(f"CREATE DATABASE {name}")
    return pg.primary.dsn(dbname=name)


def state_url_for(kind: str, pg_state_url: str) -> str | None:
    if kind == "sqlite":
        return None  # BotUnderTest makes a fresh SQLite file
    # conninfo → URI for the state setting
    parts = dict(p.split("=", 1) for p in pg_state_url.split())
    return f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


def cfg(pg, **access):
    env = env_config(pg, access={"requesters": ["*"], "approvers": ["U2", "S0DBAS"], **access})
    return {"environments": {"test": env}}


@pytest.fixture(params=["sqlite", "postgresql"])
def bot(request, pg, fake_slack, pg_state_url):
    state = state_url_for(request.param, pg_state_url)
    if state:
        # a clean state store per test
        with psycopg.connect(pg_state_url, autocommit=True) as c:
            # every table of the state store, whichever migrations made them (the next test upgrades from none)
            tables = [r[0] for r in c.execute(r"SELECT tablename FROM pg_tables WHERE tablename LIKE 'pgs\_%'")]
            for t in tables:
                c.execute(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(psycopg.sql.Identifier(t)))
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    b = BotUnderTest(cfg(pg), fake_slack, state=state).start()
    yield b
    b.close()
    fake_slack.assert_clean()


@pytest.fixture
def victim(pg):
    """An idle application session that nobody else lists (unique application_name)."""
    app = "victim-" + uuid.uuid4().hex[:8]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    yield conn, app
    try:
        pg.primary.sql("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    except Exception:
        pass
    conn.close()


def alive(pg, pid: int) -> bool:
    return bool(pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


# --- driving the flow ----------------------------------------------------------------------------


def find_button(msg, label: str):
    for block in msg.blocks or []:
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            if el.get("type") == "button" and el["text"]["text"] == label:
                return el
    return None


def request_kill(bot, app: str, pid: int, action="Terminate", user="U1", reason="runaway session"):
    """List, click the button, submit the modal; return the approval message as stored by the fake."""
    msg = post_listing(bot, f"test --app {app} --min 0s", user=user)
    button = find_button(msg, f"{action} {pid}")
    assert button is not None, f"no {action} button for {pid} in {json.dumps(msg.blocks)[:800]}"
    n_views = len(bot.fake.calls_for("views.open"))
    reply = bot.slack.block_action(button["action_id"], button["value"], user_id=user, message=msg)
    assert reply.status == 200
    bot.fake.wait_for("views.open", ok=True, predicate=lambda c: len(bot.fake.calls_for("views.open")) > n_views)
    view = bot.fake.calls_for("views.open", ok=True)[-1].params["view"]
    if isinstance(view, str):
        view = json.loads(view)
    assert view["submit"]["text"] == "Request"
    n_posts = len(bot.fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.view_submission(
        "pgs_kill_request", private_metadata=view["private_metadata"], state_values={"reason": {"reason": reason}},
        user_id=user,
    )
    assert reply.status == 200
    assert reply.body in ("", "null") or "errors" not in reply.body, reply.body
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # the request goes to the listing's channel (a note to a requester may land meanwhile)
        posts = [c for c in bot.fake.calls_for("chat.postMessage", ok=True)[n_posts:] if c.response["channel"] == "C1"]
        if posts:
            return request_message_saved(bot, bot.fake.messages[(posts[0].response["channel"], posts[0].response["ts"])])
        time.sleep(0.02)
    raise AssertionError("no approval request posted:\n" + bot.fake.summary())


def click(bot, msg, label: str, user: str):
    button = find_button(msg, label)
    assert button is not None, f"no {label} button on the message"
    return bot.slack.block_action(button["action_id"], button["value"], user_id=user, message=msg)


def wait_state(bot, msg, needle: str, timeout=25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = bot.fake.messages[(msg.channel, msg.ts)]
        if needle in json.dumps(current.blocks):
            return current
        time.sleep(0.03)
    raise AssertionError(f"{needle!r} never appeared; message now: {json.dumps(bot.fake.messages[(msg.channel, msg.ts)].blocks)[:1500]}")


def ephemeral_to(bot, user: str, needle: str, timeout=25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in bot.fake.responses:
            if needle in (r.text or ""):
                return r
        for e in bot.fake.ephemerals:
            if needle in (e.text or "") and e.ephemeral_user == user:
                return e
        time.sleep(0.03)
    raise AssertionError(f"no ephemeral answer with {needle!r}:\n{bot.fake.summary()}")


def request_row(bot, msg):
    block = find_button(msg, "Approve")
    return bot.rt.store.get_request(block["value"])


# --- the flow --------------------------------------------------------------------------------------


def test_terminate_end_to_end(bot, victim, pg):
    conn, app = victim
    pid = conn.info.backend_pid
    msg = request_kill(bot, app, pid, "Terminate")
    text = json.dumps(msg.blocks)
    assert "<@U1> asks to *terminate*" in text and "runaway session" in text
    assert "<@U2>" in text and "<!subteam^S0DBAS>" in text
    assert alive(pg, pid), "nothing may be signalled before approval"
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Done*")
    assert not alive(pg, pid)
    body = json.dumps(done.blocks)
    assert "terminated: the connection is gone" in body and "Approved by <@U2>" in body
    assert find_button(done, "Approve") is None, "buttons must be gone after the decision"
    events = [e["event"] for e in bot.rt.store.audit_entries(env="test")]
    assert {"terminate:requested", "terminate:approved", "terminate:executed"} <= set(events)
    entry = [e for e in bot.rt.store.audit_entries(env="test") if e["event"] == "terminate:executed"][0]
    assert entry["pid"] == pid and entry["application"] == app and entry["reason"] == "runaway session"
    assert entry["backend_start"] and "." in entry["backend_start"]  # microsecond precision


def test_cancel_end_to_end(bot, pg):
    app = "sleeper-" + uuid.uuid4().hex[:6]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    errors = []

    def sleep():
        try:
            conn.execute("SELECT pg_sleep(60)")
        except psycopg.errors.QueryCanceled as exc:
            errors.append(exc)

    t = threading.Thread(target=sleep, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        pid = conn.info.backend_pid
        msg = request_kill(bot, app, pid, "Cancel")
        click(bot, msg, "Approve", "U7")  # U7 approves through the user group S0DBAS
        done = wait_state(bot, msg, "*Done*")
        assert "cancelled" in json.dumps(done.blocks)
        t.join(5)
        assert errors, "the query was not cancelled"
        assert alive(pg, pid), "cancel must not end the session"
    finally:
        conn.close()


def test_idle_in_transaction_offers_terminate_only(bot, pg):
    app = "idletx-" + uuid.uuid4().hex[:6]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    try:
        pid = conn.info.backend_pid
        msg = post_listing(bot, f"test --app {app} --min 0s")
        assert find_button(msg, f"Terminate {pid}") is not None
        assert find_button(msg, f"Cancel {pid}") is None
        assert "transaction stays open" in json.dumps(msg.blocks)
        # a hand-made cancel click with the same token is refused
        token = find_button(msg, f"Terminate {pid}")["value"]
        bot.slack.block_action(f"pgs_kill:cancel:{token}", token, user_id="U1", message=msg)
        ephemeral_to(bot, "U1", "cancel does nothing to a session idle in transaction")
        assert not bot.fake.calls_for("views.open")
    finally:
        conn.close()


def test_idle_session_offers_terminate_only_and_a_forged_cancel_is_refused(bot, pg):
    # Cancel on a plain idle session does nothing (no query runs) yet used to be reported as done
    app = "idle-" + uuid.uuid4().hex[:6]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app, autocommit=True)
    conn.execute("SELECT 1")
    try:
        pid = conn.info.backend_pid
        msg = post_listing(bot, f"test --app {app} --min 0s")
        assert find_button(msg, f"Terminate {pid}") is not None
        assert find_button(msg, f"Cancel {pid}") is None
        token = find_button(msg, f"Terminate {pid}")["value"]
        bot.slack.block_action(f"pgs_kill:cancel:{token}", token, user_id="U1", message=msg)
        ephemeral_to(bot, "U1", "cancel does nothing to a session that is not running a query")
        assert not bot.fake.calls_for("views.open")
    finally:
        conn.close()


def test_self_approval_refused_then_allowed_when_configured(pg, fake_slack, victim):
    conn, app = victim
    pid = conn.info.backend_pid
    with BotUnderTest(cfg(pg), fake_slack) as b:
        msg = request_kill(b, app, pid, user="U2")
        # the requester is not named as a possible approver: their click would be refused
        body = json.dumps(msg.blocks)
        assert "needs 1 more approval from <!subteam^S0DBAS>" in body and "<@U2>, " not in body
        click(b, msg, "Approve", "U2")
        ephemeral_to(b, "U2", "you made this request")
        assert request_row(b, msg).state == "pending" and alive(pg, pid)
    fake_slack.reset()
    with BotUnderTest(cfg(pg, self_approval=True), fake_slack) as b:
        msg = request_kill(b, app, pid, user="U2")
        click(b, msg, "Approve", "U2")
        wait_state(b, msg, "*Done*")
        assert not alive(pg, pid)


def test_non_approver_refused(bot, victim, pg):
    conn, app = victim
    msg = request_kill(bot, app, conn.info.backend_pid)
    click(bot, msg, "Approve", "U3")
    ephemeral_to(bot, "U3", "you are not an approver for `test`")
    assert request_row(bot, msg).state == "pending"
    assert alive(pg, conn.info.backend_pid)


def test_two_approvals_required(pg, fake_slack, victim):
    fake_slack.usergroups = {"S0DBAS": ["U7"]}
    conn, app = victim
    pid = conn.info.backend_pid
    with BotUnderTest(cfg(pg, approvals_required=2), fake_slack) as b:
        msg = request_kill(b, app, pid)
        assert "needs 2 more approvals from <@U2>, <!subteam^S0DBAS>" in json.dumps(msg.blocks)
        click(b, msg, "Approve", "U2")
        half = wait_state(b, msg, "Approved by <@U2>")
        # who already approved is no longer named among those who can still approve
        assert "needs 1 more approval from <!subteam^S0DBAS>" in json.dumps(half.blocks)
        assert alive(pg, pid) and request_row(b, msg).state == "pending"
        click(b, fake_slack.messages[(msg.channel, msg.ts)], "Approve", "U2")
        ephemeral_to(b, "U2", "already approved")
        click(b, fake_slack.messages[(msg.channel, msg.ts)], "Approve", "U7")
        done = wait_state(b, msg, "*Done*")
        assert "Approved by <@U2>, <@U7>" in json.dumps(done.blocks)
        assert not alive(pg, pid)


def test_deny(bot, victim, pg):
    conn, app = victim
    msg = request_kill(bot, app, conn.info.backend_pid)
    rid = request_row(bot, msg).id
    click(bot, msg, "Deny", "U8")
    done = wait_state(bot, msg, "*Denied*")
    assert "Denied by <@U8>" in json.dumps(done.blocks) and find_button(done, "Approve") is None
    assert alive(pg, conn.info.backend_pid)
    # a late approve changes nothing
    bot.slack.block_action(f"pgs_req:approve:{rid}", rid, user_id="U2", message=done)
    ephemeral_to(bot, "U2", "already denied")
    assert alive(pg, conn.info.backend_pid)


def test_withdraw_only_by_requester(bot, victim, pg):
    conn, app = victim
    msg = request_kill(bot, app, conn.info.backend_pid, user="U1")
    click(bot, msg, "Withdraw", "U2")
    ephemeral_to(bot, "U2", "only the person who made the request")
    click(bot, msg, "Withdraw", "U1")
    wait_state(bot, msg, "Withdrawn by the requester")
    assert alive(pg, conn.info.backend_pid)


def test_expiry(bot, victim, pg):
    conn, app = victim
    msg = request_kill(bot, app, conn.info.backend_pid)
    rid = request_row(bot, msg).id
    with bot.rt.store.tx() as c:  # let the clock run out
        c.execute(sqltext("UPDATE pgs_requests SET expires_at = expires_at - 100000 WHERE id = :id"), {"id": rid})
    bot.rt.housekeeping.requests()
    expired = wait_state(bot, msg, "*Expired*")
    assert find_button(expired, "Approve") is None
    bot.slack.block_action(f"pgs_req:approve:{rid}", rid, user_id="U2", message=expired)
    ephemeral_to(bot, "U2", "already expired")
    assert alive(pg, conn.info.backend_pid)


def test_target_ended_before_approval(bot, victim, pg):
    conn, app = victim
    pid = conn.info.backend_pid
    msg = request_kill(bot, app, pid)
    conn.close()
    deadline = time.monotonic() + 5
    while alive(pg, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "session already ended")
    assert "*Not done*" in json.dumps(done.blocks)


def test_pid_with_another_backend_start_is_not_touched(bot, victim, pg):
    """The request names (pid, backend_start): a backend with that pid but another start is left alone."""
    conn, app = victim
    pid = conn.info.backend_pid
    msg = request_kill(bot, app, pid)
    rid = request_row(bot, msg).id
    req = bot.rt.store.get_request(rid)
    target = req.target.model_dump()
    # one microsecond off: as if the pid had been reused by a backend started a microsecond later
    bs = target["backend_start"]
    micro = int(bs[20:26])
    target["backend_start"] = bs[:20] + f"{(micro + 1) % 1000000:06d}" + bs[26:]
    with bot.rt.store.tx() as c:
        c.execute(sqltext("UPDATE pgs_requests SET target = :t WHERE id = :id"), {"t": json.dumps(target), "id": rid})
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "session already ended")
    assert "now belongs to another" in json.dumps(done.blocks)
    assert alive(pg, pid), "a backend with a different backend_start was signalled"


def test_superuser_session_cannot_be_signalled(bot, pg):
    app = "su-" + uuid.uuid4().hex[:6]
    conn = pg.primary.connect(user="postgres", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    try:
        pid = conn.info.backend_pid
        msg = post_listing(bot, f"test --app {app} --min 0s")
        assert find_button(msg, f"Terminate {pid}") is None
        assert "superuser session" in json.dumps(msg.blocks)
        # and if a target is forged into the store, PostgreSQL still refuses, and the outcome says so
        started, changed = pg.primary.sql(
            "SELECT backend_start, state_change FROM pg_stat_activity WHERE pid=%s", (pid,))[0]
        listing_target = {
            "pid": pid,
            "backend_start": started.isoformat(timespec="microseconds"),
            "state_change": changed.isoformat(timespec="microseconds"),
            "user": "postgres", "application": app, "state": "idle", "query": "SELECT 1",
        }
        token = bot.rt.store.put_targets("test", "primary", "C1", "U1", [SessionTarget(**listing_target)])[0]
        wf = bot.rt.workflow
        req = wf.submit(token, "terminate", "U1", "C1", "forged").request
        result = wf.decide(req.id, "U2", "approve")
        done = wf.execute(result.request)
        assert done.request.state == "failed" and "must be a superuser" in done.message
        assert alive(pg, pid)
    finally:
        conn.close()


def test_concurrent_approvals_signal_once(bot, victim, pg):
    conn, app = victim
    pid = conn.info.backend_pid
    bot.fake.usergroups = {"S0DBAS": [f"U{n}" for n in range(100, 120)]}
    msg = request_kill(bot, app, pid)
    approve = find_button(msg, "Approve")

    def one(n):
        return bot.slack.block_action(approve["action_id"], approve["value"], user_id=f"U{n}", message=msg).status

    with ThreadPoolExecutor(20) as ex:
        statuses = list(ex.map(one, range(100, 120)))
    assert statuses == [200] * 20
    wait_state(bot, msg, "*Done*")
    time.sleep(0.5)
    rid = approve["value"]
    events = [e["event"] for e in bot.rt.store.audit_entries(request_id=rid, limit=100)]
    assert events.count("terminate:executed") + events.count("terminate:gone") == 1, events
    assert events.count("terminate:approved") == 1, events
    assert bot.rt.store.get_request(rid).state == "done"
    assert not alive(pg, pid)


def test_restart_with_a_pending_request(bot, victim, pg):
    conn, app = victim
    pid = conn.info.backend_pid
    msg = request_kill(bot, app, pid)
    bot.restart()
    click(bot, msg, "Approve", "U2")
    wait_state(bot, msg, "*Done*")
    assert not alive(pg, pid)


def test_forged_or_unknown_buttons_act_on_nothing(bot, victim, pg):
    conn, app = victim
    pid = conn.info.backend_pid
    msg = post_listing(bot, f"test --app {app} --min 0s")
    token = find_button(msg, f"Terminate {pid}")["value"]
    bot.slack.block_action("pgs_kill:terminate:AAAAAAAAAAAA", "AAAAAAAAAAAA", user_id="U1", message=msg)
    ephemeral_to(bot, "U1", "not known to the bot")
    bot.slack.block_action(f"pgs_kill:terminate:{token}", "another-value", user_id="U1", message=msg)
    ephemeral_to(bot, "U1", "not one the bot drew")
    bot.slack.block_action(f"pgs_kill:terminate:{token}", token, user_id="U1", channel_id="C999")
    ephemeral_to(bot, "U1", "another channel")
    bot.slack.block_action("pgs_req:approve:nope", "nope", user_id="U2", message=msg)
    ephemeral_to(bot, "U2", "does not exist")
    assert not bot.fake.calls_for("views.open")
    assert alive(pg, pid)


def test_reason_required(bot, victim):
    conn, app = victim
    pid = conn.info.backend_pid
    msg = post_listing(bot, f"test --app {app} --min 0s")
    button = find_button(msg, f"Terminate {pid}")
    bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
    bot.fake.wait_for("views.open", ok=True)
    view = bot.fake.calls_for("views.open", ok=True)[-1].params["view"]
    reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "  "}}, user_id="U1")
    assert reply.status == 200 and reply.json()["response_action"] == "errors"
    assert "reason is required" in reply.json()["errors"]["reason"]
    assert not bot.rt.store.requests_in((RequestState.PENDING,))


def test_requesters_gate(pg, fake_slack, victim):
    conn, app = victim
    pid = conn.info.backend_pid
    with BotUnderTest(cfg(pg, requesters=["U5"]), fake_slack) as b:
        msg = post_listing(b, f"test --app {app} --min 0s")
        button = find_button(msg, f"Terminate {pid}")
        b.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
        ephemeral_to(b, "U1", "not allowed to request kills")
        assert not fake_slack.calls_for("views.open")


def test_allow_kill_false_draws_no_buttons(pg, fake_slack, victim):
    conn, app = victim
    with BotUnderTest(cfg(pg, allow_kill=False), fake_slack) as b:
        msg = post_listing(b, f"test --app {app} --min 0s")
        assert find_button(msg, f"Terminate {conn.info.backend_pid}") is None
        assert "allow_kill: false" in json.dumps(msg.blocks)


def test_pending_and_audit_commands(bot, victim):
    conn, app = victim
    msg = request_kill(bot, app, conn.info.backend_pid)
    reply = bot.command("pending", user_id="U2")
    r = bot.fake.wait_for_response(reply.response_name)
    assert "Open requests (1)" in json.dumps(r.blocks) and "expires in" in json.dumps(r.blocks)
    click(bot, msg, "Deny", "U2")
    wait_state(bot, msg, "*Denied*")
    reply = bot.command("audit test", user_id="U2")
    r = bot.fake.wait_for_response(reply.response_name)
    body = json.dumps(r.blocks)
    assert "Terminate: requested" in body and "Terminate: denied" in body and "terminate:" not in body


def test_audit_pages_and_says_how_many_more(bot):
    # an 8-session bulk action must not silently push every earlier entry out of sight
    store = bot.rt.store
    store.add_audit_many([{"env": "test", "event": "terminate_bulk:ended", "pid": 1000 + i} for i in range(20)])
    store.add_audit(env="test", event="terminate:approved", actor="U9", pid=77)
    total = store.audit_counts("test")["test"]  # earlier tests on this bot may have added some
    reply = bot.command("audit test", user_id="U2")
    body = json.dumps(bot.fake.wait_for_response(reply.response_name).blocks)
    assert f"{total - 15} older entries not shown" in body and "/pgsessions audit test --page 2" in body
    reply = bot.command("audit test --page 2", user_id="U2")
    body = json.dumps(bot.fake.wait_for_response(reply.response_name).blocks)
    assert body.count("Terminate sessions: ended") == 6
    assert (f"{total - 30} older entr" in body) if total > 30 else ("not shown" not in body)
    reply = bot.command("audit TEST --user <@U9|nine>", user_id="U2")
    body = json.dumps(bot.fake.wait_for_response(reply.response_name).blocks)
    assert "Terminate: approved pid 77" in body and "ended" not in body


def test_no_secret_in_any_message(pg, fake_slack, victim):
    conn, app = victim
    pw = "pw-s3cret-Xy"
    env = env_config(pg, access={"approvers": ["U2"]})
    env["dsn"] = pg.primary.dsn(user="pgsessions_pw") + f" password={pw}"
    with BotUnderTest({"environments": {"test": env}}, fake_slack) as b:
        msg = request_kill(b, app, conn.info.backend_pid)
        click(b, msg, "Approve", "U2")
        wait_state(b, msg, "*Done*")
        b.command("audit test")
        time.sleep(0.3)
    everything = json.dumps([c.params for c in fake_slack.calls], default=str) + json.dumps(
        [r.body for r in fake_slack.responses], default=str)
    assert pw not in everything
    assert "password" not in everything.lower()


def test_old_button_tokens_are_purged_and_then_act_on_nothing(bot, victim):
    from bot.approval.housekeeping import TOKEN_RETENTION

    conn, app = victim
    pid = conn.info.backend_pid
    msg = post_listing(bot, f"test --app {app} --min 0s")
    token = find_button(msg, f"Terminate {pid}")["value"]
    fresh = find_button(post_listing(bot, f"test --app {app} --min 0s"), f"Terminate {pid}")["value"]
    with bot.rt.store.tx() as c:
        c.execute(sqltext("UPDATE pgs_targets SET created_at = created_at - :age WHERE token = :t"),
                  {"age": TOKEN_RETENTION + 60, "t": token})
    assert bot.rt.housekeeping.purge_tokens() == 1
    assert bot.rt.store.get_target(token) is None and bot.rt.store.get_target(fresh) is not None
    bot.slack.block_action(f"pgs_kill:terminate:{token}", token, user_id="U1", message=msg)
    ephemeral_to(bot, "U1", "not known to the bot")
