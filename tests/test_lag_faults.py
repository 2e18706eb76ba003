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

from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.pgcluster import ClusterPair, start_pair

CHANNEL = "C0LAGFAULT"
STEADY_CHANNEL = "C0LAGSTEADY"


@pytest.fixture(scope="module")
def pair() -> Iterator[ClusterPair]:
    p = start_pair()
    try:
        if p.standby is None or p.external:
            pytest.skip("lag fault tests need a managed primary + standby")
        p.set_standby_delay("-1")
        p.primary.sql("GRANT pg_read_all_data TO app_user")
        p.primary.sql("CREATE TABLE lag_writes (id serial PRIMARY KEY)")
        yield p
    finally:
        p.stop()


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


def wait_until(what: str, fn, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(every)


def alerts(fake: FakeSlack, needle: str, channel: str = CHANNEL) -> list:
    """Top-level messages in the channel whose any version mentions ``needle``."""
    return [m for m in fake.messages_in(channel) if not m.thread_ts and any(needle in v["text"] for v in m.versions)]


def stall(pair) -> object:
    """Hold the standby's replay back; returns the standby session doing it."""
    table = "lagf_" + uuid.uuid4().hex[:8]
    ident = pgsql.Identifier(table)
    pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int)").format(ident))
    pair.wait_replayed()
    holder = pair.standby.connect(user="app_user", autocommit=False, application_name="lagf-holder")
    holder.execute(pgsql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
    pair.primary.sql(pgsql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(ident))
    for _ in range(3):
        pair.primary.sql("INSERT INTO lag_writes DEFAULT VALUES")
    return holder


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
        wait_until("a first check", lambda: w.checks.get(("prod", "replica1"), 0) >= 1, 10)
        holders.append(stall(pair))
        msg = wait_until("the lag alert\n" + fake.summary(), lambda: next(iter(alerts(fake, "Replication lag on prod")), None), 25)
        failed = fake.calls_for("chat.postMessage", ok=False)
        assert len(failed) == fault["times"], "the fault was not exercised"
        checks = w.checks[("prod", "replica1")]
        wait_until("two more checks", lambda: w.checks[("prod", "replica1")] >= checks + 2, 10)
        assert len(alerts(fake, "")) == 1, "duplicate alert:\n" + fake.summary()
        holders.pop().close()
        done = wait_until("resolved", lambda: fake.messages[(msg.channel, msg.ts)] if fake.messages[(msg.channel, msg.ts)].text.startswith("Resolved") else None, 15)
        assert "prod" in done.text
        assert not w.incidents.all_open()
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
        wait_until("a first check", lambda: w.checks.get(("prod", "replica1"), 0) >= 1, 10)
        holders.append(stall(pair))
        msg = wait_until("the lag alert", lambda: next(iter(alerts(fake, "Replication lag on prod")), None), 15)
        fake.fail_next("chat.update", **fault)  # the next edit is the resolve one (update_every is 60 s)
        holders.pop().close()
        done = wait_until("resolved\n" + fake.summary(),
                          lambda: fake.messages[(msg.channel, msg.ts)] if fake.messages[(msg.channel, msg.ts)].text.startswith("Resolved") else None, 12)
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
        wait_until("checks of both", lambda: w.checks.get(("prod", "replica1"), 0) >= 2
                   and w.checks.get(("steady", "replica1"), 0) >= 2, 10)
        pair.standby.stop()
        try:
            stopped = time.monotonic()
            steady_before = w.checks[("steady", "replica1")]
            msg = wait_until("the unreachable alert\n" + fake.summary(),
                             lambda: next(iter(alerts(fake, "Standby unreachable: prod / replica1")), None), 10)
            wait_until("more failed checks", lambda: w.checks[("prod", "replica1")] >= 3, 10)
            time.sleep(1.0)
            rate = (w.checks[("steady", "replica1")] - steady_before) / (time.monotonic() - stopped)
            assert rate >= 0.5, f"steady checked only {rate:.2f}/s while prod's standby was down"
            assert not fake.messages_in(STEADY_CHANNEL), "the healthy environment must not alert"
            assert not msg.text.startswith("Resolved")
        finally:
            pair.standby.start()
        done = wait_until("reachable again\n" + fake.summary(),
                          lambda: fake.messages[(msg.channel, msg.ts)] if "reachable again" in fake.messages[(msg.channel, msg.ts)].text else None, 15)
        assert done.text.startswith("Resolved")
        assert len(alerts(fake, "Standby unreachable")) == 1
        assert not w.incidents.all_open()
        pair.wait_streaming()
        fake.assert_clean()
