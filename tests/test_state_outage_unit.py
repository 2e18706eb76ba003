"""The rules of a state store outage (issue 23 §6) without servers: the health monitor, incidents kept in
memory and reconciled (a post's ts recorded, a duplicate of another replica's alert), Slack calls kept in
memory and written to the outbox, the alert's outage line. A SQLite store stands for the state store; an
outage is an outage error noted by a gateway, as a stopped PostgreSQL gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bot.metrics import REGISTRY
from bot.render.store import OUTAGE_NOTE, render_store_back, render_store_down, with_outage_note
from bot.slack.outbox import DELIVERED, PENDING, IncidentOutbox, Outbox
from bot.state.health import StoreHealth, is_outage
from bot.state.incidents import DUPLICATE, Incidents, payload_from_json
from bot.state.schema import incidents, outbox
from bot.state.store import StateStore

pytestmark = pytest.mark.unit

HOSTILE = "<!channel> <https://evil.example|x> :fire: #general"


@pytest.fixture
def store(tmp_path) -> Iterator[StateStore]:
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("state store down"))


class FakeClient:
    """Records Web API calls; answers like Slack (a post gets a ts)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def chat_postMessage(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("post", kw))
        return {"ok": True, "channel": "C0ALERTS", "ts": f"1700000000.{len(self.calls):06d}"}

    def chat_update(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("update", kw))
        return {"ok": True, "channel": kw["channel"], "ts": kw["ts"]}


def leader(store: StateStore, name: str = "watch", holder: str = "me") -> Incidents:
    assert store.acquire_lease(name, holder, 60.0)
    return Incidents(store, name, holder)


def rows(store: StateStore) -> list[dict[str, Any]]:
    with store.read() as c:
        return [dict(r) for r in c.execute(select(incidents).order_by(incidents.c.opened_at)).mappings()]


def test_only_unreachable_or_slow_stores_are_outages():
    assert is_outage(outage()) and is_outage(ConnectionError()) and is_outage(TimeoutError())
    assert not is_outage(ValueError("a bug")) and not is_outage(KeyError("x"))


def test_health_goes_down_on_an_outage_and_up_only_after_every_catch_up_landed(store):
    h = StoreHealth.of(store)
    assert StoreHealth.of(store) is h, "one monitor per store"
    assert h.up and h.status_line() == "state store: up"
    assert not h.note(ValueError("a bug")) and h.up, "an error that is no outage changes nothing"
    assert h.note(outage())
    assert h.degraded and not h.up and "state store: down" in h.status_line()
    assert REGISTRY.get_sample_value("pgsessions_state_store_up") == 0.0
    fails = [True]
    written: list[str] = []

    def catch_up() -> None:
        if fails:
            fails.pop()
            raise outage()
        written.append("x")

    h.on_catch_up("a test", catch_up)
    told: list[bool] = []
    h.on_probe(told.append)
    assert not h.probe(), "the store answers, but what memory holds is not written yet"
    assert h.degraded and told == [False]
    assert h.probe() and h.up and written == ["x"] and told == [False, True]
    assert REGISTRY.get_sample_value("pgsessions_state_store_up") == 1.0
    assert h.last_outage is not None and h.last_outage[0] <= h.last_outage[1]


def test_an_incident_opened_during_the_outage_is_inserted_with_its_post_when_the_store_returns(store):
    inc_gw = leader(store)
    before = inc_gw.create("prod", "primary", "idle_in_tx", "C0ALERTS", payload_from_json("idle_in_tx", {"app": HOSTILE}))
    assert before is not None
    StoreHealth.of(store).note(outage())
    # while the store is down: the open incident is known from memory, a new one opens there
    assert [i.id for i in inc_gw.all_open()] == [before.id]
    new = inc_gw.create("prod", "replica1", "lag", "C0ALERTS", payload_from_json("lag", {"since": "x"}))
    assert new is not None
    assert inc_gw.create("prod", "replica1", "lag", "C0ALERTS") is None, "one per env, host and kind"
    assert inc_gw.holds_lease(), "the leader goes on through the outage"
    assert inc_gw.save(new, channel="C0ALERTS", message_ts="1700000000.000001")
    assert inc_gw.resolve(before, payload_from_json("idle_in_tx", {"done": ["cleared"]}))
    assert [r["id"] for r in rows(store)] == [before.id], "nothing reached the store meanwhile"
    assert StoreHealth.of(store).probe()
    by_id = {r["id"]: r for r in rows(store)}
    assert by_id[new.id]["message_ts"] == "1700000000.000001" and by_id[new.id]["open"]
    assert not by_id[before.id]["open"] and json.loads(by_id[before.id]["payload"])["done"] == ["cleared"]
    # back to the store: the next edit of the new incident is written there, to the same message
    again = inc_gw.open_for("prod", "replica1")["lag"]
    assert again.message_ts == "1700000000.000001"


