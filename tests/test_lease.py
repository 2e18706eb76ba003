"""The watchers' leader lease (bot/state/lease.py) against a real SQLite state store, no scheduler:
renewals are called by hand, expiry is real time on a short ``every``."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from bot.state.incidents import Incidents
from bot.state.lease import LeaderLease
from bot.state.schema import leases
from bot.state.store import StateStore

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path) -> StateStore:
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


class Calls:
    def __init__(self) -> None:
        self.gained = 0
        self.followed = 0

    def gain(self) -> None:
        self.gained += 1

    def follow(self) -> None:
        self.followed += 1


def lease(store: StateStore, calls: Calls, every: float = 10.0, name: str = "lagwatch", **kw) -> LeaderLease:
    return LeaderLease(store, name, "host:1", every, label="test", duty="the checks",
                       on_gain=calls.gain, on_follow=calls.follow, **kw)


def row(store: StateStore, name: str):
    with store.read() as c:
        return c.execute(select(leases).where(leases.c.name == name)).mappings().first()


def test_two_holders_only_one_leads_and_gain_runs_once(store):
    ca, cb = Calls(), Calls()
    a, b = lease(store, ca), lease(store, cb)
    assert a.holder != b.holder, "two instances of one process are told apart"
    assert not a.is_leader() and not b.is_leader()
    a.renew()
    b.renew()
    assert a.is_leader() and not b.is_leader()
    a.renew()
    b.renew()
    assert a.is_leader() and not b.is_leader()
    assert (ca.gained, ca.followed) == (1, 0), "on_gain once, when leadership is gained"
    assert (cb.gained, cb.followed) == (0, 2), "on_follow at every renewal that finds another holder"
    r = row(store, "lagwatch")
    assert r["holder"] == a.holder
    assert r["expires_at"] == pytest.approx(time.time() + 15.0, abs=2), "TTL 1.5 x every"
    assert a.ttl == 15.0 and a.renew_every == 5.0
    # the incidents of the leader are fenced by the same row
    assert Incidents(store, "lagwatch", a.holder).holds_lease()
    assert not Incidents(store, "lagwatch", b.holder).holds_lease()


def test_a_stop_releases_the_lease_and_the_other_takes_over_at_its_next_renewal(store):
    ca, cb = Calls(), Calls()
    a, b = lease(store, ca), lease(store, cb)
    a.renew()
    b.renew()
    a.stop()
    assert a.stopped and not a.is_leader()
    assert row(store, "lagwatch") is None, "released, not left to expire"
    b.renew()
    assert b.is_leader() and cb.gained == 1
    a.renew()  # a stopped lease never takes it again
    assert not a.is_leader() and row(store, "lagwatch")["holder"] == b.holder
    b.stop()
    b.stop()  # twice is harmless


def test_an_expired_lease_is_taken_over_and_the_old_leader_stopped_leading_first(store):
    every = 0.2  # TTL 0.3 s; the holder leads for 0.24 s after a renewal
    ca, cb = Calls(), Calls()
    a, b = lease(store, ca, every), lease(store, cb, every)
    a.renew()
    b.renew()
    assert a.is_leader() and not b.is_leader()
    # a stops renewing (hung): it stops leading before the lease expires in the store
    deadline = time.monotonic() + 5
    while a.is_leader() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not a.is_leader()
    b.renew()
    assert not b.is_leader(), "a's lease has not expired yet: nobody leads for a moment, never two"
    time.sleep(0.3)
    b.renew()
    assert b.is_leader() and cb.gained == 1
    a.renew()  # a comes back: it finds another holder
    assert not a.is_leader() and ca.followed == 1
    assert row(store, "lagwatch")["holder"] == b.holder


@pytest.mark.parametrize("leads_during_gain", [False, True])
def test_on_gain_runs_before_or_while_leading(store, leads_during_gain):
    seen: list[bool] = []
    holder: list[LeaderLease] = []
    ls = LeaderLease(store, "watch", "host:1", 10.0, label="test", duty="the checks",
                     on_gain=lambda: seen.append(holder[0].is_leader()), leads_during_gain=leads_during_gain)
    holder.append(ls)
    ls.renew()
    assert seen == [leads_during_gain]
    assert ls.is_leader()


def test_an_error_that_is_no_outage_keeps_what_was_held_until_it_runs_out(store, monkeypatch):
    calls = Calls()
    ls = lease(store, calls, every=0.2)
    ls.renew()
    assert ls.is_leader()

    def broken(*_a, **_k):
        raise RuntimeError("a bug, not an outage")

    monkeypatch.setattr(store, "acquire_lease", broken)
    ls.renew()
    assert ls.is_leader(), "one failed renewal changes nothing"
    time.sleep(0.3)
    ls.renew()
    assert not ls.is_leader(), "but the lease runs out"
    assert not ls.through_outage
    assert calls.followed == 0


def test_the_leader_keeps_leading_while_the_state_store_cannot_be_reached(store, monkeypatch):
    """Issue 23 §6: the replica that led goes on checking through an outage (not only until the lease
    would run out); a follower stays a follower; when the store answers the lease decides again."""
    ca, cb = Calls(), Calls()
    a, b = lease(store, ca, every=0.2), lease(store, cb, every=0.2)
    a.renew()
    b.renew()
    assert a.is_leader() and not b.is_leader()

    def down(*_a, **_k):
        raise ConnectionError("state store down")

    monkeypatch.setattr(store, "acquire_lease", down)
    for _ in range(3):
        a.renew()
        b.renew()
        time.sleep(0.15)
    assert a.is_leader() and a.through_outage, "the leader leads through the outage, past the lease's TTL"
    assert not b.is_leader() and not b.through_outage, "a follower does not start leading"
    monkeypatch.undo()
    b.renew()  # the store is back and the lease row ran out: b renews first and takes it
    a.renew()
    assert b.is_leader() and not a.is_leader() and not a.through_outage
    assert ca.followed == 1, "the old leader follows at its first renewal after the outage"


def test_the_two_watchers_leases_are_independent_rows(store):
    lag, watch = lease(store, Calls(), name="lagwatch"), lease(store, Calls(), name="watch")
    lag.renew()
    watch.renew()
    assert lag.is_leader() and watch.is_leader()
    assert row(store, "lagwatch")["holder"] == lag.holder and row(store, "watch")["holder"] == watch.holder


def test_the_scheduler_shutdown_stops_and_releases(store):
    from apscheduler.schedulers.background import BackgroundScheduler

    sched = BackgroundScheduler(timezone="UTC")
    ls = lease(store, Calls(), every=10.0)
    ls.install(sched, "test:lease", "test lease")
    sched.start()
    try:
        deadline = time.monotonic() + 5
        while not ls.is_leader() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ls.is_leader(), "the job renews at once"
        assert sched.get_job("test:lease").trigger.interval.total_seconds() == 5.0
    finally:
        sched.shutdown(wait=True)
    assert ls.stopped and not ls.is_leader()
    assert row(store, "lagwatch") is None
