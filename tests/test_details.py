"""Details modal and `/pgsessions <env> locks`, through the bot's real HTTP surface, on real PostgreSQL.

Every lock situation is built with real sessions; the expected blockers are read by the test itself
from pg_blocking_pids() and pg_locks, never hard-coded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta

import psycopg
import pytest

from bot.approval.models import DetailsTarget
from bot.approval.targets import session_snapshot
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import find_button, post_listing, wait_until

HOSTILE = "<!channel> *bold* `tick`"


@pytest.fixture(scope="module")
def tables(pg):
    pg.primary.sql("ALTER DATABASE appdb SET compute_query_id = on")
    for sql in (
        "CREATE TABLE IF NOT EXISTS t_details (id int primary key, v int)",
        "INSERT INTO t_details SELECT g, 0 FROM generate_series(1, 10) g ON CONFLICT DO NOTHING",
        "CREATE TABLE IF NOT EXISTS t_ddl (id int)",
        "CREATE TABLE IF NOT EXISTS t_par (id int, pad text)",
    ):
        pg.primary.sql(sql, user="app_user", dbname="appdb")
    if not pg.primary.sql("SELECT 1 FROM t_par LIMIT 1", user="app_user", dbname="appdb"):
        pg.primary.sql("INSERT INTO t_par SELECT g, repeat('x', 50) FROM generate_series(1, 200000) g",
                       user="app_user", dbname="appdb")
        pg.primary.sql("ANALYZE t_par", user="app_user", dbname="appdb")
    pg.primary.wait_replayed(pg.standby) if hasattr(pg.primary, "wait_replayed") else time.sleep(1)


class Sessions:
    """Real sessions for one test, terminated at its end."""

    def __init__(self, pg):
        self.pg = pg
        self.conns: list[psycopg.Connection] = []

    def open(self, app: str, node=None, user: str = "app_user") -> psycopg.Connection:
        node = node or self.pg.primary
        c = node.connect(user=user, dbname="appdb", autocommit=True, application_name=app)
        self.conns.append(c)
        return c

    def background(self, conn, sql: str) -> None:
        def run():
            try:
                conn.execute(sql)
            except psycopg.Error:
                pass

        threading.Thread(target=run, daemon=True).start()

    def close(self) -> None:
        for c in self.conns:
            for node in (self.pg.primary, self.pg.standby):
                try:
                    node.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
                except Exception:
                    pass
        for c in self.conns:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def sessions(pg, tables):
    s = Sessions(pg)
    yield s
    s.close()


def config(pg):
    dsn = pg.primary.dsn(user="pgsessions_bot", dbname="appdb")
    standby = pg.standby.dsn(user="pgsessions_bot", dbname="appdb")
    th = {"long_running": "1s", "idle_in_transaction": "1s", "idle": "1s"}
    return {"environments": {
        "test": env_config(pg, dsn=dsn, standbys={"replica1": standby}, thresholds=th),
        "red": env_config(pg, dsn=dsn, standbys={}, thresholds=th, redact_queries=True),
        "locked": env_config(pg, dsn=dsn, standbys={}, thresholds=th, access={"channels": ["C9"]}),
    }}


@pytest.fixture
def bot(pg, fake_slack):
    with BotUnderTest(config(pg), fake_slack) as b:
        yield b
    fake_slack.assert_clean()


def blocking_pids(pg, pid: int) -> list[int]:
    return pg.primary.sql("SELECT pg_blocking_pids(%s)", (pid,))[0][0]


def waiting(pg, pid: int, node=None) -> bool:
    node = node or pg.primary
    return bool(node.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,)))


def view_text(view: dict) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def click_details(bot, msg, pid: int, user: str = "U1", channel: str | None = None) -> dict:
    """Click Details of ``pid`` in ``msg``; return the modal as finally shown (after any views.update)."""
    button = find_button(msg, f"Details {pid}")
    assert button is not None, f"no Details {pid} in {json.dumps(msg.blocks)[:1500]}"
    n_open = len(bot.fake.calls_for("views.open", ok=True))
    t0 = time.monotonic()
    reply = bot.slack.block_action(button["action_id"], button["value"], user_id=user, message=msg, channel_id=channel)
    assert reply.status == 200
    opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True)[n_open:], 10, "views.open")
    assert time.monotonic() - t0 < 3, "views.open later than the trigger_id lives"
    view_id = opened[0].response["view"]["id"]

    def final():
        v = bot.fake.views[view_id].view
        return None if "Reading pid" in view_text(v) else v

    return wait_until(final, 15, "the details view")


def test_active_query_details_with_times_wait_meaning_query_id_and_buttons(bot, sessions, pg):
    c = sessions.open("active_app")
    sessions.background(c, "SELECT pg_sleep(60) /* details-active */")
    pid = c.info.backend_pid
    time.sleep(1.3)
    msg = post_listing(bot, "test active --app active_app")
    view = click_details(bot, msg, pid)
    text = view_text(view)
    assert f"*pid {pid}*" in text and "client backend" in text and "state `active`" in text
    assert "SELECT pg_sleep(60) /* details-active */" in text
    qid = pg.primary.sql("SELECT query_id FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0]
    assert qid is not None and f"query_id `{qid}`" in text
    assert "Timeout/PgSleep" in text and "inside pg_sleep()" in text
    for what in ("backend start", "transaction start", "query start", "state change"):
        assert what in text
    assert "app `active_app`" in text and "user `app_user`" in text and "db `appdb`" in text
    labels = [e["text"]["text"] for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels == [f"Cancel {pid}", f"Terminate {pid}"]
    # the listing says when it was read
    assert "read <!date^" in json.dumps(msg.blocks)


def test_idle_in_transaction_row_lock_holder(bot, sessions, pg):
    c = sessions.open("rowlock_app")
    c.execute("BEGIN")
    c.execute("SELECT * FROM t_details WHERE id = 1 FOR UPDATE")
    pid = c.info.backend_pid
    time.sleep(1.2)
    msg = post_listing(bot, "test idle-tx --app rowlock_app")
    view = click_details(bot, msg, pid)
    text = view_text(view)
    assert "state `idle in transaction`" in text
    held = pg.primary.sql("SELECT mode, locktype FROM pg_locks WHERE pid = %s AND granted", (pid,))
    assert ("RowShareLock", "relation") in held
    assert "`RowShareLock` on relation `public.t_details`" in text
    xid = pg.primary.sql("SELECT backend_xid::text FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0]
    assert xid and f"backend_xid `{xid}`" in text and f"`ExclusiveLock` on transaction {xid}" in text
    labels = [e["text"]["text"] for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels == [f"Terminate {pid}"]  # cancel does nothing to an idle transaction


def _chain(sessions, pg):
    """holder -> w1 -> w2 -> w3, each waiting for the previous one's row."""
    holder = sessions.open("chain_root")
    holder.execute("BEGIN")
    holder.execute("UPDATE t_details SET v = v + 1 WHERE id = 1")
    pids = [holder.info.backend_pid]
    for i, (mine, theirs) in enumerate(((2, 1), (3, 2), (None, 3)), start=1):
        c = sessions.open(f"chain_w{i}")
        c.execute("BEGIN")
        if mine:
            c.execute("UPDATE t_details SET v = v + 1 WHERE id = %s", (mine,))
        sessions.background(c, "UPDATE t_details SET v = v + 1 WHERE id = " + str(int(theirs)))  # noqa: S608
        wait_until(lambda c=c: waiting(pg, c.info.backend_pid), 10, "a lock wait")
        pids.append(c.info.backend_pid)
    return pids


