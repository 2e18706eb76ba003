"""``protect:`` and ``ignore:`` on every path (issue 23 §11-§12, issue 22 §4), end to end.

The bot runs with a **superuser** role here (what ``make run`` uses on many machines): PostgreSQL itself
would let it signal anyone, so only ``protect`` stands between a click and a superuser's session. Every
test drives the real bot over signed HTTP against real PostgreSQL and the fake Slack Web API.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql as pgsql

from bot.approval.models import SessionTarget
from bot.postgres.models import iso
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import click, find_button, post_listing, request_kill, wait_state, wait_until

ENV = "su"
HOSTILE = "<!channel>*x*`y`"


def su_config(pg, **overrides) -> dict:
    """One environment whose DSN is the server's superuser; ``protect`` at the top level via ``top``."""
    top = overrides.pop("top", {})
    env = env_config(pg, user=pg.primary.admin_user, **overrides)
    return {**top, "environments": {ENV: env}}


class Conns:
    """Connections opened by one test (terminated and closed at its end)."""

    def __init__(self, pg):
        self.pg = pg
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []

    def open(self, app: str, user: str | None = "app_user", db: str = "appdb", autocommit: bool = True,
             ) -> psycopg.Connection:
        c = self.pg.primary.connect(user=user, dbname=db, application_name=app, autocommit=autocommit)
        self.conns.append(c)
        return c

    def idle_tx(self, app: str, user: str | None = "app_user", db: str = "appdb") -> int:
        c = self.open(app, user, db, autocommit=False)
        c.execute("SELECT 1")
        return c.info.backend_pid

    def idle(self, app: str, user: str | None = "app_user", db: str = "appdb") -> int:
        c = self.open(app, user, db)
        c.execute("SELECT 1")
        return c.info.backend_pid

    def in_background(self, conn: psycopg.Connection, stmt: str | pgsql.Composable) -> None:
        def run() -> None:
            try:
                conn.execute(stmt)
            except psycopg.Error:
                pass

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def close(self) -> None:
        for c in self.conns:
            try:
                self.pg.primary.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
            except psycopg.Error:
                pass
        for t in self.threads:
            t.join(5)
        for c in self.conns:
            c.close()


@pytest.fixture
def conns(pg) -> Iterator[Conns]:
    c = Conns(pg)
    yield c
    c.close()


@pytest.fixture
def bot(pg, fake_slack) -> Iterator[BotUnderTest]:
    fake_slack.usergroups = {"S0DBAS": ["U7"]}
    b = BotUnderTest(su_config(pg), fake_slack).start()
    yield b
    b.close()


def alive(pg, pid: int) -> bool:
    return bool(pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def labels(msg) -> set[str]:
    return {e["text"]["text"] for b in msg.blocks or [] if b.get("type") == "actions" for e in b["elements"]}


def app_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def events(bot) -> list[str]:
    return [e["event"] for e in bot.rt.store.audit_entries(limit=200)]


def open_details(bot, msg, pid: int) -> str:
    """Click Details of ``pid``; the modal's text once read."""
    button = find_button(msg, f"Details {pid}")
    assert button is not None, f"no Details {pid}"
    n = len(bot.fake.calls_for("views.open", ok=True))
    assert bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg).status == 200
    opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True)[n:], 10, "views.open")
    view_id = opened[0].response["view"]["id"]

    def final():
        text = json.dumps(bot.fake.views[view_id].view["blocks"], ensure_ascii=False)
        return None if "Reading pid" in text else text

    return wait_until(final, 15, "the details view")


def approve_request(bot, msg) -> None:
    assert click(bot, msg, "Approve", "U2").status == 200


# --- a superuser session: never offered, on any path -----------------------------------------------


