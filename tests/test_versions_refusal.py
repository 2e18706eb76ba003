"""A server older than the bot supports is refused in words, never called unreachable: at start-up, in
every listing, in the watches and in ``pgsessions check``.

No PostgreSQL 12 is needed: the oldest supported version (``bot.postgres.sql.MIN_SERVER_VERSION``) is
raised above the test server's own for the test, so the real server, the real pools, the real bot and
its real watchers meet a server "too old" exactly as they would meet a 12 (the decision and its words
are unit tested on real version numbers in tests/test_versions_unit.py).
"""

from __future__ import annotations

import logging

import pytest

from bot.check import run_checks
from bot.config import parse_config
from bot.postgres import sql as botsql
from bot.shell.cli import describe_hosts
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import answer_with
from tests.harness.waiting import wait_until

CHANNEL = "C0TOOOLD01"


@pytest.fixture
def too_old(pg, monkeypatch) -> str:
    """Every server is too old for the bot now; the words the bot must use for the test server."""
    monkeypatch.setattr(botsql, "MIN_SERVER_VERSION", 990000)
    with pg.primary.connect() as conn:
        version = conn.info.parameter_status("server_version").split()[0]
    return f"PostgreSQL {version} is not supported (99 or newer)"


def config(pg, **overrides) -> dict:
    return {"environments": {"old": env_config(pg, **overrides)}}


def test_listings_say_the_version_is_not_supported(pg, fake_slack, too_old, caplog):
    caplog.set_level(logging.ERROR, logger="bot.postgres.pools")
    with BotUnderTest(config(pg), fake_slack) as bot:
        # start-up: the reserved connections are refused, once per server, in the same words
        wait_until(lambda: sum(too_old in r.getMessage() for r in caplog.records) >= 2, 10, "the start-up refusal")
        for text in ("old", "old locks", "old replica1", "old lag"):
            n = len(fake_slack.responses)
            assert bot.command(text).status == 200
            wait_until(lambda n=n: len(fake_slack.responses) > n, 10, f"an answer to {text!r}")
        answers = [(r.text or "") + str(r.blocks or "") for r in fake_slack.responses]
        assert sum(too_old in a for a in answers) == 4, answers
        for a in answers:
            assert "unavailable" not in a and "nreachable" not in a, a
        assert answer_with(fake_slack, f"`old` (primary): {too_old}")
        assert answer_with(fake_slack, f"`old` standby `replica1`: {too_old}")
        # the terminal chat's start-up lines say it too
        lines = describe_hosts(bot.rt)
        assert lines == [f"! old primary: {too_old}", f"! old replica1: {too_old}"]
        assert sum(too_old in r.getMessage() for r in caplog.records) == 2, "said once per server"


def test_the_watches_never_call_it_unreachable(pg, fake_slack, too_old, caplog):
    caplog.set_level(logging.INFO)
    watch = {"channel": CHANNEL, "check_every": "1s", "consecutive": 1, "remind_every": "1h",
             "lock_pileup": {"waiters": 1, "wait": "1h"}}
    lag = {"channel": CHANNEL, "threshold": "1s", "check_every": "1s", "consecutive": 1, "remind_every": "1h"}
    with BotUnderTest(config(pg, watch=watch, lag_alert=lag), fake_slack, scheduler=True) as bot:
        w = bot.rt.watch
        wait_until(lambda: w.checks.get(("old", "primary"), 0) >= 3 and w.checks.get(("old", "replica1"), 0) >= 3,
                   20, "three watch checks of each host")
        lw = bot.rt.lagwatch
        wait_until(lambda: lw.checks.get(("old", "replica1"), 0) >= 3, 20, "three lag checks")
        assert fake_slack.messages_in(CHANNEL) == [], "no alert: nothing was read, and nothing is unreachable"
        assert not w.incidents.open_list() and not lw.incidents.all_open()
        said = [r.getMessage() for r in caplog.records if too_old in r.getMessage()]
        assert any("watch: old/primary not watched" in m for m in said), said
        assert sum("watch: old/primary" in m for m in said) == 1, "said once, not every check"
        assert not [r for r in caplog.records if "nreachable" in r.getMessage()]


def test_check_fails_the_host_with_the_version_not_reachability(pg, too_old):
    cfg = parse_config(config(pg), environ={})
    hosts, _state, _slack = run_checks(cfg, {}, slack=False)
    assert len(hosts) == 2
    for r in hosts:
        assert r.status == "fail"
        by = {f.check: f for f in r.findings}
        assert by["reachable"].level == "ok"
        assert by["version"].level == "fail" and by["version"].message.startswith(too_old)
        assert r.features is None
