"""``pgsessions check``: is this deployment ready? One answer per environment and standby.

Checks, all hosts concurrently and each bounded by its environment's connect and statement timeouts:

* the config file is valid (a config error prints the key-naming message and exits 2);
* every primary and standby is reachable (and how long connecting took), its server version (13 or newer)
  and what that version enables (:class:`bot.postgres.sql.Features`);
* the role is a superuser or has the privileges of ``pg_read_all_stats`` and ``pg_signal_backend``
  (``pg_monitor`` is not required), and what each feature loses without them (:data:`LOST_WITHOUT`);
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

import psycopg
from psycopg.rows import dict_row
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

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
from bot.cli_common import Subparsers
from bot.config import Config, ConfigError, Environment, Pooler, load_config
from bot.fleet.shards import watched_envs
from bot.postgres import pgbouncer
from bot.postgres.activity import server_info
from bot.postgres.models import ServerInfo
from bot.postgres.pooler_models import KILL_CLIENT_SINCE
from bot.postgres.pooler_models import version_text as pooler_version_text
from bot.postgres.pools import connect_bounded, explain
from bot.postgres.sql import features, query, unsupported, version_text
from bot.render.common import visible
from bot.runtime import SlackSettings
from bot.secrets import safe_dsn, scrub
from bot.state.shards import ShardStore
from bot.state.store import StateStore

REQUIRED_SCOPES = ("commands", "chat:write", "chat:write.public", "users:read", "usergroups:read")
# Scopes of the features around the core (manifest.yml); without them the core still works (a warning).
FEATURE_SCOPES = ("app_mentions:read",)
# What stops working without each scope (the same reasons as the comments in manifest.yml).
SCOPE_NEEDED_FOR = {
    "commands": "/pgsessions does not reach the bot",
    "chat:write": "no listing, approval request, lag alert or direct message can be posted",
    "chat:write.public": "the bot cannot post in public channels it was not invited to",
    "users:read": "people's names are missing from messages",
    "usergroups:read": "approvers given as user groups (S…) are never recognised",
    "app_mentions:read": "@pgsessions mentions in channels and threads are not delivered to the bot",
}
CHECK_APPLICATION_NAME = "pgsessions-check"

# --- hosts ----------------------------------------------------------------------------------------


def _platform(extra: dict[str, Any]) -> str:
    if extra.get("has_rds_roles"):
        return "RDS/Aurora"
    if extra.get("has_cloudsql_roles"):
        return "Cloud SQL"
    if extra.get("has_azure_roles"):
        return "Azure"
    return "self-hosted"


def _grant_hint(report: HostReport, role: str) -> str:
    who = report.user or "the bot's role"
    by = {
        "RDS/Aurora": " (as the master user, a member of rds_superuser)",
        "Cloud SQL": " (as a member of cloudsqlsuperuser, e.g. the postgres user)",
        "Azure": " (as a member of azure_pg_admin)",
    }.get(report.platform or "", " (as a superuser)")
    return f"GRANT {role} TO {who};{by}"


def _reserved_slots(report: HostReport, info: ServerInfo, extra: dict[str, Any]) -> None:
    """Can the bot's role still connect once every ordinary slot is taken? (see docs/operating.md)"""
    who = info.bot_user
    su = extra.get("superuser_reserved_connections") or 0
    reserved = extra.get("reserved_connections")
    if info.bot_is_superuser:
        report.reserved_slots = f"superuser ({su})"
        report.add(OK, "reserved_slots", f"{who} is a superuser: it may use the {su} superuser_reserved_connections "
                   "slots when the server is full")
    elif info.server_version_num >= 160000 and extra.get("can_use_reserved"):
        if reserved:
            report.reserved_slots = f"pg_use_reserved_connections ({reserved})"
            report.add(OK, "reserved_slots", f"{who} has pg_use_reserved_connections: it may use the {reserved} "
                       "reserved_connections slots when the server is full")
        else:
            report.reserved_slots = "none (reserved_connections = 0)"
            report.add(WARN, "reserved_slots", f"{who} has pg_use_reserved_connections but reserved_connections is 0: "
                       "set reserved_connections = 3 (needs a restart) so that the bot can connect to a full server")
    elif info.server_version_num >= 160000:
        report.reserved_slots = "none"
        report.add(WARN, "reserved_slots", f"{who} may not use reserved connection slots: on a full server only the "
                   "one connection the bot keeps open works. " + _grant_hint(report, "pg_use_reserved_connections")
                   + " and set reserved_connections > 0")
    else:
        version = info.server_version.split(" ")[0]
        report.reserved_slots = f"none (PostgreSQL {version})"
        report.add(OK, "reserved_slots", f"{who} may not use reserved connection slots (PostgreSQL {version} keeps "
                   "them for superusers only; reserved_connections came in 16): on a full server the bot works "
                   "through the one connection it keeps open from start-up; see docs/operating.md")


