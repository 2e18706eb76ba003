"""Text from a database is data, never markup (issue 12 §4): every renderer, fed hostile strings.

A hostile string is whatever a client may put in application_name, a role, database or host name, a
query or an error message: ``<!channel>``, ``<@U123>``, ``<https://evil|click here>``, ``*``, ``_``,
``~``, backticks, ``&``, ``<``, ``>``, newlines and terminal escapes. After removing the bot's own
markup (its mentions of requesters and approvers, its dates, its channel), no ``<`` may be left in any
mrkdwn text or fallback; every hostile value must be shown (escaped by ``bot.render.common.esc``, or
inside a code span by ``code``), and its raw form may appear nowhere it could act.

Each value is wrapped in ``⁂`` (a character no renderer writes) so that it cannot coincide with the
bot's own words, and so that the markers at its ends are never inside a word.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.bulk.targets import block_refusal
from bot.config import LagAlert
from bot.lagwatch.detect import pick_culprits
from bot.lagwatch.model import Reason, StandbyLag, Unreachable
from bot.lagwatch.watcher import LagWatcher
from bot.postgres.bulk import DatabaseInfo
from bot.postgres.models import Category, Filters, Listing, ServerInfo, Session
from bot.render import lag as render_lag
from bot.render.approval import audit_list
from bot.render.bulk import clear_db_message, unknown_database
from bot.render.common import esc, fold_query
from bot.render.lag import (
    render_lag_alert,
    render_lag_listing,
    render_lag_reminder,
    render_lag_resolved,
    render_unreachable_alert,
    render_unreachable_reminder,
    render_unreachable_resolved,
)
from bot.render.listing import render_listing
from bot.shell.mrkdwn import to_text
from bot.shell.render import BlockRenderer
from bot.shell.terminal import Terminal
from bot.state.incidents import Incident, payload_from_json
from tests.dict_compat import (
    bulk_modal,
    bulk_offer_blocks,
    bulk_request_message,
    pending_list,
    request_message,
    request_modal,
)
from tests.harness.fake_slack import validate_message_blocks, validate_view

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MARK = "\u2042"  # ⁂
PAYLOADS = [
    "<!channel>", "<!here|here>", "<@U123>", "<#C999|general>", "<!subteam^S999>", "<https://evil.example|click here>",
    "*bold*", "_italic_", "~strike~", "`code`", "```block```", "a & b <c> d", "line1\nline2", "\x1b[31mred\x1b[0m",
    "\r\x07\x00", "&amp;&lt;", "> quote", "\u202eevil", ":rotating_light:", "pg_dump", "x*y*z",
]
ALPHABET = st.sampled_from(list("<>&*_~`!@#|^:\n\r\t\x1b[] aZ9/.") + ["\u202e", "\u0085"])


@st.composite
def hostile(draw) -> str:
    core = draw(st.one_of(st.sampled_from(PAYLOADS), st.text(ALPHABET, min_size=1, max_size=24)))
    return f"{MARK}{core}{MARK}"


# the bot's own markup: requester/approver mentions, the approvers' group, the alert channel, dates
BOT_TOKENS = re.compile(
    r"<@U(?:REQ|APPR|AUD)\d*>|<!subteam\^S0DBAS>|<#C0LAG>|<!date\^\d+\^\{date_short_pretty\} \{time_secs\}\|[^<>]*>"
)
CODE_SPAN = re.compile(r"```.*?```|`[^`]*`", re.DOTALL)
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
LOOSE_AMP = re.compile(r"&(?!amp;|lt;|gt;)")


def texts_of(obj, out: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Every text object (kind, text) in a payload, and the message's fallback ``text``."""
    if out is None:
        out = []
        if isinstance(obj, dict) and isinstance(obj.get("text"), str):
            out.append(("mrkdwn", obj["text"]))
    if isinstance(obj, dict):
        if obj.get("type") in ("mrkdwn", "plain_text") and isinstance(obj.get("text"), str):
            out.append((obj["type"], obj["text"]))
        for v in obj.values():
            if isinstance(v, dict | list):
                texts_of(v, out)
    elif isinstance(obj, list):
        for v in obj:
            texts_of(v, out)
    return out


