"""Lag-watch benchmarks for `make bench`: alert latency and the 50-standby check cycle.

Runs the real bot in-process (scheduler on) against a real primary + hot standby of its own and the
fake Slack, everything on 127.0.0.1.

*Crossing the threshold*, measured from the standby's own data: replay is held back on purpose (a
standby transaction holds ACCESS SHARE on a table, max_standby_streaming_delay = -1, the primary
runs ALTER TABLE right after a marker INSERT). The last transaction the standby replayed before it
stopped is that marker: its commit time, read on the standby as ``pg_last_xact_replay_timestamp()``
(and checked against the marker's commit time on the primary), is when replay stopped. The lag
crosses the threshold at ``stopped + threshold``; alert latency runs from there to the
``chat.postMessage`` of the alert arriving at the fake Slack.

*Check cycle*: every check job of the watcher is scheduled at the same instants (one job per
standby, same interval and first run). One cycle runs from the jobs' scheduled time to the moment the
last of the 50 standbys' checks has finished (``LagWatcher.checks`` counted per standby, polled every
5 ms). One of the 50 is a TCP port that accepts connections and never answers.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from datetime import datetime

from psycopg import sql as pgsql

from bench.standalone import run_alone
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.lag import NoLagPair, SilentServer, hold_replay, lag_cluster, replay_stopped_at
from tests.harness.pgcluster import ClusterPair
from tests.harness.waiting import wait_until

ALERT_ROUNDS = 4
ALERT_EVERY, ALERT_THRESHOLD, ALERT_CONSECUTIVE = 2.0, 2.0, 1
CYCLE_ENVS = 50
CYCLE_EVERY, CYCLE_THRESHOLD = 3.0, 2.0
CYCLE_ROUNDS = 3
CYCLE_LAG_ROUNDS = 2
CONNECT_TIMEOUT = 2.0


def channel_of(i: int) -> str:
    return f"C0LAG{i:03d}"


def env_for(pair: ClusterPair, i: int, every: float, threshold: float, consecutive: int, standby_dsn: str | None = None) -> dict:
    env = env_config(
        pair,
        lag_alert={"channel": channel_of(i), "threshold": f"{threshold:g}s", "check_every": f"{every:g}s",
                   "consecutive": consecutive, "remind_every": "1h"},
        timeouts={"connect": f"{CONNECT_TIMEOUT:g}s", "statement": "5s"},
    )
    if standby_dsn is not None:
        env["standbys"] = {"replica1": standby_dsn}
    return env


class LagMaker:
    """Holds the standby's replay back on demand and lets it go."""

    def __init__(self, pair: ClusterPair):
        self.pair = pair
        self.table = "bench_lag_" + uuid.uuid4().hex[:8]
        ident = pgsql.Identifier(self.table)
        pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(ident))
        pair.primary.sql(pgsql.SQL("INSERT INTO {} SELECT g FROM generate_series(1, 100) g").format(ident))
        pair.wait_replayed()
        self.holder = None

    def stall(self) -> datetime:
        """Stop replay; returns the primary's commit time of the marker (the last write replayed)."""
        stall = hold_replay(self.pair, self.table, application_name="bench-lag")
        self.holder = stall.holder
        return stall.marker

    def stopped_at(self, timeout: float = 5) -> float:
        """When replay stopped, from the standby: the last replayed commit, once the startup process waits
        on the lock with received WAL not yet replayed."""
        return replay_stopped_at(self.pair, timeout)

    def release(self) -> None:
        if self.holder is not None:
            self.holder.close()
            self.holder = None
        self.pair.wait_replayed(timeout=20)


def lag_alerts(fake: FakeSlack, channel: str, after: float) -> list:
    return [
        c for c in fake.calls_for("chat.postMessage", ok=True)
        if c.params.get("channel") == channel and c.time >= after and not c.params.get("thread_ts")
        and "eplication lag on" in str(c.params.get("text", ""))
    ]


