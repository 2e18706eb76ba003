"""``pgsessions check`` on the monitored servers: each PostgreSQL host (reachable, version and what it
enables, recovery role, the role's grants and what is lost without each, reserved connection slots, a
standby a copy of its primary) and each PgBouncer admin console (version, KILL_CLIENT). Each check is
bounded by its environment's (or pooler's) timeouts; :mod:`bot.check` runs them all concurrently."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bot.check_report import FAIL, OK, WARN, HostReport, PoolerReport
from bot.config import Environment, Pooler
from bot.postgres import pgbouncer
from bot.postgres.activity import server_info
from bot.postgres.models import ServerInfo
from bot.postgres.pooler_models import KILL_CLIENT_SINCE
from bot.postgres.pooler_models import version_text as pooler_version_text
from bot.postgres.pools import connect_bounded, explain
from bot.postgres.sql import features, query, unsupported, version_text
from bot.secrets import safe_dsn

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


def compare_identifiers(reports: list[HostReport]) -> None:
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
