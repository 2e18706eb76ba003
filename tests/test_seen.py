"""Acting only on what was seen, at every seam (issue 23 §1-§5, §7).

Every end-to-end test drives the real bot over signed HTTP against real PostgreSQL and the fake Slack
Web API: a Terminate of a query that ended is refused, a Cancel of a fastpath function call works, every
kind of button ages by ``access.request_ttl``, a request of the previous release is checked exactly, one
submission makes one request and a replayed slash command or click does nothing, and an execution that
outlives ``interrupted_after`` leaves one truth.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import struct
import threading
import time
from typing import Any

import pytest
from psycopg import sql
from sqlalchemy import text as sqltext

from bot.approval.models import RequestState
from tests.harness.bot import BotUnderTest
from tests.harness.flows import (
    answer_with,
    click,
    find_button,
    post_listing,
    request_kill,
    wait_state,
    wait_until,
)
from tests.test_trust import Conns, activity, alive, cfg, events_of, wait_active


@pytest.fixture
def bot(pg, fake_slack):
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    b = BotUnderTest(cfg(pg), fake_slack).start()
    yield b
    b.close()


@pytest.fixture
def conns(pg):
    c = Conns(pg)
    yield c
    c.close()


def request_row(bot, msg):
    approve = find_button(msg, "Approve")
    assert approve is not None
    return bot.rt.store.get_request(approve["value"])


def age_token(bot, token: str, seconds: float) -> None:
    """Make a button token (and the read it came from) ``seconds`` older."""
    with bot.rt.store.tx() as c:
        row = c.execute(sqltext("SELECT payload FROM pgs_targets WHERE token = :t"), {"t": token}).first()
        payload = json.loads(row[0])
        if payload.get("listed_at") is not None:
            payload["listed_at"] -= seconds
        c.execute(sqltext("UPDATE pgs_targets SET created_at = created_at - :age, payload = :p WHERE token = :t"),
                  {"age": seconds, "p": json.dumps(payload), "t": token})


# --- §1: Terminate of a session listed 'active' needs the same query still active ---------------------


def test_terminate_of_a_listed_query_that_ended_leaves_the_open_transaction_alone(bot, pg, conns):
    """The listed query ends and the session sits idle in transaction with the same query_start: the
    approved Terminate must not kill it."""
    conn, app = conns.open("active")
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    running = conns.run(conn, "SELECT pg_sleep(3) /* Q1 */")
    wait_active(pg, pid, "Q1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    req = request_row(bot, msg)
    assert req.session.state == "active", "listed while the query ran"
    wait_until(lambda: running.get("done"), 10, "Q1 finished by itself")
    assert activity(pg, pid)[0] == "idle in transaction"
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    text = json.dumps(done.blocks)
    assert "moved on from the query that was listed" in text and "it is now idle in transaction" in text, text
    assert alive(pg, pid), "the session idle in transaction was killed"
    assert bot.rt.store.get_request(req.id).outcome.signalled is False
    assert "terminate:moved" in events_of(bot) and "terminate:executed" not in events_of(bot)
    conn.execute("ROLLBACK")


def test_terminate_of_the_listed_query_still_running_works(bot, pg, conns):
    conn, app = conns.open("active")
    pid = conn.info.backend_pid
    conns.run(conn, "SELECT pg_sleep(30) /* Q1 */")
    wait_active(pg, pid, "Q1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    click(bot, msg, "Approve", "U2")
    wait_state(bot, msg, "*Done*")
    wait_until(lambda: not alive(pg, pid), 5, "terminated")


# --- §2: Cancel of a fastpath function call -------------------------------------------------------


class _ArgBlockValue(ctypes.Union):
    _fields_ = [("ptr", ctypes.c_void_p), ("integer", ctypes.c_int)]


class _ArgBlock(ctypes.Structure):
    _fields_ = [("len", ctypes.c_int), ("isint", ctypes.c_int), ("u", _ArgBlockValue)]


class FastpathClient:
    """A client that calls a function through libpq's fast-path interface (PQfn), the way some drivers
    call large-object functions: pg_stat_activity shows it as 'fastpath function call'. psycopg has no
    PQfn, so this talks to the system libpq through ctypes (its own connection, not psycopg's)."""

    def __init__(self, dsn: str):
        name = ctypes.util.find_library("pq")
        if name is None:
            pytest.skip("no system libpq for a fast-path function call")
        lib = ctypes.CDLL(name)
        lib.PQconnectdb.restype, lib.PQconnectdb.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
        lib.PQstatus.argtypes = [ctypes.c_void_p]
        lib.PQbackendPID.argtypes = [ctypes.c_void_p]
        lib.PQfinish.argtypes = [ctypes.c_void_p]
        lib.PQfn.restype = ctypes.c_void_p
        lib.PQfn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                             ctypes.c_int, ctypes.POINTER(_ArgBlock), ctypes.c_int]
        lib.PQresultStatus.argtypes = [ctypes.c_void_p]
        lib.PQresultErrorMessage.argtypes, lib.PQresultErrorMessage.restype = [ctypes.c_void_p], ctypes.c_char_p
        lib.PQclear.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.conn = lib.PQconnectdb(dsn.encode())
        assert lib.PQstatus(self.conn) == 0, "the fast-path client could not connect"
        self.pid = int(lib.PQbackendPID(self.conn))
        self.result: dict[str, Any] = {}
        self.thread: threading.Thread | None = None

    def call_bigint(self, fn_oid: int, arg: int) -> None:
        """Call ``fn_oid(arg bigint)`` through the fast path in a thread (it may block)."""
        buf = ctypes.create_string_buffer(struct.pack("!q", arg), 8)
        args = (_ArgBlock * 1)()
        args[0].len, args[0].isint, args[0].u.ptr = 8, 0, ctypes.cast(buf, ctypes.c_void_p)
        out, out_len = ctypes.create_string_buffer(16), ctypes.c_int(0)
        self._alive = (buf, args, out, out_len)  # kept until the call returned

        def go() -> None:
            res = self.lib.PQfn(self.conn, fn_oid, out, ctypes.byref(out_len), 0, args, 1)
            self.result["error"] = (self.lib.PQresultErrorMessage(res) or b"").decode()
            self.lib.PQclear(res)
            self.result["done"] = True

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(10)
        self.lib.PQfinish(self.conn)