def lag_round(pair: ClusterPair, fake: FakeSlack, bot: BotUnderTest, maker: LagMaker, channels: list[str],
              every: float, threshold: float, timeout: float) -> tuple[float, list[float], float]:
    """One lag event: (standby stop time, alert latency per channel, marker-vs-standby skew)."""
    w = bot.rt.lagwatch  # type: ignore[union-attr]
    time.sleep(random.uniform(0, every))  # a different phase against the check schedule every round
    begun = time.time()
    marker = maker.stall()
    stopped = maker.stopped_at()
    skew = abs(stopped - marker.timestamp())
    crossing = stopped + threshold
    try:
        wait_until(lambda: all(lag_alerts(fake, ch, begun) for ch in channels), threshold + timeout,
                   "every lag alert")
        stopped2 = maker.stopped_at()  # still stopped at the same commit when the alerts arrived
        if abs(stopped2 - stopped) > 1e-3:
            raise RuntimeError("replay moved during the round")
        latencies = [lag_alerts(fake, ch, begun)[0].time - crossing for ch in channels]
    finally:
        maker.release()
    wait_until(lambda: not [i for i in w.incidents.all_open() if i.kind == "lag"], 4 * every + 10,
               "every lag incident resolved", every=0.1)
    return stopped, latencies, skew


def alert_latency(pair: ClusterPair, fake: FakeSlack, record, ms) -> None:
    goal = ALERT_EVERY + 2 + (ALERT_CONSECUTIVE - 1) * ALERT_EVERY
    print(f"alert latency: check_every {ALERT_EVERY:g}s, threshold {ALERT_THRESHOLD:g}s, consecutive "
          f"{ALERT_CONSECUTIVE}, {ALERT_ROUNDS} rounds", flush=True)
    maker = LagMaker(pair)
    lat, skews = [], []
    cfg = {"environments": {"prod": env_for(pair, 0, ALERT_EVERY, ALERT_THRESHOLD, ALERT_CONSECUTIVE)}}
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        w = bot.rt.lagwatch  # type: ignore[union-attr]
        wait_until(lambda: w.checks.get(("prod", "replica1"), 0) >= 1, 10, "the first check")
        for _ in range(ALERT_ROUNDS):
            _, latencies, skew = lag_round(pair, fake, bot, maker, [channel_of(0)], ALERT_EVERY, ALERT_THRESHOLD, goal + 10)
            lat += latencies
            skews.append(skew)
    record("lag alert latency: threshold crossed -> alert at Slack, median",
           ms(statistics.median(lat)), goal=f"check_every {ALERT_EVERY:g}s, threshold {ALERT_THRESHOLD:g}s, consecutive 1")
    record(f"lag alert latency, max of {len(lat)} rounds", ms(max(lat)),
           goal=f"<= check_every + 2 s = {goal:g} s", ok=max(lat) <= goal)
    record("  (replay stop time: standby's last replayed commit vs the marker's commit on the primary, max diff)",
           ms(max(skews)))


def one_cycle(bot: BotUnderTest, envs: list[str], timeout: float) -> tuple[float, float]:
    """(scheduled time -> last of the healthy checks done, -> last of all checks done), in seconds."""
    w = bot.rt.lagwatch  # type: ignore[union-attr]
    jobs = [bot.rt.scheduler.get_job(f"lagwatch:check:{e}:replica1") for e in envs]
    times = sorted({j.next_run_time.timestamp() for j in jobs})
    if len(times) != 1:
        raise RuntimeError(f"the check jobs are not scheduled together: {times}")
    scheduled = times[0]
    base = {e: w.checks.get((e, "replica1"), 0) for e in envs}
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(envs) and time.monotonic() < deadline:
        now = time.time()
        for e in envs:
            if e not in done and w.checks.get((e, "replica1"), 0) > base[e]:
                done[e] = now
        time.sleep(0.005)
    if len(done) < len(envs):
        raise RuntimeError(f"checks not finished: {sorted(set(envs) - set(done))}")
    healthy = [t for e, t in done.items() if e != envs[-1]]
    return max(healthy) - scheduled, max(done.values()) - scheduled


