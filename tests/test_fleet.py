"""The fleet end to end (issue 26): three real ``pgsessions serve`` processes on one PostgreSQL state
store share 30 environments (all on the test primary under distinct names).

(The ``serve`` processes import the ``bot`` the ``pgsessions`` script finds: from a worktree, run with
``PYTHONPATH`` set to it.)

- Each environment is checked by exactly one replica per cycle (their ``/metrics``), the one holding
  its lease, and the shares are the rendezvous shares over the live replicas.
- A lag alert and a lock pile-up alert open on the replica that owns their environment; that replica is
  SIGKILLed; another takes the environment over and the incidents resolve there, in the same messages,
  with no second post. The pile-up is resolved by an approved Terminate clicked, requested and approved
  through the surviving replicas (requests and approvals work on any replica).
- A replica paused (SIGSTOP) past its lease loses its environment; an alert opened meanwhile by the new
  owner is posted once, and the paused replica posts nothing for it after it resumes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import urllib.request
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql as pgsql

from bot.check import check_state
from bot.fleet.assign import owner
from bot.slack.web import make_web_client
from tests.harness.bot import env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import ServeProcess, alive, find_button, write_config
from tests.harness.lag import hold_replay, lag_pair_or_skip
from tests.harness.pgcluster import ClusterPair
from tests.harness.waiting import wait_until

LAG_CHANNEL = "C0FLEETLAG"
WATCH_CHANNEL = "C0FLEETWATCH"
ALERT_ENV = "fleet00"
ENVS = [f"fleet{i:02d}" for i in range(30)]
LEASE = 1.5  # fleet.lease: a little more than check_every (1s), so a loaded machine does not churn
WAIT = 30.0  # every wait is on a condition; this only bounds a failure


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


def fleet_config(pair: ClusterPair, state_url: str) -> dict:
    timeouts = {"connect": "2s", "statement": "3s"}
    envs = {}
    for name in ENVS:
        if name == ALERT_ENV:
            envs[name] = env_config(
                pair, timeouts=timeouts,
                lag_alert={"channel": LAG_CHANNEL, "threshold": "1s", "check_every": "1s", "consecutive": 2,
                           "remind_every": "1h"},
                watch={"channel": WATCH_CHANNEL, "check_every": "1s", "consecutive": 2, "remind_every": "1h",
                       "lock_pileup": {"waiters": 3, "wait": "1h"}},
            )
        else:
            env = env_config(pair, timeouts=timeouts,
                             watch={"channel": WATCH_CHANNEL, "check_every": "1s", "long_running": "1h"})
            env.pop("standbys", None)
            envs[name] = env
    return {"state": state_url, "fleet": {"lease": f"{LEASE:g}s"}, "environments": envs}


def state_database(pair: ClusterPair) -> tuple[str, str]:
    name = "pgs_fleet_" + uuid.uuid4().hex[:8]
    pair.primary.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return f"postgresql://postgres@{pair.primary.host}:{pair.primary.port}/{name}", pair.primary.dsn(dbname=name)


class State:
    """Reads of the shared state store, as an operator would make them."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            return list(c.execute(sql, params))

    def live(self) -> dict[str, str]:
        """label (host:pid) -> replica id, of the replicas seen within the lease."""
        return {r[1]: r[0] for r in self.rows(
            "SELECT id, label FROM pgs_replicas WHERE seen_at >= extract(epoch FROM now()) - %s", (LEASE,))}

    def holders(self) -> dict[str, tuple[str, int]]:
        """env -> (holder id, generation) of the leases that run now."""
        return {r[0]: (r[1], r[2]) for r in self.rows(
            "SELECT env, holder, generation FROM pgs_env_leases WHERE expires_at >= extract(epoch FROM now())")}

    def settled(self, n: int) -> dict[str, str] | None:
        """When ``n`` replicas are live and every environment is held by its rendezvous owner: env -> holder."""
        live = list(self.live().values())
        if len(live) != n:
            return None
        held = self.holders()
        if sorted(held) != ENVS or any(held[e][0] != owner(e, live) for e in ENVS):
            return None
        return {e: held[e][0] for e in ENVS}

    def incidents(self, env: str) -> list[tuple[str, str, bool, str | None]]:
        return [(r[0], r[1], r[2], r[3]) for r in self.rows(
            "SELECT id, kind, open, message_ts FROM pgs_incidents WHERE env = %s ORDER BY opened_at", (env,))]