def test_an_incident_another_replica_opened_meanwhile_makes_ours_a_duplicate_and_its_message_says_so(store):
    ours = leader(store)
    client = FakeClient()
    box = Outbox(store, client)
    slack = IncidentOutbox(box, ours, lambda: False)
    StoreHealth.of(store).note(outage())
    inc = ours.create("prod", "primary", "host_unreachable", "C0ALERTS")
    assert inc is not None
    resp = slack.call("chat_postMessage", inc, channel="C0ALERTS", text="unreachable", blocks=[])
    assert resp is not None and resp["ts"]
    assert OUTAGE_NOTE in json.dumps(client.calls[0][1]["blocks"]), "the alert says it may be duplicated"
    ours.save(inc, channel=resp["channel"], message_ts=resp["ts"])
    # meanwhile another replica wrote the same incident (it reached the store before us)
    with store.tx() as c:
        c.execute(incidents.insert().values(
            id="theirs", env="prod", host="primary", kind="host_unreachable", open=True, opened_at=1.0,
            resolved_at=None, channel="C0ALERTS", message_ts="1.1", last_update_at=None,
            last_reminder_at=None, payload="{}"))
    assert StoreHealth.of(store).probe()
    by_id = {r["id"]: r for r in rows(store)}
    assert by_id["theirs"]["open"] and not by_id[inc.id]["open"]
    assert json.loads(by_id[inc.id]["payload"])["closed"] == DUPLICATE
    box.deliver()
    edits = [kw for op, kw in client.calls if op == "update"]
    assert edits and edits[-1]["ts"] == resp["ts"] and "Another replica" in edits[-1]["text"]


def test_slack_calls_kept_in_memory_land_in_order_and_are_written_to_the_outbox(store):
    client = FakeClient()
    box = Outbox(store, client)
    StoreHealth.of(store).note(outage())
    first = box.send("post", "inc1", "C0ALERTS", {"text": "alert"})
    assert first.kept and first.response is not None, "delivered at once from memory"
    box.send("update", "inc1", "C0ALERTS", {"text": "edited"})  # its ts is found from the kept post
    assert [op for op, _ in client.calls] == ["post", "update"]
    assert client.calls[1][1]["ts"] == first.response["ts"]
    assert box.post_state("inc1") == (DELIVERED, "C0ALERTS", first.response["ts"])
    with store.read() as c:
        assert not c.execute(select(outbox)).all()
    assert StoreHealth.of(store).probe()
    with store.read() as c:
        kept = [dict(r) for r in c.execute(select(outbox).order_by(outbox.c.id)).mappings()]
    assert [(k["op"], k["state"]) for k in kept] == [("post", DELIVERED), ("update", DELIVERED)]
    assert kept[0]["ts"] == first.response["ts"]
    assert box.post_state("inc1")[2] == first.response["ts"], "found in the store now"
    assert PENDING not in {k["state"] for k in kept}


def test_the_outage_line_is_added_once_and_the_store_alert_escapes_nothing_from_data():
    msg = {"text": "Idle in transaction", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]}
    once = with_outage_note(msg)
    assert with_outage_note(once) == once
    assert OUTAGE_NOTE in json.dumps(once["blocks"][-1]) and OUTAGE_NOTE in once["text"]
    full = {"text": "t", "blocks": [{"type": "divider"}] * 50}
    assert len(with_outage_note(full)["blocks"]) == 50, "Slack's 50 blocks are never exceeded"
    down, back = render_store_down(1.0e9, replica="host:1"), render_store_back(1.0e9, 1.0e9 + 90, replica="host:1")
    assert down["text"].endswith("not answering") and "answers again" in back["text"]
    assert "(1m 30s)" in json.dumps(back)
