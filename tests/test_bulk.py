"""Bulk clean-ups (clear-db, Terminate these N) through the bot's real HTTP surface, against real
PostgreSQL, on databases of this module's own (never appdb, which other tests share)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from bot.approval.actions import ACTIONS
from bot.approval.models import (
    DatabaseTarget,
    NewRequest,
    Request,
    RequestState,
    SessionRef,
    StoredTarget,
    request_from_dict,
)
from bot.approval.targets import session_ref
from bot.bulk.targets import terminable
from bot.postgres.bulk import connected_to
from bot.postgres.models import Session, iso
from bot.state.store import StateStore
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.waiting import wait_until

DB_NOT_OWNED = "bulk_notowned"  # owned by app_user: the bot may not ALTER it
DB_OWNED = "bulk_owned"  # owned by pgsessions_bot: blocking works
DB_BOTS = "bulk_botdb"  # the bot's own DSN database in one test
DB_IDLE = "bulk_idle"  # idle / idle-tx listings
DB_STATE = "bulk_state"  # the bot's state database in one test
DATABASES = {DB_NOT_OWNED: "app_user", DB_OWNED: "pgsessions_bot", DB_BOTS: "pgsessions_bot", DB_IDLE: "app_user",
             DB_STATE: "pgsessions_bot"}


# ---- fixtures and helpers ------------------------------------------------------------------------


def _force_drop(pg, name: str) -> None:
    pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
    pg.primary.sql(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def dbs(pg) -> Iterator[dict[str, str]]:
    for name, owner in DATABASES.items():
        if pg.primary.sql("SELECT 1 FROM pg_database WHERE datname = %s", (name,)):
            _force_drop(pg, name)
        pg.primary.sql(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    yield DATABASES
    for name in DATABASES:
        try:
            _force_drop(pg, name)
        except psycopg.Error:
            pass


class Sessions:
    """Client connections opened by a test; all closed (and terminated) at the end."""

    def __init__(self, pg):
        self.pg = pg
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []

    def open(self, db: str, app: str, user: str = "app_user") -> psycopg.Connection:
        c = self.pg.primary.connect(user=user, dbname=db, application_name=app)
        self.conns.append(c)
        return c

    def in_background(self, conn: psycopg.Connection, statement: str) -> threading.Thread:
        def run():
            try:
                conn.execute(statement)
            except psycopg.Error:
                pass

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def close(self) -> None:
        for c in self.conns:
            try:
                self.pg.primary.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
            except psycopg.Error:
                pass
        for c in self.conns:
            try:
                c.close()
            except Exception:
                pass
        for t in self.threads:
            t.join(5)


@pytest.fixture
def sessions(pg) -> Iterator[Sessions]:
    s = Sessions(pg)
    yield s
    s.close()


class Reconnector(threading.Thread):
    """A client that reconnects at once whenever its connection is terminated (like a pooler would)."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.pids: list[int] = []
        self.refusals: list[tuple[float, str]] = []
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=3) as c:
                    with self.lock:
                        self.pids.append(c.info.backend_pid)
                    while not self.halt.is_set():
                        c.execute("SELECT 1")
                        time.sleep(0.05)
            except psycopg.Error as exc:
                with self.lock:
                    self.refusals.append((time.monotonic(), str(exc)))
                time.sleep(0.05)

    def wait_connected(self, count: int = 1, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.pids) >= count:
                    return self.pids[-1]
            time.sleep(0.02)
        raise AssertionError(f"the reconnecting client did not connect {count} times; refusals: {self.refusals[-3:]}")

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def alive(pg, pid: int) -> bool:
    return bool(pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def allows_connections(pg, db: str) -> bool:
    return pg.primary.sql("SELECT datallowconn FROM pg_database WHERE datname = %s", (db,))[0][0]


def text_of(msg) -> str:
    blocks = msg.blocks if hasattr(msg, "blocks") else msg.get("blocks")
    text = msg.text if hasattr(msg, "text") else msg.get("text")
    return json.dumps(blocks or [], ensure_ascii=False) + (text or "")


def action_ids(msg) -> list[str]:
    blocks = msg.blocks if hasattr(msg, "blocks") else msg.get("blocks")
    return [e["action_id"] for b in blocks or [] if b.get("type") == "actions" for e in b["elements"]]


def bulk_button(msg, action: str) -> str:
    ids = [a for a in action_ids(msg) if a.startswith(f"pgs_bulk:{action}:")]
    assert ids, f"no {action} button in {action_ids(msg)}"
    return ids[0]


def post_and_get(bot, text: str, channel: str = "C1", user: str = "U1"):
    """Run a command that posts a message; return the StoredMessage."""
    params = bot.listing(text, channel=channel, user=user)
    wait_until(lambda: bot.fake.last_message(channel) is not None, what="posted message")
    for m in reversed(bot.fake.messages_in(channel)):
        if m.text == params["text"]:
            return m
    raise AssertionError("posted message not stored")


def ephemeral_answer(bot, text: str) -> str:
    reply = bot.command(text)
    assert reply.status == 200
    r = bot.fake.wait_for_response(reply.response_name, timeout=15)
    assert r.response_type == "ephemeral"
    return r.text or ""


def request_flow(bot, msg, action_id: str, *, requester: str = "U1", approver: str = "U2",
                 reason: str = "maintenance", timeout: float = 60) -> dict:
    """Click a bulk button, submit the modal, approve; return the finished request (from the store)."""
    fake = bot.fake
    since = len(fake.calls)
    reply = bot.slack.block_action(action_id, None, user_id=requester, message=msg)
    assert reply.status == 200
    call = fake.wait_for("views.open", since=since, timeout=10, ok=True)
    view = call.response["view"]
    assert view["callback_id"] == "pgs_kill_request"
    since = len(fake.calls)
    reply = bot.slack.view_submission(
        "pgs_kill_request", private_metadata=view["private_metadata"],
        state_values={"reason": {"reason": reason}}, user_id=requester, view=view,
    )
    assert reply.status == 200 and not reply.body.strip(), reply.body
    posted = fake.wait_for("chat.postMessage", since=since, timeout=10, ok=True)
    channel, ts = posted.response["channel"], posted.response["ts"]
    approval = fake.messages[(channel, ts)]
    approve = next(a for a in action_ids(approval) if a.startswith("pgs_req:approve:"))
    request_id = approve.rsplit(":", 1)[1]
    started = time.monotonic()
    reply = bot.slack.block_action(approve, None, user_id=approver, message=approval)
    assert reply.status == 200
    assert time.monotonic() - started < 3, "the approval click must be answered at once"
    wait_until(lambda: bot.rt.store.get_request(request_id).state in ("done", "failed"),
               timeout=timeout, what="request finished")
    # the final redraw follows the state change
    wait_until(lambda: "): done" in fake.messages[(channel, ts)].text or "): failed" in fake.messages[(channel, ts)].text,
               timeout=10, what="final redraw")
    return Finished(bot.rt.store.get_request(request_id), fake.messages[(channel, ts)])


class Finished:
    """A finished request (read through to the typed Request) and its final approval message."""

    def __init__(self, request: Request, message):
        self.request = request
        self.message = message

    def __getattr__(self, name):
        return getattr(self.request, name)


def bot_config(pg, dsn_db: str = "postgres", **env_overrides) -> dict:
    env = env_config(pg, thresholds={"long_running": "1s", "idle_in_transaction": "1s", "idle": "1s"}, **env_overrides)
    env["dsn"] = pg.primary.dsn(user="pgsessions_bot", dbname=dsn_db)
    return {"environments": {"test": env}}


@pytest.fixture
def bot(pg, fake_slack, dbs):
    with BotUnderTest(bot_config(pg), fake_slack) as b:
        yield b
    fake_slack.assert_clean()


def state_url(pg) -> str:
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(pg.primary.dsn(user="pgsessions_bot", dbname=DB_STATE))
    return f"postgresql://pgsessions_bot@{p['host']}:{p['port']}/{DB_STATE}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_state_bot(request, pg, fake_slack, dbs):
    """The bot with its state in SQLite, or in PostgreSQL (on the same server, database DB_STATE)."""
    state = None if request.param == "sqlite" else state_url(pg)
    with BotUnderTest(bot_config(pg), fake_slack, state=state) as b:
        yield b
    fake_slack.assert_clean()


# ---- clear-db ------------------------------------------------------------------------------------


def test_clear_db_overview_groups_sessions_and_offers_both_requests(bot, pg, sessions):
    for app in ("web", "web", "worker"):
        sessions.open(DB_OWNED, app).execute("SELECT 1")
    tx = sessions.open(DB_OWNED, "worker")
    tx.execute("BEGIN")
    tx.execute("SELECT txid_current()")
    msg = post_and_get(bot, f"test clear-db {DB_OWNED}")
    text = text_of(msg)
    assert f"Connections to database {DB_OWNED} on test" in text
    assert "*4 sessions* connected" in text
    assert "user `app_user` · app `web` · *2* (2 idle)" in text
    assert "app `worker` · *2* (1 idle in transaction, 1 idle)" in text
    assert "allows new connections" in text
    assert "rolls back their open transactions" in text
    assert action_ids(msg)[0].startswith("pgs_bulk:clear_db:")
    assert "Terminate all 4" in text and "Block new connections and terminate all 4" in text
    assert bulk_button(msg, "clear_db_block")


def test_clear_db_reads_each_backend_as_the_one_session_type(pg, dbs, sessions):
    """clear-db's read is Session.from_row on pg_stat_activity's names (issue 22 §1): who, how long it is
    connected, whether it is in a transaction, the bot's own connection; its snapshot (session_ref) names
    each session by (pid, backend_start) and binds no state_change (clear-db terminates whatever it does)."""
    idle = sessions.open(DB_OWNED, "read-idle")
    idle.execute("SELECT 1")
    tx = sessions.open(DB_OWNED, "read-tx")
    tx.execute("BEGIN")
    tx.execute("SELECT txid_current()")
    with pg.primary.connect(user="pgsessions_bot", dbname=DB_OWNED, application_name="pgsessions-test") as own:
        read = connected_to(own, DB_OWNED)
        own_pid = own.info.backend_pid
    by_pid = {s.pid: s for s in read}
    assert all(type(s) is Session for s in read)
    i, t, me = by_pid[idle.info.backend_pid], by_pid[tx.info.backend_pid], by_pid[own_pid]
    assert (i.user, i.database, i.application, i.state, i.is_client, i.is_bot) == (
        "app_user", DB_OWNED, "read-idle", "idle", True, False)
    assert (i.xact_start, t.xact_start is not None, t.state) == (None, True, "idle in transaction")
    assert i.backend_secs is not None and i.backend_secs >= 0 and i.cannot_signal is None
    assert me.is_bot and t.query == "SELECT txid_current()"  # read for the ignore rules only
    assert {i.pid, t.pid} <= {s.pid for s in terminable(read)} and own_pid not in {s.pid for s in terminable(read)}
    ref = session_ref(t)
    assert (ref.pid, ref.backend_start, ref.state_change, ref.in_transaction, ref.database, ref.query) == (
        t.pid, iso(t.backend_start), None, True, DB_OWNED, None)
    assert session_ref(i).in_transaction is False


def test_blocking_is_refused_up_front_without_ownership_and_terminate_all_reports_what_it_cannot(bot, pg, sessions):
    plain = sessions.open(DB_NOT_OWNED, "app")
    plain.execute("SELECT 1")
    superuser = sessions.open(DB_NOT_OWNED, "admin-console", user="postgres")
    msg = post_and_get(bot, f"test clear-db {DB_NOT_OWNED}")
    text = text_of(msg)
    assert not [a for a in action_ids(msg) if a.startswith("pgs_bulk:clear_db_block:")]
    assert "*Block new connections* is not offered" in text
    assert f"does not own `{DB_NOT_OWNED}` (owner `app_user`)" in text
    assert "cannot be terminated by the bot: superuser session" in text
    terminate = bulk_button(msg, "clear_db")
    # the same token cannot be turned into the blocking request
    token = terminate.rsplit(":", 1)[1]
    since = len(bot.fake.calls)
    reply = bot.slack.block_action(f"pgs_bulk:clear_db_block:{token}", token, user_id="U1", message=msg)
    assert reply.status == 200
    answer = bot.fake.wait_for_response(reply.response_name, timeout=10)
    assert "not what this button was issued for" in answer.text
    assert not [c for c in bot.fake.calls[since:] if c.method == "views.open"]

    req = request_flow(bot, msg, terminate)
    out = req.outcome
    assert req.state == "failed" and out.status == "partial", out
    assert out.counts["ended"] == 1 and out.counts["failed"] == 1, out
    assert not alive(pg, plain.info.backend_pid)
    assert alive(pg, superuser.info.backend_pid)
    final = text_of(req.message)
    assert "Done, with problems" in final and "superuser session" in final
    assert f"pid {superuser.info.backend_pid}" in final
    assert allows_connections(pg, DB_NOT_OWNED)


def test_terminate_all_spares_the_bot_the_latecomers_and_lets_a_reconnecting_client_back(pg, fake_slack, dbs, sessions):
    with BotUnderTest(bot_config(pg, dsn_db=DB_BOTS), fake_slack) as bot:
        victims = [sessions.open(DB_BOTS, "batch") for _ in range(3)]
        for v in victims:
            v.execute("SELECT 1")
        # another replica of the bot (its role, application_name pgsessions): never counted, never touched
        replica = sessions.open(DB_BOTS, "pgsessions", user="pgsessions_bot")
        rc = Reconnector(pg.primary.dsn(user="app_user", dbname=DB_BOTS, application_name="reconnector"))
        rc.start()
        try:
            first_pid = rc.wait_connected()
            msg = post_and_get(bot, f"test clear-db {DB_BOTS}")
            text = text_of(msg)
            assert "*4 sessions* connected" in text, text
            assert "The bot's own connections here" in text
            # blocking a database the bot itself connects to would lock the bot out
            assert "the bot itself connects to" in text
            assert not [a for a in action_ids(msg) if a.startswith("pgs_bulk:clear_db_block:")]
            bot_pids = {r[0] for r in pg.primary.sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'pgsessions'", (DB_BOTS,))}
            assert bot_pids, "the bot should hold a connection to its DSN database"
            latecomer = sessions.open(DB_BOTS, "latecomer")
            latecomer.execute("SELECT 1")

            req = request_flow(bot, msg, bulk_button(msg, "clear_db"))
            out = req.outcome
            assert req.state == "done", out
            assert out.counts["ended"] == 4 and out.counts["failed"] == 0, out
            for v in victims:
                assert not alive(pg, v.info.backend_pid)
            assert not alive(pg, first_pid)
            assert alive(pg, latecomer.info.backend_pid), "a session that arrived after the listing was terminated"
            second_pid = rc.wait_connected(2)
            assert second_pid != first_pid and alive(pg, second_pid)
            still = {r[0] for r in pg.primary.sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'pgsessions'", (DB_BOTS,))}
            assert bot_pids <= still, "the bot terminated its own connection"
            assert replica.info.backend_pid in bot_pids
            assert out.arrived >= 1
            final = text_of(req.message)
            assert "*4* ended" in final and "connected after the listing" in final
            assert "allows new connections" in final
            # every session of the snapshot has its line in the audit log
            entries = bot.rt.store.audit_entries(request_id=req.id, limit=50)
            ended = {e["pid"]: e for e in entries if e["event"] == "clear_db:ended"}
            assert set(ended) == {v.info.backend_pid for v in victims} | {first_pid}
            assert all(e["backend_start"] and e["db_user"] == "app_user" and e["reason"] == "maintenance"
                       for e in ended.values())
            assert {e["event"] for e in entries} >= {"clear_db:requested", "clear_db:approved"}
        finally:
            rc.stop()
    fake_slack.assert_clean()


def test_block_keeps_a_reconnecting_client_out_until_connections_are_allowed_again(any_state_bot, pg, sessions):
    bot = any_state_bot
    victims = [sessions.open(DB_OWNED, "app") for _ in range(2)]
    for v in victims:
        v.execute("SELECT 1")
    rc = Reconnector(pg.primary.dsn(user="app_user", dbname=DB_OWNED, application_name="reconnector"))
    rc.start()
    try:
        first_pid = rc.wait_connected()
        msg = post_and_get(bot, f"test clear-db {DB_OWNED}")
        req = request_flow(bot, msg, bulk_button(msg, "clear_db_block"))
        out = req.outcome
        assert req.state == "done", out
        assert out.blocked and out.allow_connections is False
        assert out.counts["ended"] == 3, out
        assert not allows_connections(pg, DB_OWNED)
        assert not alive(pg, first_pid) and all(not alive(pg, v.info.backend_pid) for v in victims)
        # the client keeps trying and keeps being refused
        refused_before = len(rc.refusals)
        time.sleep(1.5)
        assert len(rc.pids) == 1, "the reconnecting client got back into a blocked database"
        assert len(rc.refusals) > refused_before
        assert "not currently accepting connections" in rc.refusals[-1][1]
        final = text_of(req.message)
        assert "does *not* allow new connections" in final and "closed by this request" in final
        allow = bulk_button(req.message, "allow_connections")
        audit = {e["event"] for e in bot.rt.store.audit_entries(request_id=req.id, limit=50)}
        assert {"clear_db_block:blocked", "clear_db_block:ended"} <= audit

        reopen = request_flow(bot, req.message, allow)
        assert reopen.state == "done", reopen.outcome
        assert allows_connections(pg, DB_OWNED)
        assert "allows new connections again" in text_of(reopen.message)
        rc.wait_connected(2)
        # the first request's message now says the database is open again, and offers no reopening
        source = bot.fake.messages[(req.message.channel, req.message.ts)]
        wait_until(lambda: "reopened" in text_of(bot.fake.messages[(source.channel, source.ts)]), what="source redraw")
        source = bot.fake.messages[(source.channel, source.ts)]
        assert ":large_green_circle:" in text_of(source)
        assert not [a for a in action_ids(source) if a.startswith("pgs_bulk:allow_connections:")]
        assert any(e["event"] == "allow_connections:executed"
                   for e in bot.rt.store.audit_entries(request_id=reopen.id, limit=10))
    finally:
        rc.stop()
        if not allows_connections(pg, DB_OWNED):
            pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(DB_OWNED)))


def test_a_bot_crash_after_blocking_still_leaves_a_way_to_reopen(bot, pg):
    """The request ends as interrupted (its outcome replaced); the audit log says the database was closed."""
    rt = bot.rt
    pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(DB_OWNED)))
    try:
        req = rt.store.create_request(NewRequest(
            env="test", host="primary", action="clear_db_block", target_token=None,
            target=DatabaseTarget(database=DB_OWNED, actions=("clear_db_block",)),
            requester="U1", reason="maintenance", channel="C1", expires_at=time.time() + 600))
        posted = rt.client.chat_postMessage(channel="C1", text="placeholder")
        rt.store.set_message(req.id, posted["channel"], posted["ts"])
        with rt.store.tx() as c:
            rt.store.transition(c, req.id, RequestState.PENDING, RequestState.EXECUTING)
        rt.store.add_audit(None, env="test", host="primary", request_id=req.id, event="clear_db_block:blocked",
                           result="ALTER DATABASE … false")
        assert [r.id for r in rt.workflow.recover_interrupted(older_than=0)] == [req.id]
        rt.messages.redraw(rt.store.get_request(req.id))
        before = bot.fake.messages[(posted["channel"], posted["ts"])]
        assert not [a for a in action_ids(before) if a.startswith("pgs_bulk:allow_connections:")]
        rt.housekeeping.bulk()
        msg = bot.fake.messages[(posted["channel"], posted["ts"])]
        text = text_of(msg)
        assert "does *not* allow new connections" in text and "the bot stopped while acting" in text
        rt.housekeeping.bulk()  # nothing more to do: no second redraw
        assert len(bot.fake.messages[(posted["channel"], posted["ts"])].history) == len(msg.history)
        reopen = request_flow(bot, msg, bulk_button(msg, "allow_connections"))
        assert reopen.state == "done" and allows_connections(pg, DB_OWNED)
        wait_until(lambda: ":large_green_circle:" in text_of(bot.fake.messages[(posted["channel"], posted["ts"])]),
                   what="interrupted request redrawn as reopened")
    finally:
        pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(DB_OWNED)))