def test_a_superuser_session_is_offered_no_signal_in_a_listing_details_or_locks_and_says_why(bot, pg, conns):
    app = app_name("both")
    su = conns.idle_tx(app, user=None)  # the server's superuser
    plain = conns.idle_tx(app)
    msg = post_listing(bot, f"{ENV} --app {app} --min 0s")
    body = json.dumps(msg.blocks)
    assert f"Terminate {plain}" in labels(msg), "the control session is offered"
    assert f"Terminate {su}" not in labels(msg) and f"Cancel {su}" not in labels(msg)
    assert f"pid {su} cannot be signalled from chat: protected: superuser session" in body, body[:2000]
    assert f"Details {su}" in labels(msg), "Details stays: viewing is not signalling"
    # Details: no Cancel / Terminate inside the modal, and why
    view = open_details(bot, msg, su)
    assert "protected: superuser session" in view and f"Terminate {su}" not in view, view[:2000]

    # the lock tree: the superuser's idle transaction holds a row lock someone waits for
    table = "prot_" + uuid.uuid4().hex[:8]
    ident = pgsql.Identifier(table)
    pg.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(ident), dbname="appdb")
    pg.primary.sql(pgsql.SQL("INSERT INTO {} VALUES (1, 'a')").format(ident), dbname="appdb")
    pg.primary.sql(pgsql.SQL("GRANT ALL ON {} TO app_user").format(ident), dbname="appdb")
    holder = conns.open(app_name("holder"), user=None, autocommit=False)
    holder.execute(pgsql.SQL("UPDATE {} SET v = 'held' WHERE id = 1").format(ident))
    waiter = conns.open(app_name("waiter"))
    conns.in_background(waiter, pgsql.SQL("UPDATE {} SET v = 'w' WHERE id = 1").format(ident))
    wait_until(lambda: pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                                      (waiter.info.backend_pid,)), 10, "the waiter waits")
    locks = post_listing(bot, f"{ENV} locks")
    root = holder.info.backend_pid
    assert f"Terminate {root}" not in labels(locks) and f"Cancel {root}" not in labels(locks)
    assert f"pid {root} cannot be signalled from chat: protected: superuser session" in json.dumps(locks.blocks)


def test_an_approval_for_a_session_that_became_protected_signals_nothing(bot, pg, conns):
    """The signalling statement re-checks protect: a role made superuser after the request is refused."""
    role = "pgs_promoted_" + uuid.uuid4().hex[:6]
    pg.primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN").format(pgsql.Identifier(role)))
    try:
        app = app_name("promoted")
        pid = conns.idle_tx(app, user=role)
        msg = request_kill(bot, ENV, app, pid, "Terminate")
        pg.primary.sql(pgsql.SQL("ALTER ROLE {} SUPERUSER").format(pgsql.Identifier(role)))
        approve_request(bot, msg)
        done = wait_state(bot, msg, "nothing was signalled")
        text = json.dumps(done.blocks)
        assert "protected: superuser session" in text, text[:2000]
        assert alive(pg, pid), "a session that became protected was terminated"
        assert "terminate:refused" in events(bot) and "terminate:executed" not in events(bot)
    finally:
        conns.close()
        conns.conns.clear()
        pg.primary.sql(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(role)))