def check_host(env: str, host: str, dsn: str, environment: Environment, kill_allowed: bool) -> HostReport:
    report = HostReport(env=env, host=host, role="primary" if host == "primary" else "standby", target=safe_dsn(dsn))
    ct, st = environment.timeouts.connect, environment.timeouts.statement
    started = time.monotonic()
    try:
        # bounded like the bot's own connections: a frozen server costs a deadline, not the whole check
        conn = connect_bounded(dsn, ct, st, application_name=CHECK_APPLICATION_NAME)
    except Exception as exc:
        report.add(FAIL, "reachable", f"unreachable: {explain(exc, (ct, st))}")
        return report
    report.connect_ms = round((time.monotonic() - started) * 1000, 1)
    # the version the server reported when the connection started: an unsupported one is refused here
    report.server_version_num = conn.info.server_version
    report.server_version = version_text(conn.info.server_version, conn.info.parameter_status("server_version"))
    refused = unsupported(report.server_version_num, report.server_version)
    if refused is not None:
        conn.close()
        report.add(OK, "reachable", f"connected in {report.connect_ms:.0f} ms")
        report.add(FAIL, "version", f"{refused}: the bot does not use this server; upgrade it")
        return report
    try:
        with conn:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{int(st * 1000)}ms",))
            info = server_info(conn)
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query("check_host", conn))
                extra = cur.fetchone() or {}
            try:
                row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
                report.system_identifier = row[0] if row else None
            except psycopg.Error:
                report.system_identifier = None  # not readable for this role: the comparison is skipped
    except Exception as exc:
        report.add(FAIL, "reachable", f"connected, but the checks failed: {explain(exc, (ct, st))}")
        return report

    report.add(OK, "reachable", f"connected in {report.connect_ms:.0f} ms")
    report.server_version = info.server_version.split(" ")[0]
    report.server_version_num = info.server_version_num
    report.in_recovery = info.in_recovery
    report.user = info.bot_user
    report.superuser = info.bot_is_superuser
    report.pg_monitor = info.bot_can_monitor
    report.pg_read_all_stats = info.bot_can_read_stats
    report.pg_signal_backend = info.bot_can_signal
    report.pg_signal_autovacuum_worker = info.bot_can_signal_autovacuum
    report.platform = _platform(extra)
    report.wal_receiver_status = extra.get("wal_receiver_status")
    report.track_activity_query_size = extra.get("track_activity_query_size")

    found = features(info.server_version_num)
    report.features = {name: present for name, present, _, _ in found.described()}
    lacking = [what for _, present, _, what in found.described() if not present]
    report.add(OK, "version", f"PostgreSQL {report.server_version}: {found.enabled()}"
               + (f" ({'; '.join(lacking)})" if lacking else ""))

    if report.role == "standby":
        if not info.in_recovery:
            report.add(FAIL, "recovery", f"standby '{host}' is not in recovery: its DSN points at a primary "
                       "(or a promoted standby); fix environments." + env + ".standbys." + host)
        else:
            report.add(OK, "recovery", "in recovery (a standby)")
            if report.wal_receiver_status not in (None, "streaming"):
                report.add(WARN, "streaming", f"the WAL receiver is '{report.wal_receiver_status}', not streaming: "
                           "replay may be fed from an archive or stalled")
            elif report.wal_receiver_status is None:
                report.add(WARN, "streaming", "no WAL receiver: the standby is not streaming from a primary")
    else:
        if info.in_recovery:
            report.add(FAIL, "recovery", f"the primary of '{env}' is in recovery: its DSN points at a standby; "
                       f"fix environments.{env}.dsn")
        else:
            report.add(OK, "recovery", "not in recovery (a primary)")

    _reserved_slots(report, info, extra)

    _privileges_findings(report, info, kill_allowed)
    return report


