"""``make demo`` (``python -m bot.shell.demo``): every feature of the bot in a minute, without Slack.

Starts a throw-away PostgreSQL primary and streaming hot standby from the machine's server binaries,
makes trouble in them (a long-running query, an idle transaction blocking an update, a pool of idle
connections from one application, a standby query holding replay back while the primary keeps
writing), writes a config with a lag alert, and opens the terminal chat on them. Quitting (``quit``,
Ctrl-D, Ctrl-C, or an error) stops both servers and removes everything the demo created.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import yaml

from bot.config import load_config
from bot.logs import setup_logging
from bot.shell.cli import _interrupt_on
from bot.shell.cluster import ClusterError, Pair, Server, start_pair
from bot.shell.console import Shell
from bot.shell.localconfig import APPROVER_ID, APPROVER_NAME, YOU_ID, channel_name, local_user_name
from bot.shell.terminal import text_stream

ALERT_CHANNEL = "C0ALERTS"
POOL_SIZE = 8
REPORT_SQL = "SELECT account, sum(amount) FROM orders, pg_sleep(3600) GROUP BY account"
BLOCKER_SQL = "UPDATE accounts SET balance = balance - 10 WHERE id = 1"
BLOCKED_SQL = "UPDATE accounts SET balance = balance + 10 WHERE id = 1"
ANALYTICS_SQL = "SELECT kind, count(*) FROM events, pg_sleep(3600) GROUP BY kind"
THRESHOLD = 3.0
IDLE_THRESHOLD = 10.0


def prepare(pair: Pair) -> None:
    """The bot's role, an application role and database, and a few tables with rows."""
    p = pair.primary
    p.sql("CREATE ROLE pgsessions_bot LOGIN")
    p.sql("GRANT pg_read_all_stats, pg_signal_backend TO pgsessions_bot")  # the least the bot needs
    p.sql("CREATE ROLE app_user LOGIN")
    p.sql("CREATE DATABASE appdb OWNER app_user")
    with p.connect(user="app_user", dbname="appdb") as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL)")
        conn.execute("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 100) g")
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, account int, amount numeric, "
                     "at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO orders (account, amount) SELECT g % 100 + 1, g FROM generate_series(1, 1000) g")
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, kind text, at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO events (kind) SELECT (ARRAY['view','click','buy'])[g % 3 + 1] "
                     "FROM generate_series(1, 1000) g")
    pair.wait_replayed()


