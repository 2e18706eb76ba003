"""Least privilege, managed services' superuser sessions, and autovacuum workers that block (issue 24).

Everything runs on a primary of this module's own (autovacuum is made fast and eager here, which would
disturb other modules' tables), through the bot's real HTTP surface and the fake Slack Web API:

* a bot role with only ``pg_read_all_stats`` + ``pg_signal_backend`` sees every session's query, may
  signal other users' sessions, and may not signal a superuser's; the row says why, naming the provider
  when the superuser is a managed service's own role (``rdsadmin`` stands in for RDS's here);
* an autovacuum worker that a DDL statement queues behind (and a reader behind the DDL) is the root of
  the lock tree, is listed, and is the root of the pile-up alert; a superuser bot role may Cancel it
  with approval, a non-superuser role on PostgreSQL < 18 is told which grant it would need.

The autovacuum worker is made to run for minutes on a table of dead rows (per-table cost delay 100 ms,
cost limit 1), and the DDL session waits with ``deadlock_timeout`` raised: a waiter blocked by an
ordinary autovacuum run cancels it itself after ``deadlock_timeout`` (PostgreSQL's own rule), which
would end the situation before the bot could see it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql as pgsql

from bot.postgres.models import (
    Category,
    Filters,
    Listing,
    ServerInfo,
    Session,
    cannot_signal_reason,
    superuser_session_reason,
)
from bot.postgres.signals import signal
from bot.render.listing import render_listing
from bot.render.watch import render_alert
from bot.watch.model import LOCK_PILEUP
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack, validate_message_blocks
from tests.harness.flows import click, find_button, post_listing, request_kill, wait_state
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.harness.waiting import wait_until

LEAST = "pgs_least"  # pg_read_all_stats + pg_signal_backend, nothing else
PROVIDER = "rdsadmin"  # a superuser named like RDS's own role
CHANNEL = "C0WATCHPRIV"


@pytest.fixture(scope="module")
def pair() -> Iterator[ClusterPair]:
    p = start_pair(standby=False)
    node = p.primary
    try:
        node.sql("ALTER SYSTEM SET autovacuum_naptime = 1")
        node.sql("SELECT pg_reload_conf()")
        for role, extra in ((LEAST, "IN ROLE pg_read_all_stats, pg_signal_backend"), (PROVIDER, "SUPERUSER")):
            if not node.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
                node.sql(pgsql.SQL("CREATE ROLE {} LOGIN " + extra).format(pgsql.Identifier(role)))
        wait_until(lambda: node.sql("SELECT setting FROM pg_settings WHERE name = 'autovacuum_naptime'")[0][0] == "1",
                   10, "autovacuum_naptime reloaded")
        yield p
    finally:
        try:
            node.sql("ALTER SYSTEM RESET autovacuum_naptime")
            node.sql("SELECT pg_reload_conf()")
        finally:
            p.stop()


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    f = FakeSlack(token="xoxb-test").start()
    f.usergroups = {"S0DBAS": ["U7"]}
    try:
        yield f
    finally:
        f.stop()


class Conns:
    """Connections opened by one test, each statement in a thread of its own; terminated at the end."""

    def __init__(self, pair: ClusterPair):
        self.pair = pair
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []
        self.done: dict[int, bool] = {}

    def open(self, user: str = "app_user", app: str = "", **kw) -> psycopg.Connection:
        c = self.pair.primary.connect(user=user, dbname="appdb", autocommit=True, application_name=app, **kw)
        self.conns.append(c)
        return c

    def run(self, conn: psycopg.Connection, stmt) -> None:
        pid = conn.info.backend_pid

        def go() -> None:
            try:
                conn.execute(stmt)
            except psycopg.Error:
                pass
            self.done[pid] = True

        t = threading.Thread(target=go, daemon=True)
        t.start()
        self.threads.append(t)

    def close(self) -> None:
        for c in self.conns:
            try:
                self.pair.primary.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
            except Exception:
                pass
        for t in self.threads:
            t.join(10)
        for c in self.conns:
            c.close()


@pytest.fixture
def conns(pair) -> Iterator[Conns]:
    c = Conns(pair)
    yield c
    c.close()


def activity(pair, pid: int) -> tuple:
    rows = pair.primary.sql("SELECT state, query, wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows[0] if rows else (None, None, None)


def running(pair, pid: int, needle: str) -> bool:
    state, query, _ = activity(pair, pid)
    return state == "active" and needle in (query or "")


def blocking_pids(pair, pid: int) -> list[int]:
    return pair.primary.sql("SELECT pg_blocking_pids(%s)", (pid,))[0][0]


def bot_config(pair, user: str, **overrides) -> dict:
    """The bot in appdb (where the tables are, so that it can name them)."""
    return {"environments": {"test": env_config(pair, user=user, dsn=pair.primary.dsn(user=user, dbname="appdb"),
                                                **overrides)}}


def labels(msg) -> list[str]:
    return [el["text"]["text"] for b in msg.blocks or [] if b.get("type") == "actions" for el in b.get("elements", [])]


def section_of(msg, pid: int) -> str:
    """The text of the listing section of ``pid`` and the context lines right under it."""
    out, on = [], False
    for b in msg.blocks:
        text = b.get("text", {}).get("text", "") if b["type"] == "section" else " ".join(
            e.get("text", "") for e in b.get("elements", []) if isinstance(e, dict)) if b["type"] == "context" else ""
        if b["type"] == "section":
            on = f"*pid {pid}*" in text
        if on and text:
            out.append(text)
    return "\n".join(out)


# --- least privilege ------------------------------------------------------------------------------


def test_least_privilege_role_sees_every_query_signals_others_and_says_why_not_superusers(pair, fake, conns):
    tag = uuid.uuid4().hex[:8]
    app_conn = conns.open(app=f"least-{tag}")
    provider = conns.open(user=PROVIDER, app=f"provider-{tag}")
    plain_su = conns.open(user="postgres", app=f"su-{tag}")
    for c, label in ((app_conn, "APPQ"), (provider, "PROVQ"), (plain_su, "SUQ")):
        conns.run(c, f"SELECT pg_sleep(60) /* {label} {tag} */")
    a, p, s = app_conn.info.backend_pid, provider.info.backend_pid, plain_su.info.backend_pid
    for pid, label in ((a, "APPQ"), (p, "PROVQ"), (s, "SUQ")):
        wait_until(lambda pid=pid, label=label: running(pair, pid, label), 10, f"pid {pid} runs {label}")
    # what the rows say is what PostgreSQL does: the role really cannot signal a superuser's session
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        pair.primary.sql("SELECT pg_cancel_backend(%s)", (p,), user=LEAST)

    with BotUnderTest(bot_config(pair, LEAST), fake) as bot:
        msg = post_listing(bot, "test active --min 0s")
        body = json.dumps(msg.blocks)
        assert "insufficient privilege" not in body
        # every session's query is visible to pg_read_all_stats (other users' and superusers' alike)
        for label in ("APPQ", "PROVQ", "SUQ"):
            assert f"{label} {tag}" in body, label
        assert {f"Cancel {a}", f"Terminate {a}"} <= set(labels(msg))
        for pid in (p, s):
            assert f"Cancel {pid}" not in labels(msg) and f"Terminate {pid}" not in labels(msg)
        assert (f"pid {p} cannot be signalled from chat: superuser session of the provider ({PROVIDER}, RDS/Aurora)"
                in section_of(msg, p)), section_of(msg, p)
        assert f"pid {s} cannot be signalled from chat: superuser session (the bot" in section_of(msg, s)
        assert "provider" not in section_of(msg, s)

        # and it may signal another user's session: an approved Cancel stops the query
        request = request_kill(bot, "test", f"least-{tag}", a, "Cancel")
        click(bot, request, "Approve", "U2")
        wait_state(bot, request, "*Done*")
        wait_until(lambda: not running(pair, a, "APPQ"), 10, "the app's query cancelled")
        assert running(pair, p, "PROVQ") and running(pair, s, "SUQ")
        fake.assert_clean()


@pytest.mark.unit
def test_provider_roles_are_named_and_the_text_lives_in_one_function():
    assert superuser_session_reason("rdsadmin") == (
        "superuser session of the provider (rdsadmin, RDS/Aurora): cannot be signalled by a non-superuser role")
    assert "(cloudsqladmin, Cloud SQL)" in superuser_session_reason("cloudsqladmin")
    assert "(azuresu, Azure)" in superuser_session_reason("azuresu")
    assert superuser_session_reason("alice") == "superuser session (the bot's role is not a superuser)"
    assert superuser_session_reason(None) == "superuser session (the bot's role is not a superuser)"
    row = {"bot_is_super": False, "is_superuser": True, "bot_can_signal": True, "bot_has_privs": False}
    assert cannot_signal_reason({**row, "usename": "cloudsqladmin"}) == superuser_session_reason("cloudsqladmin")
    assert cannot_signal_reason({**row, "usename": "cloudsqladmin", "bot_is_super": True}) is None


@pytest.mark.unit
def test_autovacuum_rules():
    base = {"backend_type": "autovacuum worker", "query": "autovacuum: VACUUM public.orders", "is_superuser": False,
            "bot_is_super": False, "bot_can_signal": True, "bot_has_privs": None}
    # before 18 there is no grant for it: only a superuser may cancel a worker
    before18 = cannot_signal_reason({**base, "bot_can_signal_autovacuum": None})
    assert before18 is not None and "superuser" in before18 and "pg_signal_autovacuum_worker" in before18
    assert "PostgreSQL 18" in before18
    lacking = cannot_signal_reason({**base, "bot_can_signal_autovacuum": False})
    assert lacking is not None and "pg_signal_autovacuum_worker" in lacking and "lacks" in lacking
    assert cannot_signal_reason({**base, "bot_can_signal_autovacuum": True}) is None
    assert cannot_signal_reason({**base, "bot_is_super": True}) is None
    wrap = {**base, "bot_is_super": True, "query": "autovacuum: VACUUM public.orders (to prevent wraparound)"}
    why = cannot_signal_reason(wrap)
    assert why is not None and "wraparound" in why and "restarts" in why and "must finish" in why
    hidden = cannot_signal_reason({**base, "query": "<insufficient privilege>", "bot_can_signal_autovacuum": True})
    assert hidden is not None and "pg_read_all_stats" in hidden


def worker(pid: int, query: str, cannot_signal: str | None = None) -> Session:
    return Session(
        pid=pid, backend_start=datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC), user=None, database="shop",
        application="", client_addr=None, state="active", wait_event_type="Timeout", wait_event="VacuumDelay",
        query=query, blocked_by=(), blocking_count=2, categories=(Category.BLOCKING,), query_secs=700.0,
        xact_secs=700.0, state_secs=700.0, cannot_signal=cannot_signal, backend_type="autovacuum worker",
        query_start=datetime(2026, 12, 1, 10, 0, 1, 5, tzinfo=UTC),
    )


@pytest.mark.unit
def test_a_listing_draws_an_autovacuum_worker_as_what_it_is():
    server = ServerInfo(150020, "15.20", 100, 10, False, 1, "pgsessions_bot", True, True, True)
    plain = worker(11, "autovacuum: VACUUM public.orders")
    wrap_query = "autovacuum: VACUUM public.orders (to prevent wraparound)"
    wrap = worker(12, wrap_query, cannot_signal_reason({"backend_type": "autovacuum worker", "query": wrap_query,
                                                         "bot_is_super": True}))
    listing = Listing("prod", "primary", server, (plain, wrap), Filters(), {})
    msg = render_listing(listing, tokens={11: "tok11"})
    assert validate_message_blocks(msg["blocks"]) == []
    body = json.dumps(msg["blocks"], ensure_ascii=False)
    assert "*autovacuum worker* (not a client session)" in body and "`autovacuum: VACUUM public.orders`" in body
    assert "user `?`" not in body and "client local socket" not in body
    labels_ = [el["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for el in b["elements"]]
    assert "Cancel 11" in labels_ and "Terminate 11" not in labels_, labels_
    assert "Cancel 12" not in labels_ and "Terminate 12" not in labels_
    assert "*to prevent wraparound*: it must finish" in body
    assert "pid 12 cannot be signalled from chat: an autovacuum run to prevent wraparound" in body
    assert "restarts at once and must finish" in body


@pytest.mark.unit
def test_a_pileup_alert_names_an_autovacuum_root_and_why_it_has_no_button():
    root = {"pid": 21, "backend_start": "2026-12-01T10:00:00.123456+00:00", "user": None, "database": "shop",
            "application": "", "client_addr": None, "state": "active", "query": "autovacuum: VACUUM public.orders",
            "query_secs": 600.0, "xact_secs": 600.0, "state_secs": 600.0, "wait_secs": None, "wait_mode": None,
            "wait_relation": None, "backend_type": "autovacuum worker",
            "cannot_signal": cannot_signal_reason({"backend_type": "autovacuum worker", "bot_is_super": False,
                                                   "query": "autovacuum: VACUUM public.orders",
                                                   "bot_can_signal_autovacuum": False})}
    ddl = {"pid": 22, "application": "migrate", "wait_mode": "AccessExclusiveLock", "wait_relation": "orders",
           "query": "ALTER TABLE orders ADD COLUMN x int", "queued": 5}
    facts = {"root": root, "root_idle_in_transaction": False, "held": [{"mode": "ShareUpdateExclusiveLock",
             "relation": "orders"}], "direct": 1, "total": 6, "longest_wait": 90.0, "ddl": ddl, "waiters": [],
             "threshold": {"waiters": 3, "wait": 60.0}}
    msg = render_alert(LOCK_PILEUP, "prod", "primary", facts, incident_id="i1", opened_at=0.0, now=1.0,
                       tokens={21: "tok21"})
    assert validate_message_blocks(msg["blocks"]) == []
    body = json.dumps(msg["blocks"], ensure_ascii=False)
    assert "*autovacuum worker* (not a client session)" in body and "DDL queue" in body
    assert "pid 21 cannot be signalled from chat: cancelling an autovacuum worker needs pg_signal_autovacuum_worker" in body
    assert "Cancel 21" not in body and "Terminate 21" not in body
    assert "autovacuum: VACUUM public.orders" in msg["text"]
    # with the privilege: Cancel only, and what it does
    signalable = {**facts, "root": {**root, "cannot_signal": None}}
    msg = render_alert(LOCK_PILEUP, "prod", "primary", signalable, incident_id="i1", opened_at=0.0, now=1.0,
                       tokens={21: "tok21"})
    body = json.dumps(msg["blocks"], ensure_ascii=False)
    assert "Cancel 21" in body and "Terminate 21" not in body and "never terminated" in body


# --- autovacuum that blocks -----------------------------------------------------------------------


class Pileup:
    """An autovacuum worker on a table, an ALTER TABLE queued behind it, a reader queued behind the ALTER."""

    def __init__(self, pair: ClusterPair, conns: Conns):
        self.table = "av_" + uuid.uuid4().hex[:8]
        t = pgsql.Identifier(self.table)
        node = pair.primary
        node.sql(pgsql.SQL("CREATE TABLE {} (id int, pad text)").format(t), dbname="appdb")
        node.sql(pgsql.SQL("ALTER TABLE {} OWNER TO app_user").format(t), dbname="appdb")
        # without autovacuum on the table until it is full of dead rows, then slow and eager
        node.sql(pgsql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(t), dbname="appdb")
        node.sql(pgsql.SQL("INSERT INTO {} SELECT g, repeat('x', 100) FROM generate_series(1, 60000) g").format(t),
                 dbname="appdb")
        node.sql(pgsql.SQL("DELETE FROM {} WHERE id % 2 = 0").format(t), dbname="appdb")
        node.sql(pgsql.SQL(
            "ALTER TABLE {} SET (autovacuum_enabled = on, autovacuum_vacuum_cost_delay = 100, "
            "autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0, "
            "autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 0)").format(t), dbname="appdb")
        rows = wait_until(lambda: node.sql(
            "SELECT pid, query FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND query LIKE %s",
            (f"%{self.table}%",)), 60, f"an autovacuum worker on {self.table}")
        self.worker, self.worker_query = rows[0]
        self.worker_started = node.sql("SELECT query_start FROM pg_stat_activity WHERE pid = %s", (self.worker,))[0][0]
        # the DDL: it must not cancel the worker itself after deadlock_timeout (needs a superuser to raise)
        self.alter_conn = conns.open(user="postgres", app="migration")
        self.alter_conn.execute("SET deadlock_timeout = '1h'")
        self.alter = self.alter_conn.info.backend_pid
        conns.run(self.alter_conn, pgsql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(t))
        wait_until(lambda: blocking_pids(pair, self.alter) == [self.worker], 10, "the ALTER waits for the worker")
        reader = conns.open(app="web")
        self.reader = reader.info.backend_pid
        conns.run(reader, pgsql.SQL("SELECT count(*) FROM {}").format(t))
        wait_until(lambda: blocking_pids(pair, self.reader) == [self.alter], 10, "the reader queues behind the ALTER")
        self.pair = pair
        self.conns = conns

    def drop(self) -> None:
        for c in self.conns.conns:
            self.pair.primary.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
        # a DROP that waits for the worker cancels it itself after deadlock_timeout (1 s)
        self.pair.primary.sql(pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(self.table)), dbname="appdb")


@pytest.fixture
def pileup(pair, conns) -> Iterator[Pileup]:
    p = Pileup(pair, conns)
    yield p
    p.drop()


def _tree(msg) -> dict[int, int | None]:
    parent: dict[int, int | None] = {}
    stack: list[int] = []
    for b in msg.blocks:
        if b["type"] != "section":
            continue
        t = b["text"]["text"]
        if t.startswith(":no_entry: *pid "):
            root = int(t.split("*pid ", 1)[1].split("*", 1)[0])
            parent[root] = None
            stack = [root]
        for line in t.split("\n"):
            if "↳ *pid " in line:
                depth = len(line) - len(line.lstrip("\u2003")) + 1
                pid = int(line.split("↳ *pid ", 1)[1].split("*", 1)[0])
                stack = stack[:depth]
                parent[pid] = stack[-1]
                stack.append(pid)
    return parent


def request_from(bot, fake, msg, label: str, requester: str = "U1"):
    """Click ``label`` on ``msg``, submit the form: the approval request message."""
    el = find_button(msg, label)
    assert el is not None, (label, labels(msg))
    n_views = len(fake.calls_for("views.open", ok=True))
    assert bot.slack.block_action(el["action_id"], el["value"], user_id=requester, message=msg).status == 200
    opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
    view = opened[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    n_posts = len(fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "migration is stuck"}}, user_id=requester)
    assert reply.status == 200 and "errors" not in (reply.body or ""), reply.body
    posts = wait_until(lambda: [c for c in fake.calls_for("chat.postMessage", ok=True)[n_posts:]
                                if "asks to" in json.dumps(c.params.get("blocks"))], 10, "the approval request")
    return fake.messages[(posts[0].response["channel"], posts[0].response["ts"])]


def details_of(bot, fake, msg, pid: int) -> str:
    """Click Details of ``pid``; the modal's blocks (as JSON) once read."""
    el = find_button(msg, f"Details {pid}")
    assert el is not None, labels(msg)
    n_open = len(fake.calls_for("views.open", ok=True))
    assert bot.slack.block_action(el["action_id"], el["value"], user_id="U1", message=msg).status == 200
    opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_open:], 10, "views.open")
    view_id = opened[0].response["view"]["id"]

    def final():
        text = json.dumps(fake.views[view_id].view["blocks"], ensure_ascii=False)
        return None if "Reading pid" in text else text

    return wait_until(final, 15, "the details view")


