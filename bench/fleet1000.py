"""A fleet on one replica for `make bench` (issue 26): 1000 environments, each a primary and a standby with
a connection string of its own, every watcher on. Run alone with ``python -m bench.fleet1000``.

2000 hosts with a connection string each, without 2000 PostgreSQL servers: a real PgBouncer (the 1.24
build of ``scripts/ensure-pgbouncer.sh``) in front of each of the bench's two servers, in transaction
pooling with ``max_client_conn`` above the bot's connections. Every environment's DSN carries its own
``fallback_application_name``, so the bot sees 2000 distinct servers (it shares no read, keeps a pool
and a connection per host), while PgBouncer, which pools by database and role only, hands all of them a
few server connections: the servers carry few sessions and the cost measured is the bot's. (Raising the
servers' max_connections instead would put 4000 backends on the two cores, and each watch read would
copy all of them out of pg_stat_activity: the servers' cost, not the bot's.)

Every environment watches every kind (lock pile-up, idle in transaction, long running, connections,
xmin horizon, wraparound) and has a lag alert; ``check_every`` is ``EVERY``. *Cycle*: from the instant
the 2000 watch checks are scheduled to the last of them done (the lag watcher's checks run beside them),
max of ``ROUNDS``; goal ≤ 5 s. *Memory*: VmRSS of the bench process (the bot with its pools, the fake
Slack, the harness); goal ≤ 250 MiB. *CPU*: the process's CPU per cycle and per check (PgBouncer and
the servers are other processes).
"""

from __future__ import annotations

import os
import statistics
import time

from bench.standalone import run_alone
from bench.watch import vmrss_kib
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.pgbouncer import Bouncer, PgBouncerMissing, start_pgbouncer
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.harness.waiting import wait_until

N_ENVS = int(os.environ.get("PGSESSIONS_BENCH_FLEET_ENVS", "1000"))  # fewer for a scaling curve
EVERY = 10.0
ROUNDS = 3
CHANNEL = "C0FLEET1000"
CYCLE_GOAL, RSS_GOAL_MIB = 5.0, 250.0


def config(pair: ClusterPair, primary: Bouncer, standby: Bouncer, n: int) -> dict:
    watch = {"channel": CHANNEL, "check_every": f"{EVERY:g}s", "consecutive": 2, "remind_every": "1h",
             "lock_pileup": {"waiters": 5, "wait": "1m"}, "idle_in_transaction": "1h", "long_running": "1h",
             "connections": "99%", "xmin_horizon": "1h", "wraparound": {"threshold": 1_500_000_000}}
    lag = {"channel": CHANNEL, "threshold": "1h", "check_every": f"{EVERY:g}s"}
    envs = {}
    for i in range(n):
        own = f" fallback_application_name=fleet{i}"
        env = env_config(pair, watch=watch, lag_alert=lag, timeouts={"connect": "3s", "statement": "5s"})
        env["dsn"] = primary.dsn(user="pgsessions_bot", dbname="postgres") + own
        env["standbys"] = {"replica1": standby.dsn(user="pgsessions_bot", dbname="postgres") + own}
        envs[f"f{i:04d}"] = env
    return {"environments": envs}


def one_cycle(bot: BotUnderTest, keys: list[tuple[str, str]], timeout: float) -> float:
    """Seconds from the instant the watch checks of ``keys`` are scheduled to the last of them done.

    ``bench.watch.one_cycle`` scans every key every 5 ms: for 2000 keys that scan took a quarter of the
    interpreter's time during the cycle it measured (py-spy), slowing the checks it timed. Here the bench
    thread sums the counters (one C loop) every 5 ms, and once the sum says every check may be done scans
    only the keys still not done."""
    w = bot.rt.watch
    assert w is not None
    jobs = [bot.rt.scheduler.get_job(f"watch:check:{e}:{h}") for e, h in keys]
    times = sorted({j.next_run_time.timestamp() for j in jobs})
    if len(times) != 1:
        raise RuntimeError(f"the check jobs are not scheduled together: {times[:3]}…")
    scheduled = times[0]
    # checks of the cycle before that end before this one is due are not this cycle's (when a cycle
    # overruns the interval, the scheduler dispatches the next one for the keys it had finished)
    while time.time() < scheduled:
        time.sleep(0.005)
    base = {k: w.checks.get(k, 0) for k in keys}
    target = sum(base.values()) + len(keys)
    remaining: list[tuple[str, str]] | None = None  # the keys not yet checked, once the sum says few are left
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        if remaining is None and sum(w.checks.values()) >= target:
            remaining = list(keys)
        if remaining is not None:
            remaining = [k for k in remaining if w.checks.get(k, 0) <= base[k]]
            if not remaining:
                return now - scheduled
        time.sleep(0.005)
    missing = sorted(k for k, n in base.items() if w.checks.get(k, 0) <= n)
    raise RuntimeError(f"{len(missing)} checks not finished: {missing[:5]} (leader: {w.is_leader()}; "
                       f"their last check took {[round(w.last_check_secs.get(k, -1), 2) for k in missing[:5]]} s)")


