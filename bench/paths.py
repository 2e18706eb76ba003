"""How far one Approve click and one alert travel through ``bot/`` (issue 22): files, calls, state entries.

Run alone with ``python -m bench.paths`` (``-v``: also every hop between two files of ``bot/``, in order);
``make bench`` runs it too.

Both paths run for real: a primary of their own (:func:`tests.harness.pgcluster.start_pair`), the fake
Slack, the bot in-process (:class:`tests.harness.bot.BotUnderTest`) driven by signed requests, a SQLite
state store.

* **Approve**: a listing, a Terminate click, the request form submitted (not measured), then an approver's
  Approve click, measured from the Bolt listener ``kill_handlers.on_decide`` until it returns: the checks,
  the signal, both redraws and the requester's DM. One request is approved first, unmeasured, so that the
  measured one runs on a warm bot.
* **Alert**: the session watch on one primary (idle in transaction, 1 s, 2 checks in a row) and a session
  left idle in a transaction; measured is the check tick (``Watcher.check``) that draws the alert with its
  buttons and hands the post to the outbox.

A profile hook (``threading.setprofile``, on every thread of the process) counts, while a measured root
function runs in a thread (and in the threads that thread starts meanwhile):

* *files*: the distinct files of ``bot/`` in which a function ran;
* *calls*: function calls into code of ``bot/`` (comprehensions and generator resumptions not counted);
* *state entries*: calls into ``bot/state/`` from outside it (the nearest ``bot/`` frame up the stack is
  not in ``bot/state/``), and how many of them came before the first call into ``bot/postgres/signals.py``
  (before the click acts).
"""

from __future__ import annotations

import argparse
import dis
import functools
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from psycopg import sql as pgsql

import bot
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import click, request_kill, wait_state
from tests.harness.pgcluster import ClusterPair, start_pair
from tests.harness.waiting import wait_until

BOT_DIR = str(Path(bot.__file__).resolve().parent) + "/"
STATE_DIR = BOT_DIR + "state/"
ACTS_IN = BOT_DIR + "postgres/signals.py"
NOT_CALLS = frozenset({"<listcomp>", "<genexpr>", "<dictcomp>", "<setcomp>"})
GENERATOR_FLAGS = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
START = threading.Thread.start.__code__
ALERT_CHANNEL = "C0PATHSALERT"
GOAL = 8


@functools.cache
def first_resume(code: CodeType) -> int:
    """Where a generator's body starts: its frame stands there when it is entered the first time, further on
    when it is resumed (CPython 3.11+: the RESUME instruction)."""
    return next((i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), 0)


def rel(path: str) -> str:
    return "bot/" + path[len(BOT_DIR):]


@dataclass
class Record:
    """What one run of a root function entered."""

    root: str
    files: Counter[str] = field(default_factory=Counter)  # file -> calls
    calls: int = 0
    state_entries: int = 0
    state_before_acting: int | None = None  # frozen at the first call into ACTS_IN
    hops: list[tuple[str, str, str]] = field(default_factory=list)  # (from file, to file, function)
    done: bool = False

    def note(self, frame: FrameType) -> None:
        code = frame.f_code
        path = code.co_filename
        if code.co_name in NOT_CALLS:
            return
        if code.co_flags & GENERATOR_FLAGS and frame.f_lasti > first_resume(code):
            return  # a generator resumed (a context manager's exit): not a new call
        self.calls += 1
        self.files[path] += 1
        caller = frame.f_back
        while caller is not None and not caller.f_code.co_filename.startswith(BOT_DIR):
            caller = caller.f_back
        caller_path = caller.f_code.co_filename if caller is not None else ""
        if caller_path != path:
            self.hops.append((rel(caller_path) if caller_path else "(outside bot/)", rel(path), code.co_qualname))
        if path.startswith(STATE_DIR) and not caller_path.startswith(STATE_DIR):
            self.state_entries += 1
        if path == ACTS_IN and self.state_before_acting is None:
            self.state_before_acting = self.state_entries