def metrics(proc: ServeProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as resp:  # local URL
        return resp.read().decode()


def sample(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def env_checks(proc: ServeProcess) -> dict[str, float]:
    text = metrics(proc)
    return {e: sample(text, "pgsessions_fleet_checks_total", f'{{env="{e}"}}') for e in ENVS}


def replica_id(state: State, proc: ServeProcess) -> str:
    return wait_until(lambda: next((rid for label, rid in state.live().items() if label.endswith(f":{proc.pid}")),
                                   None), WAIT, f"replica {proc.pid} registered")


def top_level(fake: FakeSlack, channel: str, needle: str) -> list:
    return [m for m in fake.messages_in(channel) if not m.thread_ts and any(needle in v["text"] for v in m.versions)]


def resolved(fake: FakeSlack, msg):
    now = fake.messages[(msg.channel, msg.ts)]
    return now if now.text.startswith("Resolved") else None


def new_table(pair: ClusterPair, dbname: str) -> str:
    name = "fl_" + uuid.uuid4().hex[:8]
    ident = pgsql.Identifier(name)
    pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(ident), dbname=dbname)
    pair.primary.sql(pgsql.SQL("INSERT INTO {} SELECT g, 'r' FROM generate_series(1, 10) g").format(ident),
                     dbname=dbname)
    pair.primary.sql(pgsql.SQL("ALTER TABLE {} OWNER TO app_user").format(ident), dbname=dbname)
    return name


class PileUp:
    """A session idle in a transaction holding a row lock, and ``n`` sessions waiting behind it."""

    def __init__(self, pair: ClusterPair, table: str, n: int = 4):
        ident = pgsql.Identifier(table)
        self.root = pair.primary.connect(user="app_user", dbname="appdb", autocommit=False, application_name="fleet-root")
        self.root.execute(pgsql.SQL("UPDATE {} SET v = 'held' WHERE id = 1").format(ident))
        self.pid = self.root.info.backend_pid
        self.waiters: list[psycopg.Connection] = []
        for _ in range(n):
            c = pair.primary.connect(user="app_user", dbname="appdb", autocommit=True, application_name="fleet-waiter")
            c.execute("SET statement_timeout = '120s'")
            self.waiters.append(c)
        self._threads: list[threading.Thread] = []
        for c in self.waiters:
            t = threading.Thread(target=self._wait, args=(c, ident), daemon=True)
            t.start()
            self._threads.append(t)
        wait_until(lambda: len(pair.primary.sql(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'fleet-waiter'")
            or []) >= n, WAIT, f"{n} waiters")

    @staticmethod
    def _wait(c: psycopg.Connection, ident: pgsql.Identifier) -> None:
        try:
            c.execute(pgsql.SQL("UPDATE {} SET v = 'w' WHERE id = 1").format(ident))
        except Exception:
            pass

    def close(self) -> None:
        self.root.close()
        for t in self._threads:
            t.join(10)
        for c in self.waiters:
            c.close()


def approve_terminate(fake: FakeSlack, msg, label: str, clicker: ServeProcess, submitter: ServeProcess,
                      approver: ServeProcess) -> None:
    """Terminate from an alert: the button clicked on one replica, the form submitted to another, the
    request approved on a third."""
    el = find_button(msg, label)
    assert el is not None, json.dumps(msg.blocks)[:1500]
    n_views = len(fake.calls_for("views.open", ok=True))
    assert clicker.slack.block_action(el["action_id"], el["value"], user_id="U1", message=msg).status == 200
    opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], WAIT, "views.open")
    view = opened[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    n_posts = len(fake.calls_for("chat.postMessage", ok=True))
    reply = submitter.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                            state_values={"reason": {"reason": "fleet test"}}, user_id="U1")
    assert reply.status == 200 and "errors" not in (reply.body or ""), reply.body
    posts = wait_until(lambda: [c for c in fake.calls_for("chat.postMessage", ok=True)[n_posts:]
                                if "asks to" in json.dumps(c.params.get("blocks"))], WAIT, "the approval request")
    request = fake.messages[(posts[0].response["channel"], posts[0].response["ts"])]
    approve = find_button(request, "Approve")
    assert approver.slack.block_action(approve["action_id"], approve["value"], user_id="U2",
                                       message=request).status == 200