def test_a_forged_cancel_token_for_a_superuser_query_is_refused_when_approved(bot, pg, conns):
    """A token the bot never offered (an old release's, or one written into the store) still cannot act."""
    app = app_name("su-query")
    c = conns.open(app, user=None)
    conns.in_background(c, "SELECT pg_sleep(30)")
    pid = c.info.backend_pid
    wait_until(lambda: pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active'", (pid,)),
               10, "the superuser's query runs")
    row = pg.primary.sql("SELECT backend_start, query_start, xact_start, state_change, usename, datname "
                         "FROM pg_stat_activity WHERE pid = %s", (pid,))[0]
    # the bot lists nothing here (a Cancel would be refused): this only gives the click a message
    listing = post_listing(bot, f"{ENV} --app {app} --min 0s")
    assert f"Cancel {pid}" not in labels(listing)
    forged = SessionTarget(pid=pid, backend_start=iso(row[0]), query_start=iso(row[1]), xact_start=iso(row[2]),
                           state_change=iso(row[3]), listed_at=time.time(), user=row[4], database=row[5],
                           application=app, state="active", query="SELECT pg_sleep(30)")
    (token,) = bot.rt.store.put_targets(ENV, "primary", listing.channel, "U1", [forged])
    n_views = len(bot.fake.calls_for("views.open", ok=True))
    reply = bot.slack.block_action(f"pgs_kill:cancel:{token}", token, user_id="U1", message=listing)
    assert reply.status == 200
    opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
    view = opened[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    n_posts = len(bot.fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "forged"}}, user_id="U1")
    assert reply.status == 200
    posts = wait_until(lambda: bot.fake.calls_for("chat.postMessage", ok=True)[n_posts:], 10, "the request")
    msg = bot.fake.messages[(posts[0].response["channel"], posts[0].response["ts"])]
    wait_until(lambda: find_button(msg, "Approve") is not None, 5, "Approve")
    approve_request(bot, msg)
    done = wait_state(bot, msg, "nothing was signalled")
    assert "protected: superuser session" in json.dumps(done.blocks)
    assert pg.primary.sql("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0] == "active", \
        "the superuser's query was cancelled"
    assert "cancel:refused" in events(bot) and "cancel:executed" not in events(bot)


# --- roles, applications, databases; per environment over the top level ----------------------------


def test_protected_roles_applications_and_databases_are_not_offered_and_say_which_rule(pg, fake_slack, conns):
    app = app_name("guarded")
    other = app_name("other")
    protected_db = "prot_db_" + uuid.uuid4().hex[:6]
    pg.primary.sql(pgsql.SQL("CREATE DATABASE {} OWNER app_user").format(pgsql.Identifier(protected_db)))
    try:
        cfg = su_config(pg, protect={"applications": [app], "databases": [protected_db]},
                        top={"protect": {"roles": ["app_user"], "superusers": False}})
        with BotUnderTest(cfg, fake_slack) as bot:
            by_app = conns.idle_tx(app, user="pgsessions_bot", db="postgres")
            by_db = conns.idle_tx(other, user="pgsessions_bot", db=protected_db)
            by_role = conns.idle_tx(other)  # app_user: the top-level rule, kept by the environment
            su = conns.idle_tx(other, user=None)  # superusers: false at the top level, not overridden
            msg = post_listing(bot, f"{ENV} --min 0s idle-tx")
            body = json.dumps(msg.blocks)
            assert f"pid {by_app} cannot be signalled from chat: protected: application {app}" in body, body[:3000]
            assert f"pid {by_db} cannot be signalled from chat: protected: database {protected_db}" in body
            assert f"pid {by_role} cannot be signalled from chat: protected: role app_user" in body
            assert not {f"Terminate {p}" for p in (by_app, by_db, by_role)} & labels(msg)
            assert f"Terminate {su}" in labels(msg), "superusers: false at the top level lets it be offered"
    finally:
        conns.close()
        conns.conns.clear()
        pg.primary.sql(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(protected_db)))


# --- bulk: clear-db and the app sweep ---------------------------------------------------------------


