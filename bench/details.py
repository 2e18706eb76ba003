"""`/pgsessions <env> locks` beside the listing, under 1000 sessions with a pile-up of 200 lock waiters,
and the Details click-to-views.open time. Both commands run alternately in the same run, so the ratio
compares like with like."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from tests.harness.bot import SIGNING_SECRET
from tests.harness.slack_requests import SlackSender

N_IDLE = 800
N_WAITERS = 200
RUNS = 9
CLICKS = 10


def _post(fake, sender, text: str) -> tuple[float, dict]:
    before = len(fake.calls_for("chat.postMessage"))
    wall = time.time()
    reply = sender.slash(text, user_id="U1")
    deadline = time.monotonic() + 30
    while reply.status == 200 and time.monotonic() < deadline:
        calls = fake.calls_for("chat.postMessage")
        if len(calls) > before:
            return calls[before].time - wall, calls[before]
        time.sleep(0.01)
    raise RuntimeError(f"no message for {text!r}")


def run(record, ms, pair, bot, fake) -> None:
    print(f"locks and details: {N_IDLE} idle sessions + a pile-up of {N_WAITERS} lock waiters", flush=True)
    dsn = pair.primary.dsn(user="app_user", dbname="appdb")
    idle = subprocess.Popen([sys.executable, "-m", "bench.holders", dsn, str(N_IDLE)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pile = None
    try:
        if not idle.stdout.readline().startswith("ready"):  # type: ignore[union-attr]
            raise RuntimeError("connection holders failed")
        pile = subprocess.Popen([sys.executable, "-m", "bench.pileup", dsn, str(N_WAITERS)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if not pile.stdout.readline().startswith("ready"):  # type: ignore[union-attr]
            raise RuntimeError("lock pile-up failed")
        time.sleep(2.2)
        n = pair.primary.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[0][0]
        sender = SlackSender(bot.url, SIGNING_SECRET, fake=fake, timeout=10)
        list_t, locks_t = [], []
        locks_msg = None
        for i in range(RUNS + 1):
            a, _ = _post(fake, sender, "e00")
            b, locks_msg = _post(fake, sender, "e00 locks")
            if i:  # the first round warms the pools
                list_t.append(a)
                locks_t.append(b)
        buttons = [el for blk in locks_msg.params["blocks"] if blk["type"] == "actions" for el in blk["elements"]
                   if el["text"]["text"].startswith("Details ")]
        click_t = []
        for el in buttons[:CLICKS]:
            before = len(fake.calls_for("views.open"))
            wall = time.time()
            sender.block_action(el["action_id"], el["value"], user_id="U1",
                                message={"blocks": locks_msg.params["blocks"], "text": "locks"}, channel_id="C1")
            deadline = time.monotonic() + 10
            while len(fake.calls_for("views.open")) <= before and time.monotonic() < deadline:
                time.sleep(0.005)
            calls = fake.calls_for("views.open")[before:]
            if not calls or not calls[0].ok:
                raise RuntimeError("details did not open")
            click_t.append(calls[0].time - wall)
    finally:
        for p in (pile, idle):
            if p is not None:
                p.stdin.close()  # type: ignore[union-attr]
                p.wait(60)
    record("client connections during locks", str(n))
    record("locks message", str(locks_msg.params.get("text", ""))[:80])
    lm, km = statistics.median(list_t), statistics.median(locks_t)
    record("locks median (signed request -> message at Slack)", ms(km), ms(lm) + " listing", f"{km / lm:.2f}x",
           "<= 1.5x the listing in the same run", km <= 1.5 * lm)
    cm, cx = statistics.median(click_t), max(click_t)
    record(f"Details click -> views.open (median / max of {len(click_t)})", f"{ms(cm)} / {ms(cx)}", goal="< 1 s",
           ok=cx < 1.0)