def test_three_replicas_share_thirty_environments_and_hand_incidents_over_without_a_second_post(pair, fake, tmp_path):
    state_url, state_dsn = state_database(pair)
    state = State(state_dsn)
    path = write_config(tmp_path / "pgsessions.yml", fleet_config(pair, state_url))
    lag_table = "fl_lag_" + uuid.uuid4().hex[:6]
    pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(pgsql.Identifier(lag_table)))
    pair.primary.sql(pgsql.SQL("INSERT INTO {} SELECT g, 'r' FROM generate_series(1, 100) g")
                     .format(pgsql.Identifier(lag_table)))
    pair.wait_replayed()
    pile_table = new_table(pair, "appdb")
    procs = [ServeProcess(path, fake) for _ in range(3)]
    stall = pile = None
    try:
        for p in procs:
            p.start()
        ids = {replica_id(state, p): p for p in procs}

        # --- the shares: each environment on exactly one replica, its rendezvous owner -------------------
        held = wait_until(lambda: state.settled(3), WAIT, "three replicas sharing the 30 environments")
        by_proc = {p: {e for e, h in held.items() if ids[h] is p} for p in procs}
        assert all(by_proc.values()), {p.pid: len(s) for p, s in by_proc.items()}
        before = {p: env_checks(p) for p in procs}
        # a few cycles: every environment checked at least twice more, by somebody
        wait_until(lambda: all(sum(env_checks(p)[e] - before[p][e] for p in procs) >= 3 for e in ENVS),
                   WAIT, "every environment checked three more times")
        after = {p: env_checks(p) for p in procs}
        assert state.settled(3) == held, "the shares moved while nothing joined or left"
        for e in ENVS:
            checked_by = [p for p in procs if after[p][e] > before[p][e]]
            assert checked_by == [ids[held[e]]], (e, [p.pid for p in checked_by])
        for p in procs:
            text = metrics(p)
            assert sample(text, "pgsessions_fleet_environments_owned") == len(by_proc[p])
            assert sample(text, "pgsessions_fleet_replicas") == 3
            assert sample(text, "pgsessions_fleet_checks_per_second") > 0
            assert "pgsessions_fleet_cycle_seconds " in text
            assert 'pgsessions_fleet_lease_handovers_total{direction="gained"}' in text

        # --- `pgsessions check` and the Home tab say which replica watches what ---------------------------
        labels = {rid: label for label, rid in state.live().items()}
        report = check_state(state_url, ENVS)
        assert report.unwatched == []
        assert {r["replica"]: set(r["watches"]) for r in report.replicas} == {
            labels[rid]: {e for e, h in held.items() if h == rid} for rid in ids}
        assert any(f.check == "replicas" and "3 replica(s) share" in f.message for f in report.findings)
        n = len(fake.calls_for("views.publish", ok=True))
        assert procs[0].slack.app_home_opened("U1").status == 200
        published = wait_until(lambda: fake.calls_for("views.publish", ok=True)[n:], WAIT, "the Home tab")
        view = json.dumps(published[0].params["view"])
        assert f"checked by replica `{labels[held[ALERT_ENV]]}`" in view, view[:3000]

        # --- a lag alert and a pile-up alert open on the owner of their environment ----------------------
        first = ids[held[ALERT_ENV]]
        stall = hold_replay(pair, lag_table, application_name="fleet-report")
        pile = PileUp(pair, pile_table)
        lag_msg = wait_until(lambda: next(iter(top_level(fake, LAG_CHANNEL, "eplication lag on")), None), WAIT,
                             "the lag alert\n" + fake.summary())
        pile_msg = wait_until(lambda: next(iter(top_level(fake, WATCH_CHANNEL, "Lock pile-up")), None), WAIT,
                              "the pile-up alert\n" + fake.summary())
        assert f"Terminate {pile.pid}" in json.dumps(pile_msg.blocks)
        wait_until(lambda: {k for _, k, o, ts in state.incidents(ALERT_ENV) if o and ts} >= {"lag", "lock_pileup"},
                   WAIT, "both incidents recorded with their messages")
        assert state.holders()[ALERT_ENV][0] == held[ALERT_ENV], "opened by the replica that owns the environment"
        generation = state.holders()[ALERT_ENV][1]

        # --- that replica is SIGKILLed: another takes the environment over --------------------------------
        first.kill()
        survivors = [p for p in procs if p is not first]
        taken = wait_until(lambda: (lambda h: h if h and h[0] != held[ALERT_ENV] else None)(
            state.holders().get(ALERT_ENV)), WAIT, "a survivor takes the environment over")
        assert taken[1] > generation
        second = ids[taken[0]]
        assert second in survivors
        wait_until(lambda: state.settled(2), WAIT, "the two survivors share all 30 environments")
        other = next(p for p in survivors if p is not second)

        # --- the incidents continue and resolve on the new owner, in the same messages --------------------
        stall.close()
        stall = None
        # Terminate clicked on one survivor, requested on the other, approved on the first
        approve_terminate(fake, pile_msg, f"Terminate {pile.pid}", clicker=other, submitter=second, approver=other)
        wait_until(lambda: not alive(pair.primary, pile.pid), WAIT, "the approved terminate")
        wait_until(lambda: resolved(fake, lag_msg), WAIT, "the lag alert resolved\n" + fake.summary())
        done = wait_until(lambda: resolved(fake, pile_msg), WAIT, "the pile-up alert resolved\n" + fake.summary())
        assert f"root blocker pid {pile.pid} terminated by approval of <@U2>" in done.text
        pile.close()
        pile = None
        assert len(top_level(fake, LAG_CHANNEL, "eplication lag on")) == 1, fake.summary()
        assert len(top_level(fake, WATCH_CHANNEL, "Lock pile-up")) == 1, fake.summary()
        # the message is edited first, then the incident closed in the store
        wait_until(lambda: not [i for i in state.incidents(ALERT_ENV) if i[2]], WAIT, "both incidents closed")

        # --- a replica paused past its lease posts nothing after it resumes --------------------------------
        owner_now = ids[state.holders()[ALERT_ENV][0]]
        owner_now_id = state.holders()[ALERT_ENV][0]
        other = next(p for p in survivors if p is not owner_now)
        os.kill(owner_now.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: (state.holders().get(ALERT_ENV) or (owner_now_id,))[0] != owner_now_id, WAIT,
                       "the other replica takes the paused one's environment")
            pile = PileUp(pair, new_table(pair, "appdb"))
            second_pile = wait_until(lambda: [m for m in top_level(fake, WATCH_CHANNEL, "Lock pile-up")
                                              if m.ts != pile_msg.ts] or None, WAIT, "the second pile-up alert")
            assert len(second_pile) == 1
        finally:
            os.kill(owner_now.pid, signal.SIGCONT)
        # it resumes: it rejoins (and may get its share back at the next ticks), and continues at most the
        # open incident; wait for a few of its checks of the environment, whoever owns it
        wait_until(lambda: state.settled(2), WAIT, "the two replicas settle again")
        base = sum(env_checks(p)[ALERT_ENV] for p in survivors)
        wait_until(lambda: sum(env_checks(p)[ALERT_ENV] for p in survivors) >= base + 3, WAIT, "three more checks")
        assert len([m for m in top_level(fake, WATCH_CHANNEL, "Lock pile-up") if m.ts != pile_msg.ts]) == 1, \
            fake.summary()
        pile.close()
        pile = None
        wait_until(lambda: resolved(fake, second_pile[0]), WAIT, "the second pile-up resolved\n" + fake.summary())
        assert len(top_level(fake, WATCH_CHANNEL, "Lock pile-up")) == 2
        fake.assert_clean()
    finally:
        if stall is not None:
            stall.close()
        if pile is not None:
            pile.close()
        for p in procs:
            try:
                os.kill(p.pid, signal.SIGCONT)
            except (OSError, AssertionError):
                pass
            p.stop()
        for p in procs:
            assert "Traceback" not in p.output(), p.output()