def test_clear_db_spares_protected_sessions_and_counts_the_ignored_ones_it_includes(pg, fake_slack, conns):
    db = "prot_clear_" + uuid.uuid4().hex[:6]
    pg.primary.sql(pgsql.SQL("CREATE DATABASE {} OWNER app_user").format(pgsql.Identifier(db)))
    try:
        cfg = su_config(pg, ignore=[{"app": "pg_dump"}])
        with BotUnderTest(cfg, fake_slack) as bot:
            su = conns.idle(app_name("console"), user=None, db=db)
            plain = conns.idle("web", db=db)
            dump = conns.idle("pg_dump", db=db)
            msg = post_listing(bot, f"{ENV} clear-db {db}")
            text = json.dumps(msg.blocks, ensure_ascii=False)
            assert "*3 sessions* connected" in text, text[:2000]
            assert "1 session cannot be terminated by the bot: protected: superuser session" in text
            assert "1 of them matches the environment's `ignore` rules" in text and "included" in text
            terminate = next(e for b in msg.blocks if b.get("type") == "actions" for e in b["elements"]
                             if e["action_id"].startswith("pgs_bulk:clear_db:"))
            n_views = len(fake_slack.calls_for("views.open", ok=True))
            assert bot.slack.block_action(terminate["action_id"], None, user_id="U1", message=msg).status == 200
            opened = wait_until(lambda: fake_slack.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
            view = opened[0].response["view"]
            n_posts = len(fake_slack.calls_for("chat.postMessage", ok=True))
            bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "maintenance"}}, user_id="U1", view=view)
            posted = wait_until(lambda: fake_slack.calls_for("chat.postMessage", ok=True)[n_posts:], 10, "request")
            req = fake_slack.messages[(posted[0].response["channel"], posted[0].response["ts"])]
            approve_request(bot, req)
            wait_until(lambda: not alive(pg, plain) and not alive(pg, dump), 20, "the others terminated")
            final = wait_state(bot, req, "protected: superuser session", timeout=20)
            assert alive(pg, su), "clear-db terminated a protected session"
            assert "never terminated" in json.dumps(final.blocks)
    finally:
        conns.close()
        conns.conns.clear()
        pg.primary.sql(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(db)))


def test_the_app_sweep_leaves_protected_sessions_out(bot, pg, conns):
    app = app_name("pool")
    plain = [conns.idle(app) for _ in range(2)]
    su = conns.idle(app, user=None)
    msg = post_listing(bot, f"{ENV} idle --app {app} --min 0s")
    text = json.dumps(msg.blocks, ensure_ascii=False)
    assert "Terminate these 2" in labels(msg), text[:2000]
    assert "1 listed session is protected (`protect`) and left out" in text
    button = find_button(msg, "Terminate these 2")
    n_views = len(bot.fake.calls_for("views.open", ok=True))
    assert bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg).status == 200
    opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
    view = opened[0].response["view"]
    n_posts = len(bot.fake.calls_for("chat.postMessage", ok=True))
    bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                              state_values={"reason": {"reason": "pool reset"}}, user_id="U1", view=view)
    posted = wait_until(lambda: bot.fake.calls_for("chat.postMessage", ok=True)[n_posts:], 10, "request")
    req = bot.fake.messages[(posted[0].response["channel"], posted[0].response["ts"])]
    approve_request(bot, req)
    wait_until(lambda: not any(alive(pg, p) for p in plain), 20, "the pool's sessions terminated")
    assert alive(pg, su)


def test_an_app_sweep_approved_after_its_sessions_became_protected_skips_them(bot, pg, conns):
    """bulk_terminate.sql re-checks protect: a role made superuser after the request is never signalled."""
    role = "pgs_swept_" + uuid.uuid4().hex[:6]
    pg.primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN").format(pgsql.Identifier(role)))
    try:
        app = app_name("sweep")
        pids = [conns.idle(app, user=role) for _ in range(2)]
        msg = post_listing(bot, f"{ENV} idle --app {app} --min 0s")
        button = find_button(msg, "Terminate these 2")
        assert button is not None, json.dumps(msg.blocks)[:2000]
        n_views = len(bot.fake.calls_for("views.open", ok=True))
        assert bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg).status == 200
        opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
        view = opened[0].response["view"]
        n_posts = len(bot.fake.calls_for("chat.postMessage", ok=True))
        bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                  state_values={"reason": {"reason": "pool reset"}}, user_id="U1", view=view)
        posted = wait_until(lambda: bot.fake.calls_for("chat.postMessage", ok=True)[n_posts:], 10, "request")
        req = bot.fake.messages[(posted[0].response["channel"], posted[0].response["ts"])]
        pg.primary.sql(pgsql.SQL("ALTER ROLE {} SUPERUSER").format(pgsql.Identifier(role)))
        approve_request(bot, req)
        final = wait_state(bot, req, "protected: superuser session", timeout=20)
        assert "never terminated" in json.dumps(final.blocks)
        assert all(alive(pg, p) for p in pids), "a session that became protected was terminated"
    finally:
        conns.close()
        conns.conns.clear()
        pg.primary.sql(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(role)))


