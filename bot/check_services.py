"""``pgsessions check`` on what the bot itself depends on: the state store (reachable, writable, durable,
which replica watches what) and Slack (the bot token, its scopes, Socket Mode, channels shared with
another workspace while query texts are not redacted)."""

from __future__ import annotations

import os
import time
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.check_report import FAIL, OK, SKIP, WARN, Finding, SlackReport, StateReport
from bot.config import Config
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

# --- state store ----------------------------------------------------------------------------------


def describe_state(url: str) -> str:
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
    report = StateReport(target=describe_state(url))
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


# --- Slack ----------------------------------------------------------------------------------------


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
