"""The version suite: the bot's main flows on every supported PostgreSQL major version (13-18).

    make test-versions                                  # every version (binaries fetched and cached)
    PGSESSIONS_TEST_VERSIONS=13,18 make test-versions   # only these

Marked ``versions`` and deselected unless ``-m`` names the marker (``make test`` runs the normal suite on
the machine's one version). One primary + hot standby per version, shared by the module, started from
the binaries ``tests/harness/pgversions.py`` finds or fetches. On each version: every statement of
``bot/postgres/queries/`` (primary and standby, as the bot's role), a listing, locks with a three-level
chain, Details, an approved Cancel and Terminate bound to what was seen (and one whose session moved on),
a lag alert naming its standby culprit, a lock pile-up alert, and ``pgsessions check``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

import psycopg
import pytest
from psycopg import sql as pgsql

from bot.check import run_checks
from bot.config import parse_config
from bot.postgres import sql as botsql
from tests.harness import pgversions
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import click, find_button, post_listing, request_kill, wait_state
from tests.harness.lag import hold_replay, lag_cluster, startup_wait
from tests.harness.pgcluster import APP_DB, APP_ROLE, BOT_ROLE, ClusterPair
from tests.harness.waiting import wait_until

pytestmark = pytest.mark.versions


def _versions() -> list[int]:
    raw = os.environ.get("PGSESSIONS_TEST_VERSIONS", "")
    return [int(v) for v in re.findall(r"\d+", raw)] or list(pgversions.SUPPORTED)


LAG_CHANNEL = "C0VERSLAGS"
WATCH_CHANNEL = "C0VERSWTCH"
ALERT_WITHIN = 15.0  # two checks a second apart, plus scheduling on a loaded 2-core machine


@dataclass
class Versioned:
    pair: ClusterPair
    major: int
    num: int  # server_version_num

    @property
    def primary(self):
        return self.pair.primary

    @property
    def standby(self):
        return self.pair.standby


@pytest.fixture(scope="module", params=_versions(), ids=lambda v: f"pg{v}")
def vpair(request) -> Iterator[Versioned]:
    major = request.param
    try:
        bindir = pgversions.bindir(major)
        tools = pgversions.tools_bindir(bindir)
    except pgversions.VersionUnavailable as exc:
        pytest.fail(f"PostgreSQL {major}: {exc}")
    with lag_cluster(str(bindir), str(tools)) as p:
        num = p.primary.connect().info.server_version
        assert num // 10000 == major, (num, major)
        if num >= 140000:
            p.primary.sql(pgsql.SQL("ALTER DATABASE {} SET compute_query_id = on").format(pgsql.Identifier(APP_DB)))
        p.primary.sql("CREATE TABLE IF NOT EXISTS v_rows (id int PRIMARY KEY, v int)", user=APP_ROLE, dbname=APP_DB)
        p.primary.sql("INSERT INTO v_rows SELECT g, 0 FROM generate_series(1, 10) g ON CONFLICT DO NOTHING",
                      user=APP_ROLE, dbname=APP_DB)
        p.wait_replayed()
        yield Versioned(p, major, num)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    f = FakeSlack(token="xoxb-test").start()
    f.usergroups = {"S0DBAS": ["U7"]}
    try:
        yield f
    finally:
        f.stop()


class Sessions:
    """Application sessions of one test, ended at its end."""

    def __init__(self, v: Versioned):
        self.v = v
        self.conns: list[psycopg.Connection] = []

    def open(self, app: str, node=None, autocommit: bool = True) -> psycopg.Connection:
        c = (node or self.v.primary).connect(user=APP_ROLE, dbname=APP_DB, autocommit=autocommit,
                                             application_name=app)
        self.conns.append(c)
        return c

    def background(self, conn: psycopg.Connection, stmt: str, errors: list | None = None) -> threading.Thread:
        def run() -> None:
            try:
                conn.execute(stmt)
            except psycopg.Error as exc:
                if errors is not None:
                    errors.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def close(self) -> None:
        for node in (self.v.primary, self.v.standby):
            node.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE backend_type = 'client backend' AND usename = %s", (APP_ROLE,))
        for c in self.conns:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def sessions(vpair) -> Iterator[Sessions]:
    s = Sessions(vpair)
    yield s
    s.close()


def config(v: Versioned, **overrides) -> dict:
    env = env_config(
        v.pair, dsn=v.primary.dsn(user=BOT_ROLE, dbname=APP_DB),
        standbys={"replica1": v.standby.dsn(user=BOT_ROLE, dbname=APP_DB)},
        thresholds={"long_running": "1s", "idle_in_transaction": "1s", "idle": "1s"},
        timeouts={"connect": "2s", "statement": "5s"}, **overrides,
    )
    return {"environments": {"v": env}}


def waiting(node, pid: int) -> bool:
    return bool(node.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,)))


def blocking_pids(node, pid: int) -> list[int]:
    return node.sql("SELECT pg_blocking_pids(%s)", (pid,))[0][0]


def alive(node, pid: int) -> bool:
    return bool(node.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def labels(msg) -> list[str]:
    return [e["text"]["text"] for b in msg.blocks or [] if b.get("type") == "actions" for e in b["elements"]]


# --- every statement --------------------------------------------------------------------------------

# one value for every parameter any statement takes (a statement ignores the others); the pids name no
# backend, so nothing is signalled
PARAMS = {
    "app": None, "usr": None, "db": None, "database": APP_DB, "query_chars": 200, "lock_limit": 10,
    "long_running": 1.0, "idle_in_transaction": 1.0, "idle": 1.0, "blocked_min": 0.0,
    "want_long_running": True, "want_idle_tx": True, "want_idle": True, "want_blocked": True,
    "idle_tx_secs": 1.0, "long_running_secs": 1.0, "xmin_secs": 1.0, "share": 50.0, "locks": True,
    "pid": 2_000_000_000, "backend_start": datetime(2000, 1, 1, tzinfo=UTC), "listed_state": "active",
    "query_start": None, "xact_start": None, "state_change": None, "timeout_ms": 100,
    "pids": [2_000_000_000], "starts": [datetime(2000, 1, 1, tzinfo=UTC)], "state_changes": [None],
    "state_like": "idle", "startup_pid": None, "suspect_secs": 1.0, "oids": [1259],
}


def statement_names() -> list[str]:
    files = resources.files("bot.postgres").joinpath("queries").iterdir()
    return sorted(f.name[:-4] for f in files if f.name.endswith(".sql") and ".pre" not in f.name)


def test_every_statement_runs_on_primary_and_standby_as_the_bot_role(vpair):
    names = statement_names()
    assert len(names) >= 20, names
    for node in (vpair.primary, vpair.standby):
        with node.connect(user=BOT_ROLE, dbname=APP_DB) as conn:
            for name in names:
                try:
                    conn.execute(botsql.query(name, conn), PARAMS).fetchall()
                except psycopg.Error as exc:
                    raise AssertionError(f"{botsql.filename(name, vpair.num)} fails on PostgreSQL {vpair.major} "
                                         f"({node.name}): {exc}") from None
            # the newest text is what older servers lack: without its override it fails there
            for name in botsql.overrides():
                chosen = botsql.filename(name, conn.info.server_version)
                if vpair.num >= 140000:
                    assert chosen == f"{name}.sql"
                else:
                    assert chosen == f"{name}.pre140000.sql"
                    with pytest.raises((psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction)):
                        conn.execute(botsql.query(name), PARAMS)


# --- listing, locks, Details, Cancel and Terminate ----------------------------------------------------


def _tree(msg) -> dict[int, int | None]:
    """pid -> parent pid, read from the locks message (root sections and indented tree lines)."""
    parent: dict[int, int | None] = {}
    stack: list[int] = []
    for b in msg.blocks:
        if b["type"] != "section":
            continue
        t = b["text"]["text"]
        m = re.match(r":no_entry: \*pid (\d+)\*", t)
        if m:
            parent[int(m.group(1))] = None
            stack = [int(m.group(1))]
        for line in t.split("\n"):
            m = re.match(r"^(\u2003*)↳ \*pid (\d+)\*", line)
            if m:
                stack = stack[: len(m.group(1)) + 1]
                parent[int(m.group(2))] = stack[-1]
                stack.append(int(m.group(2)))
    return parent


def click_details(bot, msg, pid: int) -> str:
    button = find_button(msg, f"Details {pid}")
    assert button is not None, f"no Details {pid} in {json.dumps(msg.blocks)[:1500]}"
    n_open = len(bot.fake.calls_for("views.open", ok=True))
    assert bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg).status == 200
    opened = wait_until(lambda: bot.fake.calls_for("views.open", ok=True)[n_open:], 10, "views.open")
    view_id = opened[0].response["view"]["id"]

    def final():
        text = json.dumps(bot.fake.views[view_id].view["blocks"], ensure_ascii=False)
        return None if "Reading pid" in text else text

    return wait_until(final, 15, "the details view")


def test_listing_locks_details_and_approved_cancel_and_terminate(vpair, sessions, fake):
    v = vpair
    # root (idle in transaction, holds row 1) <- w1 (holds row 2, waits for row 1) <- w2 (waits for row 2)
    root = sessions.open("v_root")
    root.execute("BEGIN")
    root.execute("UPDATE v_rows SET v = v + 1 WHERE id = 1")
    w1 = sessions.open("v_w1")
    w1.execute("BEGIN")
    w1.execute("UPDATE v_rows SET v = v + 1 WHERE id = 2")
    sessions.background(w1, "UPDATE v_rows SET v = v + 1 WHERE id = 1")
    wait_until(lambda: waiting(v.primary, w1.info.backend_pid), 10, "w1 waits")
    w2 = sessions.open("v_w2")
    cancelled: list = []
    sessions.background(w2, "UPDATE v_rows SET v = v + 1 WHERE id = 2", cancelled)
    wait_until(lambda: waiting(v.primary, w2.info.backend_pid), 10, "w2 waits")
    rp, p1, p2 = root.info.backend_pid, w1.info.backend_pid, w2.info.backend_pid
    assert blocking_pids(v.primary, p1) == [rp] and blocking_pids(v.primary, p2) == [p1]

    with BotUnderTest(config(v), fake) as bot:
        msg = post_listing(bot, "v blocked")
        body = json.dumps(msg.blocks)
        assert f"PostgreSQL {v.major}." in body, body[:800]
        assert {f"Details {rp}", f"Details {p1}", f"Details {p2}", f"Terminate {rp}"} <= set(labels(msg))
        assert "blocks 1 session* directly, 2 in total, longest wait" in body

        msg = post_listing(bot, "v locks")
        tree = _tree(msg)
        assert tree.get(rp, 0) is None and tree.get(p1) == rp and tree.get(p2) == p1, (tree, msg.text)
        # said once where it matters: 13 has no lock wait start, so its waits are timed another way
        note = "PostgreSQL 13 has no lock wait start"
        assert (note in json.dumps(msg.blocks)) == (v.major < 14)

        text = click_details(bot, msg, p2)
        assert f"blocked by pid {p1}" in text and f"which waits for pid {rp}" in text and f"Root: pid {rp}" in text
        # how long it has waited: pg_locks.waitstart on 14+, the waiting query's start on 13
        assert re.search(r"\*waiting\* for \d", text), text[:3000]
        assert (note in text) == (v.major < 14)
        qid = v.primary.sql("SELECT query_id FROM pg_stat_activity WHERE pid = %s", (p2,))[0][0] \
            if v.num >= 140000 else None
        if v.num >= 140000:
            assert qid is not None and f"query_id `{qid}`" in text
        else:
            assert "query_id" not in text

        # an approved Cancel of the waiting query, bound to the query that was listed
        msg = request_kill(bot, "v", "v_w2", p2, "Cancel")
        assert alive(v.primary, p2) and waiting(v.primary, p2), "nothing is signalled before the approval"
        click(bot, msg, "Approve", "U2")
        done = wait_state(bot, msg, "*Done*")
        assert "cancelled" in json.dumps(done.blocks)
        wait_until(lambda: cancelled, 10, "w2's query cancelled")
        assert isinstance(cancelled[0], psycopg.errors.QueryCanceled) and alive(v.primary, p2)

        # an approved Terminate of the root, bound to the transaction that was listed
        msg = request_kill(bot, "v", "v_root", rp, "Terminate")
        click(bot, msg, "Approve", "U2")
        done = wait_state(bot, msg, "*Done*")
        assert "terminated: the connection is gone" in json.dumps(done.blocks)
        assert not alive(v.primary, rp)

        # a session that moved on between the request and the approval is not signalled
        idle = sessions.open("v_idle")
        idle.execute("SELECT 1")
        msg = request_kill(bot, "v", "v_idle", idle.info.backend_pid, "Terminate")
        idle.execute("SELECT 2")
        click(bot, msg, "Approve", "U2")
        done = wait_state(bot, msg, "moved on")
        assert "nothing was signalled" in json.dumps(done.blocks)
        assert alive(v.primary, idle.info.backend_pid)
        fake.assert_clean()


# --- alerts ---------------------------------------------------------------------------------------------


def test_lag_alert_names_the_standby_culprit(vpair, sessions, fake):
    v = vpair
    table = "v_lag_" + uuid.uuid4().hex[:6]
    v.primary.sql(pgsql.SQL("CREATE TABLE {} (id int)").format(pgsql.Identifier(table)))
    v.pair.wait_replayed()
    alert = {"channel": LAG_CHANNEL, "threshold": "1s", "check_every": "1s", "consecutive": 2, "remind_every": "1h"}
    env = config(v, lag_alert=alert)
    env["environments"]["v"]["dsn"] = v.primary.dsn(user=BOT_ROLE)  # the lag tables live in postgres
    env["environments"]["v"]["standbys"] = {"replica1": v.standby.dsn(user=BOT_ROLE)}
    with BotUnderTest(env, fake, scheduler=True):
        stall = hold_replay(v.pair, table, application_name="v-report")
        try:
            pid = stall.pid
            wait_until(lambda: startup_wait(v.pair) == "Lock/relation", 10, "replay waits on the lock")
            msg = wait_until(lambda: next((m for m in fake.messages_in(LAG_CHANNEL) if not m.thread_ts
                                           and "lock conflict" in m.text), None),
                             ALERT_WITHIN, f"a lag alert\n{fake.summary()}")
            assert f"pid {pid}" in msg.text and "replica1" in msg.text, msg.text
            assert f"Terminate {pid}" in labels(msg)
        finally:
            stall.close()
        v.pair.wait_replayed(timeout=15)


def test_lock_pileup_alert_names_its_root(vpair, sessions, fake):
    v = vpair
    watch = {"channel": WATCH_CHANNEL, "check_every": "1s", "consecutive": 2, "remind_every": "1h",
             "lock_pileup": {"waiters": 3, "wait": "1h"}}
    with BotUnderTest(config(v, watch=watch), fake, scheduler=True) as bot:
        holder = sessions.open("v_holder")
        holder.execute("BEGIN")
        holder.execute("UPDATE v_rows SET v = v + 1 WHERE id = 5")
        root = holder.info.backend_pid
        for i in range(4):
            sessions.background(sessions.open(f"v_waiter{i}"), "UPDATE v_rows SET v = v + 1 WHERE id = 5")
        wait_until(lambda: len(v.primary.sql("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                             "AND application_name LIKE 'v_waiter%%'") or []) >= 4, 10, "4 waiters")
        msg = wait_until(lambda: next((m for m in fake.messages_in(WATCH_CHANNEL) if not m.thread_ts
                                       and "Lock pile-up" in m.text), None),
                         ALERT_WITHIN, f"a pile-up alert\n{fake.summary()}")
        assert f"waiting behind pid {root}" in msg.text and "4 waiting" in msg.text, msg.text
        assert f"Terminate {root}" in labels(msg)
        assert bot.rt.watch is not None


# --- check ------------------------------------------------------------------------------------------------


def test_check_reports_the_version_and_what_it_enables(vpair):
    v = vpair
    cfg = parse_config(config(v), environ={})
    hosts, _state, _slack = run_checks(cfg, {}, slack=False)
    assert len(hosts) == 2
    version = v.primary.sql("SHOW server_version")[0][0].split()[0]
    for r in hosts:
        assert r.status != "fail", [(f.check, f.message) for f in r.findings]
        assert r.server_version == version and r.server_version_num == v.num
        assert r.features == {
            "lock wait start": v.major >= 14, "query_id": v.major >= 14, "terminate with timeout": v.major >= 14,
            "reserved connections": v.major >= 16, "pg_signal_autovacuum_worker": v.major >= 18,
        }
        said = next(f.message for f in r.findings if f.check == "version")
        assert said.startswith(f"PostgreSQL {version}: enables")
        if v.major < 16:
            assert r.reserved_slots == f"none (PostgreSQL {version})"