# What the bot loses without each grant, by statement (docs/operating.md, "The database role").
LOST_WITHOUT = {
    "pg_read_all_stats": (
        "other users' sessions show <insufficient privilege> instead of their query and have no backend_start, "
        "so listings, the lock tree and alerts cannot identify them and offer no buttons; an autovacuum worker "
        "cannot be read; the standby queries a lag alert names as holding replay back show no query and get no "
        "buttons; on a "
        "primary pg_stat_replication shows no position or lag of its standbys; pg_stat_wal_receiver hides its "
        "status, so a standby looks as if it were not streaming"
    ),
    "pg_signal_backend": (
        "Cancel and Terminate of other roles' sessions fail (listings, the lock tree, lag and session alerts, "
        "Terminate these N, clear-db): only the role's own sessions can be signalled"
    ),
}


def _privileges_findings(report: HostReport, info: Any, kill_allowed: bool) -> None:
    """Is each grant the bot uses there, and what is lost without it? (pg_monitor is not needed)"""
    who = info.bot_user
    if info.bot_is_superuser:
        report.add(WARN, "privileges", f"role {who} is a superuser: everything works, but a role with only "
                   "pg_read_all_stats and pg_signal_backend is enough and safer")
        return
    if info.bot_can_read_stats:
        via = " (through pg_monitor)" if info.bot_can_monitor else ""
        report.add(OK, "pg_read_all_stats", f"{who} has the privileges of pg_read_all_stats{via}")
    else:
        report.add(FAIL, "pg_read_all_stats", f"{who} lacks pg_read_all_stats: {LOST_WITHOUT['pg_read_all_stats']}. "
                   + _grant_hint(report, "pg_read_all_stats"))
    if info.bot_can_signal:
        report.add(OK, "pg_signal_backend", f"{who} has the privileges of pg_signal_backend (never enough for "
                   "superusers' sessions: on a managed service the provider's own sessions stay out of reach)")
    elif kill_allowed:
        report.add(FAIL, "pg_signal_backend", f"{who} lacks pg_signal_backend: {LOST_WITHOUT['pg_signal_backend']}. "
                   + _grant_hint(report, "pg_signal_backend"))
    else:
        report.add(OK, "pg_signal_backend", "not a member, and not needed: access.allow_kill is false")
    if not kill_allowed or report.role != "primary":
        return  # (autovacuum runs on primaries only)
    if info.bot_can_signal_autovacuum is None:
        report.add(OK, "autovacuum", f"{who} cannot cancel autovacuum workers that block others (before "
                   "PostgreSQL 18 only a superuser may): they are shown as lock roots, without a Cancel button")
    elif info.bot_can_signal_autovacuum:
        report.add(OK, "autovacuum", f"{who} has pg_signal_autovacuum_worker: an autovacuum worker that blocks "
                   "others can be cancelled (with approval; never a run to prevent wraparound)")
    else:
        report.add(WARN, "autovacuum", f"{who} lacks pg_signal_autovacuum_worker: an autovacuum worker that blocks "
                   "others is shown without a Cancel button. " + _grant_hint(report, "pg_signal_autovacuum_worker"))


def _compare_identifiers(reports: list[HostReport]) -> None:
    by_env: dict[str, list[HostReport]] = {}
    for r in reports:
        by_env.setdefault(r.env, []).append(r)
    for rs in by_env.values():
        primary = next((r for r in rs if r.role == "primary"), None)
        if primary is None or not primary.system_identifier:
            continue
        for r in rs:
            if r.role == "standby" and r.system_identifier and r.system_identifier != primary.system_identifier:
                r.add(FAIL, "same cluster", f"standby '{r.host}' is a copy of another cluster than the primary of "
                      f"'{r.env}' (system identifier {r.system_identifier} vs {primary.system_identifier})")


# --- state store and Slack ------------------------------------------------------------------------


def _describe_state(url: str) -> str:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        return f"sqlite {os.path.abspath(path)}" if path else "sqlite (in memory: nothing survives a restart)"
    return f"postgresql {safe_dsn(url)}"


def _fleet(report: StateReport, store: Any, watched: list[str]) -> None:
    """Which replica watches what (bot/fleet/): the replicas registered in the state store and the
    environment leases that run now."""
    gateway = ShardStore(store)
    now = time.time()
    by_holder: dict[str, list[str]] = {}
    for env, label in gateway.watchers(now).items():
        by_holder.setdefault(label, []).append(env)
    report.replicas = [
        {"replica": r.label, "seen_secs_ago": round(max(0.0, now - r.seen_at), 1),
         "watches": sorted(by_holder.get(r.label, []))}
        for r in gateway.replicas()
    ]
    held = {e for envs in by_holder.values() for e in envs}
    report.unwatched = sorted(e for e in watched if e not in held)
    live = [r for r in report.replicas if r["watches"]]
    if not report.replicas:
        report.add(OK, "replicas", "no replica is running on this state store now")
    else:
        report.add(OK, "replicas", f"{len(live)} replica(s) share the watched environments: "
                   + "; ".join(f"{r['replica']} watches {len(r['watches'])}" for r in live))
    if report.replicas and report.unwatched:
        report.add(WARN, "watched", f"{len(report.unwatched)} watched environment(s) have no replica checking "
                   f"them now: {', '.join(report.unwatched[:10])}")