def test_autovacuum_blocking_a_ddl_queue_is_the_root_and_an_approved_cancel_stops_it(pair, fake, pileup):
    av = pileup.worker
    with BotUnderTest(bot_config(pair, "postgres"), fake) as bot:
        msg = post_listing(bot, "test locks")
        tree = _tree(msg)
        assert tree[av] is None and tree[pileup.alter] == av and tree[pileup.reader] == pileup.alter, tree
        body = json.dumps(msg.blocks, ensure_ascii=False)
        assert "autovacuum worker" in body and "autovacuum: VACUUM" in body and f"public.{pileup.table}" in body, body[:3000]
        assert "to prevent wraparound" not in body
        assert f"DDL queue*: pid {pileup.alter} waits for `AccessExclusiveLock`" in body
        assert "`ShareUpdateExclusiveLock` on relation `public." + pileup.table + "`" in body  # names in code spans
        # a worker is only ever cancelled
        assert f"Cancel {av}" in labels(msg) and f"Terminate {av}" not in labels(msg)

        # the listing shows it too, as what it is
        listing = post_listing(bot, "test blocked")
        row = section_of(listing, av)
        assert "autovacuum worker" in row and "`blocking`" in row and f"public.{pileup.table}" in row, row
        assert "user `?`" not in row
        assert f"Cancel {av}" in labels(listing) and f"Terminate {av}" not in labels(listing)

        # Details: the worker read at the click, with Cancel only
        view = details_of(bot, fake, msg, av)
        assert "autovacuum worker" in view and f"Cancel {av}" in view and f"Terminate {av}" not in view, view[:2000]

        request = request_from(bot, fake, msg, f"Cancel {av}")
        # a Terminate forged on the Cancel's token is refused
        token = find_button(msg, f"Cancel {av}")["value"]
        stored, why = bot.rt.workflow.target_for(token, "terminate", "U1", "C1")
        assert stored is None and "terminate" in (why or ""), why
        # bound to what was seen: pid, backend_start and the same query_start
        target = bot.rt.store.get_target(token).target
        assert target.pid == av and target.query_start is not None and target.actions == ("cancel",)
        click(bot, request, "Approve", "U2")
        wait_state(bot, request, "*Done*", timeout=15)
        wait_until(lambda: pileup.conns.done.get(pileup.alter), 15, "the ALTER ran once the worker was cancelled")
        wait_until(lambda: pileup.conns.done.get(pileup.reader), 15, "the reader ran after the ALTER")
        assert pair.primary.sql("SELECT 1 FROM information_schema.columns WHERE table_name = %s AND "
                                "column_name = 'extra'", (pileup.table,), dbname="appdb")
        events = [e["event"] for e in bot.rt.store.audit_entries(limit=50)]
        assert "cancel:executed" in events, events
        fake.assert_clean()