def test_housekeeping_keeps_a_closed_databases_message_true(bot, pg):
    msg = post_and_get(bot, f"test clear-db {DB_OWNED}")
    assert "No client session" in text_of(msg)
    req = request_flow(bot, msg, bulk_button(msg, "clear_db_block"))  # block only: nobody is connected
    assert req.state == "done" and not allows_connections(pg, DB_OWNED), req.outcome
    where_ = (req.message.channel, req.message.ts)
    old = bulk_button(req.message, "allow_connections")
    try:
        bot.rt.housekeeping.bulk()
        assert bulk_button(bot.fake.messages[where_], "allow_connections") == old  # nothing to change yet
        # button tokens are purged after a week: a closed database's button gets a fresh one in time
        bot.rt.store.purge_targets(time.time() + 1)
        bot.rt.housekeeping.bulk()
        fresh = bulk_button(bot.fake.messages[where_], "allow_connections")
        assert fresh != old and bot.rt.store.get_target(fresh.rsplit(":", 1)[1]) is not None
        # reopened by hand: the message stops claiming it is closed, and offers nothing
        pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(DB_OWNED)))
        bot.rt.housekeeping.bulk()
        now = bot.fake.messages[where_]
        assert ":large_green_circle:" in text_of(now) and "outside the bot" in text_of(now)
        assert not [a for a in action_ids(now) if a.startswith("pgs_bulk:")]
    finally:
        pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(DB_OWNED)))


