"""The fleet (bot/fleet/): the assignment rules (pure), and the environment leases, their fencing of
incidents and outbox claims, against a real SQLite state store with several :class:`Shards` driven by
hand (no scheduler; expiry is real time on a short lease)."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from bot.alerts import LEASE_NAME, AlertShell
from bot.approval.policy import Policy
from bot.check import OK, SlackReport, StateReport, render_text
from bot.check_services import _fleet
from bot.config import Config, parse_config
from bot.fleet import assign
from bot.fleet.assign import Lease
from bot.fleet.shards import SWEEP_KEY, Shards, watched_envs
from bot.lagwatch.watcher import LagWatcher
from bot.metrics import REGISTRY
from bot.postgres.pools import Databases
from bot.render import lag as render_lag
from bot.render import watch as render_watch
from bot.render.home import EnvStatus, HostStatus, _env_block
from bot.slack import outbox as ob
from bot.slack.web import make_web_client
from bot.state.incidents import Incidents, open_incidents, payload_from_json
from bot.state.schema import env_leases
from bot.state.store import StateStore
from bot.watch.watcher import Watcher
from tests.harness.fake_slack import FakeSlack
from tests.harness.waiting import wait_until

pytestmark = pytest.mark.unit

ENVS = [f"env{i:02d}" for i in range(30)]


# --- the rules (pure) --------------------------------------------------------------------------------


def test_every_environment_has_one_owner_and_every_replica_computes_the_same():
    replicas = ["a:1:x", "b:2:y", "c:3:z"]
    shares = assign.assignment(ENVS, replicas)
    assert set(shares) == set(replicas)
    owned = [e for share in shares.values() for e in share]
    assert sorted(owned) == ENVS  # each exactly once
    for env in ENVS:
        # the order in which a replica lists the others changes nothing
        assert assign.owner(env, replicas) == assign.owner(env, list(reversed(replicas))) == assign.owner(
            env, [replicas[1], replicas[2], replicas[0]])
    assert assign.owner("prod", []) is None


def test_shares_are_balanced_over_many_environments():
    envs = [f"e{i}" for i in range(1000)]
    shares = assign.assignment(envs, ["r1", "r2", "r3"])
    sizes = sorted(len(s) for s in shares.values())
    assert sum(sizes) == 1000
    assert sizes[0] >= 250 and sizes[-1] <= 420, sizes


def test_a_replica_joining_or_leaving_moves_only_its_share():
    envs = [f"e{i}" for i in range(300)]
    before = {e: assign.owner(e, ["r1", "r2", "r3"]) for e in envs}
    joined = {e: assign.owner(e, ["r1", "r2", "r3", "r4"]) for e in envs}
    moved = [e for e in envs if before[e] != joined[e]]
    assert moved and all(joined[e] == "r4" for e in moved)  # only to the newcomer
    assert 40 <= len(moved) <= 110, len(moved)
    left = {e: assign.owner(e, ["r1", "r3"]) for e in envs}
    assert all(left[e] == before[e] for e in envs if before[e] != "r2")  # only r2's share moves
    assert all(left[e] in ("r1", "r3") for e in envs)


def test_plan_renews_takes_releases_and_waits():
    me, other = "r1", "r2"
    live = [me, other]
    mine = sorted(e for e in ENVS if assign.owner(e, live) == me)
    theirs = sorted(e for e in ENVS if assign.owner(e, live) == other)
    now = 1000.0
    leases = {
        mine[0]: Lease(me, 3, now + 5),  # held and wanted: renew
        mine[1]: Lease(other, 7, now + 5),  # wanted but another's lease runs: wait for its release
        mine[2]: Lease(other, 7, now - 1),  # wanted, another's lease ran out: take
        mine[3]: Lease(me, 2, 0.0),  # released earlier (expires_at 0): take again
        theirs[0]: Lease(me, 4, now + 5),  # held but the other should own it: release
        theirs[1]: Lease(other, 1, now + 5),  # not mine at all: nothing
    }
    p = assign.plan(me, ENVS, [other], leases, now)  # "me" is always counted live
    assert p.renew == {mine[0]}
    assert mine[1] in p.waiting and mine[1] not in p.take
    assert {mine[2], mine[3]} <= p.take
    assert set(mine[4:]) <= p.take  # no row yet
    assert p.release == {theirs[0]}
    assert not (p.take | p.renew | p.waiting) & set(theirs)
    # alone, a replica wants everything
    alone = assign.plan(me, ENVS, [], {}, now)
    assert alone.take == set(ENVS) and not alone.release


def test_watched_environments_and_the_default_lease():
    cfg = parse_config({
        "state": "postgresql://bot@statehost/state",
        "environments": {
            "a": {"dsn": "host=a", "watch": {"channel": "C0WATCH01", "check_every": "10s"}},
            "b": {"dsn": "host=b", "standbys": {"r1": "host=b2"},
                  "lag_alert": {"channel": "C0LAG0001", "check_every": "4s"}},
            "c": {"dsn": "host=c"},
        },
    })
    assert watched_envs(cfg) == {"a": 10.0, "b": 4.0}
    sh = Shards.solo(watched_envs(cfg))
    assert sh.ttl == 3.0 and sh.tick_every == 0.75  # 0.75 x the smallest check_every, renewed every lease / 4
    assert not sh.fleet and sh.owns("a") and sh.owns("anything")  # the one replica owns everything
    assert parse_config({**cfg.model_dump(mode="json", exclude_defaults=True), "fleet": {"lease": "20s"}}).fleet.lease == 20


# --- leases on a state store ----------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> Iterator[StateStore]:
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        yield s
    finally:
        s.close()


def fleet(store: StateStore, n: int, lease: float = 1.0, envs: list[str] = ENVS) -> list[Shards]:
    return [Shards(store, {e: 1.0 for e in envs}, lease=lease, label=f"host{i}:{100 + i}") for i in range(n)]


def tick_all(shards: list[Shards], rounds: int = 2) -> None:
    for _ in range(rounds):
        for s in shards:
            s.tick()


def owners(shards: list[Shards]) -> Counter[str]:
    return Counter(e for s in shards for e in s.owned())


def generation(store: StateStore, env: str) -> int:
    with store.read() as c:
        return int(c.execute(select(env_leases.c.generation).where(env_leases.c.env == env)).scalar_one())


def test_three_replicas_share_the_environments_each_exactly_once(store):
    shards = fleet(store, 3)
    tick_all(shards)
    counts = owners(shards)
    assert sorted(counts) == ENVS and set(counts.values()) == {1}
    assert all(s.owned() for s in shards)
    # who owns what is who should: the rendezvous owner over the live replicas
    ids = [s.id for s in shards]
    for s in shards:
        assert set(s.owned()) == {e for e in ENVS if assign.owner(e, ids) == s.id}
    assert {e: lbl for e, lbl in shards[0].gateway.watchers().items()} == {
        e: next(s.label for s in shards if e in s.owned()) for e in ENVS}


def test_a_replica_that_joins_gets_its_share_after_the_others_release_it(store):
    first = fleet(store, 2)
    tick_all(first)
    assert sorted(owners(first)) == ENVS
    newcomer = Shards(store, {e: 1.0 for e in ENVS}, lease=1.0, label="host9:999")
    newcomer.tick()  # registers; what it should own is still held by the others
    assert newcomer.owned() == []
    released_before = REGISTRY.get_sample_value("pgsessions_fleet_lease_handovers_total", {"direction": "released"}) or 0
    tick_all(first, rounds=1)  # they see it live and release its share
    newcomer.tick()  # and it takes it
    all3 = [*first, newcomer]
    counts = owners(all3)
    assert sorted(counts) == ENVS and set(counts.values()) == {1}
    assert newcomer.owned() and set(newcomer.owned()) == {
        e for e in ENVS if assign.owner(e, [s.id for s in all3]) == newcomer.id}
    released = REGISTRY.get_sample_value("pgsessions_fleet_lease_handovers_total", {"direction": "released"})
    assert released == released_before + len(newcomer.owned())


def test_an_environment_is_handed_over_only_once_the_check_running_on_it_has_ended(store):
    """Exactly one replica checks an environment at a time: a replica that should release an environment
    whose check is still running keeps its lease until the check ends, so the newcomer cannot take it."""
    first = fleet(store, 1)
    tick_all(first)
    newcomer = Shards(store, {e: 1.0 for e in ENVS}, lease=1.0, label="host9:999")
    newcomer.tick()
    share = {e for e in ENVS if assign.owner(e, [first[0].id, newcomer.id]) == newcomer.id}
    busy, free = sorted(share)[0], sorted(share)[1:]
    assert first[0].begin(busy)  # a check of it starts now
    first[0].tick()  # sees the newcomer: releases its share, but not what is being checked
    assert not first[0].owns(busy) and not first[0].begin(busy)  # no new check of it starts
    newcomer.tick()
    assert set(newcomer.owned()) == set(free)
    assert busy not in newcomer.owned() and not newcomer.begin(busy)
    first[0].end(busy)  # the check ends
    first[0].tick()  # released now
    newcomer.tick()
    assert set(newcomer.owned()) == share and newcomer.begin(busy)
    newcomer.end(busy)
    assert first[0].begin(sorted(set(ENVS) - share)[0])  # what it keeps, it still checks


def test_a_clean_stop_hands_over_at_once(store):
    shards = fleet(store, 3)
    tick_all(shards)
    gone = shards[2]
    had = gone.owned()
    gone.stop()
    assert gone.owned() == [] and not gone.owns(had[0])
    tick_all(shards[:2], rounds=1)
    counts = owners(shards[:2])
    assert sorted(counts) == ENVS and set(counts.values()) == {1}


def test_a_killed_replica_is_taken_over_after_its_lease_runs_out_with_a_new_generation(store):
    shards = fleet(store, 3, lease=0.6)
    tick_all(shards)
    dead = shards[0]
    had = dead.owned()
    gens = {e: generation(store, e) for e in had}
    # the dead one never ticks again (SIGKILL); the others keep ticking
    wait_until(lambda: tick_all(shards[1:], rounds=1) or sorted(owners(shards[1:])) == ENVS, timeout=10,
               what="the survivors take the dead replica's environments")
    assert set(owners(shards[1:]).values()) == {1}
    assert all(generation(store, e) == gens[e] + 1 for e in had)
    assert not any(dead.owns(e) for e in had)  # its own clock stopped it before the lease ran out


def test_incident_writes_are_fenced_by_the_environment_lease(store):
    a, b = fleet(store, 2, lease=0.6, envs=["solo"])
    a.tick()  # a is alone: it takes "solo"
    assert a.owns("solo")
    ia = Incidents(store, "watch", a.id, a)
    ib = Incidents(store, "watch", b.id, b)
    inc = ia.create("solo", "primary", "lock_pileup", "C0ALERTS1", payload_from_json("lock_pileup", {"n": 1}))
    assert inc is not None
    assert ia.save(inc, message_ts="1.1", channel="C0ALERTS1")
    assert ib.create("solo", "primary", "long_running", "C0ALERTS1") is None  # b does not own it
    # a pauses past its lease (it does not tick); b, alone live now, takes it over
    wait_until(lambda: b.tick() or b.owns("solo"), timeout=10, what="b takes the environment over")
    assert generation(store, "solo") == 2
    # a resumes: nothing it writes lands (its clock says it stopped owning; the store says b holds it)
    assert not a.owns("solo") and not ia.save(inc, payload=payload_from_json("lock_pileup", {"n": 2}))
    assert not ia.holds_lease("solo")
    # even if its clock were wrong, the generation in the store fences it
    with store.tx() as c:
        assert not a.gateway.holds(c, "solo", a.id, 1)
    # b continues the same incident: same message
    same = ib.open_for("solo", "primary")["lock_pileup"]
    assert same.id == inc.id and same.message_ts == "1.1"
    assert ib.save(same, payload=payload_from_json("lock_pileup", {"n": 3})) and ib.resolve(same)
    # the one replica (SQLite) and the leader lease: Incidents without a fleet fences by the leader lease
    assert Incidents(store, "watch", "h", Shards.solo()).shards is None


def test_a_state_store_that_cannot_be_reached_keeps_what_was_owned(store, monkeypatch):
    (a,) = fleet(store, 1, lease=0.6)
    a.tick()
    assert sorted(a.owned()) == ENVS

    def down(*_a, **_k):
        raise ConnectionError("state store down")

    monkeypatch.setattr(a.gateway, "beat", down)
    deadline = time.monotonic() + 1.2  # twice the lease: without the store it still checks what it had
    while time.monotonic() < deadline:
        a.tick()
        assert sorted(a.owned()) == ENVS
        time.sleep(0.05)


def test_outbox_claims_are_fenced_by_the_environment_lease(store):
    a, b = fleet(store, 2, lease=0.6, envs=["solo"])
    a.tick()
    inc = Incidents(store, "watch", a.id, a).create("solo", "primary", "lock_pileup", "C0ALERTS1")
    assert inc is not None
    with FakeSlack(token="xoxb-test") as fake:
        client = make_web_client("xoxb-test", fake.api_url)
        box_a = ob.Outbox(store, client, shards=a)
        box_b = ob.Outbox(store, client, shards=b)
        # b does not own the environment: it keeps the call but never sends it
        assert box_b.send(ob.POST, inc.id, "C0ALERTS1", {"text": "from b"}).response is None
        assert box_b.deliver() == 0 and box_b.pending_count() == 1
        assert not fake.calls_for("chat.postMessage")
        # a owns it: its deliverer sends it, once
        assert box_a.deliver() == 1 and box_a.pending_count() == 0
        assert len(fake.calls_for("chat.postMessage", ok=True)) == 1
        # a pauses past its lease, b takes over ...
        wait_until(lambda: b.tick() or b.owns("solo"), timeout=10, what="b takes over")
        assert not a.owns("solo")
        # ... a resumes with a call to make: kept, never sent by a (not its environment any more)
        assert box_a.send(ob.UPDATE, inc.id, "C0ALERTS1", {"text": "edit"}).response is None
        assert box_a.deliver() == 0
        # even when a's clock wrongly says it still owns the environment, the claim's condition (the
        # lease row at a's generation) fails in the store
        a._valid_until = time.monotonic() + 60
        assert a.owns("solo") and a.generation("solo") == 1
        (row,) = box_a._pending(inc.id)
        assert not box_a._claim(row)
        assert box_a.deliver() == 0 and not fake.calls_for("chat.update")
        # b, the owner at generation 2, sends it, once
        assert box_b.deliver() == 1
        assert len(fake.calls_for("chat.update", ok=True)) == 1
        assert len(fake.calls_for("chat.postMessage", ok=True)) == 1


# --- what is no longer watched: closed by exactly one replica ----------------------------------------


class NoDirectory:
    """The approvers' lookup: never asked when incidents are closed."""

    def resolve(self, principals):
        raise AssertionError("not asked")

    def allowed(self, user_id, principals):
        raise AssertionError("not asked")

    def user_facts(self, user_id):
        raise AssertionError("not asked")

    def cached_user_facts(self, user_id):
        return None


