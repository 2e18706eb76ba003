"""An approval acts only on what the approver saw (issue 12 §1–§3).

Every test drives the real bot over signed HTTP against real PostgreSQL and the fake Slack Web API:
a session that moved on after it was listed is never signalled, old buttons stop working, authority
is re-checked at every step and fails closed, and an outcome is never lost after a signal.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest
from sqlalchemy import text as sqltext

from bot.approval.models import RequestState
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import (
    answer_with,
    click,
    find_button,
    post_listing,
    request_kill,
    wait_state,
    wait_until,
)


def cfg(pg, **access):
    env = env_config(pg, access={"requesters": ["*"], "approvers": ["U2", "S0DBAS"], **access})
    return {"environments": {"test": env}}


@pytest.fixture
def bot(pg, fake_slack):
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    b = BotUnderTest(cfg(pg), fake_slack).start()
    yield b
    b.close()


class Conns:
    """Application connections opened by one test (terminated and closed at its end)."""

    def __init__(self, pg):
        self.pg = pg
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []

    def open(self, prefix: str) -> tuple[psycopg.Connection, str]:
        app = f"{prefix}-{uuid.uuid4().hex[:8]}"
        conn = self.pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
        self.conns.append(conn)
        return conn, app

    def run(self, conn: psycopg.Connection, sql: str) -> dict:
        """Run ``sql`` on ``conn`` in a thread; the dict gets "error" if it fails, "done" when it ends."""
        out: dict = {}

        def go():
            try:
                conn.execute(sql)
            except psycopg.Error as exc:
                out["error"] = exc
            out["done"] = True

        t = threading.Thread(target=go, daemon=True)
        t.start()
        self.threads.append(t)
        return out

    def close(self) -> None:
        for c in self.conns:
            try:
                self.pg.primary.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
            except Exception:
                pass
        for t in self.threads:
            t.join(5)
        for c in self.conns:
            c.close()


@pytest.fixture
def conns(pg):
    c = Conns(pg)
    yield c
    c.close()


def alive(pg, pid: int) -> bool:
    return bool(pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def activity(pg, pid: int) -> tuple:
    rows = pg.primary.sql("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows[0] if rows else (None, None)


def wait_active(pg, pid: int, needle: str) -> None:
    wait_until(lambda: activity(pg, pid)[0] == "active" and needle in (activity(pg, pid)[1] or ""), 10,
               f"pid {pid} running {needle}")


def events_of(bot, msg=None) -> list[str]:
    """The audit events of this test's bot (each test has its own state store)."""
    return [e["event"] for e in bot.rt.store.audit_entries(limit=100)]


# --- §1: the approval covers the session as it was shown --------------------------------------------


def test_cancel_after_listed_query_finished_leaves_the_next_query_alone(bot, pg, conns):
    conn, app = conns.open("pool")
    pid = conn.info.backend_pid
    first = conns.run(conn, "SELECT pg_sleep(2.5) /* Q1 */")
    wait_active(pg, pid, "Q1")
    msg = request_kill(bot, "test", app, pid, "Cancel")
    body = json.dumps(msg.blocks)
    assert "*listed* <!date^" in body and "after the listing" in body, "the request says when it was listed"
    wait_until(lambda: first.get("done"), 10, "Q1 finished by itself")
    second = conns.run(conn, "SELECT pg_sleep(30) /* Q2 */")
    wait_active(pg, pid, "Q2")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    text = json.dumps(done.blocks)
    assert "nothing was signalled" in text and "moved on" in text and "/pgsessions test" in text, text
    assert "it is now active, running a query" in text, "the message says what the session is doing now"
    time.sleep(0.3)
    assert "error" not in second and not second.get("done"), "the second query was cancelled"
    assert activity(pg, pid)[0] == "active" and "Q2" in activity(pg, pid)[1]
    assert "cancel:moved" in events_of(bot, msg)
    assert "cancel:executed" not in events_of(bot, msg)