def test_incidents_of_a_removed_environment_are_closed_once_by_one_of_the_replicas_left(pair, fake, tmp_path):
    """An environment with an open incident is removed from the configuration while its replica dies:
    one of the two replicas of the new configuration closes it, saying so in its message, once."""
    state_url, state_dsn = state_database(pair)
    state = State(state_dsn)
    kept = {"watch": {"channel": WATCH_CHANNEL, "check_every": "1s", "long_running": "1h"}}
    envs = {}
    for name in ("keep0", "keep1", "gone"):
        envs[name] = env_config(pair, timeouts={"connect": "2s", "statement": "3s"}, **kept)
        envs[name].pop("standbys", None)
    old_path = write_config(tmp_path / "old.yml", {"state": state_url, "fleet": {"lease": f"{LEASE:g}s"},
                                                    "environments": envs})
    new_path = write_config(tmp_path / "new.yml", {"state": state_url, "fleet": {"lease": f"{LEASE:g}s"},
                                                    "environments": {k: v for k, v in envs.items() if k != "gone"}})
    old = ServeProcess(old_path, fake)
    procs: list[ServeProcess] = [old]
    try:
        old.start()
        old_id = replica_id(state, old)
        wait_until(lambda: {e for e, (h, _) in state.holders().items() if h == old_id} == set(envs), WAIT,
                   "the old replica holds the three environments")
        # an incident of "gone" open with its message (as the old replica would have posted it)
        ts = make_web_client("xoxb-test", fake.api_url).chat_postMessage(
            channel=WATCH_CHANNEL, text="Long-running query on gone / primary")["ts"]
        with psycopg.connect(state_dsn, autocommit=True) as c:
            c.execute("INSERT INTO pgs_incidents (id, env, host, kind, open, opened_at, channel, message_ts, payload) "
                      "VALUES ('gone0000incident', 'gone', 'primary', 'long_running', true, "
                      "extract(epoch FROM now()), %s, %s, '{}')", (WATCH_CHANNEL, ts))
        old.kill()  # SIGKILL: its leases run out by themselves
        procs = [ServeProcess(new_path, fake) for _ in range(2)]
        for p in procs:
            p.start()
        wait_until(lambda: state.rows("SELECT 1 FROM pgs_incidents WHERE id = 'gone0000incident' AND NOT open"),
                   WAIT, "the removed environment's incident closed\n" + fake.summary())
        edited = wait_until(lambda: [c for c in fake.calls_for("chat.update", ok=True) if c.params["ts"] == ts],
                            WAIT, "its message says so")
        assert "no longer watched (removed from the configuration)" in str(edited[0].params.get("text")), edited[0].params
        # nobody holds "gone" once it is done, and nothing is sent again
        wait_until(lambda: "gone" not in state.holders(), WAIT, "the sweeper hands it back")
        wait_until(lambda: sorted(state.holders()) == ["keep0", "keep1"], WAIT, "the two share what is left")
        base = sum(env_checks_of(p, ["keep0", "keep1"])[e] for p in procs for e in ("keep0", "keep1"))
        wait_until(lambda: sum(env_checks_of(p, ["keep0", "keep1"])[e] for p in procs for e in ("keep0", "keep1"))
                   >= base + 6, WAIT, "a few more cycles of both replicas")
        assert len([c for c in fake.calls_for("chat.update") if c.params["ts"] == ts]) == 1, fake.summary()
        assert not state.rows("SELECT 1 FROM pgs_incidents WHERE open")
    finally:
        for p in procs:
            p.stop()
        for p in procs:
            assert "Traceback" not in p.output(), p.output()


def env_checks_of(proc: ServeProcess, envs: list[str]) -> dict[str, float]:
    text = metrics(proc)
    return {e: sample(text, "pgsessions_fleet_checks_total", f'{{env="{e}"}}') for e in envs}