class Probe:
    """Records a :class:`Record` for every run of a root function (``file of bot/``, qualified name)."""

    def __init__(self) -> None:
        self.roots: dict[tuple[str, str], str] = {}
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._active: dict[int, tuple[Record, FrameType | None]] = {}  # thread id -> (record, root frame)
        self._children: dict[threading.Thread, Record] = {}

    def measure(self, file: str, qualname: str) -> None:
        self.roots[(BOT_DIR + file, qualname)] = f"{file}:{qualname}"

    def stop_measuring(self) -> None:
        self.roots.clear()

    def install(self) -> None:
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)

    def uninstall(self) -> None:
        threading.setprofile(None)
        sys.setprofile(None)

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        ident = threading.get_ident()
        active = self._active.get(ident)
        if event == "return":
            if active is not None and active[1] is frame:
                active[0].done = True
                del self._active[ident]
            return
        if event != "call":
            return
        code = frame.f_code
        if active is None:
            me = threading.current_thread()
            record = self._children.pop(me, None) if self._children else None
            if record is not None:
                active = self._active[ident] = (record, None)  # a thread the measured one started
            else:
                if not code.co_filename.startswith(BOT_DIR) or not self.roots:
                    return
                root = self.roots.get((code.co_filename, code.co_qualname))
                if root is None:
                    return
                record = Record(root)
                with self._lock:
                    self.records.append(record)
                active = self._active[ident] = (record, frame)
        if code is START:
            thread = frame.f_locals.get("self")
            if isinstance(thread, threading.Thread):
                self._children[thread] = active[0]
            return
        if code.co_filename.startswith(BOT_DIR):
            active[0].note(frame)

    def runs_of(self, root: str) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.root == root]


def report(title: str, record: Record, verbose: bool) -> dict[str, Any]:
    state_files = [f for f in record.files if f.startswith(STATE_DIR)]
    print(f"{title}: {len(record.files)} files of bot/, {record.calls} calls, {record.state_entries} entries "
          f"into bot/state/" + (f" ({record.state_before_acting} before it acts)"
                                if record.state_before_acting is not None else ""), flush=True)
    for path, n in sorted(record.files.items(), key=lambda kv: rel(kv[0])):
        print(f"    {rel(path):40} {n:5} calls")
    if verbose:
        print("  hops between files, in order:")
        for src, dst, fn in record.hops:
            print(f"    {src} -> {dst} {fn}")
    return {"files": len(record.files), "calls": record.calls, "state_entries": record.state_entries,
            "state_before_acting": record.state_before_acting, "state_files": len(state_files)}


# --- the Approve click -------------------------------------------------------------------------------


def victim(pair: ClusterPair, app: str) -> Any:
    conn = pair.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    return conn


def approve_path(pair: ClusterPair, probe: Probe, verbose: bool) -> dict[str, Any]:
    fake = FakeSlack(token="xoxb-test").start()
    fake.usergroups = {"S0DBAS": ["U7", "U8"]}
    env = env_config(pair, access={"requesters": ["*"], "approvers": ["U2", "S0DBAS"]})
    conns = []
    try:
        with BotUnderTest({"environments": {"test": env}}, fake) as b:
            for measured in (False, True):  # the first one warms the bot up
                app = "paths-" + uuid.uuid4().hex[:8]
                conn = victim(pair, app)
                conns.append(conn)
                msg = request_kill(b, "test", app, conn.info.backend_pid, "Terminate", user="U1")
                if measured:
                    probe.measure("slack/kill_handlers.py", "register.<locals>.on_decide")
                click(b, msg, "Approve", "U2")
                wait_state(b, msg, "*Done*", timeout=30)
                if measured:
                    runs = wait_until(lambda: [r for r in probe.runs_of("slack/kill_handlers.py:register.<locals>"
                                                                          ".on_decide") if r.done], 30,
                                      "the Approve listener returned")
                    probe.stop_measuring()
                    return report("Approve click (kill_handlers.on_decide -> signal -> redraw)", runs[0], verbose)
    finally:
        probe.stop_measuring()
        for c in conns:
            c.close()
        fake.stop()
    raise AssertionError("unreachable")