def test_cancel_of_the_listed_query_still_works(bot, pg, conns):
    """The binding is not over-strict: the very query that was listed is cancelled."""
    conn, app = conns.open("sleeper")
    pid = conn.info.backend_pid
    running = conns.run(conn, "SELECT pg_sleep(30) /* Q1 */")
    wait_active(pg, pid, "Q1")
    msg = request_kill(bot, "test", app, pid, "Cancel")
    click(bot, msg, "Approve", "U2")
    wait_state(bot, msg, "*Done*")
    wait_until(lambda: running.get("done"), 10, "the listed query was cancelled")
    assert isinstance(running.get("error"), psycopg.errors.QueryCanceled)


def test_terminate_of_listed_idle_session_that_became_active_leaves_it_alone(bot, pg, conns):
    conn, app = conns.open("idle")
    pid = conn.info.backend_pid
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    busy = conns.run(conn, "SELECT pg_sleep(3) /* busy now */")
    wait_active(pg, pid, "busy now")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    text = json.dumps(done.blocks)
    assert "moved on from the idle session that was listed" in text and "it is now active" in text, text
    assert alive(pg, pid)
    wait_until(lambda: busy.get("done"), 10, "the query ran to its end")
    assert "error" not in busy
    assert "terminate:moved" in events_of(bot, msg)


def test_terminate_of_listed_idle_session_used_since_leaves_it_alone(bot, pg, conns):
    """Idle again, but used in between (state_change moved): not the session the approver saw."""
    conn, app = conns.open("idle")
    pid = conn.info.backend_pid
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    conn.execute("SELECT 2")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    assert "it is now idle since" in json.dumps(done.blocks)
    assert alive(pg, pid)


def test_moved_on_idle_in_transaction_session_is_not_terminated(bot, pg, conns):
    conn, app = conns.open("idletx")
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    conn.execute("COMMIT")
    conn.execute("BEGIN")
    conn.execute("SELECT 2")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    text = json.dumps(done.blocks)
    assert "moved on from the transaction that was listed" in text and "in a transaction that started" in text
    assert alive(pg, pid)
    conn.execute("COMMIT")


def test_same_transaction_still_open_is_terminated(bot, pg, conns):
    """Another statement in the SAME transaction keeps xact_start: the approved terminate goes ahead."""
    conn, app = conns.open("idletx")
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    conn.execute("SELECT 2")
    click(bot, msg, "Approve", "U2")
    wait_state(bot, msg, "*Done*")
    wait_until(lambda: not alive(pg, pid), 5, "terminated")


def test_old_listing_button_says_to_list_again(bot, pg, conns):
    conn, app = conns.open("old")
    pid = conn.info.backend_pid
    conn.execute("SELECT 1")
    msg = post_listing(bot, f"test --app {app} --min 0s")
    button = find_button(msg, f"Terminate {pid}")
    ttl = bot.rt.config.environments["test"].access.request_ttl
    with bot.rt.store.tx() as c:
        c.execute(sqltext("UPDATE pgs_targets SET created_at = created_at - :age WHERE token = :t"),
                  {"age": ttl + 5, "t": button["value"]})
    bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
    answer = answer_with(bot.fake, "for a fresh listing")
    assert "/pgsessions test" in answer.text and "access.request_ttl" in answer.text
    assert not bot.fake.calls_for("views.open")
    assert alive(pg, pid)


