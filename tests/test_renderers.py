"""The pure renderers (bot/render/): listing, approval, bulk and lag messages, through their public functions.

Every message stays within Slack's Block Kit limits (checked by the fake Slack's own validator), always has
a fallback text, escapes what comes from a database, and says what it should. Pure: no server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.postgres.bulk import DatabaseInfo
from bot.postgres.models import Category, Filters, Listing, ServerInfo, Session
from bot.render.approval import audit_list
from bot.render.bulk import clear_db_message, clear_db_refused, database_state_line, state_counts
from bot.render.common import FALLBACK_TEXT, MAX_BLOCKS, SECTION_TEXT, esc
from bot.render.lag import render_unreachable_alert, render_unreachable_reminder, render_unreachable_resolved
from bot.render.listing import render_error, render_listing
from tests.dict_compat import (
    VERBS,
    bulk_modal,
    bulk_offer_blocks,
    bulk_request_message,
    group_lines,
    pending_list,
    request_message,
    request_modal,
)
from tests.harness.fake_slack import validate_message_blocks, validate_view

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T0 = NOW.timestamp()
SERVER = ServerInfo(150020, "15.20 (Debian)", 100, 37, False, 1, "pgsessions_bot", False, True, True)
HOSTILE = "<!channel> <@U999|boss> *bold* & <https://evil.example|click>"


def body(msg: dict) -> str:
    return json.dumps(msg, ensure_ascii=False)


def buttons(msg_or_blocks) -> list[dict]:
    blocks = msg_or_blocks["blocks"] if isinstance(msg_or_blocks, dict) else msg_or_blocks
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def labels(msg_or_blocks) -> list[str]:
    return [b["text"]["text"] for b in buttons(msg_or_blocks)]


def valid_message(msg: dict) -> dict:
    assert validate_message_blocks(msg["blocks"]) == []
    assert 0 < len(msg["blocks"]) <= MAX_BLOCKS
    assert msg["text"] and len(msg["text"]) <= FALLBACK_TEXT
    for b in msg["blocks"]:
        if b["type"] == "section":
            assert len(b["text"]["text"]) <= SECTION_TEXT
    return msg


def mrkdwn_texts(node) -> list[str]:
    """Every mrkdwn text object in a block tree (plain_text shows what it holds: nothing in it is live)."""
    if isinstance(node, list):
        return [t for n in node for t in mrkdwn_texts(n)]
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            return [node["text"]]
        return [t for v in node.values() for t in mrkdwn_texts(v)]
    return []


def no_live_markup(msg: dict) -> None:
    """Nothing from the database can mention, link or format in the blocks."""
    texts = "\n".join(mrkdwn_texts(msg["blocks"]))
    assert "<!channel>" not in texts and "<@U999" not in texts and "<https://evil" not in texts
    assert "&lt;!channel&gt;" in texts


# --- listing ---------------------------------------------------------------------------------------


def session(pid: int, **kw) -> Session:
    base = dict(
        pid=pid, backend_start=NOW - timedelta(hours=2), user="app", database="appdb", application="web",
        client_addr="10.0.0.5", state="idle", wait_event_type="Client", wait_event="ClientRead", query="SELECT 1",
        blocked_by=(), blocking_count=0, categories=(Category.IDLE,), query_secs=4000.0, xact_secs=None,
        state_secs=3700.0,
    )
    base.update(kw)
    return Session(**base)


def listing(*sessions: Session, host: str = "primary", filters: Filters | None = None) -> Listing:
    return Listing("prod", host, SERVER, tuple(sessions), filters or Filters(),
                   {"long_running": 300, "idle_in_transaction": 60, "idle": 3600})


def test_empty_listing_says_nothing_needs_attention():
    msg = valid_message(render_listing(listing()))
    assert msg["text"] == "Sessions on prod: nothing needs attention"
    assert msg["blocks"][0]["text"]["text"] == "Sessions on prod"
    assert "No session needs attention right now." in body(msg)
    assert "37 of 100 connections in use · PostgreSQL 15.20" in body(msg)
    assert "thresholds: long-running ≥ 5m, idle in transaction ≥ 1m, idle ≥ 1h" in body(msg)
    assert not buttons(msg)


def test_standby_listing_with_filters_and_counts_in_the_fallback():
    blocker = session(1, state="active", categories=(Category.BLOCKING, Category.LONG_RUNNING), blocking_count=2,
                      query_secs=900.0)
    waiter = session(2, state="active", categories=(Category.BLOCKED,), blocked_by=(1,), wait_event_type="Lock",
                     wait_event="transactionid", query_secs=30.0)
    lone = session(3, state="active", categories=(Category.BLOCKED,), blocked_by=(1, 4), wait_event_type="Lock",
                   wait_event="relation", query_secs=20.0, blocking_count=1)
    filters = Filters(categories=frozenset({"blocked", "active"}), min_seconds=60, app="web")
    msg = valid_message(render_listing(listing(blocker, waiter, lone, host="replica1", filters=filters)))
    assert msg["text"] == (
        "Sessions on prod / replica1 (standby): 3 need attention (1 blocking others, 1 long-running, 2 waiting on a lock)"
    )
    text = body(msg)
    assert "Sessions on prod / replica1 (standby)" in text
    assert "filters: active blocked --min 1m --app web · thresholds:" in text
    assert "*blocks 2 sessions*" in text and "*blocks 1 session*" in text
    assert "*blocked by* pid 1" in text and "*blocked by* pid 1, pid 4" in text
    assert "waits on Lock/transactionid" in text
    assert "query *15m*" in text


def test_session_line_escapes_what_the_database_says():
    s = session(7, user=HOSTILE, database=HOSTILE, application=HOSTILE, client_addr=None, state=HOSTILE,
                wait_event_type=HOSTILE, query="SELECT '" + HOSTILE + "'\n  FROM\tt")
    msg = valid_message(render_listing(listing(s), tokens={7: "tok7"}))
    no_live_markup(msg)
    assert "client local socket" in body(msg)
    assert "SELECT '&lt;!channel&gt;" in body(msg) and "FROM t" in body(msg)  # one line


def test_idle_in_transaction_gets_terminate_only_and_the_note():
    s = session(5, state="idle in transaction", categories=(Category.IDLE_TX,), state_secs=120.0, xact_secs=600.0)
    msg = valid_message(render_listing(listing(s), tokens={5: "t5"}))
    assert labels(msg) == ["Terminate 5"]
    (b,) = buttons(msg)
    assert b["action_id"] == "pgs_kill:terminate:t5" and b["value"] == "t5" and b["style"] == "danger"
    assert "(transaction open 10m)" in body(msg)
    assert "only Terminate ends it" in body(msg)


def test_buttons_carry_only_the_token():
    msg = valid_message(render_listing(listing(session(9, state="active", categories=(Category.LONG_RUNNING,))),
                                       tokens={9: "opaque-token"}))
    assert [(b["action_id"], b["value"]) for b in buttons(msg)] == [
        ("pgs_kill:cancel:opaque-token", "opaque-token"), ("pgs_kill:terminate:opaque-token", "opaque-token"),
    ]
    assert "style" not in buttons(msg)[0]


def test_no_token_no_buttons_and_cannot_signal_says_why():
    a = session(1)
    b = session(2, cannot_signal="superuser session (the bot's role is not a superuser)")
    msg = valid_message(render_listing(listing(a, b), tokens={2: "t2"}))
    assert not buttons(msg)
    assert "pid 2 cannot be signalled from chat: superuser session" in body(msg)


@pytest.mark.parametrize("max_sessions, shown", [(3, 3), (40, 23)])
def test_max_sessions_and_the_block_budget_say_how_many_are_hidden(max_sessions, shown):
    sessions = [session(100 + i, state="active", categories=(Category.LONG_RUNNING,)) for i in range(40)]
    msg = valid_message(render_listing(listing(*sessions), max_sessions=max_sessions,
                                       tokens={s.pid: f"t{s.pid}" for s in sessions}))
    assert f"Showing the worst {shown} of 40 sessions. {40 - shown} more not shown" in body(msg)
    assert len([b for b in msg["blocks"] if b["type"] == "actions"]) == shown


def test_extra_blocks_are_kept_within_the_limit():
    sessions = [session(100 + i, state="active", categories=(Category.LONG_RUNNING,)) for i in range(20)]
    extra = [{"type": "context", "elements": [{"type": "mrkdwn", "text": f"extra {i}"}]} for i in range(10)]
    msg = valid_message(render_listing(listing(*sessions), tokens={s.pid: f"t{s.pid}" for s in sessions},
                                       extra_blocks=extra))
    assert msg["blocks"][-10:] == extra
    assert "Showing the worst 18 of 20 sessions. 2 more not shown" in body(msg)


def test_query_chars_cuts_the_query():
    msg = render_listing(listing(session(1, query="SELECT " + "x" * 500)), query_chars=50)
    assert "`SELECT " + "x" * 42 + "…`" in body(msg)


def test_render_error():
    msg = valid_message(render_error("Could not read `prod`: timeout"))
    assert msg["text"] == "Could not read `prod`: timeout"
    assert msg["blocks"][0]["text"]["text"] == ":warning: Could not read `prod`: timeout"


# --- approval --------------------------------------------------------------------------------------

TARGET = {"pid": 4211, "user": "app", "database": "appdb", "application": "web", "client_addr": "10.0.0.5",
          "state": "active", "duration_secs": 125, "duration_what": "query", "query": "SELECT pg_sleep(600)",
          "backend_start": "2026-11-25T10:00:00.123456+00:00"}


def request(**kw) -> dict:
    base = {"id": "r1", "env": "prod", "host": "primary", "action": "terminate", "target": TARGET, "requester": "U1",
            "reason": "stuck deploy", "state": "pending", "created_at": T0, "expires_at": T0 + 900,
            "decided_at": None, "decided_by": None, "outcome": None, "updated_at": T0}
    base.update(kw)
    return base


@pytest.mark.parametrize("action", ["cancel", "terminate"])
def test_request_modal_for_both_session_actions(action):
    target = {"env": "prod", "host": "replica1", "payload": TARGET}
    view = request_modal(target, action, "tok", "C1", require_reason=False)
    assert validate_view(view) == []
    assert view["callback_id"] == "pgs_kill_request"
    assert json.loads(view["private_metadata"]) == {"token": "tok", "action": action, "channel": "C1"}
    assert view["title"]["text"] == f"{VERBS[action][0]} session"
    assert view["submit"]["text"] == "Request"
    reason = next(b for b in view["blocks"] if b.get("block_id") == "reason")
    assert reason["optional"] is True and reason["label"]["text"] == "Reason (optional)"
    text = body(view)
    assert f"*{VERBS[action][1]}*" in text and "`prod` standby `replica1`" in text
    assert "*pid* 4211" in text and "2m 05s (when listed)" in text


def test_request_modal_requires_a_reason_when_configured():
    view = request_modal({"env": "prod", "host": "primary", "payload": TARGET}, "cancel", "t", None, require_reason=True)
    reason = next(b for b in view["blocks"] if b.get("block_id") == "reason")
    assert reason["optional"] is False and reason["label"]["text"] == "Reason"
    assert "standby" not in body(view)


def test_pending_request_has_the_three_buttons_and_who_must_approve():
    msg = valid_message(request_message(request(), [], [], 2, ["U2", "S0DBAS", "*"]))
    assert labels(msg) == ["Approve", "Deny", "Withdraw"]
    assert [b["action_id"] for b in buttons(msg)] == ["pgs_req:approve:r1", "pgs_req:deny:r1", "pgs_req:withdraw:r1"]
    assert {b["value"] for b in buttons(msg)} == {"r1"}
    text = body(msg)
    assert "needs 2 more approvals from <@U2>, <!subteam^S0DBAS>, anyone" in text
    assert ":hourglass: *Waiting for approval*" in text
    assert "<@U1> asks to *terminate* pid 4211 on `prod`." in text and "*Reason:* stuck deploy" in text
    assert msg["text"] == "Terminate request for pid 4211 on prod by <@U1>: pending"


def test_one_more_approval_and_no_approvers_configured():
    msg = request_message(request(), [], ["U2"], 2, [])
    assert "needs 1 more approval from nobody left in access.approvers" in body(msg)
    assert "Approved by <@U2>" in body(msg)


@pytest.mark.parametrize(
    "state, line",
    [
        ("executing", ":gear: *Approved: acting now…*"),
        ("done", ":white_check_mark: *Done*"),
        ("failed", ":x: *Not done*"),
        ("denied", ":no_entry: *Denied*"),
        ("withdrawn", ":leftwards_arrow_with_hook: *Withdrawn by the requester*"),
        ("expired", ":alarm_clock: *Expired*: nobody approved in time; the buttons no longer work"),
    ],
)
def test_decided_requests_have_no_buttons_and_say_their_state(state, line):
    req = request(state=state, decided_at=T0 + 60, decided_by="U3", updated_at=T0 + 61,
                  outcome={"detail": "pid 4211 terminated"} if state in ("done", "failed") else None)
    msg = valid_message(request_message(req, ["U2"], ["U2"] if state != "denied" else [], 1, ["U2"]))
    assert not buttons(msg)
    text = body(msg)
    assert line in text
    assert msg["text"].endswith(f": {state}")
    assert "decided <!date^" in text
    assert ("Denied by <@U3>" in text) == (state == "denied")
    assert ("finished <!date^" in text) == (state in ("done", "failed"))
    assert ("*Outcome:* pid 4211 terminated" in text) == (state in ("done", "failed"))


def test_request_message_escapes_reason_and_target():
    req = request(reason=HOSTILE * 40, target={**TARGET, "user": HOSTILE, "query": HOSTILE, "application": HOSTILE},
                  outcome={"detail": HOSTILE}, state="failed")
    msg = valid_message(request_message(req, [], [], 1, ["U2"]))
    no_live_markup(msg)


def test_request_without_reason():
    assert "*Reason:* (none given)" in body(request_message(request(reason=None), [], [], 1, ["U2"]))


def test_pending_list_empty_and_full():
    empty = valid_message(pending_list([], T0))
    assert empty["text"] == "No open requests." and "No open kill requests." in body(empty)
    reqs = [request(id=f"r{i}", created_at=T0 - 300, expires_at=T0 + 600, reason=HOSTILE) for i in range(60)]
    msg = valid_message(pending_list(reqs, T0))
    assert msg["text"] == "60 open requests"
    assert msg["blocks"][0]["text"]["text"] == "Open requests (60)"
    assert "15 more not shown." in body(msg)
    assert "*Terminate* pid 4211 on `prod` · by <@U1> · 5m old · expires in 10m" in body(msg)
    no_live_markup(msg)


def test_pending_list_of_an_expired_request_says_zero_left():
    msg = pending_list([request(created_at=T0 - 1000, expires_at=T0 - 100)], T0)
    assert "expires in 0s" in body(msg)


def test_audit_list_empty_and_chunked_within_limits():
    assert "Audit log for prod: no entries yet." in body(valid_message(audit_list([], "prod")))
    assert valid_message(audit_list([], None))["text"] == "Audit log: empty"
    entries = [{"at": T0 - i, "env": "prod", "event": "terminate", "pid": 1000 + i, "actor": "U2" if i % 2 else None,
                "result": "x" * 400 if i == 0 else HOSTILE} for i in range(200)]
    msg = valid_message(audit_list(entries, "prod"))
    assert msg["text"] == "Audit log for prod: 200 latest entries"
    text = body(msg)
    assert "Terminate pid 1000 bot → " + "x" * 159 + "…" in text
    assert "pid 1001 <@U2>" in text
    assert len([b for b in msg["blocks"] if b["type"] == "section"]) > 1
    no_live_markup(msg)


# --- bulk ------------------------------------------------------------------------------------------


def sess(user="app", app="web", client="10.0.0.1", state="idle", **kw) -> dict:
    return {"user": user, "application": app, "client_addr": client, "state": state, **kw}


def test_state_counts_order():
    assert state_counts(["idle", "active", None, "idle in transaction", "idle", "fastpath function call"]) == (
        "1 active, 1 idle in transaction, 2 idle, 1 fastpath function call, 1 unknown"
    )


def test_group_lines_biggest_first_with_clients_and_the_rest_counted():
    sessions = [sess() for _ in range(3)] + [sess(user="etl", app="", client=None)] + [
        sess(user="bi", app="report", client=f"10.0.1.{i}") for i in range(5)]
    lines = group_lines(sessions)
    assert lines[0].startswith("• user `bi` · app `report` · *5* (5 idle) · from 10.0.1.0, 10.0.1.1, 10.0.1.2 and 2 more")
    assert lines[1] == "• user `app` · app `web` · *3* (3 idle) · from 10.0.0.1"
    assert lines[2] == "• user `etl` · app – · *1* (1 idle) · from local socket"
    many = [sess(user=f"u{i}") for i in range(40)]
    lines = group_lines(many, limit=25)
    assert len(lines) == 26 and lines[-1] == "• … and 15 more user/application pairs (15 sessions)"


def test_group_lines_escape():
    (line,) = group_lines([sess(user=HOSTILE, app=HOSTILE, client=HOSTILE)])
    assert "<!channel>" not in line and "&lt;!channel&gt;" in line


@pytest.mark.parametrize("allow, text", [
    (None, ":grey_question: whether `appdb` allows new connections is not known"),
    (True, ":large_green_circle: `appdb` allows new connections"),
    (False, ":no_entry: `appdb` does *not* allow new connections (`ALLOW_CONNECTIONS false`)"),
])
def test_database_state_line(allow, text):
    assert database_state_line("appdb", allow).startswith(text)


def dbinfo(**kw) -> DatabaseInfo:
    base = dict(name="appdb", oid=16384, is_template=False, allow_connections=True, conn_limit=-1, owner="app",
                bot_user="pgsessions_bot", bot_is_superuser=False, bot_can_alter=True, bot_database="postgres",
                bot_pid=1, postmaster_start="2026-11-25", port="5432", in_recovery=False, prepared_xacts=0,
                logical_slots=0)
    base.update(kw)
    return DatabaseInfo(**base)


def connected(pid: int, **kw) -> Session:
    """A session as clear-db reads it (bot.postgres.bulk.connected_to)."""
    base = dict(pid=pid, backend_start=NOW, backend_type="client backend", user="app", database="appdb",
                application="web", client_addr="10.0.0.1", state="idle", wait_event_type=None, wait_event=None,
                query="", xact_start=None, backend_secs=600.0, state_secs=60.0, is_bot=False, is_superuser=False,
                cannot_signal=None)
    base.update(kw)
    return Session(**base)


def test_clear_db_message_with_every_button():
    conns = [connected(1), connected(2, state="active"), connected(3, user="bi", cannot_signal="superuser session"),
             connected(4, is_bot=True), connected(5, backend_type="autovacuum worker", user=None)]
    tokens = {"clear_db": "tA", "clear_db_block": "tB", "allow_connections": "tC"}
    msg = valid_message(clear_db_message("prod", dbinfo(prepared_xacts=1, logical_slots=2, conn_limit=20),
                                         conns, tokens=tokens, block_why=None, terminate_why=None))
    assert msg["text"] == "3 sessions connected to `appdb` on prod"
    assert labels(msg) == ["Terminate all 3", "Block new connections and terminate all 3", "Allow connections again"]
    assert [b["action_id"] for b in buttons(msg)] == [
        "pgs_bulk:clear_db:tA", "pgs_bulk:clear_db_block:tB", "pgs_bulk:allow_connections:tC"]
    text = body(msg)
    assert "*3 sessions* connected (1 active, 2 idle) · 2 users, 1 application, 1 client address" in text
    assert "oldest connected 10m ago" in text and "connection limit 20" in text
    assert "1 session is not idle (1 active): terminating rolls back their open transactions." in text
    assert "1 session cannot be terminated by the bot: superuser session (1)" in text
    assert "Not touched by the bot: 1 autovacuum worker, 1 prepared transaction, 2 logical replication slots." in text
    assert "The bot's own connections here (1) are never terminated." in text
    assert "An approval covers exactly these 3 sessions" in text


def test_clear_db_message_empty_closed_database_and_reasons_not_offered():
    msg = valid_message(clear_db_message(
        "prod", dbinfo(allow_connections=False, is_template=True), [], tokens={"clear_db_block": "tB"},
        block_why=None, terminate_why="no session to terminate", allow_why="the bot's role does not own `appdb`"))
    assert msg["text"] == "0 sessions connected to `appdb` on prod (the database does not allow new connections)"
    assert labels(msg) == ["Block new connections"]
    text = body(msg)
    assert "*No client session* is connected to this database." in text
    assert "no connection limit · template database" in text
    assert "*Terminate all* is not offered: no session to terminate." in text
    assert "*Allow connections again* is not offered: the bot's role does not own `appdb`." in text


def test_clear_db_message_escapes_names():
    conns = [connected(1, user=HOSTILE, application=HOSTILE, client_addr=HOSTILE)]
    msg = valid_message(clear_db_message("prod", dbinfo(name=HOSTILE, owner=HOSTILE), conns, tokens={},
                                         # the *_why reasons are the bot's own mrkdwn: names in them are escaped
                                         # where they are written (bot/bulk/targets.py), not again here
                                         block_why=esc(HOSTILE), terminate_why=esc(HOSTILE)))
    no_live_markup(msg)


def test_clear_db_refused():
    msg = valid_message(clear_db_refused("`postgres` is the bot's own database"))
    assert msg["blocks"][0]["text"]["text"] == ":no_entry_sign: `postgres` is the bot's own database"


def test_bulk_offer():
    assert bulk_offer_blocks(category="idle", app="web", token="t", sessions=[], drawn=0) == []
    refused = bulk_offer_blocks(category="idle", app="web", token="t", sessions=[sess()] * 3, drawn=3,
                                refusal="more than max_bulk (2)")
    assert body(refused) == body([{"type": "context", "elements": [{"type": "mrkdwn", "text":
        ":no_entry_sign: *Terminate these 3* is not offered: more than max_bulk (2).", "verbatim": True}]}])
    blocks = bulk_offer_blocks(category="idle-tx", app="web", token="tok", sessions=[sess()] * 5, drawn=3,
                               unsignalable=2, filters="idle-tx --app web")
    assert validate_message_blocks(blocks) == []
    assert labels(blocks) == ["Terminate these 5"]
    assert buttons(blocks)[0]["action_id"] == "pgs_bulk:terminate_bulk:tok"
    text = body(blocks)
    assert "that are idle in transaction (the 3 drawn above and 2 more found by the same filter; " in text
    assert "filter `idle-tx --app web`" in text and "2 of them cannot be signalled" in text


@pytest.mark.parametrize("action, title, says", [
    ("terminate_bulk", "Terminate sessions", "*Terminate 2 sessions* of app `web` that are idle on `prod`"),
    ("clear_db", "Terminate all", "*terminate 2 sessions* connected to `appdb`"),
    ("clear_db_block", "Block + terminate all", "`ALTER DATABASE appdb WITH ALLOW_CONNECTIONS false`), then"),
    ("allow_connections", "Allow connections", "`ALTER DATABASE appdb WITH ALLOW_CONNECTIONS true`"),
])
def test_bulk_modal(action, title, says):
    payload = {"category": "idle", "app": "web", "database": "appdb", "filters": "idle --app web",
               "sessions": [sess(), sess(user="bi")]}
    view = bulk_modal({"env": "prod", "host": "primary", "payload": payload}, action, "tok", "C1", True)
    assert validate_view(view) == []
    assert view["title"]["text"] == title and view["submit"]["text"] == "Request"
    assert view["callback_id"] == "pgs_kill_request"
    assert json.loads(view["private_metadata"]) == {"token": "tok", "action": action, "channel": "C1"}
    assert says in body(view)


def bulk_request(**kw) -> dict:
    target = {"database": "appdb", "app": "web", "category": "idle", "filters": "idle --app web",
              "listed_at": T0 - 30, "sessions": [sess(pid=i) for i in range(12)]}
    base = {"id": "b1", "env": "prod", "host": "primary", "action": "clear_db_block", "target": target,
            "requester": "U1", "reason": "maintenance", "state": "pending", "created_at": T0, "expires_at": T0 + 900,
            "decided_at": None, "decided_by": None, "outcome": None}
    base.update(kw)
    return base


def test_bulk_request_pending():
    msg = valid_message(bulk_request_message(bulk_request(), [], [], 1, ["S0DBAS"]))
    assert msg["blocks"][0]["text"]["text"] == "Block new connections to appdb and terminate all 12 on prod"
    assert labels(msg) == ["Approve", "Deny", "Withdraw"]
    assert "*Size:* 12 sessions (snapshot taken <!date^" in body(msg)
    assert msg["text"] == "Block new connections to `appdb` and terminate all 12 on prod (requested by <@U1>): pending"


def test_bulk_request_executing_shows_progress():
    out = {"progress": {"handled": 5, "total": 12, "counts": {"ended": 4, "gone": 1}}}
    msg = valid_message(bulk_request_message(bulk_request(state="executing", outcome=out), [], ["U2"], 1, ["U2"]))
    text = body(msg)
    assert ":gear: *Approved: acting now…* 5 of 12 handled" in text and "*4* ended · *1* had already gone" in text
    assert not buttons(msg)


def test_bulk_request_partial_failure_lists_problems_and_offers_to_reopen():
    out = {"status": "partial", "counts": {"ended": 9, "gone": 0, "failed": 1, "skipped": 2},
           "problems": [{"pid": 7, "user": HOSTILE, "application": "web", "result": "permission denied"}],
           "skipped": [{"pid": 8, "user": "app", "application": "", "result": "used again since the listing"}],
           "blocked": True, "closed_at": T0 + 70, "allow_token": "tAllow", "arrived": 1,
           "finished_at": T0 + 72, "duration_s": 2.46, "detail": "9 of 12 ended"}
    msg = valid_message(bulk_request_message(
        bulk_request(state="failed", outcome=out, decided_at=T0 + 60), [], ["U2"], 1, ["U2"]))
    text = body(msg)
    assert ":warning: *Done, with problems*" in text
    assert "*9* ended · *0* had already gone · *2* skipped · *1* could not be signalled" in text
    assert "*Not ended*\\n• pid 7 (`&lt;!channel&gt;" in text and "permission denied" in text
    assert "*Skipped*\\n• pid 8 (`app`, app `–`): used again since the listing" in text
    assert "1 session connected after the listing and is still there" in text
    assert "does *not* allow new connections" in text and "closed by this request <!date^" in text
    assert labels(msg) == ["Allow connections again"]
    assert buttons(msg)[0]["action_id"] == "pgs_bulk:allow_connections:tAllow"
    assert "finished <!date^" in text and " in 2.5s" in text
    assert msg["text"].endswith(": failed — 9 of 12 ended")
    assert "<!channel>" not in json.dumps(msg["blocks"])


def test_bulk_request_done_then_reopened_or_dropped():
    out = {"status": "done", "counts": {"ended": 12, "gone": 0}, "blocked": True, "allow_token": "tA",
           "reopened": {"at": T0 + 600, "by": "U5,U6"}, "finished_at": T0 + 80, "duration_s": 75}
    msg = valid_message(bulk_request_message(bulk_request(state="done", outcome=out), [], ["U2"], 1, ["U2"]))
    text = body(msg)
    assert ":white_check_mark: *Done*" in text and "*12* ended" in text
    assert "reopened <!date^" in text and "(approved by <@U5>, <@U6>)" in text
    assert not buttons(msg), "no Allow button once the database is open again"
    assert " in 1m 15s" in text
    dropped = {**out, "reopened": {"at": T0 + 600, "how": "dropped"}}
    msg = valid_message(bulk_request_message(bulk_request(state="done", outcome=dropped), [], ["U2"], 1, ["U2"]))
    assert ":wastebasket: `appdb` no longer exists" in body(msg)


@pytest.mark.parametrize("action, headline", [
    ("terminate_bulk", "Terminate 12 sessions of app web on prod"),
    ("clear_db", "Terminate all 12 sessions of database appdb on prod"),
    ("allow_connections", "Allow connections to appdb again on prod"),
])
def test_bulk_request_headlines(action, headline):
    msg = valid_message(bulk_request_message(bulk_request(action=action), [], [], 1, ["U2"]))
    assert msg["blocks"][0]["text"]["text"] == headline
    # the fallback text shows the name from the database in a code span (issue 23 §8)
    assert msg["text"].startswith(headline.replace(" web ", " `web` ").replace(" appdb ", " `appdb` "))


def test_bulk_request_with_many_sessions_stays_within_limits():
    target = {"database": "appdb", "sessions": [sess(user=f"user{i}" + "x" * 60, app="a" * 100, pid=i)
                                                  for i in range(5000)]}
    out = {"status": "partial", "counts": {"ended": 1, "failed": 4999},
           "problems": [{"pid": i, "user": "u" * 200, "result": "r" * 300} for i in range(500)]}
    valid_message(bulk_request_message(bulk_request(action="clear_db", target=target, state="failed", outcome=out),
                                       [], [], 1, ["U2"]))


# --- lag: the unreachable messages -------------------------------------------------------------------


def test_unreachable_alert_reminder_and_resolved():
    alert = valid_message(render_unreachable_alert("prod", "replica1", HOSTILE, since=NOW, failures=3, check_every=30,
                                                   now=NOW + timedelta(seconds=90)))
    assert alert["blocks"][0]["text"]["text"].startswith(":electric_plug: Standby unreachable: prod / replica1")
    assert "(3 checks in a row)" in body(alert) and "Checked every 30s" in body(alert)
    no_live_markup(alert)
    reminder = valid_message(render_unreachable_reminder("prod", "replica1", HOSTILE, since=NOW,
                                                         now=NOW + timedelta(minutes=20)))
    assert "failing for 20m" in reminder["text"]
    no_live_markup(reminder)
    done = valid_message(render_unreachable_resolved("prod", "replica1", HOSTILE, since=NOW,
                                                     resolved_at=NOW + timedelta(minutes=3)))
    assert done["text"] == "Resolved: standby prod / replica1 is reachable again after 3m"
    assert "answers again" in body(done)
    no_live_markup(done)
