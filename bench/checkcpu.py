"""Bot CPU per check for `make bench` (issue 26, one replica). Run alone with ``python -m bench.checkcpu``.

The real bot runs in-process (scheduler on) against the bench's own primary + hot standby, which carry
``N_SESSIONS`` idle client sessions. ``N_ENVS`` environments each name both hosts with a connection string
of their own (a ``fallback_application_name``), so no two share a read; every watcher is on: the session
watch with every kind (lock pile-up, idle in transaction, long running, connections, xmin horizon,
wraparound) and the lag watcher. Nothing is over threshold: the figure is the cost of the quiet check
every host pays every interval.

*Bot CPU per check*: the process's CPU time (``time.process_time``: every thread of this process; the
PostgreSQL servers are other processes and not counted) over ``WINDOW`` seconds of the scheduler's
cycles, divided by the checks completed in them (the watch's and the lag watcher's). The bench thread
only sleeps meanwhile. Goal: ≤ 1 ms.

*Baseline*, measured in the same run with the scheduler paused: the same count of bare ``SELECT 1``
round trips through the same pools (``Databases.connection``: gate, checkout, deadline, metrics), from
as many threads. The ratio says how far a check is from the least a read of a host can cost here.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

from bench.standalone import run_alone
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.harness.waiting import wait_until

N_ENVS = 50
N_SESSIONS = 20
EVERY = 2.0
WINDOW = 10.0
CHANNEL = "C0CPUBENCH"
GOAL = 0.001


def config(pair: ClusterPair, n: int) -> dict:
    watch = {"channel": CHANNEL, "check_every": f"{EVERY:g}s", "consecutive": 2, "remind_every": "1h",
             "lock_pileup": {"waiters": 5, "wait": "1m"}, "idle_in_transaction": "1h", "long_running": "1h",
             "connections": "99%", "xmin_horizon": "1h", "wraparound": {"threshold": 1_500_000_000}}
    envs = {}
    for i in range(n):
        env = env_config(pair, watch=watch, timeouts={"connect": "2s", "statement": "3s"},
                         lag_alert={"channel": CHANNEL, "threshold": "1h", "check_every": f"{EVERY:g}s"})
        own = f" fallback_application_name=cpu{i}"
        env["dsn"] += own
        env["standbys"] = {h: d + own for h, d in env["standbys"].items()}
        envs[f"c{i:03d}"] = env
    return {"environments": envs}


def checks_done(bot: BotUnderTest) -> int:
    rt = bot.rt
    n = sum(rt.watch.checks.values()) if rt.watch is not None else 0
    return n + (sum(rt.lagwatch.checks.values()) if rt.lagwatch is not None else 0)


def select_one(bot: BotUnderTest, keys: list[tuple[str, str]], n: int, threads: int) -> float:
    """CPU seconds of ``n`` bare ``SELECT 1`` round trips through the bot's own pools."""
    dbs = bot.rt.dbs

    def one(i: int) -> None:
        env, host = keys[i % len(keys)]
        with dbs.connection(env, host, op="bench") as c:
            c.execute("SELECT 1").fetchone()

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, range(len(keys))))  # warm: every pool has its connection
        t0 = time.process_time()
        list(ex.map(one, range(n)))
        return time.process_time() - t0


def measure(pair: ClusterPair, fake: FakeSlack, n_envs: int = N_ENVS, window: float = WINDOW) -> dict:
    with BotUnderTest(config(pair, n_envs), fake, scheduler=True) as bot:
        w = bot.rt.watch
        assert w is not None
        keys = [(e, h) for e in w.envs for h in w.hosts(e)]
        wait_until(lambda: all(w.checks.get(k, 0) >= 2 for k in keys), EVERY * 4 + 20, "the first cycles")
        c0, t0, wall = checks_done(bot), time.process_time(), time.monotonic()
        time.sleep(window)
        cpu, checks, took = time.process_time() - t0, checks_done(bot) - c0, time.monotonic() - wall
        bot.rt.scheduler.pause()
        time.sleep(EVERY)  # the checks in flight finish
        base = select_one(bot, keys, checks, threads=min(len(keys), 16))
        statements = w.reads.statements()
    return {"cpu": cpu, "checks": checks, "wall": took, "base": base, "statements": statements,
            "hosts": len(keys)}


def idle_sessions(pair: ClusterPair, n: int) -> list[psycopg.Connection]:
    return [pair.primary.connect(user="app_user", dbname="appdb", autocommit=True, application_name="cpu-idle")
            for _ in range(n)]


def run(record, ms) -> None:
    import logging

    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    fake = FakeSlack(token="xoxb-test").start()
    pair = start_pair()
    held: list[psycopg.Connection] = []
    try:
        if pair.standby is None:
            record("bot CPU per check", "skipped: the bench needs a primary + standby")
            return
        held = idle_sessions(pair, N_SESSIONS)
        print(f"bot CPU per check: {N_ENVS} environments x (primary + standby), a connection string each, every "
              f"watcher on, check_every {EVERY:g}s, {N_SESSIONS} idle sessions, {WINDOW:g}s of cycles", flush=True)
        r = measure(pair, fake)
        per, base = r["cpu"] / r["checks"], r["base"] / r["checks"]
        record("bot CPU: checks in the window (watch + lag watch)", f"{r['checks']} in {r['wall']:.1f} s")
        record("bot CPU per check (process CPU / checks; servers excluded)", f"{per * 1e3:.2f} ms",
               f"{base * 1e3:.2f} ms per bare SELECT 1 through the same pools", f"{per / base:.1f}x",
               f"<= {GOAL * 1e3:g} ms", per <= GOAL)
    finally:
        for c in held:
            c.close()
        fake.stop()
        pair.stop()


if __name__ == "__main__":
    run_alone(run)