def check_state(url: str, watched: list[str] | None = None) -> StateReport:
    report = StateReport(target=_describe_state(url))
    started = time.monotonic()
    store = None
    try:
        store = StateStore(url)
        store.check_writable()
        if not store.is_sqlite:
            try:
                _fleet(report, store, watched or [])
            except Exception as exc:  # a store of another release: say it, do not fail the check
                report.add(WARN, "replicas", f"could not read the replicas: {type(exc).__name__}")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        report.add(FAIL, "writable", f"the state store is not usable: {scrub(first)[:300]}")
        return report
    finally:
        if store is not None:
            try:
                store.close()
            except Exception:  # closing after a failed check
                pass
    report.ms = round((time.monotonic() - started) * 1000, 1)
    report.add(OK, "writable", f"reachable and writable ({report.ms:.0f} ms)")
    if url == "sqlite://" or url.endswith(":memory:"):
        report.add(WARN, "durable", "an in-memory state store loses requests and approvals on every restart")
    elif url.startswith("sqlite"):
        report.add(OK, "replicas", "SQLite: run exactly one bot process (use state: postgresql://... for several)")
    return report


def _header(headers: Any, name: str) -> str | None:
    for k, v in dict(headers or {}).items():
        if str(k).lower() == name:
            value = v[0] if isinstance(v, list | tuple) else v
            return str(value) if value is not None else None
    return None


def check_slack(environ: dict[str, str]) -> SlackReport:
    settings = SlackSettings.from_env(environ)
    report = SlackReport(api_url=settings.api_url)
    if not settings.bot_token:
        report.add(SKIP, "auth.test", "SLACK_BOT_TOKEN is not set: Slack not checked (serve needs it)")
        return report
    report.mode = "socket" if settings.app_token else "http" if settings.signing_secret else None
    if report.mode is None:
        report.add(FAIL, "mode", "neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET (HTTP) is set: "
                   "serve needs one of them")
    elif report.mode == "http":
        report.add(OK, "mode", "HTTP mode (SLACK_SIGNING_SECRET is set; Slack proves it on every request)")
    if not settings.bot_token.startswith("xoxb-"):
        report.add(WARN, "token type", "SLACK_BOT_TOKEN does not look like a bot token (xoxb-...)")
    client = WebClient(token=settings.bot_token, base_url=settings.api_url, timeout=10)
    try:
        resp = client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        report.add(FAIL, "auth.test", f"Slack refused SLACK_BOT_TOKEN: {error or 'error'} (at {settings.api_url})")
        return report
    except Exception as exc:
        report.add(FAIL, "auth.test", f"could not reach Slack at {settings.api_url}: {type(exc).__name__}: "
                   f"{scrub(str(exc))[:200]}")
        return report
    report.team = f"{resp.get('team') or '?'} ({resp.get('team_id') or '?'})"
    report.bot_user = f"{resp.get('user') or '?'} ({resp.get('user_id') or '?'})"
    report.add(OK, "auth.test", f"token accepted: bot {report.bot_user} in team {report.team}")
    raw = _header(resp.headers, "x-oauth-scopes")
    if raw is None:
        report.add(WARN, "scopes", "Slack did not report the token's scopes (no x-oauth-scopes header)")
    else:
        report.scopes = sorted(s.strip() for s in raw.split(",") if s.strip())
        missing = [s for s in (*REQUIRED_SCOPES, *FEATURE_SCOPES) if s not in report.scopes]
        if missing:
            what = "; ".join(f"{s} ({SCOPE_NEEDED_FOR[s]})" for s in missing)
            level = FAIL if any(s in REQUIRED_SCOPES for s in missing) else WARN
            report.add(level, "scopes", f"the token lacks {what}: add them under OAuth & Permissions "
                       "(or re-create the app from manifest.yml) and reinstall the app")
        else:
            report.add(OK, "scopes", "has " + ", ".join((*REQUIRED_SCOPES, *FEATURE_SCOPES)))
    if settings.app_token:
        try:
            WebClient(token=settings.app_token, base_url=settings.api_url, timeout=10).apps_connections_open(
                app_token=settings.app_token
            )
            report.add(OK, "socket mode", "SLACK_APP_TOKEN opens a Socket Mode connection")
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            report.add(FAIL, "socket mode", f"Slack refused SLACK_APP_TOKEN: {error or 'error'} "
                       "(it needs to be an app-level token with connections:write)")
        except Exception as exc:
            report.add(FAIL, "socket mode", f"could not reach Slack: {type(exc).__name__}")
    return report