def test_cancel_of_a_fastpath_function_call_is_offered_and_works(bot, pg, conns):
    """A fast-path call blocked on an advisory lock: listed (blocked), Cancel offered, approved, cancelled."""
    holder, _ = conns.open("holder")
    holder.execute("SELECT pg_advisory_lock(2342)")
    app = f"fastpath-{time.monotonic_ns() % 10**8}"
    fp = FastpathClient(pg.primary.dsn(user="app_user", dbname="appdb", application_name=app))
    try:
        lock_fn = pg.primary.sql("SELECT 'pg_advisory_lock(bigint)'::regprocedure::oid")[0][0]
        fp.call_bigint(lock_fn, 2342)
        wait_until(lambda: activity(pg, fp.pid)[0] == "fastpath function call", 10, "the fast-path call waits")
        msg = request_kill(bot, "test", app, fp.pid, "Cancel")
        click(bot, msg, "Approve", "U2")
        done = wait_state(bot, msg, "*Done*")
        assert "moved on" not in json.dumps(done.blocks)
        wait_until(lambda: fp.result.get("done"), 10, "the fast-path call was cancelled")
        assert "canceling statement due to user request" in fp.result["error"]
        assert alive(pg, fp.pid), "Cancel ends the call, not the session"
        assert "cancel:executed" in events_of(bot)
    finally:
        holder.execute("SELECT pg_advisory_unlock_all()")
        fp.close()


def test_cancel_of_a_fastpath_call_that_ended_cancels_nothing(bot, pg, conns):
    """The listed fast-path call returns and another one starts: state_change moved, nothing signalled."""
    holder, _ = conns.open("holder")
    holder.execute("SELECT pg_advisory_lock(2343)")
    app = f"fastpath-{time.monotonic_ns() % 10**8}"
    fp = FastpathClient(pg.primary.dsn(user="app_user", dbname="appdb", application_name=app))
    try:
        lock_fn = pg.primary.sql("SELECT 'pg_advisory_lock(bigint)'::regprocedure::oid")[0][0]
        fp.call_bigint(lock_fn, 2343)
        wait_until(lambda: activity(pg, fp.pid)[0] == "fastpath function call", 10, "the first call waits")
        msg = request_kill(bot, "test", app, fp.pid, "Cancel")
        holder.execute("SELECT pg_advisory_unlock(2343)")
        wait_until(lambda: fp.result.get("done"), 10, "the first call got its lock")
        fp.thread.join(5)
        holder.execute("SELECT pg_advisory_lock(2344)")
        fp.result.clear()
        fp.call_bigint(lock_fn, 2344)
        wait_until(lambda: activity(pg, fp.pid)[0] == "fastpath function call", 10, "the second call waits")
        click(bot, msg, "Approve", "U2")
        done = wait_state(bot, msg, "*Not done*")
        text = json.dumps(done.blocks)
        assert "moved on from the query that was listed" in text, text
        assert "it is now in a fastpath function call that started" in text, text
        assert not fp.result.get("done"), "the second call was cancelled"
        assert "cancel:moved" in events_of(bot)
    finally:
        holder.execute("SELECT pg_advisory_unlock_all()")
        fp.close()