def test_waiter_details_show_the_chain_to_the_root(bot, sessions, pg):
    root, w1, w2, w3 = _chain(sessions, pg)
    assert blocking_pids(pg, w3) == [w2] and blocking_pids(pg, w2) == [w1] and blocking_pids(pg, w1) == [root]
    msg = post_listing(bot, "test blocked")
    view = click_details(bot, msg, w3)
    text = view_text(view)
    assert f"blocked by pid {w2}" in text and f"which waits for pid {w1}" in text
    assert f"which waits for pid {root}" in text and f"Root: pid {root}" in text
    assert "Lock/transactionid" in text and "commit or roll back" in text
    want = pg.primary.sql("SELECT mode, transactionid::text FROM pg_locks WHERE pid = %s AND NOT granted", (w3,))
    assert "waiting for" in text and f"`{want[0][0]}` on transaction {want[0][1]}" in text
    # the root counts everyone behind it, and the listing says so too
    view = click_details(bot, msg, root)
    assert "1 waiting directly, 3 in total" in view_text(view)
    assert "*blocks 1 session* directly, 3 in total, longest wait" in json.dumps(msg.blocks)


def _tree(msg) -> dict[int, int | None]:
    """pid -> parent pid, read from the locks message's root sections and indented tree lines."""
    parent: dict[int, int | None] = {}
    for b in msg.blocks:
        if b["type"] != "section":
            continue
        t = b["text"]["text"]
        if t.startswith(":no_entry: *pid "):
            root = int(re.match(r":no_entry: \*pid (\d+)\*", t).group(1))
            parent[root] = None
            stack = [root]
        for line in t.split("\n"):
            m = re.match(r"^(\u2003*)↳ \*pid (\d+)\*", line)
            if m:
                depth = len(m.group(1)) + 1
                stack = stack[:depth]
                parent[int(m.group(2))] = stack[-1]
                stack.append(int(m.group(2)))
    return parent