def alerts_config(envs: dict[str, dict]) -> Config:
    return parse_config({"environments": envs}, environ={})


def watchers(store: StateStore, cfg: Config, shards: Shards, client) -> tuple[AlertShell, Watcher, LagWatcher]:
    """The real alert shell and both watchers of one replica, on a scheduler never started (no check runs:
    only what a tick of ``shards`` does)."""
    shell = AlertShell(cfg, store, ob.outbox_for(store, lambda: client), shards.id, shards)
    sched = BackgroundScheduler()
    dbs = Databases(cfg)
    policy = Policy(cfg, NoDirectory())
    watch = Watcher(cfg, store, dbs, sched, shell, policy, render_watch)
    lag = LagWatcher(cfg, store, dbs, client, sched, policy, shell, render_lag, receiver=watch.on_standby_receiver)
    return shell, watch, lag


OLD = {  # the configuration before: "gone" is watched, "keep" has a standby r2 too
    "keep": {"dsn": "host=k", "standbys": {"r1": "host=k1", "r2": "host=k2"},
             "watch": {"channel": "C0WATCH01", "check_every": "1s"},
             "lag_alert": {"channel": "C0LAG0001", "check_every": "1s"}},
    "gone": {"dsn": "host=g", "standbys": {"r1": "host=g1"},
             "watch": {"channel": "C0WATCH01", "check_every": "1s"},
             "lag_alert": {"channel": "C0LAG0001", "check_every": "1s"}},
}
NEW = {  # after: "gone" removed, and "keep"'s standby r2
    "keep": {"dsn": "host=k", "standbys": {"r1": "host=k1"},
             "watch": {"channel": "C0WATCH01", "check_every": "1s"},
             "lag_alert": {"channel": "C0LAG0001", "check_every": "1s"}},
}