def assert_inert(payload: dict, shown: list[str], *, folded: list[str] = ()) -> None:
    """``payload`` is safe whatever ``shown`` (and the ``folded`` query texts) held."""
    texts = texts_of(payload)
    assert texts
    mrkdwn = [t for kind, t in texts if kind == "mrkdwn"]
    for kind, t in texts:
        assert not CONTROL.search(t), (kind, t)  # no ESC, CR, bidi override... anywhere
        if kind == "plain_text":
            assert "\n" not in t
            continue
        rest = BOT_TOKENS.sub("", t)
        assert "<" not in rest and ">" not in rest, t  # nothing from the data can mention or link
        assert not LOOSE_AMP.search(rest), t
    spans = [m.group(0) for t in mrkdwn for m in CODE_SPAN.finditer(t)]
    prose = "\n".join(CODE_SPAN.sub("\x00", t) for t in mrkdwn)
    inside = "\x00".join(spans)
    values = [*shown, *(fold_query(q, 10**6) for q in folded)]
    for value in values:
        as_prose, as_code = esc(value), esc(value, in_code=True)
        assert as_prose in prose or as_code in inside, f"{value!r} is not shown escaped"
        if as_prose != value:
            assert value not in prose, f"{value!r} appears raw outside a code span"
        if as_code != value:
            assert value not in inside, f"{value!r} appears raw inside a code span"


def assert_terminal_inert(payload: dict) -> None:
    """The terminal chat shows the literal text and obeys nothing in it (no ESC reaches the screen)."""
    r = BlockRenderer()
    lines = r.message(payload.get("text"), payload.get("blocks")) if "blocks" in payload or "text" in payload else []
    if payload.get("type") == "modal":
        lines = r.view(payload)
    out = io.StringIO()
    Terminal(out, io.StringIO(), interactive=False).write(lines)
    screen = out.getvalue()
    assert "\x1b" not in screen and "\r" not in screen and "\x07" not in screen and "\u202e" not in screen
    for line in lines:
        to_text(line)  # never raises on whatever the bot drew


def session(pid: int, h: dict, query: str) -> Session:
    return Session(
        pid=pid, backend_start=NOW - timedelta(hours=1, microseconds=pid), user=h["user"], database=h["db"],
        application=h["app"], client_addr=h["host"], state="idle in transaction", wait_event_type="Client",
        wait_event=h["error"], query=query, blocked_by=(), blocking_count=0,
        categories=(Category.IDLE_TX,), query_secs=4000.0, xact_secs=4000.0, state_secs=3700.0,
        cannot_signal=h["why"] if pid % 2 else None,
    )


def target_payload(h: dict, query: str) -> dict:
    return {
        "pid": 4211, "backend_start": "2026-11-30T11:00:00.123456+00:00", "user": h["user"], "database": h["db"],
        "application": h["app"], "client_addr": h["host"], "state": "active", "query": query,
        "duration_secs": 99, "duration_what": "query",
    }


NAMES = st.fixed_dictionaries(
    {k: hostile() for k in ("user", "db", "app", "host", "why", "detail", "reason", "error", "owner", "filters")}
)
QUERY = st.one_of(hostile(), st.just(MARK + "SELECT '<!channel>' /* `x` */ FROM t\nWHERE a = '*b*'" + MARK))  # noqa: S608
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(h=NAMES, query=QUERY)
def test_a_listing_shows_hostile_names_as_typed(h, query):
    server = ServerInfo(150020, "15.20 (Debian)", 1200, 1006, False, 1, "pgsessions_bot", False, True, True)
    sessions = (session(1, h, query), session(2, h, query))
    listing = Listing("prod", "primary", server, sessions, Filters(app=h["filters"]), {"idle": 60})
    msg = render_listing(listing, tokens={1: "t1", 2: "t2"})
    assert validate_message_blocks(msg["blocks"]) == []
    assert_inert(msg, [h["user"], h["db"], h["app"], h["host"], h["why"], h["error"]], folded=[query])
    assert_terminal_inert(msg)


