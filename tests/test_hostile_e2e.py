"""Hostile names on real sessions (issue 12 §4): a client sets application_name to Slack markup and runs a
query full of it; what reaches the (fake) Slack in a listing and in a lag alert's life shows it as typed.
"""

from __future__ import annotations

import json
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


# --- issue 23 §8: names that would link, mention or draw an emoji, on real sessions -----------------------

LINKY_APP = "http://evil.example #general :fire: @here *b*"
LINKY_REL = "t :fire: #general http://evil.example"
LINKY_DB = "#general:fire:http://evil.example"  # one word: clear-db takes it as typed
LINKY_TOKENS = ("evil.example", "#general", ":fire:", "@here")


def test_no_name_from_a_database_links_mentions_or_draws_an_emoji(pg, fake_slack):
    import threading
    import uuid

    from psycopg import sql as pgsql

    from tests.harness.flows import find_button, post_listing
    from tests.test_details import click_details

    rel = f"{LINKY_REL} {uuid.uuid4().hex[:4]}"
    db = f"{LINKY_DB}{uuid.uuid4().hex[:4]}"
    pg.primary.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(db)))
    here = pg.primary.admin_dbname  # the bot's own database: the relation's name is readable there
    pg.primary.sql(pgsql.SQL("CREATE TABLE {} (id int)").format(pgsql.Identifier(rel)))
    pg.primary.sql(pgsql.SQL("GRANT SELECT ON {} TO app_user").format(pgsql.Identifier(rel)))
    holder = pg.primary.connect(user="app_user", dbname=here, autocommit=False, application_name=LINKY_APP)
    elsewhere = pg.primary.connect(user="app_user", dbname=db, application_name=LINKY_APP)
    waiter = pg.primary.connect()
    blocked = threading.Thread(target=lambda: _lock(waiter, rel), daemon=True)
    try:
        holder.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(rel))).fetchone()
        elsewhere.execute("SELECT 1")
        pid = holder.info.backend_pid
        blocked.start()
        wait_until(lambda: pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                          "AND pid = %s", (waiter.info.backend_pid,)), 10, "the waiter blocked")
        with BotUnderTest({"environments": {"test": env_config(pg)}}, fake_slack) as bot:
            listing = post_listing(bot, f"test --db {here} --min 0s")
            assert find_button(listing, f"Details {pid}") is not None
            details = click_details(bot, listing, pid)
            shown = json.dumps(details, ensure_ascii=False).replace('\\"', '"')
            assert LINKY_APP.split()[0] in shown and f'public."{rel}"' in shown  # the names are shown...
            locks = post_listing(bot, "test locks")
            assert f'relation `public."{rel}"`' in json.dumps(locks.blocks, ensure_ascii=False).replace('\\"', '"')
            overview = post_listing(bot, f"test clear-db {db}")
            assert "evil.example" in json.dumps(overview.blocks) + overview.text
            bot.slack.app_home_opened("U1")
            wait_until(lambda: fake_slack.home_views.get("U1"), 10, "the Home tab")
            # ...and nothing of it would be drawn as a link, a mention or an emoji (the fake Slack's rules)
            assert fake_slack.autolinks, "the fake records the bot's own emoji: the check is live"
            bad = fake_slack.autolinked(*LINKY_TOKENS)
            assert not bad, bad
            for call in fake_slack.calls_for("chat.postMessage", ok=True):
                assert call.params.get("unfurl_links") is False and call.params.get("unfurl_media") is False
        fake_slack.assert_clean()
    finally:
        holder.close()
        elsewhere.close()
        pg.primary.sql("SELECT pg_cancel_backend(%s)", (waiter.info.backend_pid,))
        blocked.join(10)
        waiter.close()
        pg.primary.sql(pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(rel)))
        pg.primary.sql(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(db)))


def _lock(conn, rel: str) -> None:
    from psycopg import sql as pgsql

    try:
        with conn.transaction():
            conn.execute(pgsql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(pgsql.Identifier(rel)))
    except Exception:  # cancelled at the end of the test
        pass
