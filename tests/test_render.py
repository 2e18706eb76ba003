"""Rendering is pure: models in, Block Kit dicts out, within Slack's limits whatever the data."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.approval.actions import ACTIONS
from bot.approval.models import SessionTarget, StoredTarget, request_from_dict
from bot.postgres.models import Category, Filters, Listing, ServerInfo, Session
from bot.render.actions import BULK_REQUEST, DRAWINGS, SESSION_REQUEST
from bot.render.approval import request_message, request_modal, still_can_approve
from bot.render.listing import render_listing
from tests.dict_compat import request_message as dict_request_message
from tests.harness.fake_slack import validate_message_blocks, validate_view

pytestmark = pytest.mark.unit

SERVER = ServerInfo(150020, "15.20 (Debian)", 1200, 1006, False, 1, "pgsessions_bot", False, True, True)


def session(pid: int, **kw) -> Session:
    base = dict(
        pid=pid, backend_start=datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC), user="app", database="appdb",
        application="web", client_addr="10.0.0.5", state="idle", wait_event_type="Client", wait_event="ClientRead",
        query="SELECT 1", blocked_by=(), blocking_count=0, categories=(Category.IDLE,), query_secs=4000.0,
        xact_secs=None, state_secs=3700.0,
    )
    base.update(kw)
    return Session(**base)


def test_a_thousand_sessions_with_huge_queries_stay_within_limits():
    huge = "SELECT '<b>&</b>', `tick` FROM t WHERE x = '" + "x" * 5000 + "'"
    sessions = tuple(session(10000 + i, query=huge, application="a" * 300) for i in range(1000))
    listing = Listing("prod", "primary", SERVER, sessions, Filters(), {"long_running": 300, "idle_in_transaction": 60, "idle": 3600})
    tokens = {s.pid: f"tok{s.pid}" for s in sessions}
    msg = render_listing(listing, tokens=tokens)
    assert validate_message_blocks(msg["blocks"]) == []
    assert len(msg["blocks"]) <= 50 and msg["text"]
    body = json.dumps(msg)
    assert "Showing the worst" in body and "1000 sessions" in body
    assert "<b>" not in body and "&lt;b&gt;" in body  # mrkdwn escaped
    assert "`tick`" not in body  # backticks in a query cannot break the code span


def test_buttons_and_reasons():
    ok = session(1, state="active", categories=(Category.LONG_RUNNING,))
    idle_tx = session(2, state="idle in transaction", categories=(Category.IDLE_TX,))
    su = session(3, cannot_signal="superuser session (the bot's role is not a superuser)")
    idle = session(4)  # plain idle: nothing runs, so Cancel would do nothing
    fastpath = session(5, state="fastpath function call", categories=(Category.LONG_RUNNING,))
    listing = Listing("prod", "primary", SERVER, (idle_tx, ok, su, idle, fastpath), Filters(), {})
    msg = render_listing(listing, tokens={1: "t1", 2: "t2", 4: "t4", 5: "t5"})
    labels = [e["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels == ["Terminate 2", "Cancel 1", "Terminate 1", "Terminate 4", "Cancel 5", "Terminate 5"]
    body = json.dumps(msg)
    assert "pid 3 cannot be signalled from chat: superuser session" in body
    assert "transaction stays open" in body
    assert validate_message_blocks(msg["blocks"]) == []


def test_no_buttons_when_kill_is_off():
    listing = Listing("prod", "primary", SERVER, (session(1),), Filters(), {})
    msg = render_listing(listing, tokens={}, kill_disabled="signalling is turned off for `prod`")
    assert not [b for b in msg["blocks"] if b["type"] == "actions"]
    assert "signalling is turned off" in json.dumps(msg)


def test_request_modal_and_message_within_limits():
    payload = {
        "pid": 7, "backend_start": "2026-11-25T10:00:00.123456+00:00", "user": "u" * 100, "database": "d",
        "application": "a" * 500, "state": "active", "query": "q" * 4000, "duration_secs": 99, "duration_what": "query"}
    target = StoredTarget(token="tok", env="prod", host="replica1", created_at=1.7e9, target=SessionTarget(**payload))
    view = request_modal(target, ACTIONS["terminate"], "tok", "C1", True)
    assert validate_view(view) == []
    assert view["submit"]["text"] == "Request" and not view["blocks"][2]["optional"]
    req = {"id": "r1", "env": "prod", "host": "replica1", "action": "cancel", "target": payload,
           "requester": "U1", "reason": "<script>" * 200, "state": "pending", "created_at": 1.7e9,
           "expires_at": 1.7e9 + 900, "decided_at": None, "outcome": None, "updated_at": 1.7e9}
    msg = request_message(request_from_dict(req), ACTIONS["cancel"], [], 1, ["U2", "S0DBAS"])
    assert validate_message_blocks(msg["blocks"]) == []
    # a request for a standby session names the standby in its header, not only the environment
    assert msg["blocks"][0]["text"]["text"] == "Cancel request: pid 7 on prod standby replica1"
    primary = dict_request_message({**req, "host": "primary"}, ["U2"], [], 1, ["U2"])
    assert primary["blocks"][0]["text"]["text"] == "Cancel request: pid 7 on prod"
    body = json.dumps(msg)
    assert "pgs_req:approve:r1" in body and "<!subteam^S0DBAS>" in body and "<script>" not in body
    done = request_message(
        request_from_dict({**req, "state": "done", "outcome": {"status": "done", "detail": "query of 7 cancelled"}}),
        ACTIONS["cancel"], ["U2"], 1, ["U2"],
    )
    assert "pgs_req:" not in json.dumps(done) and "Approved by <@U2>" in json.dumps(done)


def test_a_bulk_request_for_a_standby_names_it_in_the_header():
    from bot.render.bulk import _headline
    from tests.dict_compat import as_request

    req = {"action": "terminate_bulk", "env": "prod", "host": "replica1", "requester": "U1", "created_at": 1.0,
           "expires_at": 2.0, "target": {"app": "web", "sessions": [{}, {}]}}
    assert _headline(as_request(req)) == "Terminate 2 sessions of app web on prod standby replica1"
    assert _headline(as_request({**req, "host": "primary"})) == "Terminate 2 sessions of app web on prod"


def test_pending_list_names_single_and_bulk_targets():
    from bot.render.approval import pending_list

    base = {"id": "r", "env": "prod", "host": "primary", "requester": "U1", "reason": "r", "created_at": 100.0,
            "expires_at": 1000.0, "updated_at": 100.0, "state": "pending"}
    reqs = [request_from_dict(r) for r in (
        {**base, "action": "terminate", "target": {"pid": 42}},
        {**base, "action": "terminate_bulk", "target": {"app": "web", "sessions": [{"pid": 1}, {"pid": 2}, {"pid": 3}]}},
        {**base, "action": "clear_db", "target": {"database": "appdb", "sessions": [{"pid": 1}]}},
    )]
    body = json.dumps(pending_list(reqs, 200.0))
    assert "pid 42" in body and "3 sessions of app `web`" in body and "database `appdb` (1 session)" in body
    assert "pid \u2013" not in body
    # words, not internal identifiers
    assert "*Clear database* database `appdb`" in body and "*Terminate sessions* 3 sessions" in body
    assert "clear_db" not in body and "terminate_bulk" not in body


def test_audit_shows_words_not_internal_ids():
    from bot.render.approval import audit_list

    entries = [
        {"at": 100.0, "env": "prod", "event": "clear_db:ended", "pid": 1, "actor": None, "result": None},
        {"at": 100.0, "env": "prod", "event": "terminate_bulk:ended", "pid": 2, "actor": None, "result": None},
        {"at": 100.0, "env": "prod", "event": "terminate:gone", "pid": 3, "actor": None, "result": None},
        {"at": 100.0, "env": "prod", "event": "cancel:executed", "pid": 4, "actor": None, "result": None},
    ]
    body = json.dumps(audit_list(entries, "prod"))
    assert "Clear database: ended pid 1" in body
    assert "Terminate sessions: ended pid 2" in body
    assert "Terminate: session gone pid 3" in body
    assert "Cancel: done pid 4" in body
    assert ":ended" not in body and ":gone" not in body and "_bulk" not in body


def test_cannot_signal_reason_is_postgresqls_own_rule():
    from bot.postgres.models import cannot_signal_reason

    def row(**kw):
        return {"is_superuser": False, "bot_is_super": False, "bot_can_signal": True, "bot_has_privs": False, **kw}

    assert cannot_signal_reason(row()) is None
    assert cannot_signal_reason(row(is_superuser=True)) == "superuser session (the bot's role is not a superuser)"
    assert cannot_signal_reason(row(is_superuser=True, bot_is_super=True)) is None
    # a NOINHERIT member of pg_signal_backend has no privileges of it: PostgreSQL refuses, so do we
    assert "pg_signal_backend" in cannot_signal_reason(row(bot_can_signal=False))
    # ... unless the session's own role is one whose privileges the bot has
    assert cannot_signal_reason(row(bot_can_signal=False, bot_has_privs=True)) is None
    # an unknown role (NULL) is left to PostgreSQL at signal time, as before
    assert cannot_signal_reason(row(bot_can_signal=False, bot_has_privs=None)) is None


def test_only_who_can_still_approve_is_named():
    cfg = ["U1", "U2", "S0DBAS"]
    assert still_can_approve(cfg, [], "U1", self_approval=False) == ["U2", "S0DBAS"]
    assert still_can_approve(cfg, [], "U1", self_approval=True) == ["U1", "U2", "S0DBAS"]
    assert still_can_approve(cfg, ["U2"], "U1", self_approval=False) == ["S0DBAS"]
    req = {"id": "r1", "env": "prod", "host": "primary", "action": "terminate", "target": {"pid": 7},
           "requester": "U1", "reason": "x", "state": "pending", "created_at": 1.7e9, "expires_at": 1.7e9 + 900}
    who = still_can_approve(cfg, ["U2"], "U1", self_approval=False)
    body = json.dumps(dict_request_message(req, who, ["U2"], 2, who))
    assert "needs 1 more approval from <!subteam^S0DBAS>" in body
    nobody = json.dumps(dict_request_message(req, [], [], 1, []))
    assert "nobody left in access.approvers" in nobody


def test_an_empty_listing_says_so_once():
    listing = Listing("prod", "primary", SERVER, (), Filters(), {"long_running": 300, "idle_in_transaction": 60, "idle": 600})
    msg = render_listing(listing)
    body = json.dumps(msg["blocks"])
    assert body.count("No session needs attention") == 1 and "nothing needs attention" not in body
    assert "idle \\u2265 10m" in body and "10m 00s" not in body
    assert validate_message_blocks(msg["blocks"]) == []


def _db_info(**kw):
    from bot.postgres.bulk import DatabaseInfo

    base = dict(name="appdb", oid=1, is_template=False, allow_connections=True, conn_limit=-1, owner="app",
                bot_user="bot", bot_is_superuser=False, bot_can_alter=False, bot_database="postgres", bot_pid=1,
                postmaster_start="0", port="5432", in_recovery=False, prepared_xacts=0, logical_slots=0)
    base.update(kw)
    return DatabaseInfo(**base)


def test_clear_db_says_why_block_is_missing_once_without_explaining_it_first():
    from bot.render.bulk import clear_db_message

    msg = clear_db_message("prod", _db_info(), [], tokens={"clear_db": "t1"}, block_why="the bot's role does not own it",
                           terminate_why=None)
    body = json.dumps(msg["blocks"])
    assert "*Block new connections* is not offered: the bot's role does not own it." in body
    assert "ALLOW_CONNECTIONS false" not in body and "first runs" not in body
    # one reason for several buttons (signalling turned off) is said once
    off = "signalling is turned off for `prod`"
    msg = clear_db_message("prod", _db_info(allow_connections=False), [], tokens={}, block_why=off,
                           terminate_why=off, allow_why=off)
    body = json.dumps(msg["blocks"])
    assert body.count("signalling is turned off") == 1
    assert "*Terminate all*, *Block new connections* and *Allow connections again* are not offered" in body


def test_clear_db_while_approving_never_says_not_known():
    from tests.dict_compat import bulk_request_message

    target = {"database": "appdb", "sessions": [{"pid": 1, "user": "u", "application": "a", "state": "idle"}]}
    req = {"id": "r1", "env": "prod", "host": "primary", "action": "clear_db", "target": target, "requester": "U1",
           "reason": "maintenance", "state": "executing", "created_at": 1.0, "expires_at": 2.0, "decided_at": 1.5,
           "outcome": None, "updated_at": 2.0}
    body = json.dumps(bulk_request_message(req, ["U2"], ["U2"], 1, ["U2"]))
    assert "is not known" not in body
    running = {**req, "outcome": {"status": "running", "allow_connections": True, "progress": {"total": 1, "handled": 0}}}
    assert "`appdb` allows new connections" in json.dumps(bulk_request_message(running, ["U2"], ["U2"], 1, ["U2"]))


def test_every_action_kind_has_its_drawing():
    """The domain's table of actions and the Slack side's drawings are keyed by the same names: a kind
    without a message and a form could be requested but never drawn."""
    assert set(DRAWINGS) == set(ACTIONS)
    for name, kind in ACTIONS.items():
        assert DRAWINGS[name] is (SESSION_REQUEST if kind.target_kind == "session" else BULK_REQUEST), name


def test_a_phrase_is_drawn_with_its_names_escaped_and_never_put_into_a_text_as_it_is():
    """Domain refusals carry names from a database apart from the words (bot/phrase.py); bot/render/ escapes
    them in code spans, and a Phrase put into an f-string by mistake fails loudly instead of leaking."""
    from bot.phrase import Phrase
    from bot.render.common import phrase

    p = Phrase.of("{name} is a template database", name="x` <!channel>")
    assert phrase(p) == "`xˋ &lt;!channel&gt;` is a template database"
    assert p.plain == "`x` <!channel>` is a template database"  # plain text: escaped where it is drawn
    assert phrase("the bot's own words") == "the bot's own words"
    with pytest.raises(TypeError):
        f"{p}"
    with pytest.raises(TypeError):
        str(p)