@SETTINGS
@given(h=NAMES, query=QUERY)
def test_a_request_an_approval_and_an_outcome_show_hostile_names_as_typed(h, query):
    target = {"env": "prod", "host": "replica1", "payload": target_payload(h, query)}
    modal = request_modal(target, "terminate", "tok", "C1", True)
    assert validate_view(modal) == []
    assert_inert(modal, [h["user"], h["db"], h["app"], h["host"]], folded=[query])
    assert_terminal_inert(modal)
    req = {
        "id": "r1", "env": "prod", "host": "replica1", "action": "terminate", "target": target["payload"],
        "requester": "UREQ1", "reason": h["reason"], "state": "pending", "created_at": 1.7e9,
        "expires_at": 1.7e9 + 900, "decided_at": None, "outcome": None, "updated_at": 1.7e9,
    }
    for state, outcome, approvals in (
        ("pending", None, []),
        ("executing", None, ["UAPPR1"]),
        ("done", {"status": "done", "detail": h["detail"]}, ["UAPPR1"]),
        ("failed", {"status": "refused", "detail": h["error"]}, ["UAPPR1"]),
    ):
        msg = request_message({**req, "state": state, "outcome": outcome, "decided_at": 1.7e9 + 5},
                              ["UAPPR1"], approvals, 1, ["UAPPR1", "S0DBAS"])
        assert validate_message_blocks(msg["blocks"]) == []
        extra = [outcome["detail"]] if outcome else []
        assert_inert(msg, [h["user"], h["db"], h["app"], h["host"], h["reason"], *extra], folded=[query])
        assert_terminal_inert(msg)


@SETTINGS
@given(h=NAMES)
def test_pending_and_audit_show_hostile_names_as_typed(h):
    base = {"env": "prod", "host": "primary", "requester": "UREQ1", "reason": h["reason"], "created_at": 100.0,
            "expires_at": 1000.0}
    reqs = [
        {**base, "action": "terminate", "target": {"pid": 42}},
        {**base, "action": "terminate_bulk", "target": {"app": h["app"], "sessions": [{}, {}]}},
        {**base, "action": "clear_db", "target": {"database": h["db"], "sessions": [{}]}},
    ]
    msg = pending_list(reqs, 200.0)
    assert_inert(msg, [h["app"], h["db"], h["reason"]])
    assert_terminal_inert(msg)
    entries = [
        {"at": 1.7e9, "env": "prod", "event": "terminate:executed", "pid": 42, "actor": "UAUD1", "result": h["detail"]},
        {"at": 1.7e9, "env": "prod", "event": "terminate_bulk:failed", "pid": 43, "actor": None, "result": h["error"]},
    ]
    msg = audit_list(entries, "prod")
    assert_inert(msg, [h["detail"], h["error"]])
    assert_terminal_inert(msg)


def culprit_row(pid: int, h: dict, query: str) -> dict:
    return dict(
        pid=pid, backend_start=NOW - timedelta(minutes=5, microseconds=pid), usename=h["user"], datname=h["db"],
        application_name=h["app"], client_addr=h["host"], state="idle in transaction", wait_event_type="Client",
        wait_event="ClientRead", query=query, query_secs=300.0, xact_secs=301.0, state_secs=299.0, backend_xmin=None,
        holds_lock=True, lock_modes="AccessShareLock", lock_objects=h["owner"], wanted_modes="AccessExclusiveLock",
        old_snapshot=False, xmin_age=None, xmin_behind=None, is_suspect=True, is_superuser=False, bot_is_super=False,
        bot_can_signal=True, bot_has_privs=True,
    )