@pytest.mark.unit
def test_the_running_states_are_one_list_used_by_offering_and_by_the_statements():
    from bot.postgres.models import QUERY_RUNNING_STATES, runs_query
    from bot.postgres.signals import binding_key, binding_params
    from bot.postgres.sql import query

    assert QUERY_RUNNING_STATES == ("active", "fastpath function call")
    assert all(runs_query(s) for s in QUERY_RUNNING_STATES) and not runs_query("idle in transaction")
    assert binding_params({"state": "active"})["running_states"] == list(QUERY_RUNNING_STATES)
    for name in ("signal_cancel", "sessions"):
        code = "\n".join(line.split("--")[0] for line in query(name).splitlines())
        assert "%(running_states)s" in code, name
        assert "fastpath" not in code and "'active'" not in code, f"{name} lists the running states itself"
    # what binds a signal, by the state the session was listed in
    assert binding_key("terminate", "active") == "query_start"
    assert binding_key("cancel", "active") == "query_start"
    assert binding_key("cancel", "fastpath function call") == "state_change"
    assert binding_key("terminate", "fastpath function call") == "state_change"
    assert binding_key("terminate", "idle in transaction") == "xact_start"
    assert binding_key("terminate", "idle in transaction (aborted)") == "xact_start"
    assert binding_key("terminate", "idle") == "state_change"


@pytest.mark.unit
def test_alerts_offer_cancel_only_where_a_query_runs():
    """The session watch's lock-pileup root and its session rows use the same list as the listing: an
    idle root (a session advisory lock) gets Terminate, a fast-path call gets Cancel."""
    from bot.render.watch import render_alert
    from bot.watch import rules
    from bot.watch.rules import LOCK_PILEUP
    from tests.test_watch_rules import s, snap, watch

    def labels(root_state: str) -> list[str]:
        pile = rules.lock_pileups(snap(s(1, state=root_state), *[s(10 + i, blocked_by=[1], wait_secs=1) for i in range(3)]),
                                  watch(lock_pileup={"waiters": 2, "wait": "1h"}))[0]
        msg = render_alert(LOCK_PILEUP, "prod", "primary", pile.facts, incident_id="i", opened_at=0, now=1,
                           tokens={1: "tok1"})
        return [e["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]

    assert labels("active") == ["Cancel 1", "Acknowledge"]
    assert labels("fastpath function call") == ["Cancel 1", "Acknowledge"]
    assert labels("idle") == ["Terminate 1", "Acknowledge"]
    assert labels("idle in transaction") == ["Terminate 1", "Acknowledge"]


# --- §3: every button ages the same way -----------------------------------------------------------

CLEAR_DB = "seen_cleardb"


@pytest.fixture(scope="module")
def clear_db(pg):
    def drop() -> None:
        if pg.primary.sql("SELECT 1 FROM pg_database WHERE datname = %s", (CLEAR_DB,)):
            pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(CLEAR_DB)))
            pg.primary.sql(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(CLEAR_DB)))

    drop()
    pg.primary.sql(sql.SQL("CREATE DATABASE {} OWNER pgsessions_bot").format(sql.Identifier(CLEAR_DB)))
    yield CLEAR_DB
    drop()


def bulk_buttons(msg) -> dict[str, dict]:
    out = {}
    for block in msg.blocks or []:
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            if el.get("type") == "button" and el["action_id"].startswith("pgs_bulk:"):
                out[el["action_id"].split(":")[1]] = el
    return out


@pytest.mark.parametrize("action", ["clear_db", "clear_db_block"])
def test_an_old_clear_db_button_is_refused_with_the_listing_message(bot, pg, clear_db, action):
    victim = pg.primary.connect(user="app_user", dbname=clear_db, application_name="pooled")
    try:
        pid = victim.info.backend_pid
        msg = post_listing(bot, f"test clear-db {clear_db}")
        button = bulk_buttons(msg)[action]
        ttl = bot.rt.config.environments["test"].access.request_ttl
        age_token(bot, button["value"], 6 * 86400)
        bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
        answer = answer_with(bot.fake, "for a fresh listing")
        assert f"/pgsessions test clear-db {clear_db}" in answer.text and "access.request_ttl" in answer.text
        assert not bot.fake.calls_for("views.open")
        assert alive(pg, pid) and ttl < 6 * 86400
        assert not bot.rt.store.requests_in(tuple(RequestState))
    finally:
        victim.close()


