"""`make bench`: start PostgreSQL, the fake Slack and the bot, run each benchmark, print medians and ratios.

Every figure is compared with a baseline measured in the same run on the same machine (a minimal Bolt
app, psql running the bot's own query). Everything binds to 127.0.0.1; every loop has a count and a
deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import poolers as poolers_bench
from bench.machine import describe
from bench.minimal import MinimalApp
from bot.config import parse_config
from bot.postgres.activity import thresholds_for
from bot.postgres.models import Filters
from bot.postgres.sql import query
from tests.harness.bot import SIGNING_SECRET, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import ServeProcess, write_config
from tests.harness.pgcluster import find_bindir, start_pair
from tests.harness.slack_requests import SlackSender

N_ENVS = 50
N_CONCURRENT = 20
ACK_ROUNDS = 3
DB_DELAY = 2.0
N_HOLDERS = 1000
LISTING_RUNS = 11

results: list[dict] = []


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def record(name: str, value: str, baseline: str = "", ratio: str = "", goal: str = "", ok: bool | None = None):
    results.append(dict(name=name, value=value, baseline=baseline, ratio=ratio, goal=goal,
                        verdict="" if ok is None else ("PASS" if ok else "MISS")))
    print(f"  {name}: {value}" + (f" (baseline {baseline}, {ratio})" if baseline else "")
          + (f" -> {results[-1]['verdict']}" if ok is not None else ""), flush=True)


def vmrss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_posts(fake: FakeSlack, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(fake.calls_for("chat.postMessage")) >= n:
            return True
        time.sleep(0.02)
    return False


# --- ack latency -------------------------------------------------------------------------------------


def burst(sender: SlackSender, text: str) -> list[float]:
    def one(i: int) -> float:
        started = time.perf_counter()
        reply = sender.slash(text, user_id=f"U{i}")
        took = time.perf_counter() - started
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {reply.body[:200]}")
        return took

    with ThreadPoolExecutor(N_CONCURRENT) as ex:
        return list(ex.map(one, range(N_CONCURRENT)))


def bench_ack(pair, bot: ServeProcess, fake: FakeSlack) -> None:
    print(f"ack latency: {N_CONCURRENT} concurrent /pgsessions while the database takes {DB_DELAY:g}s", flush=True)
    minimal = MinimalApp(fake.api_url).start()
    msender = SlackSender(minimal.url, SIGNING_SECRET, fake=fake, timeout=10)
    bsender = SlackSender(bot.url, SIGNING_SECRET, fake=fake, timeout=10)
    burst(msender, "warm-up")
    bot_t: list[float] = []
    min_t: list[float] = []
    waited: list[float] = []
    try:
        for _ in range(ACK_ROUNDS):
            min_t += burst(msender, "e00")
            # the listing reads pg_roles: an ACCESS EXCLUSIVE lock on pg_authid makes it wait DB_DELAY
            locker = pair.primary.connect(autocommit=False)
            locker.execute("LOCK TABLE pg_catalog.pg_authid IN ACCESS EXCLUSIVE MODE")
            before = len(fake.calls_for("chat.postMessage"))
            released = threading.Timer(DB_DELAY, locker.rollback)
            sent = time.monotonic()
            released.start()
            bot_t += burst(bsender, "e00")
            if not wait_posts(fake, before + N_CONCURRENT, 30):
                raise RuntimeError("the listings of the ack burst did not all arrive:\n" + fake.summary())
            first = min(c.time for c in fake.calls_for("chat.postMessage")[before:])
            waited.append(first - (time.time() - (time.monotonic() - sent)))
            released.join()
            locker.close()
            min_t += burst(msender, "e00")
    finally:
        minimal.stop()
    record("listing waited on the database (first message after the burst)", ms(min(waited)),
           goal=f">= {DB_DELAY * 0.9:g} s (the delay is real)", ok=min(waited) >= DB_DELAY * 0.9)
    b50, b99, m50, m99 = pct(bot_t, 50), pct(bot_t, 99), pct(min_t, 50), pct(min_t, 99)
    record("ack p50", ms(b50), ms(m50), f"{b50 / m50:.2f}x")
    record("ack p99", ms(b99), ms(m99), f"{b99 / m99:.2f}x", "< 100 ms and <= 1.5x minimal",
           b99 < 0.100 and b99 <= 1.5 * m99)


# --- listing cost ------------------------------------------------------------------------------------


def psql_command(pair, config) -> tuple[list[str], str]:
    environment = config.environments["e00"]
    filters = Filters()
    params = {
        **thresholds_for(environment, filters),
        "want_long_running": True, "want_idle_tx": True, "want_idle": True, "want_blocked": True,
        "app": None, "usr": None, "db": None,
        "query_chars": max(environment.listing.query_chars * 2, 600),
    }
    sql = "\\timing on\n" + query("server_info").rstrip().rstrip(";") + ";\n" + query("sessions").rstrip().rstrip(";") + ";\n"
    sql = re.sub(r"%\((\w+)\)s", r":\1", sql).replace("%%", "%")
    args = []
    for k, v in params.items():
        args += ["-v", f"{k}={'NULL' if v is None else str(v).lower() if isinstance(v, bool) else v}"]
    psql = shutil.which("psql") or os.path.join(find_bindir(), "psql")
    cmd = [psql, "-X", "-q", "-o", "/dev/null", "-h", pair.primary.host, "-p", str(pair.primary.port),
           "-U", "pgsessions_bot", "-d", "postgres", "-v", "ON_ERROR_STOP=1", *args]
    return cmd, sql


def bench_listing(pair, bot: ServeProcess, fake: FakeSlack, config) -> None:
    print(f"listing cost: /pgsessions e00 with {N_HOLDERS} client connections open", flush=True)
    holders = subprocess.Popen(
        [sys.executable, "-m", "bench.holders", pair.primary.dsn(user="app_user", dbname="appdb"), str(N_HOLDERS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = holders.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ready"):
            raise RuntimeError(f"connection holders failed: {line!r}")
        time.sleep(2.2)  # past the 2 s idle threshold: every holder is listed as idle
        n = pair.primary.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[0][0]
        cmd, sql = psql_command(pair, config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        psql_t, psql_q, bot_t = [], [], []
        sender = SlackSender(bot.url, SIGNING_SECRET, fake=fake, timeout=10)
        for i in range(LISTING_RUNS):
            started = time.perf_counter()
            res = subprocess.run(cmd, input=sql, capture_output=True, text=True, env=env, timeout=30)
            if res.returncode != 0:
                raise RuntimeError("psql failed: " + res.stderr)
            psql_t.append(time.perf_counter() - started)
            psql_q.append(sum(float(x) for x in re.findall(r"Time: ([0-9.]+) ms", res.stdout)) / 1000)
            before = len(fake.calls_for("chat.postMessage"))
            started = time.perf_counter()
            wall = time.time()
            reply = sender.slash("e00", user_id="U1")
            if reply.status != 200 or not wait_posts(fake, before + 1, 30):
                raise RuntimeError("listing did not arrive")
            call = fake.calls_for("chat.postMessage")[before]
            if i:  # the first one warms the pool
                bot_t.append(call.time - wall)
            del started
        msg = fake.calls_for("chat.postMessage")[-1].params
        drawn = str(msg.get("text", ""))[:80]
    finally:
        holders.stdin.close()  # type: ignore[union-attr]
        holders.wait(30)
    record("client connections during the listing", str(n))
    record("listing message", drawn)
    b, p, q = statistics.median(bot_t), statistics.median(psql_t), statistics.median(psql_q)
    record("psql: the two queries alone (\\timing, no start-up or connect)", ms(q))
    record("listing median (signed request -> message at Slack)", ms(b), ms(p) + " psql", f"{b / p:.2f}x",
           "<= 3x psql and < 250 ms", b <= 3 * p and b < 0.250)


# --- main --------------------------------------------------------------------------------------------


def lagwatch_landed() -> bool:
    try:
        out = subprocess.run(["git", "ls-files", "bot/lagwatch"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent.parent).stdout
    except OSError:
        return False
    return bool(out.strip())


def main() -> int:
    import logging

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth" during the bursts
    started = time.monotonic()
    pair = start_pair(standby=False)
    fake = FakeSlack(token="xoxb-test").start()
    tmp = Path(tempfile.mkdtemp(prefix="pgs-bench-"))
    bot = None
    try:
        version = pair.primary.sql("SHOW server_version")[0][0]
        envs = {f"e{i:02d}": env_config(pair) for i in range(N_ENVS)}
        cfg = {"state": f"sqlite:///{tmp / 'state.db'}", "environments": envs}
        config = parse_config(cfg, environ={})
        bot = ServeProcess(write_config(tmp / "pgsessions.yml", cfg), fake).start()
        time.sleep(1)
        idle_rss = vmrss_kib(bot.pid)
        print("machine:", "; ".join(f"{k} {v}" for k, v in describe(shutil.which("psql"), version)), flush=True)
        bench_ack(pair, bot, fake)
        bench_listing(pair, bot, fake, config)
        from bench import details as details_bench

        details_bench.run(record, ms, pair, bot, fake)
        if lagwatch_landed():
            from bench import lag

            lag.run(record, ms)
        else:
            record("alert latency / check cycle", "skipped: bot/lagwatch has not landed (not in git)")
        from bench import worst

        worst.run(record, ms)  # hung standby, acks with hung hosts, a full server, an overloaded primary

        from bench import watch

        watch.run(record, ms)
        poolers_bench.run(record, ms)  # a listing with 1000 server sessions behind PgBouncer (issue 25)
        from bench import fleet

        fleet.run(record, ms)  # a replica SIGKILLed among three: the gap in checks, duplicate posts (issue 26)
        from bench import checkcpu, fleet1000

        checkcpu.run(record, ms)  # bot CPU per check against bare SELECT 1 through the same pools (issue 26)
        fleet1000.run(record, ms)  # 1000 environments x 2 hosts, a DSN each, through PgBouncer (issue 26)
        from bench import paths

        paths.run(record, ms)  # files, calls and state entries of one Approve click and one alert (issue 22)
        after_rss = vmrss_kib(bot.pid)
        record(f"bot VmRSS, {N_ENVS} environments, idle", f"{idle_rss / 1024:.1f} MiB")
        record("bot VmRSS after the runs above", f"{after_rss / 1024:.1f} MiB")
    finally:
        if bot is not None:
            bot.stop()
        fake.stop()
        pair.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| machine | |\n| --- | --- |")
    for k, v in describe(shutil.which("psql"), version):
        print(f"| {k} | {v} |")
    print()
    print("| benchmark | pgsessions | baseline | ratio | goal | verdict |\n| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['name']} | {r['value']} | {r['baseline']} | {r['ratio']} | {r['goal']} | {r['verdict']} |")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0 if all(r["verdict"] != "MISS" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