def measurement(h: dict, query: str, lag_bytes: int = 256) -> StandbyLag:
    culprits, _ = pick_culprits(Reason.LOCK, [culprit_row(1000 + i, h, query) for i in range(3)])
    return StandbyLag(
        env="prod", host="replica1", measured_at=NOW, in_recovery=True, receive_lsn="0/3000100",
        replay_lsn="0/3000000", lag_bytes=lag_bytes, replay_age=120.0, last_replay_at=NOW - timedelta(seconds=120),
        replay_paused=False, receiver_status=h["error"], slot_name="s1", wal_receiver_name="walreceiver",
        max_standby_streaming_delay="-1", recovery_min_apply_delay="0", startup_pid=42,
        startup_wait="Lock/relation", reason=Reason.LOCK, culprits=culprits,
    )


@SETTINGS
@given(h=NAMES, query=QUERY)
def test_a_lag_alerts_whole_life_shows_hostile_names_as_typed(h, query):
    alert = LagAlert(channel="C0LAG", threshold=30, check_every=30, consecutive=2)
    names = [h["user"], h["db"], h["app"], h["host"]]
    first = measurement(h, query)
    opened = render_lag_alert(first, alert, since=NOW, tokens={1000: "t0", 1001: "t1"}, reminder_every=900)
    assert validate_message_blocks(opened["blocks"]) == []
    assert_inert(opened, names, folded=[query])
    assert_terminal_inert(opened)
    updated = render_lag_alert(measurement(h, query, 999_999), alert, since=NOW, tokens={1002: "t2"})
    assert_inert(updated, names, folded=[query])
    reminder = render_lag_reminder(first, opened_at=NOW - timedelta(minutes=15), now=NOW)
    assert_inert(reminder, [])

    # the "what was done" lines come from the audit and the culprits seen, as the watcher writes them
    entries = [{"at": NOW.timestamp(), "host": "replica1", "event": "terminate:executed", "pid": 1000,
                "backend_start": "x", "request_id": None, "db_user": h["user"]}]
    fake = SimpleNamespace(store=SimpleNamespace(audit_entries=lambda **kw: entries), render=render_lag)
    inc = Incident("i1", "prod", "replica1", "lag", True, NOW.timestamp() - 300, None, "C0LAG", "1.1", None, None,
                   payload_from_json("lag", {"seen": {"1001@y": {"pid": 1001, "backend_start": "y", "kind": "lock",
                                                                 "user": h["db"], "application": h["app"]}}}))
    done = LagWatcher.what_was_done(fake, inc)
    resolved = render_lag_resolved(
        "prod", "replica1", opened_at=NOW - timedelta(minutes=5), resolved_at=NOW, since=None, peak_secs=300,
        peak_bytes=5_000_000, reasons=["lock conflict", h["why"]], done=done, last=first,
    )
    assert validate_message_blocks(resolved["blocks"]) == []
    assert_inert(resolved, [h["user"], h["db"], h["app"], h["why"]])
    assert_terminal_inert(resolved)

    listing = render_lag_listing("prod", [first, Unreachable("prod", "replica2", h["error"], NOW)], alert=alert,
                                 tokens={("replica1", 1000): "t0"}, primary_error=h["detail"])
    assert_inert(listing, [*names, h["error"], h["detail"]], folded=[query])
    for msg in (
        render_unreachable_alert("prod", "replica2", h["error"], since=NOW, failures=3, check_every=30, now=NOW),
        render_unreachable_reminder("prod", "replica2", h["error"], since=NOW - timedelta(minutes=5), now=NOW),
        render_unreachable_resolved("prod", "replica2", h["error"], since=NOW - timedelta(minutes=5), resolved_at=NOW),
    ):
        assert_inert(msg, [h["error"]])
        assert_terminal_inert(msg)