def test_a_clear_db_button_that_grows_old_while_its_form_is_open_is_refused_at_submit(bot, pg, clear_db):
    victim = pg.primary.connect(user="app_user", dbname=clear_db, application_name="pooled")
    try:
        msg = post_listing(bot, f"test clear-db {clear_db}")
        button = bulk_buttons(msg)["clear_db"]
        bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
        opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True), 10, "views.open")
        view = opened[0].params["view"]
        view = json.loads(view) if isinstance(view, str) else view
        age_token(bot, button["value"], bot.rt.config.environments["test"].access.request_ttl + 5)
        reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                          state_values={"reason": {"reason": "maintenance"}}, user_id="U1")
        assert reply.status == 200 and "for a fresh listing" in reply.body, reply.body
        assert not bot.rt.store.requests_in(tuple(RequestState))
        assert alive(pg, victim.info.backend_pid)
    finally:
        victim.close()


def test_an_old_terminate_these_n_button_is_refused(bot, pg, conns):
    conn, app = conns.open("sweep")
    conn.execute("SELECT 1")
    msg = post_listing(bot, f"test idle --app {app} --min 0s")
    button = bulk_buttons(msg)["terminate_bulk"]
    age_token(bot, button["value"], bot.rt.config.environments["test"].access.request_ttl + 5)
    bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
    answer = answer_with(bot.fake, "for a fresh listing")
    assert f"/pgsessions test idle --min 0s --app {app}`" in answer.text and "access.request_ttl" in answer.text
    assert not bot.fake.calls_for("views.open")
    assert alive(pg, conn.info.backend_pid)


def test_an_old_alert_button_is_refused_with_the_listing_message(pg, fake_slack, conns):
    """A session-watch alert's Cancel ages like a listing's: past access.request_ttl it opens no form."""
    from tests.test_watch import config as watch_config
    from tests.test_watch import wait_alert

    fake_slack.usergroups = {"S0DBAS": ["U7"]}
    conn, _app = conns.open("alerted")
    pid = conn.info.backend_pid
    conns.run(conn, "SELECT pg_sleep(60) /* ALERTED */")
    wait_active(pg, pid, "ALERTED")
    with BotUnderTest(watch_config(pg, long_running="1s"), fake_slack, scheduler=True) as bot:
        msg = wait_alert(fake_slack, "Long-running queries on prod")
        button = find_button(msg, f"Cancel {pid}")
        assert button is not None, msg.blocks
        age_token(bot, button["value"], bot.rt.config.environments["prod"].access.request_ttl + 5)
        n_views = len(fake_slack.calls_for("views.open"))
        bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
        answer = answer_with(fake_slack, "for a fresh listing")
        assert "access.request_ttl" in answer.text and "/pgsessions prod" in answer.text
        assert len(fake_slack.calls_for("views.open")) == n_views
        assert activity(pg, pid)[0] == "active"


@pytest.mark.unit
def test_every_token_kind_ages_by_request_ttl_from_its_read():
    from bot.approval.ids import ALLOW_CONNECTIONS, CLEAR_DB, CLEAR_DB_BLOCK, TERMINATE_BULK
    from bot.approval.models import BulkTarget, DatabaseTarget, SessionTarget, StoredTarget
    from bot.approval.targets import ages, token_age_refusal
    from bot.render.common import phrase

    def stored(target, created_at=1000.0):
        return StoredTarget(token="t", env="prod", host="primary", created_at=created_at, target=target)

    session = stored(SessionTarget(pid=1, listed_at=1000.0))
    bulk = stored(BulkTarget(actions=(TERMINATE_BULK,), filters="idle --app api", listed_at=1000.0))
    db = stored(DatabaseTarget(actions=(CLEAR_DB, CLEAR_DB_BLOCK), database="shop", listed_at=1000.0))
    for s, action, again in ((session, "terminate", "/pgsessions prod`"), (bulk, TERMINATE_BULK, "/pgsessions prod idle --app api`"),
                             (db, CLEAR_DB, "/pgsessions prod clear-db shop`"), (db, CLEAR_DB_BLOCK, "clear-db shop`")):
        assert ages(s, action)
        assert token_age_refusal(s, 900, now=1900.0) is None
        refusal = token_age_refusal(s, 900, now=1901.0)
        assert refusal is not None
        why = phrase(refusal)
        assert again in why and "access.request_ttl" in why, why
    # the read it came from: a token re-stored later still ages from the read
    late = stored(SessionTarget(pid=1, listed_at=1000.0), created_at=1800.0)
    assert token_age_refusal(late, 900, now=1901.0) is not None
    # names from a database or a person are data in the answer: nothing in them can format or mention
    hostile = stored(DatabaseTarget(actions=(CLEAR_DB,), database="x` <!channel> *b* <https://e.example|y>",
                                    listed_at=1000.0))
    refusal = token_age_refusal(hostile, 900, now=5000.0)
    assert refusal is not None
    why = phrase(refusal)
    assert "<!channel>" not in why and "<https://" not in why
    assert why.count("`") == 2, why
    # Allow connections again signals nobody and is kept fresh under a closed database's request
    assert not ages(stored(DatabaseTarget(actions=(ALLOW_CONNECTIONS,), database="shop")), ALLOW_CONNECTIONS)


