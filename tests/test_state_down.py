"""The bot's PostgreSQL state store stopped and started again (issue 13 §3): listings keep working, without
buttons and with one line saying why, and the buttons come back by themselves when the store returns."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.harness.bot import BotUnderTest, env_config
from tests.harness.pgcluster import ClusterPair, start_pair


@pytest.fixture(scope="module")
def store_pg() -> Iterator[ClusterPair]:
    p = start_pair(standby=False)
    try:
        if p.external:
            pytest.skip("needs a managed server to stop and start")
        p.primary.sql("CREATE DATABASE pgs_state")
        yield p
    finally:
        p.stop()


@pytest.fixture
def idler(pg):
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name="state-down-idler", autocommit=True)
    conn.execute("SELECT 1")
    time.sleep(2.1)  # over the 2 s idle threshold of env_config
    yield conn
    conn.close()


def buttons(params: dict) -> list[str]:
    return [e["action_id"] for b in params.get("blocks") or [] if b.get("type") == "actions" for e in b["elements"]]


def test_listing_without_buttons_while_the_state_store_is_down_and_back_after(pg, store_pg, fake_slack, idler):
    state = f"postgresql://postgres@{store_pg.primary.host}:{store_pg.primary.port}/pgs_state"
    cfg = {"environments": {"prod": env_config(pg)}}
    with BotUnderTest(cfg, fake_slack, state=state) as bot:
        text = "prod idle --app state-down-idler"
        assert buttons(bot.listing(text)), "buttons while the store is up"
        store_pg.primary.stop()
        try:
            started = time.monotonic()
            params = bot.listing(text)
            assert time.monotonic() - started < 10
            body = json.dumps(params["blocks"])
            assert f"pid {idler.info.backend_pid}" in body, "the listing itself is shown"
            assert not buttons(params)
            assert body.count("state store is not answering") == 1, body
            assert "Something went wrong" not in body
        finally:
            store_pg.primary.start()
        deadline = time.monotonic() + 20
        while True:
            params = bot.listing(text)
            if buttons(params):
                break
            assert time.monotonic() < deadline, "the buttons never came back"
            time.sleep(0.5)
        assert "state store is not answering" not in json.dumps(params["blocks"])