def test_incidents_of_what_was_removed_are_closed_once_by_one_replica_and_never_while_another_holds_them(store):
    old_cfg, new_cfg = alerts_config(OLD), alerts_config(NEW)
    with FakeSlack(token="xoxb-test") as fake:
        client = make_web_client("xoxb-test", fake.api_url)
        # a replica of the old configuration checks both environments and opens four incidents
        old = Shards(store, watched_envs(old_cfg), lease=0.6, label="old:1")
        old_shell, _, _ = watchers(store, old_cfg, old, client)
        old.tick()
        assert old.owned() == ["gone", "keep"]
        inc = Incidents(store, LEASE_NAME, old.id, old)
        opened = {}
        for env, host, kind, channel in [("gone", "primary", "lock_pileup", "C0WATCH01"),
                                         ("gone", "r1", "lag", "C0LAG0001"),
                                         ("keep", "r2", "lag", "C0LAG0001"),
                                         ("keep", "r1", "lag", "C0LAG0001")]:
            i = inc.create(env, host, kind, channel)
            assert i is not None
            sent = old_shell.outbox.send(ob.POST, i.id, channel, {"text": f"alert {env}/{host}"})
            assert sent.response is not None
            assert inc.save(i, channel=sent.response["channel"], message_ts=sent.response["ts"])
            opened[(env, host, kind)] = i.id
        # a replica of the new configuration joins while the old one still runs (a rolling change):
        # it must not close what the old one holds, even though its configuration does not watch it
        new1 = Shards(store, watched_envs(new_cfg), lease=0.6, label="new:1")
        while assign.owner(SWEEP_KEY, [old.id, new1.id]) != new1.id:  # make it the sweeper of the two
            new1.id = f"{new1.label}:{secrets.token_hex(3)}"
        watchers(store, new_cfg, new1, client)
        new1.tick()
        assert new1.sweeper and "gone" not in new1.owned() and not new1.swept()
        assert len(open_incidents(store)) == 4
        assert not fake.calls_for("chat.update")
        # the old replica dies (SIGKILL: it never ticks again); two replicas of the new configuration remain
        new2 = Shards(store, watched_envs(new_cfg), lease=0.6, label="new:2")
        watchers(store, new_cfg, new2, client)
        survivors = [new1, new2]
        for s in survivors:  # as the runtime does: the closes (Slack calls) leave the tick for a thread
            s.install(BackgroundScheduler())  # never started: the ticks are still driven here

        def settled() -> bool:
            tick_all(survivors, rounds=1)
            return ({i.id for i in open_incidents(store)} == {opened[("keep", "r1", "lag")]}
                    and len(fake.calls_for("chat.update")) >= 3)

        wait_until(settled, timeout=10, what="the survivors close what is no longer watched")
        # exactly one replica swept "gone": the rendezvous owner of the sweep key among the live ones
        sweeper = assign.owner(SWEEP_KEY, [s.id for s in survivors])
        assert [s.id for s in survivors if s.sweeper] == [sweeper]
        assert generation(store, "gone") == 2  # taken from the dead replica at a new generation
        # "keep"/r2 (a standby removed from a watched environment) was closed by whoever took "keep"
        updates = fake.calls_for("chat.update", ok=True)
        assert len(updates) == 3 and len({u.params["ts"] for u in updates}) == 3
        texts = sorted(str(u.params.get("text", "")) + str(u.params.get("blocks", "")) for u in updates)
        assert all("no longer watched" in t for t in texts), texts
        # once closed and delivered, the sweeper hands "gone" back: nobody holds it, nothing is sent again
        tick_all(survivors, rounds=2)
        assert all("gone" not in s.owned() for s in survivors) and not any(s.swept() for s in survivors)
        assert "gone" not in survivors[0].gateway.watchers()
        with store.read() as c:  # released by the sweeper: free at once (the row stays, its generation too)
            row = c.execute(select(env_leases).where(env_leases.c.env == "gone")).mappings().one()
        assert row["holder"] == sweeper and row["expires_at"] == 0.0 and row["generation"] == 2
        assert len(fake.calls_for("chat.update")) == 3
        assert len(fake.calls_for("chat.postMessage")) == 4
        for s in survivors:
            s.stop()