def test_a_cancel_bound_to_another_autovacuum_run_leaves_the_worker_alone(pair, fake, pileup):
    """An approval of one autovacuum run never cancels the worker's next one: the statement that signals
    compares pid, backend_start and query_start (a worker starts a new query_start for every table)."""
    av = pileup.worker
    with BotUnderTest(bot_config(pair, "postgres"), fake) as bot:
        msg = post_listing(bot, "test locks")
        stored = bot.rt.store.get_target(find_button(msg, f"Cancel {av}")["value"])
        assert stored.target.query_start == pileup.worker_started.isoformat(timespec="microseconds")
        earlier_run = {**stored.target.model_dump(), "query_start": "2001-01-01T00:00:00.000000+00:00"}
        res = signal(bot.rt.dbs, "test", "primary", "cancel", av, stored.target.backend_start, listed=earlier_run)
        assert res.status == "moved" and not res.signalled, res
        assert running(pair, av, pileup.table) and blocking_pids(pair, pileup.alter) == [av], "the worker was left alone"
        # terminate is never sent to a worker, whatever the binding says
        res = signal(bot.rt.dbs, "test", "primary", "terminate", av, stored.target.backend_start,
                     listed=stored.target.model_dump())
        assert res.status == "gone" and not res.signalled and "only cancels" in res.detail, res
        assert running(pair, av, pileup.table)
        fake.assert_clean()