def test_locks_tree_three_levels_matches_pg_blocking_pids(bot, sessions, pg):
    root, w1, w2, w3 = _chain(sessions, pg)
    msg = post_listing(bot, "test locks")
    tree = _tree(msg)
    for pid in (w1, w2, w3):
        assert tree[pid] in blocking_pids(pg, pid), (pid, tree)
    assert tree[root] is None
    text = json.dumps(msg.blocks)
    assert "1 waiting directly, 3 in total" in text
    labels = {e["text"]["text"] for b in msg.blocks if b["type"] == "actions" for e in b["elements"]}
    assert f"Cancel {root}" not in labels  # the root is idle in transaction: only Terminate ends it
    assert {f"Terminate {root}", f"Details {root}", f"Details {w1}", f"Details {w2}", f"Details {w3}"} <= labels
    assert f"Terminate {w1}" not in labels
    # nothing waits any more: one line
    for c in sessions.conns:
        pg.primary.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
    wait_until(lambda: not pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"), 10, "no waits")
    msg = post_listing(bot, "test locks")
    assert msg.text == "Nothing waits for a lock on test."


def test_ddl_queue_is_named_with_the_reader_as_root(bot, sessions, pg):
    holder = sessions.open("ddl_reader")
    holder.execute("BEGIN")
    holder.execute("SELECT * FROM t_ddl")
    alter = sessions.open("ddl_alter")
    sessions.background(alter, "ALTER TABLE t_ddl ADD COLUMN IF NOT EXISTS c int")
    wait_until(lambda: waiting(pg, alter.info.backend_pid), 10, "the ALTER waits")
    readers = []
    for i in range(2):
        r = sessions.open(f"ddl_q{i}")
        sessions.background(r, "SELECT count(*) FROM t_ddl")
        wait_until(lambda r=r: waiting(pg, r.info.backend_pid), 10, "a reader queues")
        readers.append(r.info.backend_pid)
    a, h = alter.info.backend_pid, holder.info.backend_pid
    assert blocking_pids(pg, a) == [h]
    assert all(blocking_pids(pg, r) == [a] for r in readers)  # the "soft" block names the ALTER
    want = pg.primary.sql("SELECT mode FROM pg_locks WHERE pid = %s AND NOT granted", (a,))[0][0]
    assert want == "AccessExclusiveLock"
    msg = post_listing(bot, "test locks")
    tree = _tree(msg)
    assert tree[h] is None and tree[a] == h and all(tree[r] == a for r in readers)
    text = json.dumps(msg.blocks)
    assert f"DDL queue*: pid {a} waits for `AccessExclusiveLock` on relation `public.t_ddl`" in text
    assert "and 2 sessions queue behind that request" in text
    assert "holds what others want: `AccessShareLock` on relation `public.t_ddl`" in text


def test_advisory_lock_waiter(bot, sessions, pg):
    a = sessions.open("adv_holder")
    a.execute("SELECT pg_advisory_lock(424242)")
    b = sessions.open("adv_waiter")
    sessions.background(b, "SELECT pg_advisory_lock(424242)")
    wait_until(lambda: waiting(pg, b.info.backend_pid), 10, "advisory wait")
    time.sleep(1.1)
    msg = post_listing(bot, "test blocked")
    text = view_text(click_details(bot, msg, b.info.backend_pid))
    assert "Lock/advisory" in text and "advisory lock key 424242" in text
    assert f"blocked by pid {a.info.backend_pid}" in text


def test_parallel_query_shows_leader_and_workers(bot, sessions, pg):
    c = sessions.open("par_app")
    for s in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
              "max_parallel_workers_per_gather = 2", "parallel_leader_participation = off"):
        c.execute(f"SET {s}")
    sessions.background(c, "SELECT sum(length(md5(a.pad || b.g::text))) FROM t_par a "
                           "CROSS JOIN generate_series(1, 200) b(g)")
    pid = c.info.backend_pid
    workers = wait_until(lambda: [r[0] for r in pg.primary.sql(
        "SELECT pid FROM pg_stat_activity WHERE leader_pid = %s AND pid <> %s ORDER BY pid", (pid, pid))],
        10, "parallel workers")
    msg = post_listing(bot, "test active --app par_app --min 0s")
    text = view_text(click_details(bot, msg, pid))
    assert "*Parallel query* leader; workers:" in text
    assert any(f"pid {w}" in text for w in workers)


