"""A server out of connection slots (issue 13 §2), on a throw-away primary with max_connections = 25.

Right after the bot started, a non-superuser role takes every slot it may have. The bot's reserved
connection (opened at start-up) still lists the server, says it is out of connections with the numbers,
and carries the app's idle sweep through approval; the terminated sessions free their slots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import psycopg
import pytest

from bot.postgres.pools import PROBE_EVERY
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import alive, wait_until
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.test_bulk import bulk_button, post_and_get, request_flow, text_of

MAX_CONNECTIONS = 25
APP = "filler"


@pytest.fixture(scope="module")
def small() -> Iterator[ClusterPair]:
    p = start_pair(standby=False)
    try:
        if p.external:
            pytest.skip("needs a managed primary whose max_connections it may change")
        p.primary.sql(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
        p.primary.restart()
        yield p
    finally:
        p.stop()


def fill(node) -> list[psycopg.Connection]:
    """Open app_user connections until the server refuses (every non-superuser slot is taken)."""
    conns: list[psycopg.Connection] = []
    for _ in range(MAX_CONNECTIONS + 5):
        try:
            c = psycopg.connect(node.dsn(user="app_user", dbname="appdb"), application_name=APP, autocommit=True,
                                connect_timeout=3)
        except psycopg.OperationalError as exc:
            assert "remaining connection slots are reserved" in str(exc) or "too many clients" in str(exc), exc
            return conns
        c.execute("SELECT 1")
        conns.append(c)
    raise AssertionError("the server never refused a connection")


def test_a_full_server_is_listed_and_cleaned_up_through_the_reserved_connection(small, fake_slack):
    cfg = {"environments": {"full": env_config(small, timeouts={"connect": "2s", "statement": "5s"},
                                               thresholds={"idle": "1s"})}}
    conns: list[psycopg.Connection] = []
    try:
        with BotUnderTest(cfg, fake_slack) as bot:
            wait_until(lambda: bot.rt.dbs.reserved_open("full"), 10, "the reserved connection")
            conns = fill(small.primary)
            assert len(conns) >= 10
            time.sleep(1.2)  # the filler sessions are idle for longer than the 1s threshold

            # the listing: answered through the reserved connection, saying the server is full
            started = time.monotonic()
            msg = post_and_get(bot, f"full idle --app {APP}")
            assert time.monotonic() - started < 5
            text = text_of(msg)
            assert "`full` is out of connections:" in text, text
            assert f"of {MAX_CONNECTIONS} in use" in text, text
            assert "read in " in text
            assert bot.rt.dbs.out_of_connections("full")
            assert f"Terminate these {len(conns)}" in text, text

            # the app's idle sweep through approval, still with every slot taken
            req = request_flow(bot, msg, bulk_button(msg, "terminate_bulk"))
            assert req.state == "done", req.outcome
            assert req.outcome.counts["ended"] == len(conns), req.outcome
            assert not any(alive(small.primary, c.info.backend_pid) for c in conns)

            # the freed slots: app_user can connect again, and the listing no longer says "out of"
            with psycopg.connect(small.primary.dsn(user="app_user", dbname="appdb"), connect_timeout=3) as c:
                assert c.execute("SELECT 1").fetchone() == (1,)
            # the bot asks for a new connection at most every PROBE_EVERY s while the server was full
            freed = time.monotonic()
            wait_until(lambda: "out of connections" not in json.dumps(bot.listing("full")["blocks"]), 10,
                       "a listing that no longer says 'out of connections'", every=0.3)
            assert time.monotonic() - freed < PROBE_EVERY + 3
    finally:
        for c in conns:
            c.close()


def test_out_of_connections_is_said_in_those_words_when_the_reserved_connection_is_busy(small, fake_slack):
    cfg = {"environments": {"full": env_config(small, timeouts={"connect": "1s", "statement": "5s"})}}
    conns: list[psycopg.Connection] = []
    try:
        with BotUnderTest(cfg, fake_slack) as bot:
            wait_until(lambda: bot.rt.dbs.reserved_open("full"), 10, "the reserved connection")
            time.sleep(5.5)  # the keeper has read the slot usage through it at least once
            conns = fill(small.primary)
            entry = bot.rt.dbs._pool("full", "primary")
            with entry.reserved.lock:  # another call holds the reserved connection
                reply = bot.command("full")
                r = fake_slack.wait_for_response(reply.response_name, timeout=10)
            assert "`full` is out of connections:" in r.text, r.text
            assert "reserved connection is busy" in r.text
    finally:
        for c in conns:
            c.close()


def test_a_single_terminate_works_on_a_full_server(small, fake_slack):
    from tests.harness.flows import click, request_kill, wait_state

    cfg = {"environments": {"full": env_config(small, timeouts={"connect": "2s", "statement": "5s"})}}
    conns: list[psycopg.Connection] = []
    try:
        with BotUnderTest(cfg, fake_slack) as bot:
            wait_until(lambda: bot.rt.dbs.reserved_open("full"), 10, "the reserved connection")
            conns = fill(small.primary)
            victim = conns[0]
            pid = victim.info.backend_pid
            msg = request_kill(bot, "full", APP, pid)
            assert click(bot, msg, "Approve", "U2").status == 200
            wait_state(bot, msg, "*Done*", timeout=20)
            assert not alive(small.primary, pid)
            assert all(alive(small.primary, c.info.backend_pid) for c in conns[1:])
    finally:
        for c in conns:
            c.close()