# --- the bot's own state-store connections -----------------------------------------------------------


def test_the_bots_own_state_store_connections_are_never_offered_nor_signalled(pg, fake_slack, conns):
    """A PostgreSQL state store on the monitored server under another role (app_user, in appdb)."""
    state = f"postgresql://app_user@{pg.primary.host}:{pg.primary.port}/appdb"
    with BotUnderTest(su_config(pg, thresholds={"idle": "1s"}), fake_slack, state=state) as bot:
        bot.rt.store.audit_entries(limit=1)  # the store's pool holds a connection
        own = pg.primary.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgsessions-state' "
                             "AND usename = 'app_user'")
        assert own, "the state store has a connection"
        pid = own[0][0]
        wait_until(lambda: pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'idle'", (pid,)),
                   10, "the state connection is idle")
        msg = post_listing(bot, f"{ENV} idle --app pgsessions-state --min 0s")
        text = json.dumps(msg.blocks, ensure_ascii=False)
        assert "protected: the bot's own state-store connection" in text, text[:2000]
        assert not [x for x in labels(msg) if x.startswith("Terminate")], labels(msg)
        # a token made by hand for it is refused at the click, before any request exists
        row = pg.primary.sql("SELECT backend_start, state_change, datname FROM pg_stat_activity WHERE pid = %s",
                             (pid,))[0]
        forged = SessionTarget(pid=pid, backend_start=iso(row[0]), state_change=iso(row[1]), listed_at=time.time(),
                               user="app_user", database=row[2], application="pgsessions-state", state="idle")
        (token,) = bot.rt.store.put_targets(ENV, "primary", msg.channel, "U1", [forged])
        reply = bot.slack.block_action(f"pgs_kill:terminate:{token}", token, user_id="U1", message=msg)
        assert reply.status == 200
        answer = bot.fake.wait_for_response(reply.response_name, timeout=10)
        assert "protected: the bot's own state-store connection" in answer.text
        assert not bot.fake.calls_for("views.open")
        assert alive(pg, pid)


# --- ignore: listings hide, lock trees keep the link -------------------------------------------------


def test_ignore_hides_a_session_from_the_listing_but_a_lock_tree_still_draws_it_and_says_so(pg, fake_slack, conns):
    with BotUnderTest(su_config(pg, ignore=[{"app": "pg_dump"}]), fake_slack) as bot:
        table = "ign_" + uuid.uuid4().hex[:8]
        ident = pgsql.Identifier(table)
        pg.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(ident), dbname="appdb")
        pg.primary.sql(pgsql.SQL("INSERT INTO {} VALUES (1, 'a')").format(ident), dbname="appdb")
        pg.primary.sql(pgsql.SQL("GRANT ALL ON {} TO app_user").format(ident), dbname="appdb")
        dump = conns.open("pg_dump", autocommit=False)
        dump.execute(pgsql.SQL("UPDATE {} SET v = 'held' WHERE id = 1").format(ident))
        waiter = conns.open(app_name("waiter"))
        conns.in_background(waiter, pgsql.SQL("UPDATE {} SET v = 'w' WHERE id = 1").format(ident))
        wait_until(lambda: pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                                          (waiter.info.backend_pid,)), 10, "the waiter waits")
        listing = post_listing(bot, f"{ENV} --min 0s")
        body = json.dumps(listing.blocks)
        assert f"*pid {dump.info.backend_pid}*" not in body and "1 ignored" in body, body[:2000]  # its own row
        locks = post_listing(bot, f"{ENV} locks")
        text = json.dumps(locks.blocks)
        assert f"Details {dump.info.backend_pid}" in labels(locks), "the ignored root is drawn in its tree"
        assert "1 of the sessions drawn matches the environment's `ignore` rules" in text, text[:2000]