@pytest.mark.unit
def test_lag_alert_reuses_a_token_only_while_young_and_unchanged():
    """A living lag alert keeps a culprit's button only while its snapshot still matches the session."""
    from datetime import UTC, datetime, timedelta

    from bot.approval.models import StoredTarget
    from bot.approval.targets import reusable_token, session_snapshot
    from bot.postgres.models import Category, Session

    t0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    s = Session(pid=7, backend_start=t0, user="u", database="d", application="a", client_addr=None,
                state="idle in transaction", wait_event_type=None, wait_event=None, query="SELECT 1",
                blocked_by=(), blocking_count=1, categories=(Category.IDLE_TX,), query_secs=5.0,
                xact_secs=9.0, state_secs=5.0, query_start=t0, xact_start=t0, state_change=t0)
    target = StoredTarget(token="t", env="e", host="primary", created_at=1000.0,
                          target=session_snapshot(s, listed_at=1000.0))
    assert reusable_token(target, s, request_ttl=900, now=1100.0)
    assert not reusable_token(target, s, request_ttl=900, now=1000.0 + 451), "too old to survive the next update"
    moved = Session(**{**{f: getattr(s, f) for f in s.__slots__}, "xact_start": t0 + timedelta(microseconds=1)})
    assert not reusable_token(target, moved, request_ttl=900, now=1100.0), "another transaction: fresh token"
    assert not reusable_token(None, s, request_ttl=900, now=1100.0)


# --- §2: authority is re-checked when it matters, and fails closed ----------------------------------


def idle_session(conns):
    conn, app = conns.open("victim")
    conn.execute("SELECT 1")
    return conn, app, conn.info.backend_pid


def request_of(bot, msg):
    """The request behind an approval message (its buttons are gone once decided: then the latest one)."""
    button = find_button(bot.fake.messages[(msg.channel, msg.ts)], "Approve")
    if button is not None:
        return bot.rt.store.get_request(button["value"])
    return bot.rt.store.requests_in(tuple(RequestState))[-1]


def test_allow_kill_turned_off_with_a_request_pending_across_a_restart(bot, pg, conns):
    conn, app, pid = idle_session(conns)
    msg = request_kill(bot, "test", app, pid)
    rid = request_of(bot, msg).id
    bot.config_dict["environments"]["test"]["access"]["allow_kill"] = False
    bot.restart()
    click(bot, msg, "Approve", "U2")
    answer = answer_with(bot.fake, "allow_kill: false")
    assert "nothing was changed" in answer.text
    assert bot.rt.store.get_request(rid).state == "pending" and alive(pg, pid)
    assert not [e for e in events_of(bot) if e.endswith(":executed")]


def test_config_change_between_approval_and_signal_stops_it(bot, pg, conns):
    """The last re-check runs just before acting: an approved request under a config that now forbids it
    ends 'refused' and nothing is signalled."""
    from bot.config import parse_config

    conn, app, pid = idle_session(conns)
    msg = request_kill(bot, "test", app, pid)
    rid = request_of(bot, msg).id
    wf = bot.rt.workflow
    approved = wf.decide(rid, "U2", "approve")
    assert approved.execute
    changed = json.loads(json.dumps(bot.config_dict))
    changed["environments"]["test"]["access"]["requesters"] = ["U5"]
    wf.config = parse_config(changed, environ={})
    done = wf.execute(approved.request)
    assert done.request.state == "failed" and done.request.outcome.status == "refused"
    assert "no longer allowed to request" in done.message and "nothing was signalled" in done.message
    assert alive(pg, pid)
    assert "terminate:refused" in events_of(bot)


def test_approver_removed_from_group_between_first_and_last_approval(pg, fake_slack, conns):
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    conn, app, pid = idle_session(conns)
    with BotUnderTest(cfg(pg, approvals_required=2), fake_slack) as b:
        msg = request_kill(b, "test", app, pid)
        click(b, msg, "Approve", "U7")
        wait_state(b, msg, "Approved by <@U7>")
        fake_slack.usergroups = {"S0DBAS": ["U8"]}  # U7 leaves the DBA group...
        b.rt.directory._groups.clear()  # ...and the bot's 5-minute cache has run out
        click(b, fake_slack.messages[(msg.channel, msg.ts)], "Approve", "U8")
        answer = answer_with(fake_slack, "approval 1 of 2 recorded")
        assert "no longer counted: <@U7>" in (answer.text or "")
        assert request_of(b, msg).state == "pending" and alive(pg, pid)
        click(b, fake_slack.messages[(msg.channel, msg.ts)], "Approve", "U2")
        wait_state(b, msg, "*Done*")
        wait_until(lambda: not alive(pg, pid), 5, "terminated")
        assert request_of(b, msg).decided_by == "U2"


