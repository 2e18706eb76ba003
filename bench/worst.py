"""The worst minute (issue 13): listings and acks while servers hang, run out of slots or are overloaded.

Each figure is compared with a baseline measured in the same run: the same listing on a healthy / idle
server, and the minimal Bolt app's acks. Everything binds to 127.0.0.1; every loop has a count and a
deadline; every stopped backend is continued in a ``finally``; pgbench runs for a bounded time.

    python -m bench.worst          # alone; `make bench` runs it after the other benchmarks
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bench.lag import SilentServer
from bench.minimal import MinimalApp
from bench.standalone import run_alone
from tests.harness.bot import SIGNING_SECRET, BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import ServeProcess, write_config
from tests.harness.pgcluster import find_bindir, start_pair
from tests.harness.slack_requests import SlackSender

CONNECT, STATEMENT = 2.0, 2.0
TIMEOUTS = {"connect": f"{CONNECT:g}s", "statement": f"{STATEMENT:g}s"}
RUNS = 7
HUNG_ROUNDS = 3
N_HUNG = 8
HUNG_PER_HOST = 4
ACK_CONCURRENT = 20
ACK_ROUNDS = 3
HOLD = 1.0  # seconds the healthy database holds its answer during a timed burst (< STATEMENT)
FULL_MAX_CONNECTIONS = 40
PGBENCH_SECONDS = 12


def _bot_backends(node) -> list[int]:
    rows = node.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'pgsessions_bot' "
                    "AND application_name = 'pgsessions'")
    return [r[0] for r in rows]


@contextmanager
def frozen(pids: list[int]):
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def _posted_in(bot: BotUnderTest, fake: FakeSlack, text: str, timeout: float = 30) -> float:
    """Seconds from the signed request to the listing message at Slack."""
    before = len(fake.calls_for("chat.postMessage"))
    wall = time.time()
    reply = bot.command(text)
    if reply.status != 200:
        raise RuntimeError(f"HTTP {reply.status}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = fake.calls_for("chat.postMessage")
        if len(calls) > before:
            return calls[before].time - wall
        time.sleep(0.005)
    raise RuntimeError(f"no listing for {text!r}:\n{fake.summary()}")


def _answered_in(bot: BotUnderTest, fake: FakeSlack, text: str, host: str, timeout: float = 30) -> tuple[float, str]:
    """Seconds to the first answer of any kind (a listing of ``host`` or an ephemeral error), and its text."""
    before = len(fake.calls_for("chat.postMessage"))
    wall = time.time()
    reply = bot.command(text)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in fake.calls_for("chat.postMessage")[before:]:
            if host in str(c.params.get("text")):
                return c.time - wall, str(c.params.get("text"))
        for r in fake.responses:
            if r.name == reply.response_name:
                return r.time - wall, r.text or ""
        time.sleep(0.005)
    raise RuntimeError(f"no answer for {text!r}")


def _median_listing(bot, fake, text: str, runs: int = RUNS) -> float:
    _posted_in(bot, fake, text)  # warm the pool
    return statistics.median(_posted_in(bot, fake, text) for _ in range(runs))


# --- a hung standby ---------------------------------------------------------------------------------


def hung_standby(record: Callable, ms: Callable) -> None:
    pair = start_pair()
    fake = FakeSlack(token="xoxb-test").start()
    try:
        if pair.standby is None or pair.external:
            record("listing of a hung standby", "skipped: needs a managed primary + standby")
            return
        cfg = {"environments": {"w": env_config(pair, timeouts=TIMEOUTS)}}
        with BotUnderTest(cfg, fake) as bot:
            healthy = _median_listing(bot, fake, "w")
            hung: list[float] = []
            during: list[float] = []
            texts: list[str] = []
            for _ in range(HUNG_ROUNDS):
                _posted_in(bot, fake, "w replica1")  # a pooled connection to the standby exists
                with frozen(_bot_backends(pair.standby)):
                    result: list[tuple[float, str]] = []
                    t = threading.Thread(target=lambda out=result: out.append(_answered_in(bot, fake, "w replica1",
                                                                                        "replica1")))
                    t.start()
                    time.sleep(0.05)
                    while t.is_alive() and len(during) < RUNS * HUNG_ROUNDS:
                        during.append(_posted_in(bot, fake, "w"))
                    t.join(30)
                took, text = result[0]
                hung.append(took)
                texts.append(text)
            limit = CONNECT + STATEMENT + 1
            worst = max(hung)
            said = "not answering" in " ".join(texts)
            record("listing of a hung standby (its bot backend SIGSTOPped): time to the answer", ms(worst),
                   f"{limit:g} s limit", f"{worst / limit:.2f} of the limit",
                   f"<= connect + statement + 1 s ({limit:g} s), says 'not answering'", worst <= limit and said)
            d = statistics.median(during) if during else float("nan")
            record("healthy primary listing while the standby hangs", ms(d), ms(healthy) + " before",
                   f"{d / healthy:.2f}x", "<= 1.2x", d <= 1.2 * healthy)
    finally:
        fake.stop()
        pair.stop()


# --- acks with 8 hung hosts ------------------------------------------------------------------------


def _burst(sender: SlackSender, text: str, n: int) -> list[float]:
    def one(i: int) -> float:
        started = time.perf_counter()
        reply = sender.slash(text, user_id=f"U{i}")
        took = time.perf_counter() - started
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}")
        return took

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, range(n)))


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))]


def acks_with_hung_hosts(record: Callable, ms: Callable) -> None:
    """The first release's ack goal, with 8 hung hosts added.

    As in ``make bench``'s own ack figure, the healthy environment's database holds its answer for a while
    (an ACCESS EXCLUSIVE lock on ``pg_authid``, which the listing reads), so what is timed is the ack alone:
    the only difference from that figure is the 32 listings of hung hosts in flight. A second burst is
    timed with the healthy listings running right after their acks (rendering, the state-store write and
    the post compete with the later acks for the interpreter); it is reported without a goal, beside the
    minimal app, which does no work after its ack.
    """
    pair = start_pair(standby=False)
    fake = FakeSlack(token="xoxb-test").start()
    silent = [SilentServer() for _ in range(N_HUNG)]
    tmp = Path(tempfile.mkdtemp(prefix="pgs-bench-worst-"))
    bot = minimal = None
    try:
        envs = {"ok": env_config(pair, timeouts=TIMEOUTS)}
        for i, s in enumerate(silent):
            e = env_config(pair, timeouts=TIMEOUTS)
            e["dsn"] = f"host=127.0.0.1 port={s.port} dbname=postgres user=pgsessions_bot"
            envs[f"h{i}"] = e
        cfg = {"state": f"sqlite:///{tmp / 'state.db'}", "environments": envs}
        bot = ServeProcess(write_config(tmp / "pgsessions.yml", cfg), fake).start()
        minimal = MinimalApp(fake.api_url).start()
        msender = SlackSender(minimal.url, SIGNING_SECRET, fake=fake, timeout=10)
        bsender = SlackSender(bot.url, SIGNING_SECRET, fake=fake, timeout=10)
        _burst(msender, "warm-up", ACK_CONCURRENT)
        _burst(bsender, "help", 4)
        waiting: list[float] = []  # acks while the healthy listing waits on its database
        running: list[float] = []  # acks while the burst's own listings run
        min_t: list[float] = []
        for _ in range(ACK_ROUNDS):
            for timed in (waiting, running):
                min_t += _burst(msender, "ok", ACK_CONCURRENT)
                # every hung host gets several listings in flight, then the healthy env's burst is timed
                hung_senders = [threading.Thread(target=_burst, args=(bsender, f"h{i}", HUNG_PER_HOST))
                                for i in range(N_HUNG)]
                for t in hung_senders:
                    t.start()
                for t in hung_senders:
                    t.join(30)
                time.sleep(0.2)
                if timed is waiting:
                    locker = pair.primary.connect(autocommit=False)
                    locker.execute("LOCK TABLE pg_catalog.pg_authid IN ACCESS EXCLUSIVE MODE")
                    released = threading.Timer(HOLD, locker.rollback)
                    released.start()
                    try:
                        timed += _burst(bsender, "ok", ACK_CONCURRENT)
                    finally:
                        released.join()
                        locker.close()
                else:
                    timed += _burst(bsender, "ok", ACK_CONCURRENT)
                min_t += _burst(msender, "ok", ACK_CONCURRENT)
                time.sleep(CONNECT + 1.5)  # let the hung listings end before the next burst
        print("  slowest acks (ms), waiting:", [round(x * 1000) for x in sorted(waiting)[-6:]],
              "running:", [round(x * 1000) for x in sorted(running)[-6:]],
              "minimal:", [round(x * 1000) for x in sorted(min_t)[-6:]], flush=True)
        w99, r99, m99 = _pct(waiting, 99), _pct(running, 99), _pct(min_t, 99)
        record(f"ack p99 with {N_HUNG} hung hosts ({N_HUNG * HUNG_PER_HOST} listings of them in flight), "
               f"the healthy database answering after {HOLD:g} s", ms(w99), ms(m99) + " minimal",
               f"{w99 / m99:.2f}x", "< 100 ms and <= 1.5x minimal", w99 < 0.100 and w99 <= 1.5 * m99)
        record("  the same, the burst's own listings running right after their acks", ms(r99),
               ms(m99) + " minimal", f"{r99 / m99:.2f}x")
    finally:
        if bot is not None:
            bot.stop()
        if minimal is not None:
            minimal.stop()
        for s in silent:
            s.close()
        fake.stop()
        pair.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# --- every connection slot taken ---------------------------------------------------------------------


def full_server(record: Callable, ms: Callable) -> None:
    pair = start_pair(standby=False)
    fake = FakeSlack(token="xoxb-test").start()
    fillers: list[psycopg.Connection] = []
    try:
        if pair.external:
            record("listing with every slot taken", "skipped: needs a managed primary")
            return
        pair.primary.sql(f"ALTER SYSTEM SET max_connections = {FULL_MAX_CONNECTIONS}")
        pair.primary.restart()
        cfg = {"environments": {"f": env_config(pair, timeouts=TIMEOUTS)}}
        with BotUnderTest(cfg, fake) as bot:
            healthy = _median_listing(bot, fake, "f")
        # a bot that just started (its reserved connection open, nothing pooled), then the server fills up
        with BotUnderTest(cfg, fake) as bot:
            deadline = time.monotonic() + 10
            while not bot.rt.dbs.reserved_open("f") and time.monotonic() < deadline:
                time.sleep(0.05)
            for _ in range(FULL_MAX_CONNECTIONS):
                try:
                    fillers.append(psycopg.connect(pair.primary.dsn(user="app_user", dbname="appdb"),
                                                   autocommit=True, connect_timeout=3))
                except psycopg.OperationalError:
                    break
            full = _median_listing(bot, fake, "f")
            said = "out of connections" in str(fake.calls_for("chat.postMessage")[-1].params.get("blocks"))
        record("listing with every slot taken (through the reserved connection)", ms(full),
               ms(healthy) + " healthy", f"{full / healthy:.2f}x", "<= 1.5x, says 'out of connections'",
               full <= 1.5 * healthy and said)
    finally:
        for c in fillers:
            c.close()
        fake.stop()
        pair.stop()


# --- an overloaded primary ---------------------------------------------------------------------------


def overloaded_primary(record: Callable, ms: Callable) -> None:
    pgbench = shutil.which("pgbench") or os.path.join(find_bindir(), "pgbench")
    if not os.path.exists(pgbench):
        record("listing on an overloaded primary", "skipped: pgbench not installed")
        return
    pair = start_pair(standby=False)
    fake = FakeSlack(token="xoxb-test").start()
    load = None
    try:
        dsn = pair.primary.dsn(user="postgres")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        subprocess.run([pgbench, "-i", "-q", "-s", "2", dsn], check=True, capture_output=True, env=env, timeout=120)
        cfg = {"environments": {"o": env_config(pair, timeouts=TIMEOUTS)}}
        with BotUnderTest(cfg, fake) as bot:
            idle = _median_listing(bot, fake, "o")
            clients = 4 * (os.cpu_count() or 1)
            load = subprocess.Popen([pgbench, "-n", "-S", "-c", str(clients), "-j", "2", "-T", str(PGBENCH_SECONDS),
                                     dsn], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            time.sleep(2)
            started = time.monotonic()
            busy = []
            while len(busy) < 3 * RUNS and time.monotonic() - started < PGBENCH_SECONDS - 4:
                busy.append(_posted_in(bot, fake, "o"))
                time.sleep(0.2)
            text = str(fake.calls_for("chat.postMessage")[-1].params.get("blocks"))
            active = pair.primary.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'")[0][0]
        b = statistics.median(busy)
        limit = CONNECT + STATEMENT + 1
        read = text.split("read in ", 1)[1].split(" ms", 1)[0] if "read in " in text else "?"
        record(f"listing on an overloaded primary (pgbench -S, {clients} clients on {os.cpu_count()} cores)", ms(b),
               ms(idle) + " idle", f"{b / idle:.2f}x", f"answers within {limit:g} s, says how long the database took",
               b <= limit and read != "?")
        record("  the listing's own 'read in' under that load", f"{read} ms")
        out, _ = load.communicate(timeout=PGBENCH_SECONDS + 30)  # it ends by itself (-T)
        tps = next((line.split("=")[1].split("(")[0].strip() for line in out.splitlines() if line.startswith("tps")),
                   "?")
        record("  the load: pgbench sessions connected at the last listing / its tps", f"{active} / {tps[:8]}")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(10)
        fake.stop()
        pair.stop()


def run(record: Callable, ms: Callable) -> None:
    import logging

    for name in ("psycopg.pool", "bot.postgres.pools", "bot.slack.listing_handlers", "bot.postgres.deadline"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # as `make bench` does: the minimal app's waitress warns of its queue depth in every burst, and writing
    # those warnings slowed its acks when this module ran alone (its figures then flattered the bot)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if os.geteuid() == 0:
        hung_standby(record, ms)
    else:
        record("listing of a hung standby", "skipped: SIGSTOP of a backend needs root")
    acks_with_hung_hosts(record, ms)
    full_server(record, ms)
    overloaded_primary(record, ms)


if __name__ == "__main__":
    run_alone(run)