# --- poolers (issue 25) ------------------------------------------------------------------------------

KILL_CLIENT_UNCHECKED = ((1, 24), (1, 25, 1))  # KILL_CLIENT did not check admin_users (CVE-2026-6667)


def check_pooler(env: str, name: str, pooler: Pooler) -> PoolerReport:
    """Read the pooler's console once; say its version and which of the bot's features it enables."""
    report = PoolerReport(env=env, name=name, host=pooler.host, target=safe_dsn(pooler.dsn))
    read = pgbouncer.read_pooler(name, pooler)
    if read.error is not None:
        report.add(FAIL, "reachable", f"the admin console did not answer: {read.error}")
        return report
    report.version = pooler_version_text(read.version)
    report.pools = len(read.pools)
    report.features = ["pools, servers, clients (listing, pool, pool_waiting)"]
    if read.version >= (1, 18):
        report.features.append("application_name of clients")
    if read.version >= KILL_CLIENT_SINCE:
        report.features.append("KILL_CLIENT (Disconnect client, needs admin_users)")
        low, high = KILL_CLIENT_UNCHECKED
        if low <= read.version <= high:
            report.add(WARN, "kill_client", f"PgBouncer {report.version} does not check admin_users for KILL_CLIENT "
                       "(CVE-2026-6667, fixed in 1.25.2): every user of its console can disconnect clients; upgrade")
    else:
        report.add(WARN, "kill_client", f"PgBouncer {report.version} has no KILL_CLIENT (1.24 and newer): "
                   "Disconnect client is not offered; Terminate of the server connection still is")
    report.add(OK, "reachable", f"PgBouncer {report.version}, {report.pools} pool(s)")
    return report


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
                  _failed(StateReport, "writable", target=_describe_state(config.state))))
    if slack:
        tasks.append((lambda: check_slack(environ), 30.0, _failed(SlackReport, "auth.test")))
    results = _run_all(tasks)
    hosts = [r for r in results[:n_hosts] if isinstance(r, HostReport)]
    _compare_identifiers(hosts)
    state = results[n_hosts]
    if slack:
        slack_report = results[n_hosts + 1]
    else:
        slack_report = SlackReport()
        slack_report.add(SKIP, "auth.test", "skipped (--no-slack)")
    assert isinstance(state, StateReport) and isinstance(slack_report, SlackReport)
    return hosts, state, slack_report


def shared_channel_warnings(config: Config, environ: dict[str, str], envs: list[str] | None) -> list[Finding]:
    """``redact_queries: false`` with a channel in ``access.channels`` shared with another organisation
    (or workspace): query texts (and any literal in them) reach people outside. Asks conversations.info."""
    settings = SlackSettings.from_env(environ)
    todo = [(n, e) for n, e in config.environments.items()
            if (not envs or n in envs) and not e.redact_queries and e.access.channels]
    if not settings.bot_token or not todo:
        return []
    client = WebClient(token=settings.bot_token, base_url=settings.api_url, timeout=10)
    out = []
    for name, environment in todo:
        for channel in environment.access.channels or []:
            try:
                info = client.conversations_info(channel=channel).get("channel") or {}
            except Exception as exc:
                error = getattr(getattr(exc, "response", None), "get", lambda _k: None)("error") or type(exc).__name__
                out.append(Finding(WARN, "shared channel", f"could not ask Slack whether channel {channel} of "
                                   f"environments.{name}.access.channels is shared ({error})"))
                continue
            if info.get("is_ext_shared") or info.get("is_shared") or info.get("is_org_shared"):
                out.append(Finding(WARN, "shared channel", f"environments.{name}.redact_queries is false and channel "
                                   f"{channel} in access.channels is shared with another workspace: query texts "
                                   "(with their literals) reach people outside; set redact_queries: true"))
    return out


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