# --- an alert ----------------------------------------------------------------------------------------


def alert_path(pair: ClusterPair, probe: Probe, verbose: bool) -> dict[str, Any]:
    fake = FakeSlack(token="xoxb-test").start()
    env = env_config(pair, watch={"channel": ALERT_CHANNEL, "check_every": "1s", "consecutive": 2,
                                  "remind_every": "1h", "idle_in_transaction": "1s"})
    table = pgsql.Identifier("paths_" + uuid.uuid4().hex[:8])
    for stmt in ("CREATE TABLE {} (id int PRIMARY KEY, v text)", "INSERT INTO {} VALUES (1, 'x')",
                 "ALTER TABLE {} OWNER TO app_user"):
        pair.primary.sql(pgsql.SQL(stmt).format(table), dbname="appdb")
    root = "watch/watcher.py:Watcher.check"
    holder = None
    try:
        with BotUnderTest({"environments": {"prod": env}}, fake, scheduler=True):
            probe.measure(*root.split(":"))
            time.sleep(2.5)  # a few quiet checks first: the alerting one runs on a warm bot
            holder = pair.primary.connect(user="app_user", dbname="appdb", application_name="paths-idle-tx",
                                          autocommit=False)
            holder.execute(pgsql.SQL("UPDATE {} SET v = 'held' WHERE id = 1").format(table))
            wait_until(lambda: [c for c in fake.calls_for("chat.postMessage")
                                if c.params.get("channel") == ALERT_CHANNEL], 30, "the alert\n" + fake.summary())

            def drawing_tick() -> Record | None:  # the tick that drew the alert (entered bot/render/)
                return next((r for r in probe.runs_of(root) if r.done
                             and any(f.startswith(BOT_DIR + "render/") for f in r.files)), None)

            tick = wait_until(drawing_tick, 30, "the check that opened the alert returned")
            assert tick is not None
            probe.stop_measuring()
            return report("Alert (Watcher.check tick -> post with buttons handed to the outbox)", tick, verbose)
    finally:
        probe.stop_measuring()
        if holder is not None:
            holder.close()
        fake.stop()


def measure(verbose: bool = False, pair: ClusterPair | None = None) -> dict[str, dict[str, Any]]:
    own = pair is None
    pair = pair or start_pair(standby=False)
    probe = Probe()
    probe.install()
    try:
        return {"approve": approve_path(pair, probe, verbose), "alert": alert_path(pair, probe, verbose)}
    finally:
        probe.uninstall()
        if own:
            pair.stop()


def run(record: Any, ms: Any) -> None:
    """For ``make bench``: the two figures beside the issue's aim (at most 8 files each)."""
    print("paths: one Approve click and one alert through bot/ (files, calls, state entries)", flush=True)
    figures = measure()
    for name, f in (("Approve click", figures["approve"]), ("alert tick", figures["alert"])):
        record(f"{name}: files of bot/ / calls / state entries", f"{f['files']} / {f['calls']} / {f['state_entries']}",
               goal=f"files <= {GOAL} (issue 22's aim)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paths", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="also print every hop between two files")
    args = parser.parse_args()
    figures = measure(args.verbose)
    print()
    print("| path | files of bot/ | calls | state entries (before acting) |\n| --- | --- | --- | --- |")
    for name, f in figures.items():
        before = f" ({f['state_before_acting']})" if f["state_before_acting"] is not None else ""
        print(f"| {name} | {f['files']} | {f['calls']} | {f['state_entries']}{before} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