def connected(pid: int, h: dict) -> Session:
    """A session as clear-db reads it (bot.postgres.bulk.connected_to)."""
    return Session(pid=pid, backend_start=NOW - timedelta(hours=1), backend_type="client backend", user=h["user"],
                   database=None, application=h["app"], client_addr=h["host"], state="idle", wait_event_type=None,
                   wait_event=None, query="", xact_start=None, backend_secs=3600.0, state_secs=3600.0, is_bot=False,
                   is_superuser=False, cannot_signal=h["why"] if pid % 2 else None)


@SETTINGS
@given(h=NAMES)
def test_a_bulk_job_shows_hostile_names_as_typed(h):
    info = DatabaseInfo(h["db"], 16384, False, True, -1, h["owner"], h["user"], False, False, "postgres", 1,
                        "x", "5432", False, 0, 0)
    # the reasons why an action is not offered are mrkdwn their producers write, names escaped
    block_why = block_refusal(info)
    assert block_why is not None
    overview = clear_db_message("prod", info, [connected(1, h), connected(2, h)], tokens={"clear_db": "t1"},
                                block_why=block_why, terminate_why=None, allow_why=block_why)
    assert validate_message_blocks(overview["blocks"]) == []
    assert_inert(overview, [h["db"], h["owner"], h["user"], h["app"], h["host"], h["why"]])
    assert_terminal_inert(overview)
    assert_inert({"text": unknown_database(h["db"], [h["db"] + "x"])}, [h["db"]])

    sessions = [{"pid": p, "backend_start": "x", "user": h["user"], "application": h["app"], "client_addr": h["host"],
                 "state": "idle"} for p in (1, 2, 3)]
    offer = {"text": "offer", "blocks": bulk_offer_blocks(category="idle", app=h["app"], token="tb", sessions=sessions,
                                                          drawn=2, filters=h["filters"])}
    assert_inert(offer, [h["app"], h["user"], h["host"], h["filters"]])
    target = {"env": "prod", "host": "primary",
              "payload": {"app": h["app"], "category": "idle", "filters": h["filters"], "sessions": sessions,
                          "listed_at": 1.7e9}}
    modal = bulk_modal(target, "terminate_bulk", "tb", "C1", False)
    assert validate_view(modal) == []
    assert_inert(modal, [h["app"], h["user"], h["host"], h["filters"]])
    assert_terminal_inert(modal)
    for action, tgt in (("terminate_bulk", target["payload"]),
                        ("clear_db_block", {"database": h["db"], "sessions": sessions, "listed_at": 1.7e9})):
        item = {"pid": 1, "user": h["user"], "application": h["app"], "result": h["error"]}
        req = {"id": "r2", "env": "prod", "host": "primary", "action": action, "target": tgt, "requester": "UREQ1",
               "reason": h["reason"], "state": "failed", "created_at": 1.7e9, "expires_at": 1.7e9 + 900,
               "decided_at": 1.7e9 + 5, "updated_at": 1.7e9 + 9,
               "outcome": {"status": "partial", "detail": h["detail"], "problems": [item], "skipped": [item],
                           "counts": {"ended": 1, "failed": 1}, "blocked": True, "closed_at": 1.7e9 + 6,
                           "reopened": {"how": h["why"], "at": 1.7e9 + 8}}}
        msg = bulk_request_message(req, ["UAPPR1"], ["UAPPR1"], 1, ["UAPPR1"])
        assert validate_message_blocks(msg["blocks"]) == []
        assert_inert(msg, [h["user"], h["app"], h["error"], h["detail"], h["reason"]])
        assert_terminal_inert(msg)


