"""The Slack outbox (bot/slack/outbox.py): which call goes next (pure), and delivery against the fake
Slack Web API over HTTP with a SQLite state store: order per key, collapsed edits, retries, give-ups."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bot.fleet.shards import Shards
from bot.metrics import REGISTRY
from bot.slack import outbox as ob
from bot.slack.web import make_web_client
from bot.state.incidents import Incidents
from bot.state.schema import outbox as outbox_table
from bot.state.store import StateStore
from tests.harness.fake_slack import FakeSlack

CHANNEL = "C0OUTBOX1"


def item(i: int, key: str, op: str, ts: str | None = None, channel: str = CHANNEL) -> ob.Item:
    return ob.Item(id=i, key=key, op=op, channel=channel, ts=ts, payload={"text": f"m{i}"}, attempts=0, next_at=0.0)


def ids(plan) -> list[tuple[int, list[int]]]:
    return [(head.id, [r.id for r in replaced]) for head, replaced in plan]


@pytest.mark.unit
def test_plan_sends_the_head_of_each_key_oldest_key_first():
    items = [item(3, "b", ob.POST), item(1, "a", ob.POST), item(2, "a", ob.UPDATE), item(4, "b", ob.UPDATE)]
    assert ids(ob.plan(items)) == [(1, []), (3, [])]


@pytest.mark.unit
def test_plan_collapses_consecutive_edits_of_one_message_to_the_newest():
    items = [item(1, "a", ob.UPDATE), item(2, "a", ob.UPDATE), item(5, "a", ob.UPDATE), item(6, "a", ob.THREAD_REPLY),
             item(7, "a", ob.UPDATE)]
    assert ids(ob.plan(items)) == [(5, [1, 2])]


@pytest.mark.unit
def test_plan_never_collapses_across_a_post_a_reply_or_another_target():
    # the post goes first and alone: the edits after it wait for its ts
    assert ids(ob.plan([item(1, "a", ob.POST), item(2, "a", ob.UPDATE), item(3, "a", ob.UPDATE)])) == [(1, [])]
    assert ids(ob.plan([item(1, "a", ob.THREAD_REPLY), item(2, "a", ob.THREAD_REPLY)])) == [(1, [])]
    # an edit of an explicit ts and one of the key's post are different targets
    assert ids(ob.plan([item(1, "a", ob.UPDATE, ts="1.1"), item(2, "a", ob.UPDATE)])) == [(1, [])]


@pytest.mark.unit
def test_backoff_grows_and_is_capped():
    waits = [ob.backoff(n) for n in range(1, 12)]
    assert waits[:3] == [2.0, 4.0, 8.0]
    assert waits == sorted(waits) and max(waits) == ob.MAX_BACKOFF


# --- delivery over HTTP ----------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    f = FakeSlack(token="xoxb-test").start()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def store(tmp_path) -> Iterator[StateStore]:
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        yield s
    finally:
        s.close()


def counted(op: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("pgsessions_slack_outbox_total", {"op": op, "outcome": outcome}) or 0.0


def pending_gauge() -> float:
    return REGISTRY.get_sample_value("pgsessions_slack_outbox_pending")


def drain(box: ob.Outbox, rounds: int = 20) -> None:
    for _ in range(rounds):
        if not box.pending_count():
            return
        box._paused_until = 0.0
        with box.store.tx() as c:
            c.execute(outbox_table.update().values(next_at=0.0))
        box.deliver()
    assert not box.pending_count(), "still pending"


def test_outage_keeps_everything_then_delivers_in_order_once_with_edits_collapsed(fake, store):
    box = ob.Outbox(store, make_web_client("xoxb-test", fake.api_url))
    fake.fail_next("chat.postMessage", status=500, times=10_000)
    fake.fail_next("chat.update", status=500, times=10_000)
    retried = counted(ob.POST, "retried")
    assert box.send(ob.POST, "inc1", CHANNEL, {"text": "Alert v1"}).response is None  # Slack down: kept
    assert counted(ob.POST, "retried") == retried + 1
    for n in (2, 3, 4):
        assert box.send(ob.UPDATE, "inc1", CHANNEL, {"text": f"Alert v{n}"}).kept
    assert box.send(ob.THREAD_REPLY, "inc1", CHANNEL, {"text": "Reminder"}).kept
    assert box.send(ob.UPDATE, "inc1", CHANNEL, {"text": "Resolved"}).kept
    box.deliver()  # paused: Slack failed a moment ago
    assert box.pending_count() == 6 and pending_gauge() == 6
    fake.clear_faults()
    drain(box)
    assert pending_gauge() == 0
    top = [m for m in fake.messages_in(CHANNEL) if not m.thread_ts]
    assert len(top) == 1, fake.summary()
    assert [v["text"] for v in top[0].versions] == ["Alert v1", "Alert v4", "Resolved"]
    replies = [m for m in fake.messages_in(CHANNEL) if m.thread_ts]
    assert [(r.text, r.thread_ts) for r in replies] == [("Reminder", top[0].ts)]
    ok = [c.method for c in fake.calls if c.ok]
    assert ok == ["chat.postMessage", "chat.update", "chat.postMessage", "chat.update"]
    assert box.post_state("inc1") == (ob.DELIVERED, CHANNEL, top[0].ts)
    fake.assert_clean()


def test_a_call_that_can_never_succeed_is_given_up_and_its_edits_with_it(fake, store):
    box = ob.Outbox(store, make_web_client("xoxb-test", fake.api_url))
    fake.fail_next("chat.postMessage", error="channel_not_found")
    failed = counted(ob.POST, "failed")
    assert box.send(ob.POST, "inc2", "C0NOWHERE", {"text": "Alert"}).response is None
    assert counted(ob.POST, "failed") == failed + 1
    assert box.post_state("inc2")[0] == ob.FAILED
    box.send(ob.UPDATE, "inc2", "C0NOWHERE", {"text": "Resolved"})
    assert box.pending_count() == 0, "an edit of a message that was never posted waits for nothing"
    assert len(fake.calls_for("chat.update")) == 0


def test_a_healthy_slack_gets_the_call_at_once_and_other_keys_are_not_held_up(fake, store):
    box = ob.Outbox(store, make_web_client("xoxb-test", fake.api_url))
    resp = box.send(ob.POST, "inc3", CHANNEL, {"text": "Alert"}).response
    assert resp is not None and resp["ts"] and box.pending_count() == 0
    upd = box.send(ob.UPDATE, "inc3", CHANNEL, {"text": "Edited"}, ts=resp["ts"]).response
    assert upd is not None and fake.messages[(CHANNEL, resp["ts"])].text == "Edited"
    # a key whose head waits out its backoff does not hold another key back
    fake.fail_next("chat.postMessage", error="internal_error")
    assert box.send(ob.POST, "slow", CHANNEL, {"text": "Slow"}).response is None
    assert box.send(ob.POST, "quick", CHANNEL, {"text": "Quick"}).response is None  # Slack failed just now: kept
    box._paused_until = 0.0
    box.deliver()
    assert box.post_state("quick")[0] == ob.DELIVERED and box.post_state("slow")[0] == ob.PENDING
    drain(box)
    assert sorted(m.text for m in fake.messages_in(CHANNEL)) == ["Edited", "Quick", "Slow"]


def test_two_deliverers_on_one_store_never_send_a_row_twice_and_keep_each_keys_order(fake, store):
    # the lag watcher's and the session watch's leaders (or two replicas) may both run a delivery pass
    queue = ob.Outbox(store, make_web_client("xoxb-test", fake.api_url), may_send=lambda: False)
    keys = [f"k{n}" for n in range(6)]
    for key in keys:
        queue.send(ob.POST, key, CHANNEL, {"text": f"{key} alert"})
        queue.send(ob.THREAD_REPLY, key, CHANNEL, {"text": f"{key} reminder"})
        queue.send(ob.UPDATE, key, CHANNEL, {"text": f"{key} resolved"})
    assert queue.pending_count() == 3 * len(keys)
    fake.delay("chat.postMessage", 0.05)  # widen the window between reading a row and marking it delivered
    boxes = [ob.Outbox(store, make_web_client("xoxb-test", fake.api_url)) for _ in range(2)]
    start = threading.Barrier(len(boxes))
    errors: list[BaseException] = []

    def run(box: ob.Outbox) -> None:
        try:
            start.wait(5)
            deadline = time.monotonic() + 30
            while box.pending_count() and time.monotonic() < deadline:
                box.deliver()
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not errors and not queue.pending_count(), fake.summary()
    sent = [c.params.get("text") for c in fake.calls if c.ok and c.method.startswith("chat.")]
    assert sorted(sent) == sorted(f"{k} {what}" for k in keys for what in ("alert", "reminder", "resolved")), \
        "a row was sent twice (or not at all):\n" + fake.summary()
    for key in keys:
        assert [t for t in sent if t.startswith(f"{key} ")] == [f"{key} alert", f"{key} reminder", f"{key} resolved"]
    top = [m for m in fake.messages_in(CHANNEL) if not m.thread_ts]
    assert len(top) == len(keys) and all(m.text.endswith("resolved") for m in top)
    fake.assert_clean()


@pytest.mark.unit
def test_the_key_to_environment_cache_is_bounded_least_recently_used_first_and_right_after_eviction(fake, store):
    """Fleet mode: the deliverer asks which environment a key (incident id) is of; what it remembers of
    that stays bounded however many incidents come and go."""
    envs = ["e0", "e1", "e2"]
    sh = Shards(store, {e: 1.0 for e in envs}, lease=30.0, label="host:1")
    sh.tick()
    assert sh.owned() == envs
    incidents = Incidents(store, "alerts", sh.id, sh)
    made = [incidents.create(envs[n % 3], f"h{n}", "lock_pileup", CHANNEL) for n in range(12)]
    assert all(made)
    box = ob.Outbox(store, make_web_client("xoxb-test", fake.api_url), shards=sh)
    assert box.env_cache_size == ob.ENV_CACHE and 1000 <= ob.ENV_CACHE <= 100_000
    box.env_cache_size = 5
    for inc in made:
        assert box._env_of(inc.id) == inc.env
    assert list(box._envs) == [inc.id for inc in made[-5:]]  # the five most recent
    assert box._env_of(made[7].id) == made[7].env  # used again: kept over the others
    assert box._env_of(made[0].id) == "e0"  # dropped earlier: read again, still right
    assert len(box._envs) == 5 and made[7].id in box._envs and made[8].id not in box._envs
    # delivering every incident's post keeps it bounded
    for inc in made:
        assert box.send(ob.POST, inc.id, CHANNEL, {"text": f"alert {inc.id}"}).response is not None
    drain(box)
    assert len(box._envs) == 5
    assert len(fake.calls_for("chat.postMessage", ok=True)) == 12
    assert box.pending_envs() == set()
    fake.fail_next("chat.update", error="internal_error")
    box.send(ob.UPDATE, made[2].id, CHANNEL, {"text": "edit"}, ts="1.2")  # Slack fails: it waits
    assert box.pending_envs() == {made[2].env}
    sh.stop()