def test_standby_session_details(bot, sessions, pg):
    c = sessions.open("standby_app", node=pg.standby)
    sessions.background(c, "SELECT pg_sleep(60) /* on standby */")
    time.sleep(1.3)
    msg = post_listing(bot, "test replica1 active --app standby_app")
    text = view_text(click_details(bot, msg, c.info.backend_pid))
    assert "`test` / `replica1` (standby)" in text and "/* on standby */" in text


def test_ended_session_and_reused_pid_are_said_not_shown(bot, sessions, pg):
    c = sessions.open("ending_app")
    c.execute("SELECT 1")
    time.sleep(1.2)
    msg = post_listing(bot, "test idle --app ending_app")
    pid = c.info.backend_pid
    pg.primary.sql("SELECT pg_terminate_backend(%s, 3000)", (pid,))
    assert "has ended" in view_text(click_details(bot, msg, pid))
    # reused pid: a token whose snapshot has the same pid and another backend_start
    live = sessions.open("newcomer_app")
    live.execute("SELECT 1")
    time.sleep(1.2)
    msg = post_listing(bot, "test idle --app newcomer_app")
    lpid = live.info.backend_pid
    token = find_button(msg, f"Details {lpid}")["value"]
    target = bot.rt.store.get_target(token)
    from datetime import datetime
    started = datetime.fromisoformat(target.target.backend_start) - timedelta(microseconds=1)
    from bot.render.buttons import details_button
    [fake_token] = bot.rt.store.put_targets("test", "primary", "C1", "U1",
                                            [target.target.model_copy(update={"backend_start": started.isoformat()})])
    stale = {"blocks": [{"type": "actions", "elements": [details_button(lpid, fake_token)]}]}
    n = len(bot.fake.calls_for("views.open", ok=True))
    bot.slack.block_action(f"pgs_details:{fake_token}", fake_token, message=stale)
    opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True)[n:], 10, "views.open")
    vid = opened[0].response["view"]["id"]
    text = wait_until(lambda: (lambda t: t if "Reading pid" not in t else None)(view_text(bot.fake.views[vid].view)),
                      10, "view")
    assert "now belongs to another backend" in text and "newcomer_app" not in text


def test_redacted_environment_hides_literals_in_details(bot, sessions, pg):
    c = sessions.open("red_app")
    sessions.background(c, "SELECT pg_sleep(60), 'secret-literal-xyz' AS s")
    time.sleep(1.3)
    msg = post_listing(bot, "red active --app red_app")
    text = view_text(click_details(bot, msg, c.info.backend_pid))
    assert "pg_sleep" in text and "secret-literal-xyz" not in text