def test_self_approval_counts_once(pg, fake_slack, conns):
    conn, app, pid = idle_session(conns)
    with BotUnderTest(cfg(pg, approvals_required=2, self_approval=True), fake_slack) as b:
        msg = request_kill(b, "test", app, pid, user="U2")
        click(b, msg, "Approve", "U2")
        wait_state(b, msg, "Approved by <@U2>")
        click(b, fake_slack.messages[(msg.channel, msg.ts)], "Approve", "U2")
        answer_with(fake_slack, "already approved")
        assert request_of(b, msg).state == "pending" and alive(pg, pid)


def test_user_group_unknown_and_cache_too_old_refuses(bot, pg, conns):
    conn, app, pid = idle_session(conns)
    msg = request_kill(bot, "test", app, pid)
    bot.rt.directory._groups.clear()
    bot.fake.fail_next("usergroups.users.list", error="fatal_error", times=5)
    click(bot, msg, "Approve", "U7")
    answer = answer_with(bot.fake, "older than 5 minutes")
    assert "S0DBAS" in answer.text and "Nothing was changed" in answer.text
    assert request_of(bot, msg).state == "pending" and alive(pg, pid)


def test_guest_may_neither_request_nor_approve(pg, fake_slack, conns):
    fake_slack.users = {"U9": {"is_restricted": True}, "U10": {"is_ultra_restricted": True}}
    conn, app, pid = idle_session(conns)
    with BotUnderTest(cfg(pg, approvers=["U2", "U9", "U10"]), fake_slack) as b:
        msg = post_listing(b, f"test --app {app} --min 0s", user="U9")
        button = find_button(msg, f"Terminate {pid}")
        b.slack.block_action(button["action_id"], button["value"], user_id="U9", message=msg)
        answer_with(fake_slack, "guest accounts may not request")
        assert not fake_slack.calls_for("views.open")
        req = request_kill(b, "test", app, pid, user="U1")
        click(b, req, "Approve", "U10")
        answer_with(fake_slack, "guest accounts may not approve")
        assert request_of(b, req).state == "pending" and alive(pg, pid)


def test_external_user_may_neither_request_nor_approve(pg, fake_slack, conns):
    """Slack Connect: users.info says another team, or the payload's user belongs to another team."""
    fake_slack.users = {"U10": {"team_id": "T999"}}
    conn, app, pid = idle_session(conns)
    with BotUnderTest(cfg(pg, approvers=["*"]), fake_slack) as b:
        msg = post_listing(b, f"test --app {app} --min 0s")
        button = find_button(msg, f"Terminate {pid}")
        b.slack.block_action(button["action_id"], button["value"], user_id="U10", message=msg)
        answer_with(fake_slack, "another organisation or workspace may not request")
        req = request_kill(b, "test", app, pid, user="U1")
        click(b, req, "Approve", "U10")
        answer_with(fake_slack, "another organisation or workspace may not approve")
        b.slack.user_team_id = "T555"  # the payload itself says the user is from another organisation
        try:
            click(b, req, "Approve", "U11")
            answer_with(fake_slack, "may not request or approve (only members of this workspace)")
        finally:
            b.slack.user_team_id = None
        assert request_of(b, req).state == "pending" and alive(pg, pid)
        assert not b.rt.store.approvers_of(request_of(b, req).id)