def measure(pair: ClusterPair, primary: Bouncer, standby: Bouncer, fake: FakeSlack, n: int = N_ENVS,
            rounds: int = ROUNDS) -> dict:
    rss_before = vmrss_kib()
    with BotUnderTest(config(pair, primary, standby, n), fake, scheduler=True) as bot:
        w, lw = bot.rt.watch, bot.rt.lagwatch
        assert w is not None and lw is not None
        keys = [(e, h) for e in w.envs for h in w.hosts(e)]
        try:
            wait_until(lambda: all(w.checks.get(k, 0) >= 1 for k in keys), EVERY * 3 + 30, "the first cycle")
        except AssertionError:
            done = sum(1 for k in keys if w.checks.get(k, 0) >= 1)
            return {"hosts": len(keys), "first_cycle_missing": len(keys) - done, "rss": vmrss_kib(),
                    "rss_before": rss_before, "threads": len(os.listdir("/proc/self/task"))}
        cycles, cpu, checks = [], [], []
        for _ in range(rounds):
            t0 = time.process_time()
            c0 = sum(w.checks.values()) + sum(lw.checks.values())
            try:
                cycles.append(one_cycle(bot, keys, EVERY * 3))
            except RuntimeError as exc:  # a cycle that does not end: a MISS with what was seen, not a crash
                return {"hosts": len(keys), "stuck": str(exc)[:300], "rss": vmrss_kib(), "rss_before": rss_before,
                        "threads": len(os.listdir("/proc/self/task"))}
            # the lag watcher's checks of the same cycle: until the next one is due
            time.sleep(max(0.0, EVERY - cycles[-1] - 1.0))
            cpu.append(time.process_time() - t0)
            checks.append(sum(w.checks.values()) + sum(lw.checks.values()) - c0)
        rss = vmrss_kib()
        threads = len(os.listdir("/proc/self/task"))
    return {"hosts": len(keys), "cycles": cycles, "cpu": cpu, "checks": checks, "rss": rss,
            "rss_before": rss_before, "threads": threads}


def run(record, ms) -> None:
    import logging

    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    fake = FakeSlack(token="xoxb-test").start()
    pair = start_pair()
    bouncers: list[Bouncer] = []
    try:
        if pair.standby is None:
            record("fleet cycle, 1000 environments", "skipped: the bench needs a primary + standby")
            return
        try:
            for node in (pair.primary, pair.standby):
                bouncers.append(start_pgbouncer(node, "new", pool_mode="transaction", pool_size=8,
                                                max_client_conn=3 * N_ENVS))
        except PgBouncerMissing as exc:
            record("fleet cycle, 1000 environments", f"skipped: {exc}")
            return
        print(f"fleet cycle: {N_ENVS} environments x (primary + standby), a connection string each (through "
              f"PgBouncer), every watcher on, check_every {EVERY:g}s", flush=True)
        r = measure(pair, bouncers[0], bouncers[1], fake)
    finally:
        for b in bouncers:
            b.stop()
        fake.stop()
        pair.stop()
    if "first_cycle_missing" in r:
        record(f"fleet cycle, {r['hosts']} watch checks", f"{r['first_cycle_missing']} hosts not yet checked "
               f"{EVERY * 3 + 30:g} s after start-up ({r['threads']} threads)", goal=f"<= {CYCLE_GOAL:g} s", ok=False)
        record("fleet cycle: VmRSS of the bench process", f"{r['rss'] / 1024:.1f} MiB", goal=f"<= {RSS_GOAL_MIB:g} MiB",
               ok=r["rss"] / 1024 <= RSS_GOAL_MIB)
        return
    if "stuck" in r:
        record(f"fleet cycle, {r['hosts']} watch checks", f"did not end within {EVERY * 3:g} s: {r['stuck']} "
               f"({r['threads']} threads)", goal=f"<= {CYCLE_GOAL:g} s", ok=False)
        record("fleet cycle: VmRSS of the bench process", f"{r['rss'] / 1024:.1f} MiB", goal=f"<= {RSS_GOAL_MIB:g} MiB",
               ok=r["rss"] / 1024 <= RSS_GOAL_MIB)
        return
    worst = max(r["cycles"])
    record(f"fleet cycle, {r['hosts']} watch checks (scheduled -> last done, max of {ROUNDS})",
           f"{ms(worst)} (min {ms(min(r['cycles']))})", goal=f"<= {CYCLE_GOAL:g} s", ok=worst <= CYCLE_GOAL)
    cpu, checks = statistics.median(r["cpu"]), statistics.median(r["checks"])
    record("fleet cycle: process CPU per cycle / per check (watch + lag watch checks)",
           f"{ms(cpu)} / {cpu / checks * 1e3:.2f} ms ({checks:g} checks)")
    record(f"fleet cycle: VmRSS of the bench process (bot + fake Slack + harness; {r['threads']} threads)",
           f"{r['rss'] / 1024:.1f} MiB",
           goal=f"<= {RSS_GOAL_MIB:g} MiB", ok=r["rss"] / 1024 <= RSS_GOAL_MIB)


if __name__ == "__main__":
    run_alone(run)
