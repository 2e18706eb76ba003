"""Listings behind PgBouncer (issue 25): `/pgsessions <env>` with 1000 server sessions opened by a pooler,
read with the pooler (its SHOW SERVERS / CLIENTS matched to every session) against the same listing of
the same server without the pooler configured, alternately in the same run. Goal: <= 1.5x.

Runs on its own (``python -m bench.poolers``) or from ``make bench``: its own primary, PgBouncer 1.24
(``scripts/ensure-pgbouncer.sh``), fake Slack and ``pgsessions serve``.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.bot import SIGNING_SECRET, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import ServeProcess, write_config
from tests.harness.pgbouncer import start_pgbouncer
from tests.harness.pgcluster import start_pair
from tests.harness.slack_requests import SlackSender

N_SERVERS = 1000
RUNS = 9


def _post(fake, sender, text: str) -> tuple[float, dict]:
    before = len(fake.calls_for("chat.postMessage"))
    wall = time.time()
    reply = sender.slash(text, user_id="U1")
    deadline = time.monotonic() + 30
    while reply.status == 200 and time.monotonic() < deadline:
        calls = fake.calls_for("chat.postMessage")
        if len(calls) > before:
            return calls[before].time - wall, calls[before].params
        time.sleep(0.01)
    raise RuntimeError(f"no message for {text!r}")


def run(record, ms) -> None:
    print(f"poolers: a listing with {N_SERVERS} server sessions behind PgBouncer, with and without reading it",
          flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # PgBouncer inherits it: 2 sockets a client
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * N_SERVERS)), hard))
    pair = start_pair(standby=False)
    fake = FakeSlack(token="xoxb-test").start()
    tmp = Path(tempfile.mkdtemp(prefix="pgs-bench-poolers-"))
    bouncer = bot = holders = None
    try:
        bouncer = start_pgbouncer(pair.primary, "new", pool_mode="session", pool_size=N_SERVERS + 50,
                                  max_client_conn=N_SERVERS + 100)
        holders = subprocess.Popen([sys.executable, "-m", "bench.holders", bouncer.dsn(), str(N_SERVERS)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if not holders.stdout.readline().startswith("ready"):  # type: ignore[union-attr]
            raise RuntimeError("the clients through the pooler did not connect")
        time.sleep(2.2)  # idle past the 2s threshold: every session is listed as idle
        cfg = {"state": f"sqlite:///{tmp / 'state.db'}", "environments": {
            "direct": env_config(pair),
            "pooled": env_config(pair, poolers={"pgb": {"dsn": bouncer.admin_dsn()}}),
        }}
        bot = ServeProcess(write_config(tmp / "pgsessions.yml", cfg), fake).start()
        sender = SlackSender(bot.url, SIGNING_SECRET, fake=fake, timeout=10)
        n = pair.primary.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[0][0]
        direct_t, pooled_t = [], []
        pooled_msg: dict = {}
        for i in range(RUNS + 1):
            a, _ = _post(fake, sender, "direct")
            b, pooled_msg = _post(fake, sender, "pooled")
            if i:  # the first round warms the pools
                direct_t.append(a)
                pooled_t.append(b)
    finally:
        if holders is not None:
            holders.stdin.close()  # type: ignore[union-attr]
            holders.wait(60)
        if bot is not None:
            bot.stop()
        if bouncer is not None:
            bouncer.stop()
        fake.stop()
        pair.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = str(pooled_msg.get("blocks", [{}, {}])[1].get("text", {}).get("text", ""))
    record("client connections behind the pooler", str(n))
    record("pooled listing summary", summary.replace("\n", " · ")[:120])
    d, p = statistics.median(direct_t), statistics.median(pooled_t)
    record("listing through 1 pooler, 1000 server sessions (median)", ms(p), ms(d) + " without poolers",
           f"{p / d:.2f}x", "<= 1.5x the same listing without poolers", p <= 1.5 * d)


def main() -> int:
    rows: list[dict] = []

    def record(name: str, value: str, baseline: str = "", ratio: str = "", goal: str = "", ok: bool | None = None):
        rows.append(dict(name=name, ok=ok))
        print(f"  {name}: {value}" + (f" (baseline {baseline}, {ratio})" if baseline else "")
              + ("" if ok is None else f" -> {'PASS' if ok else 'MISS'}"), flush=True)

    def ms(x: float) -> str:
        return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"

    run(record, ms)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
