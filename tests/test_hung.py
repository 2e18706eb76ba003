"""A server that stops answering (issue 13 §1): the bot's own backend SIGSTOPped on the primary and on a
standby. The listing answers within connect + statement + 1 s, the lag watcher raises its
"unreachable" alert, and everything works again once the backend is SIGCONTed.

The tests run as root (the harness starts the clusters as the postgres OS user), so they may signal the
backends; every stopped backend is continued in a ``finally``, and the postmaster is never stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from bot.config import parse_config
from bot.postgres.deadline import GuardedConnection, GuardedCursor, NotAnswering
from bot.postgres.pools import Databases, _quiet
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.pgcluster import ClusterPair, start_pair

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SIGSTOP of a postgres backend needs root")

CONNECT, STATEMENT = 2.0, 2.0
CHANNEL = "C0HUNG"


def bot_backends(node, user: str = "pgsessions_bot") -> list[int]:
    rows = node.sql(
        "SELECT pid FROM pg_stat_activity WHERE usename = %s AND application_name = 'pgsessions'", (user,)
    )
    return [r[0] for r in rows]


@contextmanager
def frozen(pids: list[int]) -> Iterator[list[int]]:
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def wait_until(what: str, fn, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def pair() -> Iterator[ClusterPair]:
    p = start_pair()
    try:
        if p.standby is None or p.external:
            pytest.skip("needs a managed primary + standby")
        yield p
    finally:
        p.stop()


def guarded_connect(node, limit: float) -> GuardedConnection:
    conn = GuardedConnection.connect(node.dsn(user="pgsessions_bot"), autocommit=True, cursor_factory=GuardedCursor,
                                     application_name="pgsessions")
    conn.pgs_limit = limit
    return conn


def test_a_statement_on_a_frozen_backend_is_cut_at_its_deadline(pair):
    conn = guarded_connect(pair.primary, 1.0)
    try:
        with frozen([conn.info.backend_pid]):
            started = time.monotonic()
            with pytest.raises(NotAnswering):
                conn.execute("SELECT 1")
            elapsed = time.monotonic() - started
            assert 0.9 <= elapsed < 2.0, elapsed
            assert conn.pgs_overrun
    finally:
        conn.close()
    # the server is unharmed: a new connection works
    assert pair.primary.sql("SELECT 1") == [(1,)]


@pytest.mark.parametrize("libpq17", [True, False], ids=["cancel_safe", "older-libpq-cancel"])
def test_a_statement_past_its_deadline_on_a_live_server_is_cancelled(pair, monkeypatch, libpq17):
    if not libpq17:
        monkeypatch.setattr(psycopg.capabilities, "has_cancel_safe", lambda: False)
    conn = guarded_connect(pair.primary, 0.5)
    pid = conn.info.backend_pid
    try:
        started = time.monotonic()
        with pytest.raises(NotAnswering):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 1.5
    finally:
        conn.close()
    # cancelled and disconnected: the backend is gone soon, not sleeping for 30 s
    wait_until("the backend to end", lambda: not pair.primary.sql(
        "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)), 5)


def test_a_statement_that_answers_in_time_is_untouched(pair):
    conn = guarded_connect(pair.primary, 2.0)
    try:
        for _ in range(20):
            assert conn.execute("SELECT pg_sleep(0.01), 1").fetchone()[1] == 1
        assert not conn.pgs_overrun
    finally:
        conn.close()


def test_a_quiet_connection_needs_no_round_trip_and_one_whose_backend_ended_is_noticed(pair):
    """The pool hands out an idle connection without a liveness round trip only while nothing arrived on
    its socket: the end of its backend (FATAL, then the socket closed) is seen without asking."""
    conn = guarded_connect(pair.primary, 2.0)
    try:
        conn.execute("SELECT 1")
        assert _quiet(conn)
        pair.primary.sql("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        wait_until("the end of the backend on the socket", lambda: not _quiet(conn), 5)
    finally:
        conn.close()


def test_a_pooled_connection_whose_backend_ended_is_replaced_without_a_failed_call(pair):
    dbs = Databases(parse_config(config(pair), environ={}))
    try:
        with dbs.connection("prod") as c:
            first = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        with dbs.connection("prod") as c:  # a quiet connection: the same one again
            assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == first
        pair.primary.sql("SELECT pg_terminate_backend(%s)", (first,))
        wait_until("the backend gone", lambda: not pair.primary.sql(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (first,)), 5)
        with dbs.connection("prod") as c:
            assert c.execute("SELECT pg_backend_pid()").fetchone()[0] != first
    finally:
        dbs.close()


def config(pair, **extra) -> dict:
    return {"environments": {
        "prod": env_config(pair, timeouts={"connect": f"{CONNECT:g}s", "statement": f"{STATEMENT:g}s"}, **extra),
    }}


@pytest.mark.parametrize("host", ["primary", "replica1"])
def test_listing_of_a_frozen_host_answers_in_bounded_time_and_recovers(pair, fake_slack, host):
    node = pair.primary if host == "primary" else pair.standby
    text = "prod" if host == "primary" else "prod replica1"
    with BotUnderTest(config(pair), fake_slack) as bot:
        bot.listing(text)  # a pooled connection to that host now exists
        wait_until("the reserved connection", lambda: bot.rt.dbs.reserved_open("prod", host), 10)
        pids = bot_backends(node)
        assert pids
        with frozen(pids):
            started = time.monotonic()
            reply = bot.command(text)
            assert reply.status == 200
            r = fake_slack.wait_for_response(reply.response_name, timeout=CONNECT + STATEMENT + 5)
            elapsed = time.monotonic() - started
            assert elapsed < CONNECT + STATEMENT + 1, elapsed
            assert "not answering within" in r.text, r.text
            # the other host of the environment is not slowed by the hung one
            other = "prod replica1" if host == "primary" else "prod"
            started = time.monotonic()
            bot.listing(other)
            assert time.monotonic() - started < 2
            # acks stay fast while requests to the host are in flight
            for _ in range(6):
                t = time.monotonic()
                assert bot.command(text).status == 200
                assert time.monotonic() - t < 0.5
        # after SIGCONT the host is listed again
        msg = wait_until("a listing after SIGCONT", lambda: _listing_or_none(bot, text), 20, every=0.5)
        assert "sessions" in (msg.get("text") or "").lower() or msg.get("blocks")


def _listing_or_none(bot, text: str):
    try:
        return bot.listing(text, timeout=CONNECT + STATEMENT + 2)
    except AssertionError:
        return None


def test_watcher_alerts_when_a_standby_backend_freezes_and_resolves(pair, fake_slack):
    alert = {"channel": CHANNEL, "threshold": "30s", "check_every": "1s", "consecutive": 1, "remind_every": "1h"}
    with BotUnderTest(config(pair, lag_alert=alert), fake_slack, scheduler=True) as bot:
        w = bot.rt.lagwatch
        wait_until("checks", lambda: w.checks.get(("prod", "replica1"), 0) >= 2, 10)
        wait_until("the reserved connection", lambda: bot.rt.dbs.reserved_open("prod", "replica1"), 10)
        with frozen(bot_backends(pair.standby)):
            msg = wait_until(
                "the unreachable alert", lambda: next(
                    (m for m in fake_slack.messages.values() if "Standby unreachable: prod / replica1" in m.text),
                    None), CONNECT + STATEMENT + 5)
            assert "not answering within" in msg.text
        done = wait_until("resolved", lambda: "reachable again" in fake_slack.messages[(msg.channel, msg.ts)].text,
                          20)
        assert done
        # the incident is closed right after its resolution edit lands (the edit first, by design)
        wait_until("the incident closed", lambda: not w.incidents.all_open(), 10)
    # nothing of the bot is left frozen: every backend answers again
    with psycopg.connect(pair.standby.dsn(user="pgsessions_bot"), connect_timeout=3) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_listing_of_an_overloaded_primary_answers_and_says_how_long_the_database_took(pair, fake_slack):
    import shutil
    import subprocess

    from tests.harness.pgcluster import find_bindir

    pgbench = shutil.which("pgbench") or os.path.join(find_bindir(), "pgbench")
    if not os.path.exists(pgbench):
        pytest.skip("pgbench not installed")
    dsn = pair.primary.dsn(user="postgres")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    subprocess.run([pgbench, "-i", "-q", "-s", "1", dsn], check=True, capture_output=True, env=env, timeout=120)
    clients = 4 * (os.cpu_count() or 1)
    load = subprocess.Popen([pgbench, "-n", "-S", "-c", str(clients), "-j", "2", "-T", "10", dsn],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        with BotUnderTest(config(pair), fake_slack) as bot:
            wait_until("pgbench's clients", lambda: len(pair.primary.sql(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgbench'")) >= clients, 10)
            for _ in range(3):
                started = time.monotonic()
                params = bot.listing("prod", timeout=CONNECT + STATEMENT + 5)
                assert time.monotonic() - started < CONNECT + STATEMENT + 1
                summary = json.dumps(params["blocks"])
                assert re.search(r"read in \d+ ms", summary), summary
    finally:
        load.kill()
        load.wait(10)


def test_relation_names_from_a_frozen_backend_cost_a_deadline_not_a_hang(pair, monkeypatch):
    # relnames opens a short connection of its own to another database; its backend freezes right after
    # the start-up exchange. The server-side statement_timeout cannot fire in a stopped process: only the
    # client-side deadline bounds the lookup, which then reads "not readable" (and is cached as failed).
    import threading

    from bot.config import parse_config
    from bot.postgres import relnames

    relnames.clear_cache()
    cfg = parse_config(config(pair), environ={})
    stopped: list[int] = []
    real = relnames.connect_bounded

    def connect_then_freeze(*args, **kwargs):
        conn = real(*args, **kwargs)
        if not stopped:  # only the first lookup's backend
            os.kill(conn.info.backend_pid, signal.SIGSTOP)
            stopped.append(conn.info.backend_pid)
        return conn

    monkeypatch.setattr(relnames, "connect_bounded", connect_then_freeze)
    result: dict = {}

    def lookup() -> None:
        result["names"] = relnames.resolve(cfg, "prod", "replica1", [("appdb", 1259)])

    try:
        started = time.monotonic()
        t = threading.Thread(target=lookup, daemon=True)
        t.start()
        t.join(STATEMENT + 10)
        elapsed = time.monotonic() - started
        assert not t.is_alive(), "the lookup hung on a frozen backend"
        assert stopped, "the lookup's backend was frozen"
        assert elapsed < STATEMENT + 2, elapsed
        assert result["names"] == {("appdb", 1259): "relation 1259 in appdb (name not readable)"}
        assert relnames.cached("prod", "replica1", "appdb") is None
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        monkeypatch.undo()
        relnames.clear_cache()
    # the real lookup works once the backend answers again: pg_class is 1259 in every database
    assert relnames.resolve(cfg, "prod", "replica1", [("appdb", 1259)]) == {("appdb", 1259): "pg_catalog.pg_class"}
