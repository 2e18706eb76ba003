"""What ``pgsessions check`` found, and how it is printed: the reports (one per host, the state store,
Slack, each pooler), their text and JSON forms, and the config's own warnings (pure). The checks that
ask servers and Slack are :mod:`bot.check`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.config import Config, Environment
from bot.postgres.sql import Features
from bot.render.common import visible
from bot.secrets import scrub

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
_RANK = {SKIP: 0, OK: 1, WARN: 2, FAIL: 3}


@dataclass
class Finding:
    level: str
    check: str
    message: str


@dataclass
class Part:
    """Findings about one thing (a host, the state store, Slack)."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, level: str, check: str, message: str) -> None:
        self.findings.append(Finding(level, check, scrub(message)))

    @property
    def status(self) -> str:
        return max((f.level for f in self.findings), key=_RANK.__getitem__, default=SKIP)


@dataclass
class HostReport(Part):
    env: str = ""
    host: str = ""
    role: str = "primary"  # primary | standby
    target: str = ""
    connect_ms: float | None = None
    server_version: str | None = None
    server_version_num: int | None = None
    in_recovery: bool | None = None
    user: str | None = None
    superuser: bool | None = None
    pg_monitor: bool | None = None  # informational: pg_monitor includes pg_read_all_stats, but is not needed
    pg_read_all_stats: bool | None = None
    pg_signal_backend: bool | None = None
    pg_signal_autovacuum_worker: bool | None = None  # PostgreSQL 18+ (None: no such role on this server)
    platform: str | None = None
    system_identifier: str | None = None
    wal_receiver_status: str | None = None
    track_activity_query_size: int | None = None
    reserved_slots: str | None = None  # which reserved connection slots the bot's role may use when the server is full
    features: dict[str, bool] | None = None  # what the server's version enables (bot.postgres.sql.Features)


@dataclass
class StateReport(Part):
    target: str = ""
    ms: float | None = None
    # the fleet (PostgreSQL state store): every registered replica (label host:pid, seconds since its
    # heartbeat, the environments whose checks it runs now), and the watched environments nobody runs now
    replicas: list[dict[str, Any]] | None = None
    unwatched: list[str] | None = None


@dataclass
class SlackReport(Part):
    api_url: str = ""
    mode: str | None = None
    team: str | None = None
    bot_user: str | None = None
    scopes: list[str] | None = None


@dataclass
class PoolerReport(Part):
    env: str = ""
    name: str = ""
    host: str = ""
    target: str = ""
    version: str | None = None
    features: list[str] = field(default_factory=list)
    pools: int | None = None


# --- output ---------------------------------------------------------------------------------------


def _versions(hosts: list[HostReport]) -> list[str]:
    """One line per host that answered: its version and what that enables."""
    out = []
    for r in hosts:
        if r.server_version_num is None:
            continue
        if r.features is None:
            out.append(f"  {r.env}/{r.host}: PostgreSQL {r.server_version}: not supported (13 or newer)")
        else:
            out.append(f"  {r.env}/{r.host}: PostgreSQL {r.server_version}: {Features(r.server_version_num).enabled()}")
    return out


def _privileges(r: HostReport) -> str:
    if r.superuser:
        return "superuser"
    if r.pg_read_all_stats is None and r.pg_monitor is None:
        return "-"
    stats = "pg_monitor" if r.pg_monitor else "pg_read_all_stats"  # pg_monitor includes pg_read_all_stats
    grants = ((stats, r.pg_read_all_stats or r.pg_monitor), ("pg_signal_backend", r.pg_signal_backend),
              ("pg_signal_autovacuum_worker", r.pg_signal_autovacuum_worker))
    have = [n for n, v in grants if v]
    lacking = [n for n, v in grants[:2] if not v]
    return ", ".join(have + [f"no {n}" for n in lacking])


def _recovery(r: HostReport) -> str:
    if r.in_recovery is None:
        return "-"
    if r.role == "standby":
        return "in recovery" if r.in_recovery else "NOT in recovery"
    return "not in recovery" if not r.in_recovery else "IN RECOVERY"


