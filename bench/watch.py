"""Session-watch benchmarks for `make bench` (issue 14): alert latency per kind and a 200-environment cycle.

Runs the real bot in-process (scheduler on) against a real primary + hot standby of its own and the
fake Slack, everything on 127.0.0.1. Run alone with ``python -m bench.watch``.

*Alert latency*: for each kind, one bot watching only that kind (check_every 1 s, consecutive 2). The
condition is made true at a known instant (the last waiter of a pile-up starts waiting; a transaction
goes idle / a query starts / a transaction takes its snapshot, plus the threshold; the connection that
crosses the share opens) and latency runs from there to the alert's ``chat.postMessage`` arriving at the
fake Slack. Goal: ``consecutive × check_every + 2 s``.

*Cycle*: 200 environments, each the bench's primary and standby (400 check jobs scheduled at the same
instants, check_every 5 s). Environments that reach a server alike share its read
(:mod:`bot.watch.reads`), so the figure against the goal sends two statements per cycle; a second run
gives every environment a connection string of its own (400 statements per cycle, as 200 separate
clusters would cost, but all on the bench's two servers and cores) and is reported beside it. The servers hold 1000 client sessions (949 idle, one idle in transaction with
50 waiters piled up behind it); every environment reads all of them, and one (``w000``) watches for
pile-ups and has its alert open. One cycle runs from the jobs' scheduled time to the last of the 400
checks done. CPU is the bench process's CPU time (bot, fake Slack and harness) per cycle; memory its
VmRSS. Goals: cycle <= 2 s, memory <= 150 MiB.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
import uuid

import psycopg
from psycopg import sql as pgsql

from bench.standalone import run_alone
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.pgcluster import ClusterPair, _write_conf, start_pair
from tests.harness.waiting import wait_until

EVERY, CONSECUTIVE = 1.0, 2
CYCLE_ENVS, CYCLE_EVERY, CYCLE_ROUNDS = 200, 5.0, 3
DISTINCT_ROUNDS = 2
N_SESSIONS, N_WAITERS = 1000, 50
CHANNEL = "C0WATCHBENCH"


def vmrss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def table(pair: ClusterPair) -> str:
    name = "wb_" + uuid.uuid4().hex[:8]
    ident = pgsql.Identifier(name)
    pair.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(ident), dbname="appdb")
    pair.primary.sql(pgsql.SQL("INSERT INTO {} VALUES (1, 'x')").format(ident), dbname="appdb")
    pair.primary.sql(pgsql.SQL("ALTER TABLE {} OWNER TO app_user").format(ident), dbname="appdb")
    return name


def conn(pair: ClusterPair, app: str, autocommit: bool = True) -> psycopg.Connection:
    return pair.primary.connect(user="app_user", dbname="appdb", autocommit=autocommit, application_name=app)


class Pileup:
    """An idle-in-transaction holder and ``n`` sessions waiting behind it (threads of this process)."""

    def __init__(self, pair: ClusterPair, n: int):
        self.t = table(pair)
        self.holder = conn(pair, "bench-holder-tx", autocommit=False)
        self.holder.execute(pgsql.SQL("UPDATE {} SET v = 'h' WHERE id = 1").format(pgsql.Identifier(self.t)))
        self.waiters = [conn(pair, "bench-waiter") for _ in range(n)]
        self.threads = []
        for c in self.waiters:
            th = threading.Thread(target=self._wait, args=(c,), daemon=True)
            th.start()
            self.threads.append(th)
        wait_until(lambda: (pair.primary.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                             "'bench-waiter' AND wait_event_type = 'Lock'") or [[0]])[0][0] >= n,
                   30, f"{n} waiters")
        self.ready = time.time()

    def _wait(self, c: psycopg.Connection) -> None:
        try:
            c.execute(pgsql.SQL("UPDATE {} SET v = 'w' WHERE id = 1").format(pgsql.Identifier(self.t)))
        except psycopg.Error:
            pass

    @staticmethod
    def _wait_sql(c: psycopg.Connection, stmt: str) -> None:
        try:
            c.execute(stmt)
        except psycopg.Error:
            pass  # ended by the bench's clean-up

    def close(self) -> None:
        self.holder.close()
        for th in self.threads:
            th.join(10)
        for c in self.waiters:
            c.close()


def first_alert(fake: FakeSlack, after_calls: int, timeout: float = 30):
    return wait_until(lambda: next((c for c in fake.calls[after_calls:] if c.method == "chat.postMessage"
                                    and c.params.get("channel") == CHANNEL and not c.params.get("thread_ts")), None),
                      timeout, "the alert")


def latency_of(pair: ClusterPair, fake: FakeSlack, kind: str) -> float:
    """Seconds from the condition becoming true to its alert arriving."""
    threshold = 2.0
    watch = {"channel": CHANNEL, "check_every": f"{EVERY:g}s", "consecutive": CONSECUTIVE, "remind_every": "1h"}
    opened: list = []
    if kind == "connections":
        used, usable = pair.primary.sql(
            "SELECT count(*) FILTER (WHERE backend_type = 'client backend') - 1, "  # not this query's own
            "current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int "
            "FROM pg_stat_activity")[0]
        # + 1 for the bot's own connection, + 5 for ours: crossing happens at the last one we open
        watch["connections"] = f"{100.0 * (used + 5.5) / usable:.4f}%"
    elif kind == "lock_pileup":
        watch["lock_pileup"] = {"waiters": 5, "wait": "1h"}
    else:
        watch[kind] = f"{threshold:g}s"
    cfg = {"environments": {"prod": env_config(pair, watch=watch, timeouts={"connect": "2s", "statement": "3s"})}}
    pile = None
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        w = bot.rt.watch
        wait_until(lambda: w.checks.get(("prod", "primary"), 0) >= 2, 10, "the first checks")
        before = len(fake.calls)
        try:
            if kind == "lock_pileup":
                pile = Pileup(pair, 5)
                true_at = pile.ready
            elif kind == "idle_in_transaction":
                c = conn(pair, "bench-idle-tx", autocommit=False)
                c.execute("SELECT 1")
                true_at = time.time() + threshold
                opened.append(c)
            elif kind == "long_running":
                c = conn(pair, "bench-long")
                threading.Thread(target=Pileup._wait_sql, args=(c, "SELECT pg_sleep(15)"), daemon=True).start()
                true_at = time.time() + threshold
                opened.append(c)
            elif kind == "xmin_horizon":
                c = conn(pair, "bench-xmin", autocommit=False)
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                c.execute("SELECT 1")
                true_at = time.time() + threshold
                opened.append(c)
            else:
                for _ in range(5):
                    opened.append(conn(pair, "bench-conn"))
                true_at = time.time()
            call = first_alert(fake, before)
            return call.time - true_at
        finally:
            if pile is not None:
                pile.close()
            pair.primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'bench-%%'")
            for c in opened:
                try:
                    c.close()
                except Exception:
                    pass


def alert_latency(pair: ClusterPair, fake: FakeSlack, record, ms) -> None:
    goal = CONSECUTIVE * EVERY + 2
    print(f"watch alert latency per kind: check_every {EVERY:g}s, consecutive {CONSECUTIVE}", flush=True)
    for kind in ("lock_pileup", "idle_in_transaction", "long_running", "connections", "xmin_horizon"):
        lat = latency_of(pair, fake, kind)
        record(f"watch alert latency, {kind}", ms(lat), goal=f"<= consecutive x check_every + 2 s = {goal:g} s",
               ok=lat <= goal)


def one_cycle(bot: BotUnderTest, keys: list[tuple[str, str]], timeout: float) -> float:
    w = bot.rt.watch
    jobs = [bot.rt.scheduler.get_job(f"watch:check:{e}:{h}") for e, h in keys]
    times = sorted({j.next_run_time.timestamp() for j in jobs})
    if len(times) != 1:
        raise RuntimeError(f"the check jobs are not scheduled together: {times[:3]}…")
    scheduled = times[0]
    base = {k: w.checks.get(k, 0) for k in keys}
    done: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(keys) and time.monotonic() < deadline:
        now = time.time()
        for k in keys:
            if k not in done and w.checks.get(k, 0) > base[k]:
                done[k] = now
        time.sleep(0.005)
    if len(done) < len(keys):
        missing = sorted(set(keys) - set(done))
        raise RuntimeError(f"{len(missing)} checks not finished: {missing[:5]} (leader: {w.is_leader()}; "
                           f"their last check took {[round(w.last_check_secs.get(k, -1), 2) for k in missing[:5]]} s)")
    return max(done.values()) - scheduled


def _cycles(pair: ClusterPair, fake: FakeSlack, envs: list[str], rounds: int, distinct: bool) -> dict:
    """Run the bot watching ``envs`` and time ``rounds`` cycles. ``distinct``: every environment's connection
    string differs (a ``fallback_application_name`` of its own), so no two share a read, as if each were
    a server of its own."""
    quiet = {"channel": CHANNEL, "check_every": f"{CYCLE_EVERY:g}s", "consecutive": 1, "remind_every": "1h",
             "idle_in_transaction": "1h", "long_running": "1h", "connections": "99%", "xmin_horizon": "1h"}
    cfg: dict = {"environments": {}}
    for i, e in enumerate(envs):
        watch = dict(quiet)
        if i == 0:
            watch["lock_pileup"] = {"waiters": 5, "wait": "1m"}
        env = env_config(pair, watch=watch, timeouts={"connect": "2s", "statement": "3s"})
        if distinct:
            own = f" fallback_application_name=bench{i}"
            env["dsn"] += own
            env["standbys"] = {n: d + own for n, d in env["standbys"].items()}
        cfg["environments"][e] = env
    keys = [(e, h) for e in envs for h in ("primary", "replica1")]
    rss_before = vmrss_kib()
    calls_before = len(fake.calls)
    with BotUnderTest(cfg, fake, scheduler=True) as bot:
        w = bot.rt.watch
        wait_until(lambda: all(w.checks.get(k, 0) >= 1 for k in keys), CYCLE_EVERY * 3 + 20, "the first cycle")
        wait_until(lambda: any(c.method == "chat.postMessage" and "Lock pile-up" in str(c.params.get("text"))
                               for c in fake.calls[calls_before:]), CYCLE_EVERY * 3 + 10, "the pile-up alert of w000")
        cycles, cpu, sent = [], [], []
        for _ in range(rounds):
            t0, s0 = time.process_time(), w.reads.statements()
            cycles.append(one_cycle(bot, keys, CYCLE_EVERY * 3))
            cpu.append(time.process_time() - t0)
            sent.append(w.reads.statements() - s0)
        rss = vmrss_kib()
        per_check = statistics.median(w.last_check_secs.values())
        alerts = sum(1 for c in fake.calls[calls_before:]
                     if c.method == "chat.postMessage" and "Lock pile-up" in str(c.params.get("text")))
    return {"keys": keys, "cycles": cycles, "cpu": cpu, "sent": sent, "rss": rss, "rss_before": rss_before,
            "per_check": per_check, "alerts": alerts}


def watch_cycle(pair: ClusterPair, fake: FakeSlack, record, ms) -> None:
    print(f"watch cycle: {CYCLE_ENVS} environments x (primary + standby), {N_SESSIONS} sessions with a pile-up of "
          f"{N_WAITERS}, check_every {CYCLE_EVERY:g}s", flush=True)
    pile = Pileup(pair, N_WAITERS)
    n_idle = N_SESSIONS - N_WAITERS - 1
    holders = subprocess.Popen(
        [sys.executable, "-m", "bench.holders", pair.primary.dsn(user="app_user", dbname="appdb"), str(n_idle)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        if not (holders.stdout.readline() or "").startswith("ready"):  # type: ignore[union-attr]
            raise RuntimeError("connection holders failed")
        envs = [f"w{i:03d}" for i in range(CYCLE_ENVS)]
        n = pair.primary.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[0][0]
        shared = _cycles(pair, fake, envs, CYCLE_ROUNDS, distinct=False)
        alone = _cycles(pair, fake, envs, DISTINCT_ROUNDS, distinct=True)
    finally:
        holders.stdin.close()  # type: ignore[union-attr]
        holders.wait(30)
        pile.close()
    checks = len(shared["keys"])
    record("watch cycle: client sessions on the primary", str(n))
    record(f"watch cycle, {checks} checks (scheduled -> last check done, max of {CYCLE_ROUNDS})",
           ms(max(shared["cycles"])), goal="<= 2 s", ok=max(shared["cycles"]) <= 2.0)
    record("watch cycle: statements sent per cycle (environments on the same server share one read)",
           f"{statistics.median(shared['sent']):g} for {checks} checks")
    record("watch cycle: one check (read + rules + store), median", ms(shared["per_check"]))
    record("watch cycle: CPU of the bench process per cycle (bot + fake Slack + harness)",
           ms(statistics.median(shared["cpu"])))
    record("watch cycle: VmRSS of the bench process (bot + fake Slack + harness + the pile-up's 51 connections)",
           f"{shared['rss'] / 1024:.1f} MiB", goal="<= 150 MiB", ok=shared["rss"] / 1024 <= 150)
    grown = (shared["rss"] - shared["rss_before"]) / 1024
    record(f"watch cycle: VmRSS growth from starting the bot with {CYCLE_ENVS} environments (the bot's own share)",
           f"{grown:.1f} MiB", goal="<= 150 MiB", ok=grown <= 150)
    record("watch cycle: pile-up alerts posted (only w000 watches pile-ups)", str(shared["alerts"]), goal="1",
           ok=shared["alerts"] == 1)
    record(f"  every environment a server of its own (no read shared): cycle, min / max of {DISTINCT_ROUNDS}",
           f"{ms(min(alone['cycles']))} / {ms(max(alone['cycles']))}", "", "",
           f"{statistics.median(alone['sent']):g} statements per cycle; the two servers run on the bot's two cores")
    record("  the same: CPU of the bench process per cycle / VmRSS growth",
           f"{ms(statistics.median(alone['cpu']))} / {(alone['rss'] - alone['rss_before']) / 1024:.1f} MiB")


def bench_cluster() -> ClusterPair:
    """The bench's own pair, with room for 1000 sessions next to the bot's 400 pooled connections."""
    pair = start_pair()
    if pair.standby is None or pair.external:
        pair.stop()
        raise RuntimeError("the watch bench needs a managed primary + standby")
    for node in (pair.standby, pair.primary):  # a hot standby needs max_connections >= the primary's
        _write_conf(node, {"max_connections": 1597})
        node.restart()
    pair.wait_streaming()
    return pair


def run(record, ms) -> None:
    import logging

    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    logging.getLogger("bot.watch").setLevel(logging.ERROR)
    fake = FakeSlack(token="xoxb-test").start()
    try:
        pair = bench_cluster()
    except Exception as exc:
        record("watch alert latency / cycle", f"skipped: {exc}")
        fake.stop()
        return
    try:
        alert_latency(pair, fake, record, ms)
        watch_cycle(pair, fake, record, ms)
    finally:
        fake.stop()
        pair.stop()


if __name__ == "__main__":
    run_alone(run)