# --- §4: a request made by the previous release ---------------------------------------------------


def as_previous_release(bot, msg) -> str:
    """Rewrite the request behind ``msg`` as release 0.1.0 stored it: no query_start / xact_start /
    state_change / listed_at in its target (its button token, with its issue time, is kept)."""
    req = request_row(bot, msg)
    target = req.target.model_dump(mode="json", exclude_none=True)
    for key in ("query_start", "xact_start", "state_change", "listed_at", "requested_in", "kind"):
        target.pop(key, None)
    with bot.rt.store.tx() as c:
        c.execute(sqltext("UPDATE pgs_requests SET target = :t WHERE id = :id"),
                  {"t": json.dumps(target), "id": req.id})
    again = bot.rt.store.get_request(req.id)
    assert again.session.xact_start is None and again.session.listed_at is None
    return req.id


def test_a_previous_release_request_for_a_transaction_still_open_is_acted_on(bot, pg, conns):
    conn, app = conns.open("idletx")
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    as_previous_release(bot, msg)
    conn.execute("SELECT 2")  # the same transaction goes on
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Done*")
    assert "moved on" not in json.dumps(done.blocks)
    wait_until(lambda: not alive(pg, pid), 5, "terminated")


def test_a_previous_release_request_for_a_transaction_that_ended_is_not_acted_on(bot, pg, conns):
    conn, app = conns.open("idletx")
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    as_previous_release(bot, msg)
    conn.execute("COMMIT")
    conn.execute("BEGIN")  # a new transaction, begun after the listing
    conn.execute("SELECT 2")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    assert "moved on from the transaction that was listed" in json.dumps(done.blocks)
    assert alive(pg, pid)
    conn.execute("ROLLBACK")


def test_a_previous_release_request_for_a_query_still_running_and_an_idle_session(bot, pg, conns):
    busy, busy_app = conns.open("active")
    busy_pid = busy.info.backend_pid
    conns.run(busy, "SELECT pg_sleep(30) /* Q1 */")
    wait_active(pg, busy_pid, "Q1")
    msg = request_kill(bot, "test", busy_app, busy_pid, "Cancel")
    as_previous_release(bot, msg)
    click(bot, msg, "Approve", "U2")
    wait_state(bot, msg, "*Done*")
    idle, idle_app = conns.open("idle")
    idle.execute("SELECT 1")
    msg = request_kill(bot, "test", idle_app, idle.info.backend_pid, "Terminate")
    as_previous_release(bot, msg)
    click(bot, msg, "Approve", "U2")
    wait_state(bot, msg, "*Done*")
    wait_until(lambda: not alive(pg, idle.info.backend_pid), 5, "terminated")


def test_a_previous_release_request_whose_listing_time_is_unknown_never_says_moved_on(bot, pg, conns):
    conn, app = conns.open("idletx")
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    rid = as_previous_release(bot, msg)
    with bot.rt.store.tx() as c:  # its button token was purged: nothing says when it was listed
        c.execute(sqltext("DELETE FROM pgs_targets WHERE token = (SELECT target_token FROM pgs_requests "
                          "WHERE id = :id)"), {"id": rid})
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    text = json.dumps(done.blocks)
    assert "moved on" not in text and "made by an earlier release" in text, text
    assert alive(pg, pid)
    conn.execute("ROLLBACK")


@pytest.mark.unit
def test_an_unbound_snapshot_is_refused_in_words_that_do_not_claim_it_moved_on():
    from bot.postgres.signals import binding_key, binding_params, unbound_refusal

    old = binding_params({"state": "idle in transaction"})
    old["bound_by"] = binding_key("terminate", "idle in transaction")
    why = unbound_refusal("terminate", old)
    assert why is not None and "moved on" not in why and "earlier release" in why
    dated = binding_params({"state": "idle in transaction", "listed_at": 1000.0}, now=1010.0)
    assert dated["listed_secs_ago"] == pytest.approx(10.0)
    assert unbound_refusal("terminate", dated) is None
    exact = binding_params({"state": "idle", "state_change": "2026-01-01T00:00:00.000001+00:00"})
    assert unbound_refusal("terminate", exact) is None


# --- §5: one submission, one request; a replayed signed request does nothing ------------------------