def test_a_closed_database_offers_allow_connections_in_clear_db(bot, pg):
    pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(DB_OWNED)))
    try:
        msg = post_and_get(bot, f"test clear-db {DB_OWNED}")
        text = text_of(msg)
        assert "does *not* allow new connections" in text and "No client session" in text
        assert "Block new connections" in text and "Terminate all" not in text.replace("*Terminate all* is not", "")
        req = request_flow(bot, msg, bulk_button(msg, "allow_connections"))
        assert req.state == "done" and allows_connections(pg, DB_OWNED)
    finally:
        pg.primary.sql(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(DB_OWNED)))


def test_refused_targets(pg, fake_slack, dbs):
    with BotUnderTest(bot_config(pg), fake_slack, state=state_url(pg)) as bot:
        audited = bot.rt.store.audit_count()
        answer = ephemeral_answer(bot, f"test clear-db {DB_STATE}")
        assert "bot's own state database" in answer, answer
        answer = ephemeral_answer(bot, "test clear-db template1")
        assert "template database" in answer and "never acts on templates" in answer
        answer = ephemeral_answer(bot, "test clear-db postgres")
        assert "maintenance database" in answer and "clear_db.allow" in answer
        answer = ephemeral_answer(bot, "test clear-db bulk_ownd")
        assert "no database `bulk_ownd`" in answer and f"`{DB_OWNED}`" in answer
        reply = bot.command("test clear-db")
        assert "exactly one database name" in reply.json()["text"]
        assert not fake_slack.calls_for("chat.postMessage")
        assert bot.rt.store.audit_count() == audited
    # the state database is refused even when clear_db.allow lists it
    cfg = bot_config(pg, clear_db={"allow": ["postgres", DB_STATE, "template1"]})
    with BotUnderTest(cfg, fake_slack, state=state_url(pg)) as bot:
        assert "bot's own state database" in ephemeral_answer(bot, f"test clear-db {DB_STATE}")
        assert "never acts on templates" in ephemeral_answer(bot, "test clear-db template1")
        msg = post_and_get(bot, "test clear-db postgres")
        assert "Connections to database postgres" in text_of(msg)
        assert "the bot itself connects to `postgres`" in text_of(msg)
    fake_slack.assert_clean()