def test_the_escaping_function_itself():
    assert esc("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert esc("*b* _i_ ~s~ `c`") == "\u2217b\u2217 \u02cdi\u02cd \u223cs\u223c \u02cbc\u02cb"
    assert esc("pg_dump a*b x~y") == "pg_dump a*b x~y"  # inside a word Slack formats nothing: kept
    assert esc("*b* _i_", in_code=True) == "*b* _i_"  # inside a code span Slack formats nothing
    assert esc("`", in_code=True) == "\u02cb"  # ...but a backtick would close the span
    assert esc("a\nb\x1b[31m\r\u202e") == "a\u21b5b\u241b[31m\u240d[U+202E]"


def test_the_terminal_chat_shows_the_literal_text_and_obeys_no_escape_sequence():
    h = {"user": "bob", "db": "appdb", "app": "<!channel> *b* \x1b[2J\x1b[31mred", "host": "10.0.0.1", "why": None,
         "error": "ClientRead"}
    server = ServerInfo(150020, "15.20 (Debian)", 1200, 1006, False, 1, "pgsessions_bot", False, True, True)
    query = "SELECT '<@U123>' /* `x` */\r\x1b]0;title\x07"
    msg = render_listing(Listing("prod", "primary", server, (session(2, h, query),), Filters(), {}), tokens={2: "t2"})
    out = io.StringIO()
    Terminal(out, io.StringIO(), interactive=False).write(BlockRenderer().message(msg["text"], msg["blocks"]))
    screen = out.getvalue()
    assert "app `<!channel> *b* \u241b[2J\u241b[31mred`" in screen  # as typed, escapes shown, nothing obeyed
    assert "SELECT '<@U123>' /* \u02cbx\u02cb */ \u241b]0;title\u2407" in screen
    assert "\x1b" not in screen and "\x07" not in screen and "\r" not in screen


# --- issue 23 §8: no name from a database becomes a link, a mention or an emoji ----------------------------


def linky(field: str) -> str:
    """A name a client or a database owner may choose: a bare URL, a channel, an emoji, @here, emphasis."""
    return f"{MARK}{field} http://evil.example/{field} www.evil.example #general :fire: @here *bold* <!channel>{MARK}"


LINKY = {k: linky(k) for k in ("user", "db", "app", "owner", "rel", "gid", "slot", "standby")}
LINKY_TOKENS = ("evil.example", "#general", ":fire:", "@here")


def mrkdwn_objects(obj) -> list[dict]:
    if isinstance(obj, dict):
        own = [obj] if obj.get("type") == "mrkdwn" else []
        return own + [o for v in obj.values() if isinstance(v, dict | list) for o in mrkdwn_objects(v)]
    if isinstance(obj, list):
        return [o for v in obj for o in mrkdwn_objects(v)]
    return []


def assert_nothing_autolinks(payload: dict) -> None:
    """Every mrkdwn object is verbatim, and nothing from the names above would be drawn as a link, a mention
    or an emoji anywhere: blocks, fallback text, plain_text (the fake Slack's rules)."""
    from tests.harness.fake_slack import _payload_autolinks

    objects = mrkdwn_objects(payload.get("blocks") or payload)
    assert objects and all(o.get("verbatim") is True for o in objects), [o for o in objects if not o.get("verbatim")]
    found = [(ptr, kind, tok) for ptr, kind, tok in _payload_autolinks(payload)
             if any(t in tok for t in LINKY_TOKENS)]
    assert not found, found


def test_listings_requests_and_bulk_jobs_draw_no_link_from_a_name():
    h = {**LINKY, "host": "10.0.0.9", "why": None, "error": "ClientRead", "filters": "--app x", "reason": "slow"}
    server = ServerInfo(150020, "15.20 (Debian)", 1200, 1006, False, 1, "pgsessions_bot", False, True, True)
    sessions = (session(1, h, "SELECT 1"), session(2, h, "SELECT 2"))
    msg = render_listing(Listing("prod", "primary", server, sessions, Filters(), {"idle": 60}), tokens={2: "t2"})
    assert_nothing_autolinks(msg)

    target = {"env": "prod", "host": "primary", "payload": target_payload(h, "SELECT 1")}
    assert_nothing_autolinks(request_modal(target, "terminate", "tok", "C1", True))
    req = {"id": "r1", "env": "prod", "host": "primary", "action": "terminate", "target": target["payload"],
           "requester": "UREQ1", "reason": "slow", "state": "done", "created_at": 1.7e9, "expires_at": 1.7e9 + 900,
           "decided_at": 1.7e9 + 5, "outcome": {"status": "done", "detail": "terminated"}, "updated_at": 1.7e9}
    assert_nothing_autolinks(request_message(req, ["UAPPR1"], ["UAPPR1"], 1, ["UAPPR1"]))
    base = {"env": "prod", "host": "primary", "requester": "UREQ1", "reason": "slow", "created_at": 100.0,
            "expires_at": 1000.0}
    assert_nothing_autolinks(pending_list([
        {**base, "action": "terminate_bulk", "target": {"app": h["app"], "sessions": [{}, {}]}},
        {**base, "action": "clear_db", "target": {"database": h["db"], "sessions": [{}]}},
    ], 200.0))

    info = DatabaseInfo(h["db"], 16384, False, True, -1, h["owner"], h["user"], False, False, "postgres", 1,
                        "x", "5432", False, 0, 0)
    overview = clear_db_message("prod", info, [connected(1, h), connected(2, h)], tokens={"clear_db": "t1"},
                                block_why=block_refusal(info), terminate_why=None, allow_why=None)
    assert_nothing_autolinks(overview)
    refs = [{"pid": p, "backend_start": "x", "user": h["user"], "application": h["app"], "client_addr": "10.0.0.9",
             "state": "idle"} for p in (1, 2)]
    for action, tgt in (("terminate_bulk", {"app": h["app"], "category": "idle", "sessions": refs, "listed_at": 1.7e9}),
                        ("clear_db_block", {"database": h["db"], "sessions": refs, "listed_at": 1.7e9})):
        item = {"pid": 1, "user": h["user"], "application": h["app"], "result": "ended"}
        breq = {"id": "r2", "env": "prod", "host": "primary", "action": action, "target": tgt, "requester": "UREQ1",
                "reason": "slow", "state": "done", "created_at": 1.7e9, "expires_at": 1.7e9 + 900,
                "decided_at": 1.7e9 + 5, "updated_at": 1.7e9 + 9,
                "outcome": {"status": "done", "detail": "done", "problems": [item], "counts": {"ended": 1}}}
        assert_nothing_autolinks(bulk_request_message(breq, ["UAPPR1"], ["UAPPR1"], 1, ["UAPPR1"]))


def test_lag_alerts_draw_no_link_from_a_name():
    h = {**LINKY, "host": "10.0.0.9", "error": "streaming", "why": "x"}
    alert = LagAlert(channel="C0LAG", threshold=30, check_every=30, consecutive=2)
    first = measurement(h, "SELECT 1")
    assert_nothing_autolinks(render_lag_alert(first, alert, since=NOW, tokens={1000: "t0"}, reminder_every=900))
    assert_nothing_autolinks(render_lag_listing("prod", [first], alert=alert, tokens={("replica1", 1000): "t0"}))


def test_watch_alerts_reminders_and_resolutions_draw_no_link_from_a_name():
    from bot.render.watch import render_alert, render_reminder, render_resolved
    from bot.watch import rules
    from bot.watch.model import Held
    from tests.test_watch_rules import s, snap, watch

    n = LINKY
    w = watch(lock_pileup={"waiters": 1, "wait": "1h"}, idle_in_transaction="1s", long_running="1s",
              connections="1%", xmin_horizon="1s")
    sessions = [s(1, state="idle in transaction", app=n["app"], user=n["user"], db=n["db"], xact_secs=10, xmin_age=3,
                  state_secs=10),
                *[s(10 + i, blocked_by=[1], app=n["app"], user=n["user"], wait_mode="AccessExclusiveLock", wait_secs=3)
                  for i in range(3)],
                *[s(100 + i, app=n["app"], query_secs=100) for i in range(3)],
                *[s(200 + i, state="idle", app=n["app"]) for i in range(40)]]
    prepared = [{"gid": n["gid"], "owner": n["owner"], "database": n["db"], "xid_age": 9, "secs": 50.0}]
    slots = [{"slot_name": n["slot"], "slot_type": "physical", "active": True, "xmin": "5", "catalog_xmin": None,
              "xid_age": 8, "retained_bytes": 10.0}]
    feedback = [{"application_name": n["standby"], "client_addr": "10.0.0.2", "xmin": "7", "xid_age": 7}]
    found = rules.conditions(snap(*sessions, held=[Held(1, "RowExclusiveLock", "relation", n["rel"])],
                                  prepared=prepared, slots=slots, feedback=feedback), w)
    kinds = {c.kind for c in found}
    assert {"lock_pileup", "idle_in_tx", "long_running", "connections", "xmin_horizon"} <= kinds, kinds
    for c in found:
        for msg in (
            render_alert(c.kind, "prod", "primary", c.facts, incident_id="i1", opened_at=0.0, now=100.0),
            render_reminder(c.kind, "prod", "primary", c.facts, opened_at=0.0, now=1000.0),
            render_resolved(c.kind, "prod", "primary", c.facts, opened_at=0.0, resolved_at=100.0, done=[]),
        ):
            assert_nothing_autolinks(msg)
    # the oldest xmin holder of each kind is named in the fallback text and the reminder: in a code span
    for holder in ("prepared", "slot", "feedback"):
        only = rules.conditions(snap(prepared=prepared if holder == "prepared" else (),
                                     slots=slots if holder == "slot" else (),
                                     feedback=feedback if holder == "feedback" else ()), w)
        for c in only:
            assert_nothing_autolinks(render_reminder(c.kind, "prod", "primary", c.facts, opened_at=0.0, now=1000.0))


def test_locks_draw_no_link_from_a_relation_or_an_application_name():
    from bot.postgres.locks import LockGraph, LockObject, LockRef, Waiter, build_forest
    from bot.render.locks import render_locks

    obj = LockObject("relation", relation=16384, rel_name=LINKY["rel"])
    other_db = LockObject("relation", relation=99, lock_db=LINKY["db"])
    waits = {20: Waiter(20, (10,), LockRef("AccessExclusiveLock", False, obj, 9.0)),
             30: Waiter(30, (20,), LockRef("AccessShareLock", False, other_db, 3.0))}
    h = {**LINKY, "host": "10.0.0.9", "why": None, "error": "ClientRead"}
    graph = LockGraph("prod", "primary", {p: session(p, h, "SELECT 1") for p in (10, 20, 30)}, waits,
                      holds_wanted={10: (LockRef("RowExclusiveLock", True, obj),)}, read_at=NOW)
    msg = render_locks(graph, build_forest(waits), details_tokens={10: "d10", 20: "d20", 30: "d30"})
    assert "`" + esc(LINKY["rel"], in_code=True) + "`" in json.dumps(msg, ensure_ascii=False).replace("\\\\", "\\")
    assert_nothing_autolinks(msg)


@pytest.mark.parametrize("text, kinds", [
    ("see http://evil.example and #general :fire: @here", {"url", "channel", "emoji", "mention"}),
    ("`http://evil.example #general :fire: @here` <https://x|y> <#C1>", set()),
])
def test_the_fake_slack_reports_what_would_autolink(text, kinds):
    from tests.harness.fake_slack import _payload_autolinks, autolinks

    assert {k for k, _ in autolinks(text)} == kinds
    assert {k for k, _ in autolinks(text, verbatim=True)} == kinds & {"emoji"}
    block = {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}
    assert {k for _, k, _ in _payload_autolinks({"text": "fallback", "blocks": [block]})} == kinds & {"emoji"}