class Records(logging.Handler):
    """Log records of one logger, for waiting on what the bot says it did."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(name)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Records:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)

    def count(self, needle: str) -> int:
        return sum(1 for r in self.records if needle in r.getMessage())


def open_form(bot, conns):
    conn, app = conns.open("victim")
    conn.execute("SELECT 1")
    pid = conn.info.backend_pid
    msg = post_listing(bot, f"test --app {app} --min 0s")
    button = find_button(msg, f"Terminate {pid}")
    bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
    opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True), 10, "views.open")
    view = opened[0].params["view"]
    return (json.loads(view) if isinstance(view, str) else view), pid


def test_a_failure_between_the_submission_marker_and_the_request_leaves_slacks_retry_served(bot, pg, conns):
    """The first attempt fails while writing the request: nothing of it stays (no marker), so Slack's retry
    of the same submission makes the request; one request in all."""
    from sqlalchemy.exc import OperationalError

    view, pid = open_form(bot, conns)
    store = bot.rt.store
    real = store.create_request
    failures = []

    def create_request(new, conn=None):
        if not failures:
            failures.append(1)
            raise OperationalError("INSERT INTO pgs_requests ...", {}, Exception("database is locked"))
        return real(new, conn=conn)

    store.create_request = create_request
    try:
        first = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                          state_values={"reason": {"reason": "runaway"}}, user_id="U1")
        assert first.status == 200 and failures
        assert not store.requests_in(tuple(RequestState)), "the failed attempt made no request"
        again = bot.slack._send_payload(first.payload, {})  # Slack's retry of the same submission
        assert again.status == 200 and "errors" not in (again.body or ""), again.body
        wait_until(lambda: store.requests_in((RequestState.PENDING,)), 10, "the request made by the retry")
        posted = wait_until(lambda: bot.fake.calls_for("chat.postMessage", ok=True)[1:], 10, "the request posted")
        assert len(posted) == 1
        assert len(store.requests_in(tuple(RequestState))) == 1
        assert events_of(bot).count("terminate:requested") == 1
    finally:
        store.create_request = real
    # and a third copy of the same submission changes nothing
    third = bot.slack._send_payload(first.payload, {})
    assert third.status == 200 and "errors" not in (third.body or "")
    assert len(store.requests_in(tuple(RequestState))) == 1


@pytest.mark.unit
def test_the_submission_marker_is_written_with_the_request_or_not_at_all(tmp_path):
    """Unit: a request write that fails rolls the marker back with it."""
    from bot.approval.models import NewRequest, SessionTarget
    from bot.state.store import StateStore

    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    new = NewRequest(env="e", host="primary", action="terminate", target_token=None,
                     target=SessionTarget(pid=1, backend_start="2026-01-01T00:00:00.000001+00:00"),
                     requester="U1", reason=None, channel="C1", expires_at=time.time() + 60)
    with pytest.raises(RuntimeError), store.tx() as c:
        assert store.claim_once("sub-1", conn=c)
        raise RuntimeError("the request write failed")
    with store.tx() as c:
        assert store.claim_once("sub-1", conn=c), "the marker of a failed attempt stayed"
        store.create_request(new, conn=c)
    with store.tx() as c:
        assert not store.claim_once("sub-1", conn=c), "the same submission twice"
    assert len(store.requests_in(tuple(RequestState))) == 1
    store.close()


def test_a_byte_identical_replay_of_a_signed_slash_command_does_nothing(bot, pg, conns):
    conn, app = conns.open("listed")
    conn.execute("SELECT 1")
    fake = bot.fake
    stamp = int(time.time())
    with Records("bot.slack.replays") as seen:
        first = bot.slack.slash(f"test --app {app} --min 0s", timestamp=stamp)
        assert first.status == 200
        wait_until(lambda: [c for c in fake.calls_for("chat.postMessage", ok=True) if app in json.dumps(c.params)],
                   15, "the listing")
        again = bot.slack.post(first.request_body, timestamp=stamp)  # the same bytes, the same signature
        assert again.status == 200 and not again.body.strip(), again.body
        wait_until(lambda: seen.count("replayed Slack request"), 10, "the replay dropped")
    listings = [c for c in fake.calls_for("chat.postMessage") if app in json.dumps(c.params)]
    assert len(listings) == 1, fake.summary()
    # a new command with the same text (another request, signed anew) is served as usual
    bot.slack.slash(f"test --app {app} --min 0s")
    wait_until(lambda: len([c for c in fake.calls_for("chat.postMessage", ok=True)
                            if app in json.dumps(c.params)]) == 2, 15, "the second listing")


def test_a_byte_identical_replay_of_a_signed_click_does_nothing(bot, pg, conns):
    conn, app = conns.open("clicked")
    conn.execute("SELECT 1")
    pid = conn.info.backend_pid
    msg = post_listing(bot, f"test --app {app} --min 0s")
    button = find_button(msg, f"Terminate {pid}")
    stamp = int(time.time())
    with Records("bot.slack.replays") as seen:
        first = bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg,
                                       timestamp=stamp)
        assert first.status == 200
        wait_until(lambda: bot.fake.calls_for("views.open"), 10, "the form opened")
        again = bot.slack.post(first.request_body, timestamp=stamp)
        assert again.status == 200
        wait_until(lambda: seen.count("replayed Slack request"), 10, "the replay dropped")
    assert len(bot.fake.calls_for("views.open")) == 1, bot.fake.summary()


def test_a_replay_is_dropped_by_every_replica_sharing_the_state_store(pg, fake_slack, conns, tmp_path):
    """Two bots on one state store: the copy sent to the other replica is dropped too."""
    state = f"sqlite:///{tmp_path / 'shared.db'}"
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    a = BotUnderTest(cfg(pg), fake_slack, state=state).start()
    b = BotUnderTest(cfg(pg), fake_slack, state=state).start()
    try:
        conn, app = conns.open("shared")
        conn.execute("SELECT 1")
        stamp = int(time.time())
        with Records("bot.slack.replays") as seen:
            first = a.slack.slash(f"test --app {app} --min 0s", timestamp=stamp)
            assert first.status == 200
            again = b.slack.post(first.request_body, timestamp=stamp)
            assert again.status == 200 and not again.body.strip()
            wait_until(lambda: seen.count("replayed Slack request"), 10, "the replay dropped by the other replica")
        wait_until(lambda: [c for c in fake_slack.calls_for("chat.postMessage", ok=True)
                            if app in json.dumps(c.params)], 15, "the listing")
        assert len([c for c in fake_slack.calls_for("chat.postMessage") if app in json.dumps(c.params)]) == 1
    finally:
        b.close()
        a.close()


def test_a_socket_mode_envelope_delivered_twice_runs_once(pg, fake_slack, conns):
    from tests.harness.slack_requests import socket_envelope
    from tests.harness.socket_mode import FakeSocketMode

    conn, app = conns.open("socket")
    conn.execute("SELECT 1")
    with FakeSocketMode() as sm:
        fake_slack.app_token = "xapp-test-socket"
        fake_slack.socket_mode_url = sm.url
        bot = BotUnderTest(cfg(pg), fake_slack, app_token="xapp-test-socket").start()
        try:
            sm.wait_connected()
            command = {"command": "/pgsessions", "text": f"test --app {app} --min 0s", "user_id": "U1",
                       "user_name": "u1", "channel_id": "C1", "channel_name": "c1", "team_id": "T1",
                       "team_domain": "testteam", "api_app_id": "A0PGSESS",
                       "response_url": fake_slack.response_url("socket-cmd", channel="C1", message_ts=None),
                       "trigger_id": f"{int(time.time() * 1000)}.1.abc"}
            envelope = socket_envelope(command, kind="slash_commands")
            with Records("bot.slack.replays") as seen:
                sm.deliver(envelope)
                wait_until(lambda: [c for c in fake_slack.calls_for("chat.postMessage", ok=True)
                                    if app in json.dumps(c.params)], 15, "the listing")
                sm.deliver(envelope)  # the same envelope again
                wait_until(lambda: seen.count("delivered again"), 10, "the second delivery dropped")
            assert len([c for c in fake_slack.calls_for("chat.postMessage") if app in json.dumps(c.params)]) == 1
        finally:
            bot.close()


# --- §7: an execution that outlives interrupted_after leaves one truth ------------------------------


def test_an_execution_that_outlives_interrupted_after_is_not_taken_for_interrupted(pg, fake_slack, conns, tmp_path):
    """Replica A acts on an approved Cancel that takes longer than interrupted_after (the query swallows
    the cancel and ends a moment later); replica B's housekeeping runs meanwhile. A's heartbeat keeps
    the request its own: the store and the message say the same, once."""
    state = f"sqlite:///{tmp_path / 'shared.db'}"
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    a = BotUnderTest(cfg(pg), fake_slack, state=state).start()
    b = BotUnderTest(cfg(pg), fake_slack, state=state).start()
    try:
        for bot_ in (a, b):
            bot_.rt.workflow.interrupted_after = 0.4
        conn, app = conns.open("slow")
        pid = conn.info.backend_pid
        slow = ("DO $$ BEGIN PERFORM pg_sleep(30); EXCEPTION WHEN query_canceled THEN PERFORM pg_sleep(1.5); "
                "END $$ /* SLOW */")
        conns.run(conn, slow)
        wait_active(pg, pid, "SLOW")
        msg = request_kill(a, "test", app, pid, "Cancel")
        rid = request_row(a, msg).id
        recovered: list = []
        stop = threading.Event()

        def housekeeping_of_b() -> None:
            while not stop.is_set():
                recovered.extend(b.rt.workflow.recover_interrupted())
                stop.wait(0.05)

        watcher = threading.Thread(target=housekeeping_of_b, daemon=True)
        watcher.start()
        try:
            click(a, msg, "Approve", "U2")
            wait_until(lambda: a.rt.store.get_request(rid).state in ("done", "failed"), 20, "the request finished")
        finally:
            stop.set()
            watcher.join(5)
        final = a.rt.store.get_request(rid)
        assert recovered == [], "a living execution was taken for interrupted"
        assert final.state == "done" and final.outcome.status == "done", final.outcome
        shown = wait_state(a, msg, "*Done*")
        assert "not retried" not in json.dumps(shown.blocks)
        events = events_of(a)
        assert "cancel:executed" in events and "cancel:interrupted" not in events
    finally:
        b.close()
        a.close()


def test_when_recovery_ends_a_request_first_the_execution_acts_on_nothing(bot, pg, conns):
    """The request was ended as interrupted (its execution had stalled past interrupted_after) before the
    execution got to act: it signals nothing, and the message shows what the store holds."""
    conn, app = conns.open("stalled")
    conn.execute("SELECT 1")
    pid = conn.info.backend_pid
    msg = request_kill(bot, "test", app, pid, "Terminate")
    rid = request_row(bot, msg).id
    wf = bot.rt.workflow
    approved = wf.decide(rid, "U2", "approve")
    assert approved.execute
    with bot.rt.store.tx() as c:  # stalled: no update for longer than interrupted_after
        c.execute(sqltext("UPDATE pgs_requests SET updated_at = updated_at - 1000 WHERE id = :id"), {"id": rid})
    assert [r.id for r in wf.recover_interrupted()] == [rid]
    done = wf.execute(approved.request)
    assert done.request.state == "failed" and done.request.outcome.status == "interrupted"
    assert bot.rt.store.get_request(rid).outcome.status == "interrupted"
    assert alive(pg, pid), "an interrupted request was signalled after all"
    bot.rt.messages.redraw(done.request)
    shown = wait_state(bot, msg, "not retried")
    assert "*Done*" not in json.dumps(shown.blocks)
    assert "terminate:executed" not in events_of(bot)


@pytest.mark.unit
def test_the_final_state_is_written_once_whichever_path_gets_there_first(tmp_path):
    """Unit: the execution's outcome and the recovery's 'interrupted' are conditional writes; the loser
    writes nothing and the execution returns what the store holds."""
    from dataclasses import replace

    from bot.approval.workflow import Workflow
    from tests.test_workflow_unit import World

    world = World(tmp_path)
    try:
        req = world.request()
        approved = world.wf.decide(req.id, "U2", "approve").request

        def recovery_wins_meanwhile(ex, r):
            # the heartbeat could not land (e.g. the store was cut off from this replica) and another
            # replica's housekeeping ended the request while the signal was being sent
            with world.store.tx() as c:
                c.execute(sqltext("UPDATE pgs_requests SET updated_at = 0 WHERE id = :id"), {"id": r.id})
            other = Workflow(world.config, world.store, None, world.policy, world.events, interrupted_after=60)
            assert [x.id for x in other.recover_interrupted()] == [r.id]
            return world.outcome

        world.wf.actions = {**world.wf.actions, "terminate": replace(world.wf.actions["terminate"],
                                                                     executor=recovery_wins_meanwhile)}
        result = world.wf.execute(approved)
        stored = world.store.get_request(req.id)
        assert stored.state == "failed" and stored.outcome.status == "interrupted"
        assert result.request.state == stored.state and result.request.outcome == stored.outcome, \
            "the message would say something else than the store"
        # and a recovery never overwrites an execution's outcome: a request already done stays done
        req2 = world.request()
        approved2 = world.wf.decide(req2.id, "U2", "approve").request
        world.wf.actions = {**world.wf.actions, "terminate": replace(world.wf.actions["terminate"],
                                                                     executor=lambda ex, r: world.outcome)}
        assert world.wf.execute(approved2).request.state == "done"
        assert world.wf.recover_interrupted(older_than=-1) == []
        assert world.store.get_request(req2.id).state == "done"
        # a recovery checks the age in the statement that ends the request: a heartbeat in between wins
        req3 = world.request()
        world.wf.decide(req3.id, "U2", "approve")
        with world.store.tx() as c:
            assert not world.store.transition(c, req3.id, RequestState.EXECUTING, RequestState.FAILED,
                                              stale_before=time.time() - 60)
        assert world.store.get_request(req3.id).state == "executing"
    finally:
        world.store.close()