def test_max_bulk_caps_clear_db(pg, fake_slack, dbs, sessions):
    for _ in range(3):
        sessions.open(DB_NOT_OWNED, "many").execute("SELECT 1")
    with BotUnderTest(bot_config(pg, access={"max_bulk": 2}), fake_slack) as bot:
        msg = post_and_get(bot, f"test clear-db {DB_NOT_OWNED}")
        text = text_of(msg)
        assert not [a for a in action_ids(msg) if a.startswith("pgs_bulk:")]
        assert "3 sessions are more than `access.max_bulk` (2)" in text
    fake_slack.assert_clean()


# ---- Terminate these N (idle / idle-tx --app) ----------------------------------------------------


def test_terminate_these_n_covers_exactly_the_listed_idle_sessions(bot, pg, sessions):
    app = "bulk-idle-app"
    idle, goes_active, used_again = (sessions.open(DB_IDLE, app) for _ in range(3))
    other_app = sessions.open(DB_IDLE, "someone-else")
    for c in (idle, goes_active, used_again, other_app):
        c.execute("SELECT 1")
    time.sleep(1.3)
    listing = post_and_get(bot, f"test idle --app {app} --older 1s")
    text = text_of(listing)
    assert "Terminate these 3" in text, text
    assert "filter `idle --min 1s --app bulk-idle-app`" in text
    # after the listing: one becomes active, one is used and idles again, a new one arrives
    sessions.in_background(goes_active, "SELECT pg_sleep(30)")
    used_again.execute("SELECT 2")
    newcomer = sessions.open(DB_IDLE, app)
    newcomer.execute("SELECT 1")
    wait_until(lambda: pg.primary.sql("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                      (goes_active.info.backend_pid,))[0][0] == "active", what="active")
    req = request_flow(bot, listing, bulk_button(listing, "terminate_bulk"))
    out = req.outcome
    assert req.state == "done", out
    assert out.counts["ended"] == 1 and out.counts["skipped"] == 2, out
    assert not alive(pg, idle.info.backend_pid)
    for survivor in (goes_active, used_again, newcomer, other_app):
        assert alive(pg, survivor.info.backend_pid)
    skipped = {s.pid: s.result for s in out.skipped}
    assert "active again" in skipped[goes_active.info.backend_pid]
    assert "used again since the listing" in skipped[used_again.info.backend_pid]
    final = text_of(req.message)
    assert "Terminate 3 sessions of app bulk-idle-app on test" in final
    assert "*Size:* 3 sessions" in final and "*1* ended" in final and "*2* skipped" in final
    audit = bot.rt.store.audit_entries(request_id=req.id, limit=20)
    by_pid = {e["pid"]: e["event"] for e in audit if e["pid"]}
    assert by_pid == {idle.info.backend_pid: "terminate_bulk:ended",
                      goes_active.info.backend_pid: "terminate_bulk:skipped",
                      used_again.info.backend_pid: "terminate_bulk:skipped"}


def test_terminate_these_n_for_idle_in_transaction(bot, pg, sessions):
    app = "bulk-tx-app"
    holders = [sessions.open(DB_IDLE, app) for _ in range(2)]
    for h in holders:
        h.execute("BEGIN")
        h.execute("SELECT txid_current()")
    time.sleep(1.3)
    listing = post_and_get(bot, f"test idle-tx --app {app} --older 1s")
    assert "Terminate these 2" in text_of(listing)
    req = request_flow(bot, listing, bulk_button(listing, "terminate_bulk"))
    assert req.state == "done" and req.outcome.counts["ended"] == 2, req.outcome
    assert all(not alive(pg, h.info.backend_pid) for h in holders)
    assert f"of app `{app}` that are idle in transaction" in text_of(req.message)


@pytest.fixture(scope="module")
def offer_session(pg, dbs):
    """One session idle for more than 1 s, shared by the offer tests (nothing terminates it)."""
    s = Sessions(pg)
    s.open(DB_IDLE, "bulk-offer").execute("SELECT 1")
    time.sleep(1.2)
    yield
    s.close()


@pytest.mark.parametrize(
    "text, offered",
    [
        ("test idle --app bulk-offer", True),
        ("test idle --app bulk-offer --user app_user --older 1s", True),
        ("test idle", False),
        ("test idle active --app bulk-offer", False),
        ("test --app bulk-offer", False),
    ],
)
def test_terminate_these_n_is_offered_only_for_one_category_with_app(bot, offer_session, text, offered):
    listing = post_and_get(bot, text)
    has = any(a.startswith("pgs_bulk:terminate_bulk:") for a in action_ids(listing))
    assert has is offered, (text, action_ids(listing))


def test_max_bulk_caps_terminate_these_n(pg, fake_slack, dbs, sessions):
    for _ in range(3):
        sessions.open(DB_IDLE, "bulk-cap").execute("SELECT 1")
    time.sleep(1.2)
    with BotUnderTest(bot_config(pg, access={"max_bulk": 2}), fake_slack) as bot:
        listing = post_and_get(bot, "test idle --app bulk-cap")
        assert not [a for a in action_ids(listing) if a.startswith("pgs_bulk:")]
        assert "3 sessions are more than `access.max_bulk` (2)" in text_of(listing)
    fake_slack.assert_clean()


# ---- long runs: progress, updated_at, not holding Slack ------------------------------------------


def test_a_long_run_reports_progress_and_keeps_the_request_fresh(bot, pg, sessions, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import bot.bulk.execute as execute

    monkeypatch.setattr(execute, "BATCH_SIZE", 50)
    monkeypatch.setattr(execute, "PROGRESS_EVERY", 0.0)
    with ThreadPoolExecutor(16) as pool:
        conns = list(pool.map(lambda _: sessions.open(DB_NOT_OWNED, "fleet"), range(300)))
    msg = post_and_get(bot, f"test clear-db {DB_NOT_OWNED}")
    assert "*300 sessions* connected" in text_of(msg)
    since = len(bot.fake.calls)
    req = request_flow(bot, msg, bulk_button(msg, "clear_db"))  # asserts the approval click is answered at once
    assert req.state == "done" and req.outcome.counts["ended"] == 300, req.outcome
    assert not any(alive(pg, c.info.backend_pid) for c in conns[:: 37])
    updates = [c for c in bot.fake.calls[since:] if c.method == "chat.update" and "handled" in json.dumps(c.params)]
    assert len(updates) >= 3, "no progress was shown while the request ran"
    assert req.updated_at >= req.decided_at
    entries = bot.rt.store.audit_entries(request_id=req.id, limit=1000)
    assert len([e for e in entries if e["event"] == "clear_db:ended"]) == 300
    assert "*300* ended" in text_of(req.message) and "*Size:* 300 sessions" in text_of(req.message)


def test_progress_is_throttled_and_refreshes_updated_at(tmp_path):
    from bot.approval.ports import Execution
    from bot.bulk.execute import Interrupted, ProgressRecorder

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        req = store.create_request(NewRequest(env="e", host="primary", action="clear_db", target_token=None,
                                              target=DatabaseTarget(database="d"), requester="U1", reason="r",
                                              channel="C1", expires_at=time.time() + 60))
        with store.tx() as c:
            store.transition(c, req.id, RequestState.PENDING, RequestState.EXECUTING)
        now = [100.0]
        redraws = []

        class Events:
            def changed(self, request):
                redraws.append(request)

        ex = Execution(config=None, store=store, dbs=None, events=Events())
        p = ProgressRecorder(ex, req, total=10, every=2.0, clock=lambda: now[0])
        before = store.get_request(req.id).updated_at
        time.sleep(0.01)
        for step in range(10):
            now[0] += 0.5
            p.update({"ended": step})
        assert p.updates == 2 and len(redraws) == 2  # 5 s of updates every 0.5 s, at most one per 2 s
        fresh = store.get_request(req.id)
        assert fresh.updated_at > before and fresh.outcome.progress.handled == 7
        with store.tx() as c:
            store.transition(c, req.id, RequestState.EXECUTING, RequestState.FAILED)
        now[0] += 5
        with pytest.raises(Interrupted):
            p.update({"ended": 9})
    finally:
        store.close()


# ---- rendering within Slack's limits -------------------------------------------------------------


def test_big_snapshots_render_within_slacks_limits():
    from datetime import UTC, datetime

    from bot.postgres.bulk import DatabaseInfo
    from bot.render.bulk import bulk_modal, bulk_request_message, clear_db_message
    from tests.harness.fake_slack import validate_message_blocks, validate_view

    start = datetime(2026, 1, 1, tzinfo=UTC)
    connected = [
        Session(pid=1000 + i, backend_start=start, backend_type="client backend", user=f"user_{i % 40}",
                database="d" * 63, application=f"service-with-a-long-name-{i % 300}" + "x" * 60,
                client_addr=f"10.0.{i % 250}.{i % 7}", state=("idle", "active", "idle in transaction")[i % 3],
                wait_event_type=None, wait_event=None, query="", xact_start=start if i % 3 != 0 else None,
                backend_secs=100.0 + i, state_secs=5.0, is_bot=False, is_superuser=i % 97 == 0,
                cannot_signal="superuser session (the bot's role is not a superuser)" if i % 97 == 0 else None)
        for i in range(600)
    ]
    info = DatabaseInfo(name="d" * 63, oid=1, is_template=False, allow_connections=False, conn_limit=-1, owner="o",
                        bot_user="b", bot_is_superuser=False, bot_can_alter=True, bot_database="postgres", bot_pid=1,
                        postmaster_start="0", port="5432", in_recovery=False, prepared_xacts=2, logical_slots=1)
    msg = clear_db_message("prod", info, connected, tokens={"clear_db": "t1", "clear_db_block": "t1",
                                                            "allow_connections": "t2"}, block_why=None,
                           terminate_why=None)
    assert validate_message_blocks(msg["blocks"]) == []
    assert "… and" in json.dumps(msg["blocks"], ensure_ascii=False) and "2 prepared transactions" in json.dumps(msg["blocks"])
    snapshot = tuple(SessionRef(pid=c.pid, backend_start="2026-01-01T00:00:00.000000+00:00", user=c.user,
                                application=c.application, client_addr=c.client_addr, state=c.state)
                     for c in connected)
    target = DatabaseTarget(database=info.name, sessions=snapshot, actions=("clear_db_block",))
    stored = StoredTarget(token="t1", env="prod", host="primary", created_at=1.0, target=target)
    kind = ACTIONS["clear_db_block"]
    assert validate_view(bulk_modal(stored, kind, "t1", "C1", True)) == []
    problems = [{"pid": s.pid, "user": s.user, "application": s.application, "result": "x" * 300}
                for s in snapshot[:15]]
    for state, outcome in (
        ("pending", None),
        ("executing", {"status": "running", "progress": {"total": 600, "handled": 300, "counts": {"ended": 300}}}),
        ("failed", {"status": "partial", "detail": "y" * 500, "counts": {"ended": 580, "failed": 20},
                    "problems": problems, "skipped": problems, "blocked": True, "allow_token": "t3",
                    "closed_at": 1.0, "finished_at": 2.0, "duration_s": 12.5, "arrived": 3}),
    ):
        req = request_from_dict(
            {"id": "r1", "env": "prod", "host": "primary", "action": "clear_db_block", "target": target.model_dump(),
             "requester": "U1", "reason": "z" * 500, "state": state, "created_at": 1.0, "expires_at": 2.0,
             "decided_at": 1.5, "decided_by": "U2", "outcome": outcome, "updated_at": 2.0})
        rendered = bulk_request_message(req, kind, ["U2"] if state != "pending" else [], 1, ["U2"])
        assert validate_message_blocks(rendered["blocks"]) == [], state
        assert len(rendered["text"]) <= 3000
    assert "Allow connections again" in json.dumps(rendered["blocks"])