def test_wrong_team_id_is_refused(pg, fake_slack, conns):
    conn, app, pid = idle_session(conns)
    config = cfg(pg)
    config["slack"] = {"team_id": "T0RIGHT"}
    with BotUnderTest(config, fake_slack) as b:  # the fake workspace is T1
        reply = b.command("test", user_id="U1")
        assert reply.status == 200 and "another workspace" in reply.body
        assert not fake_slack.calls_for("chat.postMessage")
        reply = b.slack.view_submission("pgs_kill_request", private_metadata="{}", user_id="U1")
        assert reply.json()["response_action"] == "errors" and "another workspace" in reply.body
        assert not b.rt.store.requests_in((RequestState.PENDING,))
    fake_slack.reset()
    config["slack"] = {"team_id": "T1"}
    with BotUnderTest(config, fake_slack) as b:  # the right one is served
        req = request_kill(b, "test", app, pid)
        assert request_of(b, req).state == "pending"


def test_viewer_less_user_sees_nothing(pg, fake_slack, conns):
    conn, app, pid = idle_session(conns)
    with BotUnderTest(cfg(pg, viewers=["U1", "U2"]), fake_slack) as b:
        request_kill(b, "test", app, pid, user="U1")
        n_posts = len(fake_slack.calls_for("chat.postMessage"))
        for text in ("test", "test lag", f"test --app {app} --min 0s", "audit test"):
            reply = b.command(text, user_id="U3")
            assert "access.viewers" in reply.body, (text, reply.body)
        assert len(fake_slack.calls_for("chat.postMessage")) == n_posts
        reply = b.command("pending", user_id="U3")
        r = fake_slack.wait_for_response(reply.response_name)
        assert "No open kill requests" in json.dumps(r.blocks)
        reply = b.command("pending", user_id="U2")
        r = fake_slack.wait_for_response(reply.response_name)
        assert "Open requests (1)" in json.dumps(r.blocks)
        reply = b.command("audit", user_id="U3")
        r = fake_slack.wait_for_response(reply.response_name)
        assert "terminate:requested" not in json.dumps(r.blocks)
    fake_slack.reset()
    fake_slack.usergroups = {"S0VIEW": ["U1"]}
    with BotUnderTest(cfg(pg, viewers=["S0VIEW"]), fake_slack) as b:  # a group: checked right after the ack
        reply = b.command("test", user_id="U3")
        r = fake_slack.wait_for_response(reply.response_name)
        assert "access.viewers" in (r.text or ""), r.text
        post_listing(b, f"test --app {app} --min 0s", user="U1")
        assert len(fake_slack.calls_for("chat.postMessage")) == 1


def test_a_page_of_audit_is_filled_with_entries_the_viewer_may_see(pg, fake_slack):
    """Entries of an environment the viewer may not see neither show nor take a place on the page."""
    config = cfg(pg)
    config["environments"]["secret"] = env_config(pg, access={"viewers": ["U1"], "approvers": ["U2"]})
    with BotUnderTest(config, fake_slack) as b:
        store = b.rt.store
        store.add_audit_many([{"env": "test", "event": "terminate:approved", "pid": 500 + i} for i in range(5)])
        store.add_audit_many([{"env": "secret", "event": "terminate:approved", "pid": 900 + i} for i in range(20)])
        reply = b.command("audit", user_id="U3")
        body = json.dumps(fake_slack.wait_for_response(reply.response_name).blocks)
        assert all(f"pid {500 + i}" in body for i in range(5)), body
        assert "pid 90" not in body and "pid 91" not in body and "not shown" not in body
        reply = b.command("audit", user_id="U1")  # who may see both gets the newest 15 and is told of the rest
        body = json.dumps(fake_slack.wait_for_response(reply.response_name).blocks)
        assert "pid 919" in body and "10 older entries not shown" in body, body