def test_a_non_superuser_role_is_not_offered_cancel_and_is_told_the_missing_grant(pair, fake, pileup):
    av = pileup.worker
    version = int(pair.primary.sql("SHOW server_version_num")[0][0])
    config = bot_config(pair, LEAST, watch={"channel": CHANNEL, "check_every": "1s", "consecutive": 2,
                                             "remind_every": "1h", "lock_pileup": {"waiters": 2, "wait": "1h"}})
    with BotUnderTest(config, fake, scheduler=True) as bot:
        msg = post_listing(bot, "test locks")
        assert _tree(msg)[av] is None
        assert f"Cancel {av}" not in labels(msg) and f"Details {av}" in labels(msg)
        body = json.dumps(msg.blocks, ensure_ascii=False)
        assert f"pid {av} cannot be signalled from chat: cancelling an autovacuum worker needs" in body, body[:3000]
        assert "pg_signal_autovacuum_worker" in body
        if version < 180000:
            assert "superuser" in body and "PostgreSQL 18" in body

        # the pile-up alert names the worker as its root, says what it is and why there is no button
        alert = wait_until(lambda: next((m for m in fake.messages_in(CHANNEL) if not m.thread_ts
                                         and "Lock pile-up" in m.text), None), 15, "the pile-up alert\n" + fake.summary())
        text = json.dumps(alert.blocks, ensure_ascii=False)
        assert f"waiting behind pid {av}" in alert.text and "autovacuum: VACUUM" in alert.text, alert.text
        assert "*autovacuum worker* (not a client session)" in text and "DDL queue" in text
        assert f"pid {av} cannot be signalled from chat: cancelling an autovacuum worker needs" in text
        assert f"Cancel {av}" not in labels(alert) and f"Terminate {av}" not in labels(alert)
        fake.assert_clean()