def test_viewer_who_may_not_view_gets_nothing(bot, sessions, pg):
    c = sessions.open("hidden_app")
    c.execute("SELECT 1")
    row = pg.primary.sql("SELECT backend_start FROM pg_stat_activity WHERE pid = %s", (c.info.backend_pid,))[0]
    from tests.test_locks_unit import session as make_session
    snap = DetailsTarget(**session_snapshot(make_session(c.info.backend_pid)).model_dump(exclude={"kind"}))
    snap = snap.model_copy(update={"backend_start": row[0].isoformat()})
    # a button issued in C1 before `locked` was restricted to C9: clicking it in C1 shows nothing
    [token] = bot.rt.store.put_targets("locked", "primary", "C1", "U1", [snap])
    n_eph = len(bot.fake.calls_for("chat.postEphemeral"))
    n_resp = len(bot.fake.responses)
    bot.slack.block_action(f"pgs_details:{token}", token, channel_id="C1",
                           message={"blocks": [], "text": "old listing"})
    wait_until(lambda: bot.fake.calls_for("chat.postEphemeral")[n_eph:] or bot.fake.responses[n_resp:], 10, "a refusal")
    said = json.dumps([r.__dict__ for r in bot.fake.responses[n_resp:]], default=str) + json.dumps(
        [x.params for x in bot.fake.calls_for("chat.postEphemeral")[n_eph:]])
    assert "can only be viewed in" in said
    assert not bot.fake.calls_for("views.open")


def test_hostile_names_are_escaped_in_listing_details_and_locks(bot, sessions, pg):
    holder = sessions.open(HOSTILE)
    holder.execute("BEGIN")
    holder.execute("UPDATE t_details SET v = v + 1 WHERE id = 9")
    waiter = sessions.open(HOSTILE + "w")
    sessions.background(waiter, "UPDATE t_details SET v = v + 1 WHERE id = 9 /* <!here> ``` */")
    wait_until(lambda: waiting(pg, waiter.info.backend_pid), 10, "a lock wait")
    time.sleep(1.1)
    msg = post_listing(bot, "test blocked")
    view = click_details(bot, msg, waiter.info.backend_pid)
    locks = post_listing(bot, "test locks")
    for where in (json.dumps(msg.blocks), view_text(view), json.dumps(locks.blocks)):
        assert "<!channel>" not in where and "<!here>" not in where
        assert "&lt;!channel&gt;" in where
    for b in view["blocks"]:
        t = (b.get("text") or {}).get("text", "")
        if t.startswith("```"):
            assert t.count("```") == 2


def test_terminate_from_the_details_modal_goes_through_approval_in_the_listing_channel(bot, sessions, pg):
    c = sessions.open("modal_kill_app")
    c.execute("BEGIN")
    c.execute("SELECT 1")
    pid = c.info.backend_pid
    time.sleep(1.2)
    msg = post_listing(bot, "test idle-tx --app modal_kill_app")
    view = click_details(bot, msg, pid)
    button = next(e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]
                  if e["text"]["text"] == f"Terminate {pid}")
    n_push = len(bot.fake.calls_for("views.push", ok=True))
    assert bot.slack.block_action(button["action_id"], button["value"], user_id="U1", view=view).status == 200
    pushed = wait_until(lambda: bot.fake.calls_for("views.push", ok=True)[n_push:], 10, "the request form")
    form = pushed[0].params["view"]
    form = json.loads(form) if isinstance(form, str) else form
    assert json.loads(form["private_metadata"])["channel"] == "C1"
    reply = bot.slack.view_submission("pgs_kill_request", private_metadata=form["private_metadata"],
                                      state_values={"reason": {"reason": "seen in details"}}, user_id="U1")
    assert reply.status == 200
    approval = wait_until(lambda: next((m for m in bot.fake.messages_in("C1") if "asks to" in json.dumps(m.blocks)),
                                       None), 10, "the approval request")
    assert f"{pid}" in json.dumps(approval.blocks)
    # a details token is not a kill token: a forged Cancel with it opens nothing
    token = find_button(msg, f"Details {pid}")["value"]
    n_open = len(bot.fake.calls_for("views.open"))
    bot.slack.block_action(f"pgs_kill:terminate:{token}", token, message=msg)
    time.sleep(0.5)
    assert len(bot.fake.calls_for("views.open")) == n_open


