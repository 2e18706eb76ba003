"""The version suite: the bot's main flows on every supported PostgreSQL major version (13-18).

    make test-versions                                  # every version (binaries fetched and cached)
    PGSESSIONS_TEST_VERSIONS=13,18 make test-versions   # only these

Marked ``versions`` and deselected unless ``-m`` names the marker (``make test`` runs the normal suite on
the machine's one version). One primary + hot standby per version, shared by the module, started from
the binaries ``tests/harness/pgversions.py`` finds or fetches. On each version: every statement of
``bot/postgres/queries/`` (primary and standby, as the bot's role), a listing, locks with a three-level
chain, Details, an approved Cancel and Terminate bound to what was seen (and one whose session moved on),
a lag alert naming its standby culprit, a lock pile-up alert, and ``pgsessions check``. Least privilege: a
role with only ``pg_read_all_stats`` + ``pg_signal_backend`` sees every query, signals another user's
session with approval, is refused (in words, naming the provider for ``rdsadmin``) a superuser's, and
``check`` finds it sufficient. Last, with autovacuum made eager (``tests/harness/autovacuum.py``): an
autovacuum worker blocking a DDL queue is the lock tree's root, and a role that may signal it (granted
``pg_signal_autovacuum_worker`` on 18, a superuser before) Cancels it with approval; the pile-up alert names it as its root.
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
from bot.postgres.models import QUERY_RUNNING_STATES
from tests.harness import pgversions
from tests.harness.autovacuum import ddl_queue_behind_autovacuum, eager_autovacuum
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import (
    click,
    find_button,
    post_listing,
    request_kill,
    request_message_saved,
    wait_state,
)
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
LEAST = "pgs_least"  # pg_read_all_stats + pg_signal_backend, nothing else (not pg_monitor, not superuser)
LEAST_AV = "pgs_least_av"  # the same, plus pg_signal_autovacuum_worker on 18
PROVIDER = "rdsadmin"  # a superuser standing in for RDS's own role


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
        # least privilege: the two grants the bot needs and nothing else; a provider's own superuser; and on
        # 18 a role that may also signal autovacuum workers
        for role, extra in ((LEAST, "IN ROLE pg_read_all_stats, pg_signal_backend"), (PROVIDER, "SUPERUSER"),
                            (LEAST_AV, "IN ROLE pg_read_all_stats, pg_signal_backend"
                             + (", pg_signal_autovacuum_worker" if num >= 180000 else ""))):
            p.primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN " + extra).format(pgsql.Identifier(role)))
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

    def open(self, app: str, node=None, autocommit: bool = True, user: str = APP_ROLE) -> psycopg.Connection:
        c = (node or self.v.primary).connect(user=user, dbname=APP_DB, autocommit=autocommit,
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
        pids = [c.info.backend_pid for c in self.conns if not c.closed]  # and the other roles' sessions
        self.v.primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
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


def config(v: Versioned, user: str = BOT_ROLE, **overrides) -> dict:
    env = env_config(
        v.pair, user=user, dsn=v.primary.dsn(user=user, dbname=APP_DB),
        standbys={"replica1": v.standby.dsn(user=user, dbname=APP_DB)},
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
    "protect_superusers": True, "protect_roles": ["nobody"], "protect_apps": ["nothing"], "protect_dbs": ["none"],
    "own_user": None, "own_db": None, "own_app": None, "running_states": list(QUERY_RUNNING_STATES),
    "bound_by": "query_start", "listed_secs_ago": 1.0,
    "threshold": 1, "holders": 5,  # wraparound.sql: every database over 1, so its holders are read too
}


def statement_names() -> list[str]:
    files = resources.files("bot.postgres").joinpath("queries").iterdir()
    return sorted(f.name[:-4] for f in files if f.name.endswith(".sql") and ".pre" not in f.name)


def test_every_statement_runs_on_primary_and_standby_as_the_bot_role(vpair):
    names = statement_names()
    assert len(names) >= 20, names
    # a statement that gains a parameter needs a value here (else it fails below as "parameter missing")
    queries = resources.files("bot.postgres").joinpath("queries")
    used = {p for f in queries.iterdir() if f.name.endswith(".sql") for p in re.findall(r"%\((\w+)\)s", f.read_text())}
    assert used <= PARAMS.keys(), f"PARAMS lacks {sorted(used - PARAMS.keys())}"
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


# --- least privilege and a provider's superuser -------------------------------------------------------


def section_of(msg, pid: int) -> str:
    """The text of the listing section of ``pid`` and the context lines right under it."""
    out, on = [], False
    for b in msg.blocks:
        if b["type"] == "section":
            text = b.get("text", {}).get("text", "")
            on = f"*pid {pid}*" in text
        elif b["type"] == "context":
            text = " ".join(e.get("text", "") for e in b.get("elements", []) if isinstance(e, dict))
        else:
            text = ""
        if on and text:
            out.append(text)
    return "\n".join(out)


def running(node, pid: int, needle: str) -> bool:
    rows = node.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' AND query LIKE %s",
                    (pid, f"%{needle}%"))
    return bool(rows)


def test_least_privilege_role_sees_every_query_signals_others_and_says_why_not_superusers(vpair, sessions, fake):
    v = vpair
    tag = uuid.uuid4().hex[:8]
    cancelled: list = []
    opened = {
        "APPC": sessions.open(f"v_least_c_{tag}"), "APPT": sessions.open(f"v_least_t_{tag}"),
        "PROVQ": sessions.open(f"v_provider_{tag}", user=PROVIDER), "SUQ": sessions.open(f"v_su_{tag}", user="postgres"),
    }
    for label, c in opened.items():
        sessions.background(c, f"SELECT pg_sleep(60) /* {label} {tag} */", cancelled if label == "APPC" else None)
    pid = {label: c.info.backend_pid for label, c in opened.items()}
    for label, p in pid.items():
        wait_until(lambda p=p, label=label: running(v.primary, p, f"{label} {tag}"), 10, f"pid {p} runs {label}")
    # what the rows say is what PostgreSQL does: the role really cannot signal a superuser's session
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        v.primary.sql("SELECT pg_cancel_backend(%s)", (pid["PROVQ"],), user=LEAST)
    assert not v.primary.sql("SELECT 1 FROM pg_roles r WHERE r.rolname = %s AND (r.rolsuper OR "
                             "pg_has_role(r.oid, 'pg_monitor', 'USAGE'))", (LEAST,)), "LEAST must be least"

    with BotUnderTest(config(v, user=LEAST), fake) as bot:
        msg = post_listing(bot, "v active --min 0s")
        body = json.dumps(msg.blocks)
        assert "insufficient privilege" not in body
        # every session's query is visible through pg_read_all_stats: other users' and superusers' alike
        for label in pid:
            assert f"{label} {tag}" in body, (label, body[:3000])
        for label in ("APPC", "APPT"):
            assert {f"Cancel {pid[label]}", f"Terminate {pid[label]}"} <= set(labels(msg)), labels(msg)
        for label in ("PROVQ", "SUQ"):
            assert not {f"Cancel {pid[label]}", f"Terminate {pid[label]}"} & set(labels(msg)), labels(msg)
        provider_row, su_row = section_of(msg, pid["PROVQ"]), section_of(msg, pid["SUQ"])
        assert (f"pid {pid['PROVQ']} cannot be signalled from chat: superuser session of the provider "
                f"({PROVIDER}, RDS/Aurora)") in provider_row, provider_row
        assert f"pid {pid['SUQ']} cannot be signalled from chat: superuser session (the bot" in su_row, su_row
        assert "provider" not in su_row

        # another user's session: an approved Cancel and an approved Terminate, bound to what was seen
        msg = request_kill(bot, "v", f"v_least_c_{tag}", pid["APPC"], "Cancel")
        click(bot, msg, "Approve", "U2")
        assert "cancelled" in json.dumps(wait_state(bot, msg, "*Done*").blocks)
        wait_until(lambda: cancelled, 10, "the app's query cancelled")
        assert isinstance(cancelled[0], psycopg.errors.QueryCanceled) and alive(v.primary, pid["APPC"])

        msg = request_kill(bot, "v", f"v_least_t_{tag}", pid["APPT"], "Terminate")
        click(bot, msg, "Approve", "U2")
        assert "terminated: the connection is gone" in json.dumps(wait_state(bot, msg, "*Done*").blocks)
        assert not alive(v.primary, pid["APPT"])
        assert running(v.primary, pid["PROVQ"], f"PROVQ {tag}") and running(v.primary, pid["SUQ"], f"SUQ {tag}")
        fake.assert_clean()


def test_check_finds_the_least_privilege_grants_sufficient(vpair):
    v = vpair
    hosts, _state, _slack = run_checks(parse_config(config(v, user=LEAST), environ={}), {}, slack=False)
    assert len(hosts) == 2
    for r in hosts:
        found = {f.check: f for f in r.findings}
        assert r.status != "fail", [(f.check, f.message) for f in r.findings]
        assert r.superuser is False and r.pg_monitor is False
        assert r.pg_read_all_stats is True and r.pg_signal_backend is True
        assert found["pg_read_all_stats"].level == "ok" and found["pg_signal_backend"].level == "ok"
        # warnings only where a newer server offers a grant the role lacks (16+: reserved slots, 18: autovacuum)
        warned = {f.check for f in r.findings if f.level != "ok"}
        assert warned <= {"reserved_slots", "autovacuum"}, [(f.check, f.message) for f in r.findings]
        if v.major < 16:
            assert r.status == "ok", [(f.check, f.message) for f in r.findings]
        if r.role == "standby":
            assert "autovacuum" not in found, "no autovacuum on a standby"
        elif v.major < 18:
            assert found["autovacuum"].level == "ok" and "PostgreSQL 18" in found["autovacuum"].message
        else:
            assert found["autovacuum"].level == "warn"
            assert "GRANT pg_signal_autovacuum_worker" in found["autovacuum"].message


# --- autovacuum that blocks (last: autovacuum is made eager while it runs) ---------------------------


def test_autovacuum_blocking_a_ddl_queue_is_the_root_and_cancelled_where_the_role_may(vpair, fake):
    """The worker is the lock tree's root on every version; the least-privilege role is told which grant
    it lacks; an approved Cancel by a role that may signal it (pg_signal_autovacuum_worker on 18, a
    superuser before) lets the queue through."""
    v = vpair
    actor = LEAST_AV if v.major >= 18 else "postgres"
    watch = {"channel": WATCH_CHANNEL, "check_every": "1s", "consecutive": 2, "remind_every": "1h",
             "lock_pileup": {"waiters": 2, "wait": "1h"}}
    cfg = config(v, user=LEAST, watch=watch)
    cfg["environments"]["va"] = config(v, user=actor)["environments"]["v"]
    with eager_autovacuum(v.primary):
        q = ddl_queue_behind_autovacuum(v.primary, APP_DB, APP_ROLE)
        try:
            av = q.worker
            with BotUnderTest(cfg, fake, scheduler=True) as bot:
                msg = post_listing(bot, "v locks")
                tree = _tree(msg)
                assert tree.get(av, 0) is None and tree.get(q.alter) == av and tree.get(q.reader) == q.alter, \
                    (tree, msg.text)
                body = json.dumps(msg.blocks, ensure_ascii=False)
                assert "autovacuum worker" in body and "autovacuum: VACUUM" in body, body[:3000]
                assert f"public.{q.table}" in body
                assert f"Details {av}" in labels(msg)
                assert f"Cancel {av}" not in labels(msg) and f"Terminate {av}" not in labels(msg)
                assert f"pid {av} cannot be signalled from chat: cancelling an autovacuum worker needs" in body
                assert "pg_signal_autovacuum_worker" in body
                if v.major < 18:
                    assert "superuser" in body and "PostgreSQL 18" in body
                else:
                    assert "lacks" in body
                view = click_details(bot, msg, av)
                assert "autovacuum worker" in view and f"Cancel {av}" not in view, view[:2000]

                # the pile-up alert names the worker as its root, says what it is and why there is no button
                alert = wait_until(lambda: next((m for m in fake.messages_in(WATCH_CHANNEL) if not m.thread_ts
                                                 and "Lock pile-up" in m.text), None),
                                   ALERT_WITHIN, f"a pile-up alert\n{fake.summary()}")
                text = json.dumps(alert.blocks, ensure_ascii=False)
                assert f"waiting behind pid {av}" in alert.text and "autovacuum: VACUUM" in alert.text, alert.text
                assert "*autovacuum worker* (not a client session)" in text and "DDL queue" in text, text[:3000]
                assert f"pid {av} cannot be signalled from chat: cancelling an autovacuum worker needs" in text
                assert f"Cancel {av}" not in labels(alert) and f"Terminate {av}" not in labels(alert)

                msg = post_listing(bot, "va locks")
                assert _tree(msg).get(av, 0) is None
                assert f"Cancel {av}" in labels(msg) and f"Terminate {av}" not in labels(msg), labels(msg)
                token = find_button(msg, f"Cancel {av}")["value"]
                target = bot.rt.store.get_target(token).target
                assert target.pid == av and target.actions == ("cancel",)
                assert target.query_start == q.worker_started.isoformat(timespec="microseconds")
                request = request_from(bot, msg, f"Cancel {av}")
                assert alive(v.primary, av) and blocking_pids(v.primary, q.alter) == [av], "nothing before approval"
                click(bot, request, "Approve", "U2")
                wait_state(bot, request, "*Done*", timeout=15)
                wait_until(lambda: q.finished(q.alter) and q.finished(q.reader), 15, "the queue ran once cancelled")
                assert not q.errors, q.errors
                assert v.primary.sql("SELECT 1 FROM information_schema.columns WHERE table_name = %s AND "
                                     "column_name = 'extra'", (q.table,), dbname=APP_DB)
                fake.assert_clean()
        finally:
            q.drop()


def request_from(bot, msg, label: str, requester: str = "U1"):
    """Click ``label`` on ``msg`` (a locks message), submit the form: the approval request message."""
    fake = bot.fake
    button = find_button(msg, label)
    assert button is not None, (label, labels(msg))
    n_views = len(fake.calls_for("views.open", ok=True))
    assert bot.slack.block_action(button["action_id"], button["value"], user_id=requester, message=msg).status == 200
    opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
    view = opened[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    n_posts = len(fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "migration is stuck"}}, user_id=requester)
    assert reply.status == 200 and "errors" not in (reply.body or ""), reply.body
    posts = wait_until(lambda: [c for c in fake.calls_for("chat.postMessage", ok=True)[n_posts:]
                                if "asks to" in json.dumps(c.params.get("blocks"))], 10, "the approval request")
    return request_message_saved(bot, fake.messages[(posts[0].response["channel"], posts[0].response["ts"])])