def test_the_sweeper_keeps_a_removed_environment_until_its_close_lands_in_slack(store):
    old_cfg, new_cfg = alerts_config(OLD), alerts_config(NEW)
    with FakeSlack(token="xoxb-test") as fake:
        client = make_web_client("xoxb-test", fake.api_url)
        old = Shards(store, watched_envs(old_cfg), lease=0.4, label="old:1")
        old_shell, _, _ = watchers(store, old_cfg, old, client)
        old.tick()
        i = Incidents(store, LEASE_NAME, old.id, old).create("gone", "primary", "lock_pileup", "C0WATCH01")
        assert i is not None
        sent = old_shell.outbox.send(ob.POST, i.id, "C0WATCH01", {"text": "alert"})
        assert Incidents(store, LEASE_NAME, old.id, old).save(i, channel=sent.response["channel"],
                                                              message_ts=sent.response["ts"])
        old.stop()  # a clean stop: its leases are free at once
        new = Shards(store, watched_envs(new_cfg), lease=0.4, label="new:1")
        shell, _, _ = watchers(store, new_cfg, new, client)
        fake.fail_next("chat.update", error="internal_error")
        new.tick()
        assert not open_incidents(store)  # closed at once, fenced by the lease it took
        assert new.swept() == ["gone"] and new.owns("gone")
        assert shell.outbox.pending_envs() == {"gone"}  # its edit waits (Slack failed)
        new.tick()
        assert new.swept() == ["gone"]  # kept while its edit waits
        wait_until(lambda: new.tick() or shell.outbox.deliver() > 0, timeout=10, what="the edit lands once Slack answers")
        assert shell.outbox.pending_envs() == set()
        new.tick()
        assert new.swept() == [] and not new.owns("gone")
        assert len(fake.calls_for("chat.update", ok=True)) == 1
        new.stop()