def test_slow_read_opens_reading_view_at_once_then_updates_it(bot, sessions, pg):
    c = sessions.open("slow_app")
    c.execute("SELECT 1")
    pid = c.info.backend_pid
    time.sleep(1.2)
    msg = post_listing(bot, "test idle --app slow_app")
    button = find_button(msg, f"Details {pid}")
    # the details query reads pg_roles: an ACCESS EXCLUSIVE lock on pg_authid makes it wait
    locker = pg.primary.connect(autocommit=False)
    locker.execute("LOCK TABLE pg_catalog.pg_authid IN ACCESS EXCLUSIVE MODE")
    released = threading.Timer(2.0, locker.rollback)
    try:
        n_open = len(bot.fake.calls_for("views.open", ok=True))
        t0 = time.time()
        released.start()
        bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
        opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True)[n_open:], 5, "views.open")
        assert opened[0].time - t0 < 1.0
        assert "Reading pid" in json.dumps(opened[0].params["view"])
        vid = opened[0].response["view"]["id"]
        final = wait_until(lambda: bot.fake.calls_for("views.update", ok=True), 15, "views.update")
        assert final[-1].params["view_id"] == vid
        assert f"*pid {pid}*" in view_text(bot.fake.views[vid].view)
    finally:
        released.join()
        locker.close()


def test_relation_of_another_database_is_named_in_the_sessions_own_database(bot, sessions, pg):
    pg.primary.sql("CREATE TABLE IF NOT EXISTS t_elsewhere (id int)")  # in the admin database, not appdb
    pg.primary.sql("GRANT SELECT ON t_elsewhere TO app_user")
    c = pg.primary.connect(user="app_user", dbname=pg.primary.admin_dbname, autocommit=True,
                           application_name="elsewhere_app")
    sessions.conns.append(c)
    c.execute("BEGIN")
    c.execute("SELECT * FROM t_elsewhere")
    time.sleep(1.2)
    msg = post_listing(bot, "test idle-tx --app elsewhere_app")
    text = view_text(click_details(bot, msg, c.info.backend_pid))
    assert "`AccessShareLock` on relation `public.t_elsewhere`" in text


def test_standby_locks_show_replay_as_the_root_that_cannot_be_signalled(bot, sessions, pg):
    pg.primary.sql("CREATE TABLE IF NOT EXISTS t_replay_lock (id int)", user="app_user", dbname="appdb")
    time.sleep(0.5)
    locker = sessions.open("replay_locker")
    locker.execute("BEGIN")
    locker.execute("LOCK TABLE t_replay_lock IN ACCESS EXCLUSIVE MODE")
    pg.primary.sql("SELECT pg_switch_wal()")  # the lock's WAL record, not followed by a commit, must be sent
    startup = wait_until(lambda: pg.standby.sql(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE a.backend_type = 'startup' AND l.mode = 'AccessExclusiveLock' AND l.granted "
        "AND l.relation = (SELECT oid FROM pg_class WHERE relname = 't_replay_lock')", dbname="appdb"),
        15, "the lock replayed on the standby")[0][0]
    reader = sessions.open("standby_reader", node=pg.standby)
    sessions.background(reader, "SELECT count(*) FROM t_replay_lock")
    wait_until(lambda: waiting(pg, reader.info.backend_pid, node=pg.standby), 10, "the reader waits")
    blockers = pg.standby.sql("SELECT pg_blocking_pids(%s)", (reader.info.backend_pid,))[0][0]
    assert blockers == [startup]
    msg = post_listing(bot, "test replica1 locks")
    tree = _tree(msg)
    assert tree[startup] is None and tree[reader.info.backend_pid] == startup
    text = json.dumps(msg.blocks)
    assert f"pid {startup} cannot be signalled from chat: it is a startup, not a client session" in text
    labels = {e["text"]["text"] for b in msg.blocks if b["type"] == "actions" for e in b["elements"]}
    assert f"Terminate {startup}" not in labels and f"Details {reader.info.backend_pid}" in labels
    locker.execute("ROLLBACK")


