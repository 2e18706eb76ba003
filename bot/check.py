"""``pgsessions check``: is this deployment ready? One answer per environment and standby.

Checks, all hosts concurrently and each bounded by its environment's connect and statement timeouts:

* the config file is valid (a config error prints the key-naming message and exits 2);
* every primary and standby is reachable (and how long connecting took), its server version (13 or newer)
  and what that version enables (:class:`bot.postgres.sql.Features`);
* the role is a superuser or has the privileges of ``pg_read_all_stats`` and ``pg_signal_backend``
  (``pg_monitor`` is not required), and what each feature loses without them (:data:`bot.check_servers.LOST_WITHOUT`);
* every standby is really in recovery and every primary is not, and a standby is a copy of its
  primary (same system identifier, when the role may read it);
* every PgBouncer in ``poolers:`` answers on its admin console: its version and the features the bot
  uses there (Disconnect client needs ``KILL_CLIENT``, 1.24+, and a user in ``admin_users``);
* the state store is reachable and writable;
* when ``SLACK_BOT_TOKEN`` is set: ``auth.test`` passes and the token has the bot's scopes (from the
  ``x-oauth-scopes`` response header); with ``SLACK_APP_TOKEN`` the app-level token opens a
  Socket Mode connection URL.

Exit status: 0 when everything needed is there (warnings allowed unless ``--strict``), 1 when
something is missing, 2 for a configuration error. Nothing printed ever contains a secret: targets
are shown as ``host:port/db as user`` and every line goes through :func:`bot.secrets.scrub`.

This module runs the checks concurrently and is the subcommand; the checks of the monitored servers
(hosts, poolers) are :mod:`bot.check_servers`, of the state store and Slack :mod:`bot.check_services`,
and the reports, their text and JSON and the config's own warnings :mod:`bot.check_report`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bot.check_report import (  # noqa: F401 - re-exported: the reports are imported from here too
    _RANK,
    FAIL,
    OK,
    SKIP,
    WARN,
    Finding,
    HostReport,
    Part,
    PoolerReport,
    SlackReport,
    StateReport,
    render_json,
    render_poolers_text,
    render_text,
)
from bot.check_report import config_warnings as config_warnings
from bot.check_report import open_access_warnings as open_access_warnings
from bot.check_servers import check_host, check_pooler, compare_identifiers
from bot.check_services import check_slack, describe_state
from bot.check_services import check_state as check_state  # re-exported: the checks are imported from here
from bot.check_services import shared_channel_warnings as shared_channel_warnings
from bot.cli_common import Subparsers
from bot.config import Config, ConfigError, load_config
from bot.fleet.shards import watched_envs
from bot.postgres import pgbouncer
from bot.render.common import visible
from bot.secrets import safe_dsn, scrub

# --- running everything concurrently -------------------------------------------------------------


def _run_all(tasks: list[tuple[Callable[[], Part], float, Callable[[str], Part]]]) -> list[Part]:
    """Run every task in its own daemon thread; a task past its deadline becomes its timeout report."""
    results: list[Part | None] = [None] * len(tasks)
    threads = []

    def runner(i: int, fn: Callable[[], Part], on_timeout: Callable[[str], Part]) -> None:
        try:
            results[i] = fn()
        except Exception as exc:  # a bug in a check must not hide the others
            results[i] = on_timeout(f"the check itself failed: {type(exc).__name__}: {scrub(str(exc))[:200]}")

    for i, (fn, _deadline, on_timeout) in enumerate(tasks):
        t = threading.Thread(target=runner, args=(i, fn, on_timeout), name=f"pgs-check-{i}", daemon=True)
        t.start()
        threads.append(t)
    started = time.monotonic()
    for i, (t, (_fn, deadline, on_timeout)) in enumerate(zip(threads, tasks, strict=True)):
        t.join(max(0.0, started + deadline - time.monotonic()))
        if results[i] is None:
            results[i] = on_timeout(f"no answer within {deadline:g}s")
    return [r for r in results if r is not None]


def _failed(report_cls: Callable[..., Part], check: str, **kw: Any) -> Callable[[str], Part]:
    def make(message: str) -> Part:
        r: Part = report_cls(**kw)
        r.add(FAIL, check, message)
        return r

    return make


def run_checks(config: Config, environ: dict[str, str], envs: list[str] | None = None,
               slack: bool = True) -> tuple[list[HostReport], StateReport, SlackReport]:
    tasks: list[tuple[Callable[[], Part], float, Callable[[str], Part]]] = []
    for env_name, environment in config.environments.items():
        if envs and env_name not in envs:
            continue
        kill_allowed = environment.access.allow_kill
        deadline = environment.timeouts.connect + 2 * environment.timeouts.statement + 5
        for host, dsn in environment.hosts().items():
            tasks.append((
                functools.partial(check_host, env_name, host, dsn, environment, kill_allowed),
                deadline,
                _failed(HostReport, "reachable", env=env_name, host=host,
                        role="primary" if host == "primary" else "standby", target=safe_dsn(dsn)),
            ))
    n_hosts = len(tasks)
    watched = sorted(watched_envs(config))
    tasks.append((lambda: check_state(config.state, watched), 30.0,
                  _failed(StateReport, "writable", target=describe_state(config.state))))
    if slack:
        tasks.append((lambda: check_slack(environ), 30.0, _failed(SlackReport, "auth.test")))
    results = _run_all(tasks)
    hosts = [r for r in results[:n_hosts] if isinstance(r, HostReport)]
    compare_identifiers(hosts)
    state = results[n_hosts]
    if slack:
        slack_report = results[n_hosts + 1]
    else:
        slack_report = SlackReport()
        slack_report.add(SKIP, "auth.test", "skipped (--no-slack)")
    assert isinstance(state, StateReport) and isinstance(slack_report, SlackReport)
    return hosts, state, slack_report


def check_poolers(config: Config, envs: list[str] | None = None) -> list[PoolerReport]:
    """Every configured pooler, concurrently, each bounded by its own timeouts."""
    tasks: list[tuple[Callable[[], Part], float, Callable[[str], Part]]] = []
    for env_name, environment in config.environments.items():
        if envs and env_name not in envs:
            continue
        for name, pooler in environment.poolers.items():
            tasks.append((functools.partial(check_pooler, env_name, name, pooler), pgbouncer.deadline_of(pooler) + 2,
                          _failed(PoolerReport, "reachable", env=env_name, name=name, host=pooler.host,
                                  target=safe_dsn(pooler.dsn))))
    return [r for r in _run_all(tasks) if isinstance(r, PoolerReport)]


# --- CLI ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    path = args.config
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"pgsessions: configuration error in {path}:\n{exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "config": {"path": path, "ok": False, "error": scrub(str(exc))}}, indent=2))
        return 2
    envs = args.env or None
    if envs:
        unknown = [e for e in envs if e not in config.environments]
        if unknown:
            print(f"pgsessions: no environment called {', '.join(unknown)} in {path} "
                  f"(known: {', '.join(config.environments)})", file=sys.stderr)
            return 2
    hosts, state, slack = run_checks(config, dict(os.environ), envs, slack=not args.no_slack)
    poolers = check_poolers(config, envs)
    extra = config_warnings(config, envs)
    if not args.no_slack:
        extra += shared_channel_warnings(config, dict(os.environ), envs)
    statuses = [r.status for r in hosts] + [r.status for r in poolers] + [state.status, slack.status] + [
        f.level for f in extra]
    ok = FAIL not in statuses and not (args.strict and WARN in statuses)
    if args.json:
        out = json.loads(render_json(path, hosts, state, slack, extra, ok))
        if poolers:
            out["poolers"] = [{**asdict(r), "status": r.status} for r in poolers]
        print(scrub(json.dumps(out, indent=2, default=str)))
    else:
        # server strings (role names, versions, errors) reach a terminal: no control character is obeyed
        text = render_text(path, hosts, state, slack, extra, args.strict)
        if poolers:
            head, sep, tail = text.rpartition("\n\n")
            text = head + scrub("\n".join(render_poolers_text(poolers))) + sep + tail
        print("\n".join(visible(line) for line in text.split("\n")))
    return 0 if ok else 1


def add_parser(subparsers: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = subparsers.add_parser(
        "check",
        help="check the config, every database, the state store and the Slack token; exit 1 if not ready",
        description="Check that this deployment is ready: config, database reachability, server versions, the "
        "role's privileges, standby/primary roles, the state store and the Slack token and scopes. "
        "Exit 0 ready, 1 something missing, 2 configuration error.",
    )
    common(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--env", action="append", metavar="NAME", help="check only this environment (repeatable)")
    p.add_argument("--no-slack", action="store_true", help="do not call Slack even when SLACK_BOT_TOKEN is set")
    p.add_argument("--strict", action="store_true", help="warnings also make the exit status 1")
    p.set_defaults(func=run)