def _label(status: str) -> str:
    return {OK: "ok", WARN: "WARN", FAIL: "FAIL", SKIP: "skip"}[status]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render_text(path: str, hosts: list[HostReport], state: StateReport, slack: SlackReport,
                extra: list[Finding], strict: bool) -> str:
    lines = [f"pgsessions check: {path}", ""]
    rows = [["ENVIRONMENT", "HOST", "RESULT", "CONNECT", "SERVER", "RECOVERY", "USER", "PRIVILEGES", "RESERVED SLOTS",
             "TARGET"]]
    for r in hosts:
        rows.append([
            r.env, r.host, _label(r.status),
            f"{r.connect_ms:.0f} ms" if r.connect_ms is not None else "-",
            r.server_version or "-", _recovery(r), r.user or "-", _privileges(r), r.reserved_slots or "-", r.target,
        ])
    lines += _table(rows)
    versions = _versions(hosts)
    if versions:
        lines += ["", "Versions:", *versions]
    lines.append("")
    if state.replicas:
        lines += ["Replicas (who watches what):"]
        for rep in state.replicas:
            watches = ", ".join(rep["watches"]) if rep["watches"] else "nothing"
            lines.append(f"  {visible(rep['replica'])} (heartbeat {rep['seen_secs_ago']:g}s ago): {watches}")
        if state.unwatched:
            lines.append(f"  nobody now: {', '.join(state.unwatched)}")
        lines.append("")
    lines += _table([
        ["STATE STORE", _label(state.status), state.target],
        ["SLACK", _label(slack.status),
         (f"{slack.bot_user} in {slack.team}" if slack.bot_user else slack.findings[0].message if slack.findings else "")
         + (f", {slack.mode} mode" if slack.mode else "")],
    ])
    problems: list[tuple[str, str, Finding]] = []
    for r in hosts:
        problems += [(r.env, r.host, f) for f in r.findings if f.level in (WARN, FAIL)]
    problems += [("state", "-", f) for f in state.findings if f.level in (WARN, FAIL)]
    problems += [("slack", "-", f) for f in slack.findings if f.level in (WARN, FAIL)]
    problems += [("config", "-", f) for f in extra]
    problems.sort(key=lambda p: -_RANK[p[2].level])
    if problems:
        lines += ["", "Problems:"]
        for env, host, f in problems:
            where = f"{env}/{host}" if host != "-" else env
            lines.append(f"  {_label(f.level):4}  {where}: {f.check}: {f.message}")
    fails = sum(1 for p in problems if p[2].level == FAIL)
    warns = sum(1 for p in problems if p[2].level == WARN)
    ready = fails == 0 and not (strict and warns)
    lines += ["", f"{fails} problem(s), {warns} warning(s): " + ("ready." if ready else "NOT ready.")]
    return scrub("\n".join(lines))


def render_json(path: str, hosts: list[HostReport], state: StateReport, slack: SlackReport,
                extra: list[Finding], ok: bool) -> str:
    def part(p: Part) -> dict[str, Any]:
        d = asdict(p)
        d["status"] = p.status
        return d

    out = {
        "ok": ok,
        "config": {"path": path, "ok": True, "warnings": [asdict(f) for f in extra]},
        "hosts": [part(r) for r in hosts],
        "state": part(state),
        "slack": part(slack),
    }
    return scrub(json.dumps(out, indent=2, default=str))


def render_poolers_text(poolers: list[PoolerReport]) -> list[str]:
    if not poolers:
        return []
    rows = [["ENVIRONMENT", "POOLER", "IN FRONT OF", "RESULT", "PGBOUNCER", "FEATURES", "TARGET"]]
    for r in poolers:
        rows.append([r.env, r.name, r.host, _label(r.status), r.version or "-", "; ".join(r.features) or "-", r.target])
    lines = ["", *_table(rows)]
    problems = [(r, f) for r in poolers for f in r.findings if f.level in (WARN, FAIL)]
    for r, f in sorted(problems, key=lambda p: -_RANK[p[1].level]):
        lines.append(f"  {_label(f.level):4}  {r.env}/pooler {r.name}: {f.check}: {f.message}")
    return lines


# --- the config's own warnings (pure) ---------------------------------------------------------------


def config_warnings(config: Config, envs: list[str] | None) -> list[Finding]:
    out = []
    for name, environment in config.environments.items():
        if envs and name not in envs:
            continue
        access = environment.access
        if access.allow_kill and not access.approvers and not access.self_approval:
            out.append(Finding(WARN, "approvers", f"environments.{name}.access.approvers is empty: nobody can "
                               "approve a cancel/terminate request there"))
        out += open_access_warnings(name, environment)
    return out


def open_access_warnings(name: str, environment: Environment) -> list[Finding]:
    """Settings that leave an environment open (issue 12 §2): each one a warning that says what to set."""
    access = environment.access
    key = f"environments.{name}.access"
    out = []
    for field_name, what in (("viewers", "everyone in the workspace can see its sessions and queries"),
                             ("requesters", "everyone in the workspace can ask to cancel/terminate"),
                             ("approvers", "everyone in the workspace can approve a cancel/terminate")):
        if "*" in getattr(access, field_name):
            out.append(Finding(WARN, "open access", f'{key}.{field_name} is "*": {what}; list user or group ids'))
    if access.self_approval:
        out.append(Finding(WARN, "open access", f"{key}.self_approval is true: an approver can approve their own "
                           "request, so one person alone can kill sessions"))
    people = set(access.approvers)
    if access.allow_kill and people and "*" not in people and not any(p.startswith("S") for p in people):
        reachable = len(people)
        if access.approvals_required > reachable:
            out.append(Finding(WARN, "approvals", f"{key}.approvals_required is {access.approvals_required} but only "
                               f"{reachable} approver(s) are listed: no request can ever be approved"))
        elif not access.self_approval and access.approvals_required > reachable - 1:
            out.append(Finding(WARN, "approvals", f"{key}.approvals_required is {access.approvals_required}: a request "
                               f"made by one of the {reachable} listed approvers can never be approved"))
    return out
