"""``pgsessions shell``: the subcommand (plugged into bot/cli.py through ``add_parser``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import psycopg
from slack_bolt.error import BoltError
from slack_sdk.errors import SlackApiError

from bot.cli_common import Subparsers, load_or_exit
from bot.config import Config
from bot.postgres.pools import DatabaseUnavailable, explain
from bot.postgres.sql import unsupported_conn
from bot.runtime import Runtime
from bot.shell.console import Shell
from bot.shell.localconfig import NO_POSTGRES, builtin_config, local_dsn
from bot.shell.terminal import text_stream

DESCRIPTION = """\
Chat with the bot in this terminal, without Slack: the same app and handlers as `serve`, with the
terminal standing in for Slack. Without --config it uses $PGSESSIONS_CONFIG, ./pgsessions.yml, or a
built-in config for the local PostgreSQL (libpq defaults) with two people, you and `approver`.
Commands can come from a script on standard input: pgsessions shell < script.txt"""


def add_parser(subparsers: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = subparsers.add_parser(
        "shell", help="chat with the bot in this terminal (no Slack needed)", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p)
    p.add_argument("--as", dest="as_user", metavar="NAME|ID",
                   help="who you are at first (a name from the config's users, or a Slack id; default: the first user)")
    p.add_argument("--channel", metavar="ID", help="the channel you type in (default: #shell)")
    p.add_argument("--state", metavar="URL",
                   help="the bot's own state: a throw-away SQLite file unless given; 'config' uses the config's "
                   "(careful: a state shared with a running bot shares its requests and alerts)")
    p.add_argument("--wait", dest="settle_limit", type=float, default=15.0, metavar="SECONDS",
                   help="the longest wait for the bot's answer before the next line is read (default 15)")
    # quieter than `serve`: the chat is the output (the bot's warnings, e.g. about lag, are in the chat
    # anyway); --log-level WARNING or INFO shows its log lines on stderr
    p.set_defaults(func=run, config=None, log_level=os.environ.get("LOG_LEVEL", "ERROR"))


def resolve_config(path: str | None) -> tuple[Config | None, str]:
    """(config, where it came from); (None, "built-in") when the built-in local config is to be used."""
    if path:
        return load_or_exit(path), path
    env_path = os.environ.get("PGSESSIONS_CONFIG")
    if env_path:
        return load_or_exit(env_path), env_path
    if Path("pgsessions.yml").exists():
        return load_or_exit("pgsessions.yml"), "pgsessions.yml"
    return None, "built-in"


def check_local_postgres(config: Config) -> str | None:
    """Why the built-in config's PostgreSQL cannot be used, or None (see :func:`local_refusal`)."""
    env = config.environments["local"]
    try:
        with psycopg.connect(env.dsn, connect_timeout=int(env.timeouts.connect), autocommit=True) as conn:
            conn.execute("SELECT 1")
            refused = unsupported_conn(conn)
    except psycopg.Error as exc:
        return explain(exc, (env.timeouts.connect, env.timeouts.statement))
    return f"{UNSUPPORTED}{refused}" if refused else None


UNSUPPORTED = "it answered, but "  # check_local_postgres: the server is there and too old


def local_refusal(dsn: str, reason: str) -> str:
    """What the terminal chat says when the built-in config's PostgreSQL cannot be used."""
    if reason.startswith(UNSUPPORTED):  # "PostgreSQL 12.22 is not supported (13 or newer)"
        return f"pgsessions shell: the PostgreSQL at {dsn}: {reason.removeprefix(UNSUPPORTED)}"
    return NO_POSTGRES.format(dsn=dsn, reason=reason)


def describe_hosts(rt: Runtime) -> list[str]:
    """One line per configured server: its version and the role the bot uses, or why it is unavailable."""
    targets = [(env, host) for env, e in rt.config.environments.items() for host in e.hosts()]

    def probe(target: tuple[str, str]) -> str:
        env, host = target
        try:
            with rt.dbs.connection(env, host, op="shell_check") as conn:
                row = conn.execute(
                    "SELECT current_setting('server_version'), current_user, pg_is_in_recovery()"
                ).fetchone()
        except DatabaseUnavailable as exc:
            return f"! {env} {host}: {exc.reason}"
        except Exception as exc:  # only a startup hint
            return f"! {env} {host}: {type(exc).__name__}"
        if row is None:
            return f"! {env} {host}: no answer"
        version, user, standby = row
        role = "standby" if standby else "primary"
        warn = "" if (host == "primary") != bool(standby) else f" (but it is a {role})"
        return f"  {env} {host}: PostgreSQL {str(version).split()[0]} as {user}{warn}"

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return list(pool.map(probe, targets))


def _interrupt_on(*signals: int) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    for s in signals:
        try:
            signal.signal(s, handler)
        except (ValueError, OSError):  # not the main thread / not supported
            pass


def run(args: argparse.Namespace) -> int:
    config, origin = resolve_config(args.config)
    out = text_stream(sys.stdout)
    banner: list[str] = []
    if config is None:
        config = builtin_config()
        reason = check_local_postgres(config)
        if reason is not None:
            print(local_refusal(repr(local_dsn()), reason), file=sys.stderr)
            return 2
        banner.append("(no config file: using the local PostgreSQL with libpq defaults; "
                      "--config FILE for your own)")
    try:
        shell = Shell(config, user=args.as_user, channel=args.channel, state=args.state, out=out,
                      settle_limit=args.settle_limit)
    except ValueError as exc:
        print(f"pgsessions shell: --as: {exc}", file=sys.stderr)
        return 2
    _interrupt_on(signal.SIGTERM, signal.SIGHUP)
    try:
        try:
            shell.start()
        except (BoltError, SlackApiError) as exc:
            print(f"pgsessions shell: the bot did not start: {exc}", file=sys.stderr)
            return 2
        hosts = describe_hosts(shell.rt) if shell.rt is not None else []
        if hosts:
            banner = ["Servers:", *hosts, *banner]
        shell.banner = banner
        return shell.run()
    except KeyboardInterrupt:
        return 0
    finally:
        shell.close()