class Trouble:
    """The sessions that need attention, kept open until :meth:`stop`."""

    def __init__(self, pair: Pair):
        self.pair = pair
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.started = time.monotonic()

    def _conn(self, server: Server, app: str, autocommit: bool = True) -> psycopg.Connection[tuple[Any, ...]]:
        conn = server.connect(user="app_user", dbname="appdb", autocommit=autocommit, application_name=app)
        self.conns.append(conn)
        return conn

    def _background(self, conn: psycopg.Connection, sql: str) -> None:
        def run() -> None:
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql)

        t = threading.Thread(target=run, daemon=True, name="demo-" + sql[:20])
        t.start()
        self.threads.append(t)

    def _wait(self, server: Server, sql: str, params: Sequence[Any] | None, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not server.sql(sql, params):
            if time.monotonic() > deadline:
                raise ClusterError(f"the demo could not set up {what}")
            time.sleep(0.02)

    def start(self) -> Trouble:
        p, s = self.pair.primary, self.pair.standby
        assert s is not None
        # a report that runs for an hour
        self._background(self._conn(p, "monthly-report"), REPORT_SQL)
        # an idle transaction holding a row lock, and the update that waits for it
        blocker = self._conn(p, "billing-worker", autocommit=False)
        blocker.execute(BLOCKER_SQL)
        self._background(self._conn(p, "checkout"), BLOCKED_SQL)
        # a pool of idle connections from one application
        for _ in range(POOL_SIZE):
            self._conn(p, "api-pool").execute("SELECT 1")
        # on the standby, a query that holds replay back once the primary changes its table
        self._background(self._conn(s, "analytics"), ANALYTICS_SQL)
        self._wait(s, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'analytics' AND state = 'active'",
                   None, "the standby query")
        with p.connect(user="app_user", dbname="appdb") as conn:
            conn.execute("ALTER TABLE events ADD COLUMN source text")
        writer = threading.Thread(target=self._write, daemon=True, name="demo-writer")
        writer.start()
        self.threads.append(writer)
        self._wait(p, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'checkout' AND wait_event_type = 'Lock'",
                   None, "the blocked update")
        self.started = time.monotonic()
        return self

    def _write(self) -> None:
        """The shop keeps taking orders on the primary (the standby cannot replay them)."""
        try:
            with self.pair.primary.connect(user="app_user", dbname="appdb", application_name="shop") as conn:
                n = 0
                while not self.stopping.wait(0.5):
                    n += 1
                    conn.execute("INSERT INTO orders (account, amount) VALUES (%s, %s)", (n % 100 + 1, n))
        except psycopg.Error:
            pass

    def old_enough(self) -> None:
        """Wait until the trouble has passed the listing thresholds, so the first listing shows it."""
        left = self.started + THRESHOLD + 0.5 - time.monotonic()
        if left > 0:
            time.sleep(left)

    def stop(self) -> None:
        self.stopping.set()
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.close()


def config_for(pair: Pair) -> dict[str, Any]:
    assert pair.standby is not None
    return {
        "environments": {
            "demo": {
                "dsn": pair.primary.dsn(user="pgsessions_bot"),
                "standbys": {"replica1": pair.standby.dsn(user="pgsessions_bot")},
                "thresholds": {"long_running": f"{THRESHOLD:g}s", "idle_in_transaction": f"{THRESHOLD:g}s",
                               "idle": f"{IDLE_THRESHOLD:g}s"},
                "timeouts": {"connect": "3s", "statement": "5s"},
                "access": {"requesters": ["*"], "approvers": [YOU_ID, APPROVER_ID], "self_approval": False},
                "lag_alert": {"channel": ALERT_CHANNEL, "threshold": "5s", "check_every": "2s", "consecutive": 2,
                              "remind_every": "10m"},
            }
        },
        "users": {local_user_name(): YOU_ID, APPROVER_NAME: APPROVER_ID},
    }


def banner(pair: Pair, config_path: str) -> list[str]:
    assert pair.standby is not None
    return [
        f"Demo servers: primary 127.0.0.1:{pair.primary.port}, standby replica1 127.0.0.1:{pair.standby.port} "
        f"(in {pair.base}; config {config_path}).",
        "Trouble running now:",
        "  - monthly-report runs a query for an hour",
        "  - billing-worker sits idle in a transaction holding a row lock; checkout's UPDATE waits for it",
        f"  - api-pool keeps {POOL_SIZE} idle connections open (listed once idle for {IDLE_THRESHOLD:g} s)",
        f"  - on replica1, an analytics query holds replay back while the shop keeps writing: "
        f"a lag alert appears in #{channel_name(ALERT_CHANNEL)} within about 10 s",
        "Try: `demo`, `demo replica1`, `demo idle --app api-pool`, `demo lag`, `click N` on a button, "
        f"`as {APPROVER_NAME}` to approve.",
        "Quitting (quit, Ctrl-D or Ctrl-C) stops and removes both servers.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.shell.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="ERROR", help="the bot's log lines on stderr (default ERROR)")
    parser.add_argument("--wait", dest="settle_limit", type=float, default=15.0,
                        help="the longest wait for the bot's answer before the next line is read")
    args = parser.parse_args(argv)
    setup_logging("text", args.log_level)
    _interrupt_on(signal.SIGTERM, signal.SIGHUP)
    out = text_stream(sys.stdout)
    pair: Pair | None = None
    trouble: Trouble | None = None
    shell: Shell | None = None
    try:
        print("Starting a throw-away PostgreSQL primary and streaming standby ...", file=out, flush=True)
        pair = start_pair()
        prepare(pair)
        trouble = Trouble(pair).start()
        config_path = f"{pair.base}/demo.yml"
        with open(config_path, "w") as fh:
            fh.write("# written by `make demo`; removed when the demo ends\n")
            yaml.safe_dump(config_for(pair), fh, sort_keys=False)
        shell = Shell(load_config(config_path), banner=banner(pair, config_path), out=out,
                      settle_limit=args.settle_limit)
        shell.start()
        trouble.old_enough()
        return shell.run()
    except ClusterError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        # each step on its own, so that an interrupt or error in one still removes the rest
        for step in (
            (lambda: shell.close()) if shell else None,
            (lambda: trouble.stopping.set()) if trouble else None,
            (lambda: pair.stop()) if pair else None,  # a fast shutdown ends the trouble's sessions
            (lambda: trouble.stop()) if trouble else None,
        ):
            if step is None:
                continue
            try:
                step()
            except KeyboardInterrupt:
                step()
            except Exception as exc:  # keep cleaning up
                print(f"make demo: while cleaning up: {exc!r}", file=sys.stderr)
        if pair is not None:
            print(f"Stopped the demo servers and removed {pair.base}.", file=out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