def test_replayed_view_submission_creates_one_request(bot, pg, conns):
    conn, app, pid = idle_session(conns)
    msg = post_listing(bot, f"test --app {app} --min 0s")
    button = find_button(msg, f"Terminate {pid}")
    bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
    opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True), 10, "views.open")
    view = opened[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    first = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "runaway"}}, user_id="U1")
    assert first.status == 200
    again = bot.slack._send_payload(first.payload, {})  # Slack's retry, or a replay of the signed body
    assert again.status == 200 and "errors" not in (again.body or "")
    wait_until(lambda: bot.fake.calls_for("chat.postMessage", ok=True)[1:], 10, "the request posted")
    time.sleep(0.5)
    assert len(bot.rt.store.requests_in((RequestState.PENDING,))) == 1
    assert len(bot.fake.calls_for("chat.postMessage", ok=True)) == 2  # the listing and ONE request
    assert events_of(bot).count("terminate:requested") == 1


# --- §3: nothing is lost or misreported after a signal ------------------------------------------------


def test_state_write_failing_after_a_signal_loses_nothing(bot, pg, conns):
    """The store refuses the outcome and the 'executed' audit entry for a while (longer than the
    in-call retries): the message still shows what happened, and both land once the store is back."""
    from sqlalchemy.exc import OperationalError

    conn, app, pid = idle_session(conns)
    msg = request_kill(bot, "test", app, pid)
    rid = request_of(bot, msg).id
    store = bot.rt.store
    broken = threading.Event()
    real_transition, real_add_audit = store.transition, store.add_audit

    def down():
        if broken.is_set():
            raise OperationalError("UPDATE pgs_requests ...", {}, Exception("disk I/O error"))

    def transition(conn, request_id, expected, new, **values):
        if expected == "executing":
            down()
        return real_transition(conn, request_id, expected, new, **values)

    def add_audit(conn=None, **values):
        if str(values.get("event", "")).endswith(":executed"):
            down()
        return real_add_audit(conn, **values)

    store.transition, store.add_audit = transition, add_audit
    try:
        broken.set()  # until the test says so: longer than the in-call retries (about 1.7 s per write)
        click(bot, msg, "Approve", "U2")
        done = wait_state(bot, msg, "*Done*", timeout=15)
        text = json.dumps(done.blocks)
        assert "terminated: the connection is gone" in text
        assert "othing was changed" not in text + json.dumps([r.text for r in bot.fake.responses])
        wait_until(lambda: not alive(pg, pid), 5, "terminated")
        assert store.get_request(rid).state == "executing", "the store was down: not recorded yet"
        wf = bot.rt.workflow
        assert wf.holds_unsaved(rid)
        assert wf.recover_interrupted(older_than=0) == [], "an outcome held in memory is not 'interrupted'"
        broken.clear()  # the store is back
        bot.rt.housekeeping.requests()
        assert store.get_request(rid).state == "done"
        assert store.get_request(rid).outcome.signalled is True
        assert "terminate:executed" in events_of(bot)
        assert not wf.holds_unsaved(rid)
    finally:
        store.transition, store.add_audit = real_transition, real_add_audit


@pytest.fixture(scope="module")
def pg_state_url(pg):
    name = "pgs_state_trust"
    pg.primary.sql(f"DROP DATABASE IF EXISTS {name}")
    pg.primary.sql(f"CREATE DATABASE {name}")
    parts = dict(p.split("=", 1) for p in pg.primary.dsn(dbname=name).split())
    return f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_many_approvals_fit_the_store(pg, fake_slack, conns, pg_state_url, backend):
    """approvals_required up to its maximum with long user ids: every stored field fits, on both stores."""
    approvers = [f"U0{n:09d}" for n in range(10)]
    conn, app, pid = idle_session(conns)
    state = pg_state_url if backend == "postgresql" else None
    if state:
        with psycopg.connect(pg.primary.dsn(dbname="pgs_state_trust"), autocommit=True) as c:
            for t in ("pgs_targets", "pgs_requests", "pgs_approvals", "pgs_audit"):
                c.execute(f"DROP TABLE IF EXISTS {t}")
    with BotUnderTest(cfg(pg, approvers=approvers, approvals_required=10), fake_slack, state=state) as b:
        msg = request_kill(b, "test", app, pid)
        rid = request_of(b, msg).id
        for n, who in enumerate(approvers, 1):
            click(b, fake_slack.messages[(msg.channel, msg.ts)], "Approve", who)
            wait_until(lambda n=n: len(b.rt.store.approvers_of(rid)) == n, 10, f"approval {n} recorded")
        wait_state(b, msg, "*Done*")
        req = request_of(b, msg)
        assert req.state == "done" and req.decided_by == approvers[-1]
        assert b.rt.store.approvers_of(req.id) == approvers
        assert "terminate:executed" in events_of(b)


