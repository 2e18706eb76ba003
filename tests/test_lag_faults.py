"""Faults around lag alerts: Slack answers 429 / 500 to the alert or its resolve edit, a standby goes away.

Against a real primary + hot standby of this module's own (it is stopped and started here; the shared
`pg` pair is only read). Lag is made deterministic as in test_lag.py: max_standby_streaming_delay = -1,
a standby transaction holds ACCESS SHARE on a table, the primary runs ALTER TABLE and writes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql as pgsql

from bot.slack.outbox import MAX_BACKOFF
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.lag import hold_replay, lag_pair_or_skip
from tests.harness.pgcluster import ClusterPair
from tests.harness.waiting import wait_until

CHANNEL = "C0LAGFAULT"
STEADY_CHANNEL = "C0LAGSTEADY"


@pytest.fixture(scope="module")
def pair() -> Iterator[ClusterPair]:
    yield from lag_pair_or_skip()


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    f = FakeSlack(token="xoxb-test").start()
    try:
        yield f
    finally:
        f.stop()


def lag_alert(channel: str = CHANNEL) -> dict:
    return {"channel": channel, "threshold": "1s", "check_every": "1s", "consecutive": 1, "remind_every": "1h"}


def config(pair) -> dict:
    return {"environments": {"prod": env_config(pair, lag_alert=lag_alert(), timeouts={"connect": "1s", "statement": "3s"})}}


def alerts(fake: FakeSlack, needle: str, channel: str = CHANNEL) -> list:
    """Top-level messages in the channel whose any version mentions ``needle``."""
    return [m for m in fake.messages_in(channel) if not m.thread_ts and any(needle in v["text"] for v in m.versions)]


def stall(pair) -> object:
    """Hold the standby's replay back; returns the standby session doing it."""
    table = "lagf_" + uuid.uuid4().hex[:8]
    pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int)").format(pgsql.Identifier(table)))
    pair.wait_replayed()
    return hold_replay(pair, table, application_name="lagf-holder", writes=3).holder


@pytest.fixture
def holders(pair):
    held: list = []
    yield held
    for h in held:
        h.close()
    pair.wait_replayed(timeout=15)


