"""The transaction ID wraparound alert end to end: a real primary whose transaction IDs are consumed
quickly under a lowered threshold, the real bot with its scheduler, and the fake Slack."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql as pgsql

from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import alive, find_button
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.harness.waiting import wait_until

CHANNEL = "C0WRAPALERTS"
THRESHOLD = 1000
HOSTILE = "<!channel> *bold* `tick` <https://evil.example|click> \x1b[31m"


@pytest.fixture(scope="module")
def pair() -> Iterator[ClusterPair]:
    """Our own primary (no standby: its feedback would be a second holder): the test freezes every database."""
    p = start_pair(standby=False)
    try:
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


def config(pair: ClusterPair) -> dict:
    return {"environments": {"prod": env_config(pair, watch={
        "channel": CHANNEL, "check_every": "1s", "consecutive": 2, "remind_every": "1h",
        "wraparound": {"threshold": THRESHOLD}}, timeouts={"connect": "2s", "statement": "3s"})}}


def consume_xids(pair: ClusterPair, n: int) -> None:
    """``n`` transaction IDs, each in a transaction of its own (COMMIT inside a DO block)."""
    pair.primary.sql(pgsql.SQL("DO $$ BEGIN FOR i IN 1..{} LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$")
                     .format(pgsql.Literal(n)))


def max_age(pair: ClusterPair) -> int:
    rows = pair.primary.sql("SELECT max(greatest(age(datfrozenxid), mxid_age(datminmxid))) FROM pg_database")
    assert rows is not None
    return int(rows[0][0])


def freeze_everything(pair: ClusterPair) -> None:
    """VACUUM FREEZE in every database (template0 opened for it, then closed again)."""
    pair.primary.sql("ALTER DATABASE template0 WITH ALLOW_CONNECTIONS true")
    try:
        for (name,) in pair.primary.sql("SELECT datname FROM pg_database") or []:
            pair.primary.sql("VACUUM (FREEZE)", dbname=name)
    finally:
        pair.primary.sql("ALTER DATABASE template0 WITH ALLOW_CONNECTIONS false")


def alerts(fake: FakeSlack) -> list:
    return [m for m in fake.messages_in(CHANNEL) if not m.thread_ts and "Transaction ID wraparound" in m.text]


def labels(msg) -> list[str]:
    return [el["text"]["text"] for b in msg.blocks or [] if b.get("type") == "actions" for el in b.get("elements", [])]


def test_wraparound_alert_names_the_oldest_xmin_session_and_an_approved_terminate_lets_vacuum_resolve_it(pair, fake):
    if not pair.primary.managed:
        pytest.skip("freezes every database of the server: only on the harness's own cluster")
    freeze_everything(pair)
    assert max_age(pair) < THRESHOLD
    with BotUnderTest(config(pair), fake, scheduler=True) as bot:
        # the holder: a snapshot taken before the transaction IDs move on
        holder = pair.primary.connect(user="app_user", dbname="appdb", autocommit=False, application_name=HOSTILE)
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM pg_class").fetchone()
        pid = holder.info.backend_pid
        checks = bot.rt.watch.checks
        start = checks.get(("prod", "primary"), 0)
        wait_until(lambda: checks.get(("prod", "primary"), 0) >= start + 3, 20, "three quiet checks")
        assert alerts(fake) == []  # under the threshold: quiet
        consume_xids(pair, THRESHOLD + 200)
        assert max_age(pair) >= THRESHOLD
        msg = wait_until(lambda: next(iter(alerts(fake)), None), 15, f"the wraparound alert\n{fake.summary()}")
        assert "transactions old" in msg.text and f"pid {pid}" in msg.text
        assert labels(msg) == [f"Terminate {pid}", f"Details {pid}", "Acknowledge"]
        every = json.dumps([v for v in msg.versions])
        assert "<!channel>" not in every and "<https://evil" not in every and "\\u001b" not in every
        assert len(alerts(fake)) == 1

        # Terminate, approved by someone else
        el = find_button(msg, f"Terminate {pid}")
        n_views = len(fake.calls_for("views.open", ok=True))
        assert bot.slack.block_action(el["action_id"], el["value"], user_id="U1", message=msg).status == 200
        opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
        view = opened[0].params["view"]
        view = json.loads(view) if isinstance(view, str) else view
        n_posts = len(fake.calls_for("chat.postMessage", ok=True))
        reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                          state_values={"reason": {"reason": "wraparound"}}, user_id="U1")
        assert reply.status == 200 and "errors" not in (reply.body or ""), reply.body
        posts = wait_until(lambda: [c for c in fake.calls_for("chat.postMessage", ok=True)[n_posts:]
                                    if "asks to" in json.dumps(c.params.get("blocks"))], 10, "the approval request")
        approval = fake.messages[(posts[0].response["channel"], posts[0].response["ts"])]
        approve = find_button(approval, "Approve")
        assert bot.slack.block_action(approve["action_id"], approve["value"], user_id="U2",
                                      message=approval).status == 200
        wait_until(lambda: not alive(pair.primary, pid), 15, f"pid {pid} terminated")
        try:
            holder.close()
        except psycopg.Error:
            pass

        # nothing holds the horizon back now: VACUUM freezes, and the first clear check resolves the alert
        freeze_everything(pair)
        assert max_age(pair) < THRESHOLD
        done = wait_until(lambda: (m := fake.messages[(msg.channel, msg.ts)]).text.startswith("Resolved") and m,
                          20, f"the alert resolved\n{fake.summary()}")
        assert f"pid {pid} terminated by approval of <@U2>" in done.text
        assert len(alerts(fake)) == 1
        fake.assert_clean()