@pytest.mark.unit
def test_check_warns_about_open_settings():
    from bot.check import open_access_warnings
    from bot.config import parse_config

    def warnings(**access):
        env = {"dsn": "host=db1 dbname=postgres", "access": access}
        config = parse_config({"environments": {"prod": env}}, environ={})
        return " | ".join(f.message for f in open_access_warnings("prod", config.environments["prod"]))

    everything = warnings(approvers="*", self_approval=True)
    for key in ("viewers is \"*\"", "requesters is \"*\"", "approvers is \"*\"", "self_approval is true"):
        assert key in everything, (key, everything)
    closed = warnings(viewers=["S1"], requesters=["S1"], approvers=["U1", "U2", "U3"], approvals_required=2)
    assert closed == "", closed
    assert "no request can ever be approved" in warnings(viewers=["S1"], requesters=["S1"], approvers=["U1"],
                                                         approvals_required=2)
    assert "can never be approved" in warnings(viewers=["S1"], requesters=["S1"], approvers=["U1", "U2"],
                                               approvals_required=2)


@pytest.mark.unit
def test_config_slack_team_id_and_viewers_are_validated():
    from bot.config import ConfigError, parse_config

    env = {"dsn": "host=db1 dbname=postgres"}
    config = parse_config({"environments": {"prod": env}}, environ={})
    assert config.slack.team_id is None and config.environments["prod"].access.viewers == ["*"]
    config = parse_config({"slack": {"team_id": "T0ABC"}, "environments": {"prod": {**env, "access": {
        "viewers": "S0DBAS"}}}}, environ={})
    assert config.slack.team_id == "T0ABC" and config.environments["prod"].access.viewers == ["S0DBAS"]
    with pytest.raises(ConfigError, match=r"slack.team_id: 'acme' is not a Slack team id"):
        parse_config({"slack": {"team_id": "acme"}, "environments": {"prod": env}}, environ={})
    with pytest.raises(ConfigError, match=r"environments.prod.access.viewers.*'bob' is not a Slack user id"):
        parse_config({"environments": {"prod": {**env, "access": {"viewers": ["bob"]}}}}, environ={})


def test_check_warns_about_a_shared_channel_without_redaction(fake_slack):
    """`pgsessions check`: redact_queries false with a channel of access.channels shared with another
    organisation is a warning (asked through conversations.info)."""
    from bot.check import shared_channel_warnings
    from bot.config import parse_config

    fake_slack.scopes = [*fake_slack.scopes, "channels:read"]
    fake_slack.channels = {"C0SHARED": {"name": "ops-with-vendor", "is_ext_shared": True, "is_shared": True},
                           "C0OWN": "ops"}
    env = {"dsn": "host=db1 dbname=postgres", "access": {"channels": ["C0OWN", "C0SHARED"]}}
    config = parse_config({"environments": {"prod": env, "safe": {**env, "redact_queries": True}}}, environ={})
    environ = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": fake_slack.api_url}
    found = [f.message for f in shared_channel_warnings(config, environ, None)]
    assert len(found) == 1 and "C0SHARED" in found[0] and "environments.prod.redact_queries" in found[0], found
