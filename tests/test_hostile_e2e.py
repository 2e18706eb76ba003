"""Hostile names on real sessions (issue 12 §4): a client sets application_name to Slack markup and runs a
query full of it; what reaches the (fake) Slack in a listing and in a lag alert's life shows it as typed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bot.render.common import esc, fold_query
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.harness.waiting import wait_until
from tests.test_hostile_text import assert_inert, assert_terminal_inert, texts_of
from tests.test_lag import (
    CHANNEL,
    alerts,
    config,
    new_table,
    wait_alert,
    wait_checks,
    wait_resolved,
    writes,
)

# at most 63 bytes (NAMEDATALEN): PostgreSQL cuts application_name there
HOSTILE_APP = "<!channel>*b* _i_ ~s~ `t` <@U123><https://evil|x>&"
HOSTILE_QUERY = "SELECT '<!here>' AS \"*b*\", '\x1b[31m`tick`\x1b[0m' AS x, '<https://evil|click>' AS _u_"


def test_a_listing_shows_a_hostile_application_name_and_query_as_typed(pg, fake_slack):
    assert len(HOSTILE_APP.encode()) <= 63
    conn = pg.primary.connect(user="app_user", dbname="appdb", autocommit=True)
    try:
        conn.execute("SELECT set_config('application_name', %s, false)", (HOSTILE_APP,))
        conn.execute(HOSTILE_QUERY)
        pid = conn.info.backend_pid
        shown = pg.primary.sql("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0]
        assert shown == HOSTILE_APP  # PostgreSQL kept it exactly
        time.sleep(1.2)
        env = env_config(pg, thresholds={"long_running": "1s", "idle_in_transaction": "1s", "idle": "1s"})
        with BotUnderTest({"environments": {"test": env}}, fake_slack) as bot:
            params = bot.listing("test --db appdb")
            body = "\n".join(t for _, t in texts_of(params))
            assert f"*pid {pid}*" in body
            assert_inert(params, [HOSTILE_APP], folded=[HOSTILE_QUERY])
            assert f"app `{esc(HOSTILE_APP, in_code=True)}`" in body
            assert esc(fold_query(HOSTILE_QUERY, 10**6), in_code=True) in body
            assert "<!channel>" not in body and "<!here>" not in body and "\x1b" not in body
            assert_terminal_inert({"text": params["text"], "blocks": params["blocks"]})
        fake_slack.assert_clean()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[ClusterPair]:
    p = start_pair()
    try:
        if p.standby is None or p.external:
            pytest.skip("lag tests need a managed primary + standby")
        p.set_standby_delay("-1")
        p.primary.sql("GRANT pg_read_all_data TO app_user")
        yield p
    finally:
        p.stop()


def test_a_lag_alerts_life_shows_a_hostile_application_name_as_typed(pair):
    from psycopg import sql as pgsql

    from tests.harness.fake_slack import FakeSlack

    fake = FakeSlack(token="xoxb-test").start()
    fake.usergroups = {"S0DBAS": ["U7"]}
    holder = None
    try:
        table = new_table(pair)
        with BotUnderTest(config(pair), fake, scheduler=True) as bot:
            wait_checks(bot, 1)
            holder = pair.standby.connect(user="app_user", autocommit=False)
            holder.execute("SELECT set_config('application_name', %s, false)", (HOSTILE_APP,))
            holder.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))).fetchone()
            pid = holder.info.backend_pid
            pair.primary.sql(pgsql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(pgsql.Identifier(table)))
            writes(pair)
            msg = wait_alert(fake, "lock conflict")
            wait_until(lambda: f"*pid {pid}*" in str(fake.messages[(msg.channel, msg.ts)].blocks), 10, "the culprit in the alert")
            for version in fake.messages[(msg.channel, msg.ts)].versions:
                assert_inert(version, [HOSTILE_APP] if f"*pid {pid}*" in str(version) else [])
                assert_terminal_inert(version)
            # the culprit goes away without the bot: the resolved message says who held replay back
            assert pair.standby.sql("SELECT pg_terminate_backend(%s, 3000)", (pid,))[0][0]
            done = wait_resolved(fake, msg, timeout=20)
            resolved = done.to_dict()
            assert "held replay back" in str(resolved["blocks"])
            assert_inert(resolved, [HOSTILE_APP])
            assert_terminal_inert(resolved)
            assert f"`{esc(HOSTILE_APP, in_code=True)}`" in "\n".join(t for _, t in texts_of(resolved))
            for m in fake.messages_in(CHANNEL):  # thread replies and anything else the watcher posted
                for version in m.versions:
                    assert_inert(version, [])
            assert len(alerts(fake, "")) == 1
    finally:
        if holder is not None:
            try:
                holder.close()
            except Exception:  # already terminated
                pass
        pair.wait_replayed(timeout=15)
        fake.stop()