def test_hostile_role_and_database_names_are_escaped_in_details(bot, sessions, pg):
    from psycopg import sql as pgsql

    role, db = "<!channel> *role* `r`", "<!here> _db_ ```"
    if not pg.primary.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
        pg.primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN").format(pgsql.Identifier(role)))
    if not pg.primary.sql("SELECT 1 FROM pg_database WHERE datname = %s", (db,)):
        pg.primary.sql(pgsql.SQL("CREATE DATABASE {} OWNER {}").format(pgsql.Identifier(db), pgsql.Identifier(role)))
    c = pg.primary.connect(user=role, dbname=db, autocommit=True, application_name=HOSTILE)
    sessions.conns.append(c)
    c.execute("CREATE TABLE IF NOT EXISTS \"<!everyone> *t*\" (id int)")
    c.execute("BEGIN")
    c.execute("LOCK TABLE \"<!everyone> *t*\" IN SHARE MODE")
    time.sleep(1.2)
    msg = post_listing(bot, "test idle-tx --min 0s")
    view = click_details(bot, msg, c.info.backend_pid)
    text = view_text(view)
    for raw in ("<!channel>", "<!here>", "<!everyone>"):
        assert raw not in text and raw not in json.dumps(msg.blocks)
    assert "&lt;!channel&gt; *role*" in text and "&lt;!here&gt; _db_" in text
    assert "&lt;!everyone&gt;" in text  # the relation, named in the session's own database


def test_user_outside_access_viewers_cannot_open_details_or_the_lock_tree(pg, fake_slack, sessions):
    # access.viewers names U1 only: U1's listing shows Details; U7 clicking it gets a clear refusal and
    # no modal with the session's content; `/pgsessions viewed locks` is refused to U7 as well
    cfg = config(pg)
    cfg["environments"] = {"viewed": env_config(
        pg, dsn=pg.primary.dsn(user="pgsessions_bot", dbname="appdb"), standbys={},
        thresholds={"long_running": "1s", "idle_in_transaction": "1s", "idle": "1s"},
        access={"viewers": ["U1"], "requesters": ["*"], "approvers": ["U2"]},
    )}
    c = sessions.open("viewed_app")
    c.execute("BEGIN")
    c.execute("SELECT * FROM t_details WHERE id = 2 FOR UPDATE")
    pid = c.info.backend_pid
    with BotUnderTest(cfg, fake_slack) as bot:
        msg = post_listing(bot, "viewed --app viewed_app --min 0s", user="U1")
        button = find_button(msg, f"Details {pid}")
        assert button is not None, json.dumps(msg.blocks)[:1500]
        n_eph = len(fake_slack.calls_for("chat.postEphemeral"))
        n_resp = len(fake_slack.responses)
        reply = bot.slack.block_action(button["action_id"], button["value"], user_id="U7", message=msg)
        assert reply.status == 200
        wait_until(lambda: fake_slack.calls_for("chat.postEphemeral")[n_eph:] or fake_slack.responses[n_resp:], 10,
                   "a refusal")
        said = json.dumps([r.__dict__ for r in fake_slack.responses[n_resp:]], default=str) + json.dumps(
            [x.params for x in fake_slack.calls_for("chat.postEphemeral")[n_eph:]])
        assert "you are not allowed to see sessions of `viewed` (access.viewers)" in said, said
        assert "viewed_app" not in said and "t_details" not in said
        time.sleep(0.5)  # a late views.open would show up here
        assert not fake_slack.calls_for("views.open")
        # the same click by the viewer opens the modal: the refusal above was about U7, not the button
        view = click_details(bot, msg, pid, user="U1")
        assert f"*pid {pid}*" in view_text(view)
        # the lock tree: refused to U7 (nothing posted), shown to U1
        n_posts = len(fake_slack.calls_for("chat.postMessage"))
        reply = bot.command("viewed locks", user_id="U7", channel_id="C1")
        assert reply.status == 200
        assert "access.viewers" in reply.body, reply.body
        time.sleep(0.5)
        assert len(fake_slack.calls_for("chat.postMessage")) == n_posts
        assert post_listing(bot, "viewed locks", user="U1").text
    fake_slack.assert_clean()