# --- who watches what: the Home tab and `check` ------------------------------------------------------


def test_the_home_tab_says_which_replica_checks_an_environment_and_nothing_with_one_replica():
    hosts = (HostStatus("primary", connections=5, max_connections=100),)
    fleet_text = _env_block(EnvStatus("prod", hosts, watched_by="db-bot-1:4242"))["text"]["text"]
    assert "checked by replica `db-bot-1:4242`" in fleet_text
    handing = _env_block(EnvStatus("prod", hosts, watched_by=""))["text"]["text"]
    assert "no replica checks it right now" in handing
    solo = _env_block(EnvStatus("prod", hosts))["text"]["text"]
    assert "replica" not in solo
    hostile = _env_block(EnvStatus("prod", hosts, watched_by="<!channel>`x`"))["text"]["text"]
    assert "<!channel>" not in hostile


def test_check_lists_the_replicas_and_what_each_watches(store):
    a, b = fleet(store, 2, lease=5.0)
    tick_all([a, b])
    report = StateReport(target="postgresql statehost")
    _fleet(report, store, [*ENVS, "nobody"])
    assert {r["replica"]: set(r["watches"]) for r in report.replicas} == {a.label: set(a.owned()),
                                                                        b.label: set(b.owned())}
    assert report.unwatched == ["nobody"]
    assert any(f.check == "watched" and "nobody" in f.message for f in report.findings)
    assert any(f.level == OK and "2 replica(s) share" in f.message for f in report.findings)
    text = render_text("cfg.yml", [], report, SlackReport(), [], strict=False)
    assert "Replicas (who watches what):" in text and f"  {a.label} (heartbeat" in text
    assert "nobody now: nobody" in text
