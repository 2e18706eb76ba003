"""Typed incidents at the state boundary: the payload JSON the previous release wrote reads into the typed
models (:mod:`bot.watch.incident_models`) and is written back exactly as it was (no migration; replicas of
both releases read each other's rows during a rolling upgrade)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.state.incidents import Incident, Incidents, payload_from_json, payload_json
from bot.state.store import StateStore
from bot.watch.incident_models import (
    UNREACHABLE_KINDS,
    Ack,
    ConnectionsFacts,
    Facts,
    HostUnreachableFacts,
    IncidentPayload,
    LagFacts,
    LockPileupFacts,
    Origin,
    PoolWaitingFacts,
    SessionsFacts,
    UnreachableFacts,
    WalReceiverFacts,
    WraparoundFacts,
    XminHorizonFacts,
    facts_of,
    unreachable_origin,
)
from tests import test_pgbouncer_unit as pgb
from tests import test_watch_rules as wr
from tests import test_wraparound_rules as wa

pytestmark = pytest.mark.unit

SESSION = {"pid": 42, "backend_start": "2026-01-01T00:00:00.000001+00:00", "user": "app", "database": "db",
           "application": "api", "client_addr": "10.0.0.1", "state": "idle in transaction", "query": "SELECT 1",
           "query_secs": 12.5, "xact_secs": 30, "state_secs": 29.0, "wait_secs": None, "wait_mode": None,
           "wait_relation": None, "cannot_signal": None, "backend_type": "client backend"}
SEEN = {"42@2026-01-01T00:00:00.000001+00:00": {"pid": 42, "backend_start": "2026-01-01T00:00:00.000001+00:00",
                                                "user": "app", "application": "api"}}
TOKENS = {"42@x": "tok1", "channel:42@x": "C0ALERTS", "details:C0ALERTS:42@x": "tok2"}
HOLDER = {"type": "backend", "secs": 30.0, "xid_age": 1200, "key": "42@x", "session": SESSION,
          "backend_type": "client backend"}

# payloads as release 0.1 wrote them, one per kind (the session watch's facts under "facts", the lag
# watcher's at the top)
OLD_ROWS: dict[str, dict[str, Any]] = {
    "lag": {"peak_secs": 120.0, "peak_bytes": 500, "since": "2026-01-01T00:00:00+00:00", "reasons": ["lock conflict"],
            "seen": {"7@y": {"pid": 7, "backend_start": "y", "user": "u", "application": "a", "kind": "lock"}},
            "last": {"lag_secs": 60.0, "lag_bytes": 100, "reason": "lock", "at": "2026-01-01T00:01:00+00:00"},
            "tokens": TOKENS, "ack": {"by": "U1", "at": 1.7e9}, "ack_drawn": True},
    "unreachable": {"since": "2026-01-01T00:00:00+00:00", "reason": "connection refused",
                    "ack": {"by": "U2", "at": 1.7e9}},
    "lock_pileup": {"facts": {"root": SESSION, "root_idle_in_transaction": True,
                              "held": [{"mode": "RowExclusiveLock", "relation": "t"}], "direct": 2, "total": 3,
                              "longest_wait": 40.5, "ddl": {**SESSION, "pid": 43, "queued": 2},
                              "waiters": [SESSION], "threshold": {"waiters": 3, "wait": 30}},
                    "key": "42@2026-01-01T00:00:00.000001+00:00", "tokens": TOKENS, "bulk": None,
                    "ack_drawn": False, "seen": SEEN},
    "idle_in_tx": {"facts": {"count": 1, "threshold": 300, "worst_secs": 400.0, "sessions": [SESSION]},
                   "key": "", "tokens": {}, "bulk": None, "ack_drawn": False, "seen": SEEN,
                   "done": ["pid 42 terminated through the bot"]},
    "long_running": {"facts": {"count": 1, "threshold": 600.0, "worst_secs": 700, "sessions": [SESSION]}, "key": ""},
    "connections": {"facts": {"used": 90, "usable": 97, "max": 100, "reserved": 3, "share": 92.8, "threshold": 90,
                              "by_app": [["api", 80], ["", 10]], "by_user": [["app", 90]], "by_state": [["idle", 85]],
                              "bulk_app": "api", "bulk_count": 80, "idle_of_app": 80},
                    "key": "", "bulk": {"ident": "1@x", "channel": "C0", "token": "b1", "at": "1700000000.0"}},
    "xmin_horizon": {"facts": {"threshold": 600, "oldest": HOLDER, "count": 2,
                               "holders": [HOLDER, {"type": "slot", "secs": 700.0, "xid_age": 5, "key": "slot:s:1:2",
                                                    "slot_name": "s", "slot_type": "logical", "active": False,
                                                    "retained_bytes": 1024, "xmin": "1", "catalog_xmin": 2}]},
                     "key": ""},
    "wal_receiver": {"facts": {"status": "not running", "silent_secs": None}, "key": "", "closed": "not watched any more"},
    "host_unreachable": {"facts": {"reason": "timeout", "failures": 3}, "key": ""},
    "pool_waiting": {"facts": {"pooler": "bouncer", "pool": "db/app", "waiting": 4, "longest_wait": 2.5, "active": 10,
                               "servers_active": 10, "servers_busy": 10, "pool_size": 10, "pool_mode": "transaction",
                               "threshold": 2, "holders": [{**SESSION, "xact_secs": 31.0}], "holders_total": 10},
                     "key": "bouncer:db/app"},
    "wraparound": {"facts": {"threshold": 1_000_000_000, "limit": 2_147_483_647, "count": 1,
                             "worst": {"name": "db", "xid_age": 1_100_000_000, "mxid_age": 3},
                             "databases": [{"name": "db", "xid_age": 1_100_000_000, "mxid_age": 3}],
                             "holders": [HOLDER]}, "key": ""},
}

TYPED: dict[str, type[Facts]] = {
    "lag": LagFacts, "unreachable": UnreachableFacts, "lock_pileup": LockPileupFacts, "idle_in_tx": SessionsFacts,
    "long_running": SessionsFacts, "connections": ConnectionsFacts, "xmin_horizon": XminHorizonFacts,
    "wal_receiver": WalReceiverFacts, "host_unreachable": HostUnreachableFacts, "pool_waiting": PoolWaitingFacts,
    "wraparound": WraparoundFacts,
}


@pytest.mark.parametrize("kind", sorted(OLD_ROWS))
def test_a_payload_of_the_previous_release_reads_typed_and_is_written_back_as_it_was(kind: str) -> None:
    old = OLD_ROWS[kind]
    payload = payload_from_json(kind, old)
    assert type(payload.facts) is TYPED[kind], "each kind's facts have their own type"
    assert json.loads(payload_json(kind, payload)) == old


def test_the_typed_fields_say_what_the_json_said() -> None:
    lag = payload_from_json("lag", OLD_ROWS["lag"])
    facts = lag.facts_as(LagFacts)
    assert facts.peak_secs == 120.0 and facts.reasons == ("lock conflict",) and facts.last is not None
    assert lag.ack == Ack(by="U1", at=1.7e9) and lag.ack_drawn and lag.tokens == TOKENS
    assert lag.seen["7@y"].kind == "lock" and lag.seen["7@y"].key == "7@y"
    pileup = payload_from_json("lock_pileup", OLD_ROWS["lock_pileup"])
    root = pileup.facts_as(LockPileupFacts).root
    assert root is not None and root.key == "42@2026-01-01T00:00:00.000001+00:00" and root.xact_secs == 30
    assert pileup.key == root.key and pileup.ack is None
    # the facts of another kind read as that kind's empty facts, never as these
    assert pileup.facts_as(LagFacts) == LagFacts()
    assert payload_from_json("connections", OLD_ROWS["connections"]).bulk == OLD_ROWS["connections"]["bulk"]


def test_fields_another_release_adds_are_kept_and_facts_that_do_not_fit_stay_untyped() -> None:
    later = {**OLD_ROWS["idle_in_tx"], "escalated": {"to": "U9"}}
    later["facts"] = {**later["facts"], "new_fact": [1, 2]}
    assert json.loads(payload_json("idle_in_tx", payload_from_json("idle_in_tx", later))) == later
    odd = {"facts": {"count": "many"}, "key": ""}
    payload = payload_from_json("idle_in_tx", odd)
    assert type(payload.facts) is Facts and json.loads(payload_json("idle_in_tx", payload)) == odd
    assert payload_from_json("a_later_kind", {"facts": {"x": 1}, "key": "k"}).key == "k"
    broken_ack = payload_from_json("lag", {**OLD_ROWS["lag"], "ack": "yes"})
    assert broken_ack.ack is None and broken_ack.facts_as(LagFacts).peak_bytes == 500, "what fits is read"


def test_facts_from_the_rules_are_kept_as_json_keeps_them() -> None:
    facts = facts_of("connections", {"used": 5, "share": 50.0, "by_app": [("api", 5)]})
    assert isinstance(facts, ConnectionsFacts) and facts.by_app == (("api", 5),) and facts.used == 5
    assert payload_json("connections", IncidentPayload(facts=facts)) == json.dumps(
        {"facts": {"used": 5, "share": 50.0, "by_app": [["api", 5]]}})


def test_the_gateway_keeps_an_acknowledge_through_the_leaders_writes(tmp_path: Any) -> None:
    store = StateStore(f"sqlite:///{tmp_path}/s.db")
    assert store.acquire_lease("alerts", "me", 60)
    gw = Incidents(store, "alerts", "me")
    inc = gw.create("prod", "primary", "lock_pileup", "C0", payload_from_json("lock_pileup", OLD_ROWS["lock_pileup"]))
    assert inc is not None
    clicked, why = Incidents(store, "alerts", "someone").acknowledge(inc.id, "U7")
    assert why is None and clicked is not None and clicked.payload.ack is not None
    # the leader's next write does not know of the click: the Acknowledge stays
    assert gw.save(inc, payload=inc.payload.with_(ack_drawn=False), last_update_at=1.0)
    again = gw.get(inc.id)
    assert isinstance(again, Incident) and again.payload.ack is not None and again.payload.ack.by == "U7"
    assert again.payload.facts_as(LockPileupFacts).total == 3
    assert Incidents(store, "alerts", "x").acknowledge(inc.id, "U8")[1] == "<@U7> already acknowledged this alert"


def _rules_conditions() -> list[Any]:
    """What the rules find, kind by kind, on the inputs their own tests use (hostile names included)."""
    found = list(wr.rendered_conditions())
    sessions = [wa.session_row(11, xmin_age=1200), wa.session_row(12, xid_age=4000)]
    prepared = [{"gid": "g1", "owner": "o", "database": "appdb", "xid_age": 3000, "secs": 50.0}]
    slots = [{"slot_name": "s1", "slot_type": "logical", "active": False, "xmin": None, "catalog_xmin": "700",
              "xid_age": 2000, "retained_bytes": 1.0}]
    feedback = [{"application_name": "standby1", "client_addr": "10.0.0.2", "xmin": "800", "xid_age": 1500}]
    found += wa.wraparound.conditions(wa.reading([("appdb", 9500, 0)], sessions, prepared=prepared, slots=slots,
                                                 feedback=feedback), wa.watch(1000))
    watch = pgb.parse_config({"environments": {"prod": {"dsn": "host=x", "watch": {"channel": "C1",
                                                                                   "pool_waiting": True}}}},
                             environ={}).environments["prod"].watch
    holder = pgb.session_from_row(pgb.holder_row(101, "app", 840.0), False, True)
    found += pgb.pool_waiting(pgb.snapshot(pgb.read(waiting=37, maxwait=12), (holder,)), watch)
    return found


def test_the_facts_every_rule_finds_fit_their_kinds_model_and_are_stored_as_before() -> None:
    found = _rules_conditions()
    kinds = {c.kind for c in found}
    assert kinds == set(TYPED) - {"lag", "unreachable"}, "every session-watch kind is covered"
    for c in found:
        facts = facts_of(c.kind, c.facts)
        assert type(facts) is TYPED[c.kind], f"{c.kind}: its facts fell back to untyped"
        stored = json.loads(payload_json(c.kind, IncidentPayload(facts=facts)))["facts"]
        assert stored == json.loads(json.dumps(c.facts, default=str)), f"{c.kind}: stored as before"


def test_the_host_that_cannot_be_read_is_one_kind_whose_origin_is_its_stored_name() -> None:
    """One facts model for both watchers' unreachable incidents; the origin comes from the stored kind (the
    name each watcher always wrote, so old and new replicas recognise each other's rows) and is never stored."""
    standby = payload_from_json("unreachable", OLD_ROWS["unreachable"]).facts
    host = payload_from_json("host_unreachable", OLD_ROWS["host_unreachable"]).facts
    assert type(standby) is type(host) is UnreachableFacts
    assert isinstance(standby, UnreachableFacts) and isinstance(host, UnreachableFacts)
    assert (standby.origin, host.origin) == (Origin.STANDBY, Origin.HOST)
    assert {o: UNREACHABLE_KINDS[o] for o in Origin} == {Origin.STANDBY: "unreachable", Origin.HOST: "host_unreachable"}
    assert [unreachable_origin(k) for k in ("unreachable", "host_unreachable", "lag")] == [
        Origin.STANDBY, Origin.HOST, None]
    made = UnreachableFacts(origin=Origin.STANDBY, since="2026-01-01T00:00:00+00:00", reason="refused")
    assert "origin" not in payload_json("unreachable", IncidentPayload(facts=made))
    assert payload_from_json("unreachable", json.loads(payload_json("unreachable", IncidentPayload(facts=made)))
                             ).facts == made
    assert facts_of("host_unreachable", {"reason": "x", "failures": 2}) == UnreachableFacts(
        origin=Origin.HOST, reason="x", failures=2)