def check_cycle(pair: ClusterPair, fake: FakeSlack, record, ms) -> None:
    print(f"check cycle: {CYCLE_ENVS} environments with one standby each, check_every {CYCLE_EVERY:g}s, "
          f"connect timeout {CONNECT_TIMEOUT:g}s, with and without one that never answers", flush=True)
    silent = SilentServer()
    maker = LagMaker(pair)
    envs = [f"e{i:02d}" for i in range(CYCLE_ENVS)]
    figures: dict[bool, dict] = {}
    try:
        for hanging in (False, True):
            cfg = {"environments": {e: env_for(pair, i, CYCLE_EVERY, CYCLE_THRESHOLD, 1) for i, e in enumerate(envs)}}
            if hanging:
                cfg["environments"][envs[-1]] = env_for(
                    pair, CYCLE_ENVS - 1, CYCLE_EVERY, CYCLE_THRESHOLD, 1,
                    standby_dsn=f"host=127.0.0.1 port={silent.port} dbname=postgres user=pgsessions_bot",
                )
            before = len(fake.calls)
            with BotUnderTest(cfg, fake, scheduler=True) as bot:
                w = bot.rt.lagwatch  # type: ignore[union-attr]
                wait_until(lambda w=w: all(w.checks.get((e, "replica1"), 0) >= 1 for e in envs), CYCLE_EVERY + CONNECT_TIMEOUT + 10,
                           "the first cycle")
                cycles = [one_cycle(bot, envs, CYCLE_EVERY * 2 + CONNECT_TIMEOUT + 5) for _ in range(CYCLE_ROUNDS)]
                lat: list[float] = []
                for _ in range(CYCLE_LAG_ROUNDS):
                    _, latencies, _ = lag_round(pair, fake, bot, maker, [channel_of(i) for i in range(CYCLE_ENVS - 1)],
                                                CYCLE_EVERY, CYCLE_THRESHOLD, CYCLE_EVERY + 15)
                    lat += latencies
                unreachable = [c for c in fake.calls[before:] if c.method == "chat.postMessage"
                               and "Standby unreachable" in str(c.params.get("text", ""))]
            figures[hanging] = {"healthy": max(c[0] for c in cycles), "all": max(c[1] for c in cycles),
                                "e00": max(lat[:: CYCLE_ENVS - 1]), "median": statistics.median(lat),
                                "max": max(lat), "unreachable": len(unreachable)}
    finally:
        silent.close()
    without, with_ = figures[False], figures[True]
    goal = CONNECT_TIMEOUT + 1
    record(f"check cycle, {CYCLE_ENVS} healthy standbys (scheduled -> last check done, max of {CYCLE_ROUNDS})",
           ms(without["all"]))
    record(f"check cycle, 49 healthy + 1 never answering (max of {CYCLE_ROUNDS})",
           f"{ms(with_['all'])} (the 49 healthy: {ms(with_['healthy'])})",
           goal=f"<= connect timeout + 1 s = {goal:g} s", ok=with_["all"] <= goal and with_["healthy"] <= goal)
    alert_goal = CYCLE_EVERY + 2
    record("unreachable alerts for the host that never answers", str(with_["unreachable"]),
           goal="1", ok=with_["unreachable"] == 1 and without["unreachable"] == 0)
    record(f"lag alert latency of the 49 healthy envs, {CYCLE_LAG_ROUNDS} rounds: median / max, with the hanging host",
           f"{ms(with_['median'])} / {ms(with_['max'])}",
           f"{ms(without['median'])} / {ms(without['max'])} without it",
           f"{with_['max'] / without['max']:.2f}x" if without["max"] > 0 else "",
           f"max <= check_every + 2 s = {alert_goal:g} s (check_every {CYCLE_EVERY:g}s)",
           with_["max"] <= alert_goal)


def run(record, ms) -> None:
    import logging

    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # expected noise: the never-answering host's connect timeouts, a check cut short by the bot's stop
    logging.getLogger("bot.lagwatch").setLevel(logging.CRITICAL)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    fake = FakeSlack(token="xoxb-test").start()
    try:
        with lag_cluster() as pair:
            alert_latency(pair, fake, record, ms)
            check_cycle(pair, fake, record, ms)
    except NoLagPair as exc:
        record("lag alert latency / check cycle", f"skipped: {exc}")
    finally:
        fake.stop()


def _standalone() -> None:
    threading.current_thread().name = "bench-lag"
    run_alone(run)


if __name__ == "__main__":
    _standalone()