def test_with_pg_signal_autovacuum_worker_a_non_superuser_role_cancels_it(pair, fake, pileup):
    """PostgreSQL 18+: the grant pg_signal_autovacuum_worker is enough to Cancel a worker (with approval)."""
    if int(pair.primary.sql("SHOW server_version_num")[0][0]) < 180000:
        pytest.skip("pg_signal_autovacuum_worker exists from PostgreSQL 18 on")
    role = "pgs_av_" + uuid.uuid4().hex[:6]
    pair.primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_read_all_stats, pg_signal_backend, "
                               "pg_signal_autovacuum_worker").format(pgsql.Identifier(role)))
    av = pileup.worker
    try:
        with BotUnderTest(bot_config(pair, role), fake) as bot:
            msg = post_listing(bot, "test locks")
            assert _tree(msg)[av] is None
            assert f"Cancel {av}" in labels(msg) and f"Terminate {av}" not in labels(msg), labels(msg)
            request = request_from(bot, fake, msg, f"Cancel {av}")
            click(bot, request, "Approve", "U2")
            wait_state(bot, request, "*Done*", timeout=15)
            wait_until(lambda: pileup.conns.done.get(pileup.alter), 15, "the ALTER ran once the worker was cancelled")
            fake.assert_clean()
    finally:
        pair.primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        pair.primary.sql(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_the_pileup_alert_offers_cancel_of_the_worker_and_resolves_once_it_is_cancelled(pair, fake, pileup):
    av = pileup.worker
    config = bot_config(pair, "postgres", watch={"channel": CHANNEL, "check_every": "1s", "consecutive": 2,
                                                 "remind_every": "1h", "lock_pileup": {"waiters": 2, "wait": "1h"}})
    with BotUnderTest(config, fake, scheduler=True) as bot:
        alert = wait_until(lambda: next((m for m in fake.messages_in(CHANNEL) if not m.thread_ts
                                         and "Lock pile-up" in m.text), None), 15, "the pile-up alert\n" + fake.summary())
        assert f"waiting behind pid {av}" in alert.text
        assert f"Cancel {av}" in labels(alert) and f"Terminate {av}" not in labels(alert), labels(alert)
        assert "never terminated" in json.dumps(alert.blocks)
        target = bot.rt.store.get_target(find_button(alert, f"Cancel {av}")["value"]).target
        assert target.pid == av and target.actions == ("cancel",) and target.query_start is not None
        request = request_from(bot, fake, alert, f"Cancel {av}")
        click(bot, request, "Approve", "U2")
        wait_state(bot, request, "*Done*", timeout=15)
        resolved = wait_until(lambda: fake.messages[(alert.channel, alert.ts)]
                              if fake.messages[(alert.channel, alert.ts)].text.startswith("Resolved") else None,
                              20, "the alert resolved\n" + fake.summary())
        assert f"root blocker pid {av} cancelled by approval of <@U2>" in resolved.text, resolved.text
        fake.assert_clean()