# Within the client's retries (RateLimitErrorRetryHandler 5, ServerErrorRetryHandler 3), and beyond
# them (the watcher posts again at a later check: update_every, shortened here).
FAULTS = [
    pytest.param({"status": 429, "retry_after": 0, "times": 2}, id="429-retry-after-0-x2"),
    pytest.param({"status": 429, "retry_after": 1, "times": 1}, id="429-retry-after-1"),
    pytest.param({"status": 500, "times": 2}, id="500x2"),
    pytest.param({"status": 500, "times": 5}, id="500x5-beyond-client-retries"),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_lag_alert_posted_once_despite_slack_faults_and_resolve_lands(pair, fake, holders, fault):
    fake.fail_next("chat.postMessage", **fault)
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        w = bot.rt.lagwatch
        w.update_every = 1.0  # 60 s in production: how soon a failed first post is tried again
        wait_until(lambda: w.checks.get(("prod", "replica1"), 0) >= 1, 10, "a first check")
        holders.append(stall(pair))
        msg = wait_until(lambda: next(iter(alerts(fake, "Replication lag on prod")), None), 25, "the lag alert\n" + fake.summary())
        failed = fake.calls_for("chat.postMessage", ok=False)
        assert len(failed) == fault["times"], "the fault was not exercised"
        checks = w.checks[("prod", "replica1")]
        wait_until(lambda: w.checks[("prod", "replica1")] >= checks + 2, 10, "two more checks")
        assert len(alerts(fake, "")) == 1, "duplicate alert:\n" + fake.summary()
        holders.pop().close()
        done = wait_until(lambda: fake.messages[(msg.channel, msg.ts)] if fake.messages[(msg.channel, msg.ts)].text.startswith("Resolved") else None, 15, "resolved")
        assert "prod" in done.text
        # the incident is closed in the store right after its resolve edit lands (never before it)
        wait_until(lambda: not w.incidents.all_open(), 5, "the incident closed after its resolve edit")
        assert len(alerts(fake, "")) == 1
        fake.assert_clean()


UPDATE_FAULTS = [
    pytest.param({"status": 429, "retry_after": 0, "times": 3}, id="429-retry-after-0-x3"),
    pytest.param({"status": 429, "retry_after": 1, "times": 1}, id="429-retry-after-1"),
    pytest.param({"status": 500, "times": 2}, id="500x2"),
    pytest.param({"status": 500, "times": 5}, id="500x5-beyond-client-retries"),
]


@pytest.mark.parametrize("fault", UPDATE_FAULTS)
def test_resolve_edit_lands_despite_slack_faults(pair, fake, holders, fault):
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        w = bot.rt.lagwatch
        wait_until(lambda: w.checks.get(("prod", "replica1"), 0) >= 1, 10, "a first check")
        holders.append(stall(pair))
        msg = wait_until(lambda: next(iter(alerts(fake, "Replication lag on prod")), None), 15, "the lag alert")
        fake.fail_next("chat.update", **fault)  # the next edit is the resolve one (update_every is 60 s)
        holders.pop().close()
        # beyond the client's own retries the outbox retries with backoff: everything waiting lands within
        # MAX_BACKOFF of Slack answering again (a fixed 12 s did not hold on a loaded machine)
        done = wait_until(lambda: fake.messages[(msg.channel, msg.ts)] if fake.messages[(msg.channel, msg.ts)].text.startswith("Resolved") else None,
                          MAX_BACKOFF + 10, "resolved\n" + fake.summary())
        assert len(fake.calls_for("chat.update", ok=False)) == fault["times"], "the fault was not exercised"
        assert "prod" in done.text
        assert len(alerts(fake, "")) == 1
        assert len(fake.calls_for("chat.postMessage", ok=True)) == 1, "the resolve must edit, not post again"
        fake.assert_clean()


def test_standby_goes_away_mid_checks_other_env_keeps_being_checked_and_it_recovers(pair, pg, fake):
    cfg = config(pair)
    cfg["environments"]["steady"] = env_config(pg, lag_alert=lag_alert(STEADY_CHANNEL),
                                               timeouts={"connect": "1s", "statement": "3s"})
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        w = bot.rt.lagwatch
        wait_until(lambda: w.checks.get(("prod", "replica1"), 0) >= 2
                   and w.checks.get(("steady", "replica1"), 0) >= 2, 10, "checks of both")
        pair.standby.stop()
        try:
            stopped = time.monotonic()
            steady_before = w.checks[("steady", "replica1")]
            msg = wait_until(lambda: next(iter(alerts(fake, "Standby unreachable: prod / replica1")), None),
                             10, "the unreachable alert\n" + fake.summary())
            wait_until(lambda: w.checks[("prod", "replica1")] >= 3, 10, "more failed checks")
            time.sleep(1.0)
            rate = (w.checks[("steady", "replica1")] - steady_before) / (time.monotonic() - stopped)
            assert rate >= 0.5, f"steady checked only {rate:.2f}/s while prod's standby was down"
            assert not fake.messages_in(STEADY_CHANNEL), "the healthy environment must not alert"
            assert not msg.text.startswith("Resolved")
        finally:
            pair.standby.start()
        done = wait_until(lambda: fake.messages[(msg.channel, msg.ts)] if "reachable again" in fake.messages[(msg.channel, msg.ts)].text else None,
                          15, "reachable again\n" + fake.summary())
        assert done.text.startswith("Resolved")
        assert len(alerts(fake, "Standby unreachable")) == 1
        # the incident closes right after its resolution edit lands (the close follows the edit by design)
        closed = wait_until(lambda: not w.incidents.all_open(), 10, "the incident recorded resolved")
        assert closed
        pair.wait_streaming()
        fake.assert_clean()


# --- Slack's Web API down during a lag incident: the durable outbox (issue 13 §3) --------------------

SLACK_DOWN_FOR = 60.0  # seconds, as the issue says


def outbox_pending() -> float:
    from bot.metrics import REGISTRY

    return REGISTRY.get_sample_value("pgsessions_slack_outbox_pending") or 0.0


def test_slack_down_for_a_minute_during_a_lag_incident_alert_and_resolution_arrive_once_each(pair, fake, holders):
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        w = bot.rt.lagwatch
        wait_until(lambda: w.checks.get(("prod", "replica1"), 0) >= 1, 10, "a first check")
        port = fake.port
        fake.stop()  # Slack refuses connections
        down_at = time.monotonic()
        holders.append(stall(pair))
        wait_until(lambda: w.incidents.open_for("prod", "replica1").get("lag"), 25, "the lag incident")
        wait_until(lambda: outbox_pending() >= 1, 10, "the alert kept in the outbox (and the backlog metric)")
        holders.pop().close()
        wait_until(lambda: not w.incidents.all_open(), 25, "the incident resolved while Slack is down")
        assert w.outbox.pending_count() == 2  # the alert and its resolution
        # the metric is set by each watcher's deliverer every 2 s (two deliverers, one shared table)
        wait_until(lambda: outbox_pending() == 2, 10, "the backlog metric at 2")
        time.sleep(max(0.0, SLACK_DOWN_FOR - (time.monotonic() - down_at)))
        assert w.outbox.pending_count() == 2, "nothing was lost or given up during the outage"
        fake.start(port)  # Slack answers again at the same address
        msg = wait_until(lambda: next(iter(alerts(fake, "")), None), 45, "the alert after Slack came back")
        done = wait_until(lambda: fake.messages[(msg.channel, msg.ts)]
                          if fake.messages[(msg.channel, msg.ts)].text.startswith("Resolved") else None,
                          45, "the resolution after Slack came back\n" + fake.summary())
        assert "prod" in done.text
        assert "Replication lag on prod" in msg.versions[0]["text"], "the alert itself, then its resolution"
        assert len(alerts(fake, "")) == 1, "duplicate alert:\n" + fake.summary()
        chat = [c.method for c in fake.calls if c.ok and c.method.startswith("chat.")]
        assert chat == ["chat.postMessage", "chat.update"], fake.summary()
        wait_until(lambda: outbox_pending() == 0, 10, "the backlog metric back to 0")
        fake.assert_clean()


def test_429_storm_with_retry_after_alert_and_resolution_land_once_each(pair, fake, holders):
    # more 429s than the client's own retries (5) absorb: the outbox waits Retry-After and tries again
    fake.fail_next("chat.postMessage", status=429, retry_after=1, times=14)
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        w = bot.rt.lagwatch
        wait_until(lambda: w.checks.get(("prod", "replica1"), 0) >= 1, 10, "a first check")
        holders.append(stall(pair))
        msg = wait_until(lambda: next(iter(alerts(fake, "Replication lag on prod")), None), 60,
                         "the lag alert after the storm\n" + fake.summary())
        assert len(fake.calls_for("chat.postMessage", ok=False)) == 14, "the storm was not exercised"
        fake.fail_next("chat.update", status=429, retry_after=1, times=8)
        holders.pop().close()
        done = wait_until(lambda: fake.messages[(msg.channel, msg.ts)]
                          if fake.messages[(msg.channel, msg.ts)].text.startswith("Resolved") else None,
                          60, "resolved after the storm\n" + fake.summary())
        assert "prod" in done.text
        assert len(alerts(fake, "")) == 1, "duplicate alert:\n" + fake.summary()
        assert len(fake.calls_for("chat.postMessage", ok=True)) == 1
        assert len(fake.calls_for("chat.update", ok=False)) == 8
        assert not w.incidents.all_open()
        fake.assert_clean()
