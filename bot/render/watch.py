"""Watch alerts (issue 14) as Block Kit: pure functions from an incident's facts to a message.

Every string from a monitored server goes through :func:`~bot.render.common.esc` / ``code``. The
session buttons are the listing's (``pgs_kill:<action>:<token>``, approval-gated); the connections
alert's *Terminate these N* is the listing's bulk button (``pgs_bulk:terminate_bulk:<token>``); the
Acknowledge button is ``pgs_watch:ack:<incident id>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.approval.ids import CANCEL, TERMINATE, bulk_action_id, kill_action_id
from bot.durations import format_bytes, format_duration
from bot.postgres.models import AUTOVACUUM_WORKER, is_wraparound_run, runs_query
from bot.render.buttons import (
    AUTOVACUUM_NOTE,
    IDLE_TX_NOTE,
    details_button,
)
from bot.render.common import (
    MAX_BLOCKS,
    actions,
    button,
    code,
    context,
    cut,
    esc,
    fold_query,
    header,
    message,
    section,
    slack_time,
)
from bot.watch.model import (
    CONNECTIONS,
    HOST_UNREACHABLE,
    IDLE_TX,
    LOCK_PILEUP,
    LONG_RUNNING,
    POOL_WAITING,
    WAL_RECEIVER,
    WRAPAROUND,
    XMIN_HORIZON,
)

ACK_PREFIX = "pgs_watch"
ACK = "ack"
TERMINATE_BULK = "terminate_bulk"

EMOJI = {
    LOCK_PILEUP: ":no_entry:",
    IDLE_TX: ":hourglass_flowing_sand:",
    LONG_RUNNING: ":turtle:",
    CONNECTIONS: ":electric_plug:",
    XMIN_HORIZON: ":broom:",
    WAL_RECEIVER: ":satellite_antenna:",
    HOST_UNREACHABLE: ":rotating_light:",
    POOL_WAITING: ":hourglass:",
    WRAPAROUND: ":cyclone:",
}
TITLE = {
    LOCK_PILEUP: "Lock pile-up",
    IDLE_TX: "Idle in transaction",
    LONG_RUNNING: "Long-running queries",
    CONNECTIONS: "Connections almost exhausted",
    XMIN_HORIZON: "xmin horizon held back",
    WAL_RECEIVER: "WAL receiver not streaming",
    HOST_UNREACHABLE: "Unreachable",
    POOL_WAITING: "Clients waiting in a pool",
    WRAPAROUND: "Transaction ID wraparound",
}


def ack_action_id(incident_id: str) -> str:
    return f"{ACK_PREFIX}:{ACK}:{incident_id}"


def acknowledge_block(incident_id: str, ack: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Acknowledge button of an open alert (any alert: session, host or lag), or who took it."""
    if ack:
        return context(f":eyes: Acknowledged by <@{ack['by']}> {slack_time(_utc(ack.get('at')))}: no more reminders.")
    return actions(f"watch:{incident_id}", button("Acknowledge", ack_action_id(incident_id), incident_id))


def where(env: str, host: str) -> str:
    return env if host == "primary" else f"{env} / {host} (standby)"


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def autovacuum_line(s: Mapping[str, Any], query_chars: int) -> str:
    """An autovacuum worker (facts dict): what it is, not a client session's who-and-where."""
    wraparound = is_wraparound_run(s.get("query"))
    lines = [
        f"*pid {s.get('pid')}* · *autovacuum worker* (not a client session) · running "
        f"*{format_duration(s.get('query_secs'))}*" + (" · *to prevent wraparound*: it must finish" if wraparound else ""),
        f"db {code(s.get('database') or '?')}",
    ]
    if s.get("query"):
        lines.append(code(fold_query(s["query"], query_chars)))
    return "\n".join(lines)


def session_line(s: Mapping[str, Any], query_chars: int, what: str | None = None) -> str:
    """One session (facts dict) in mrkdwn; every server string escaped."""
    if what is None and s.get("backend_type") == AUTOVACUUM_WORKER:
        return autovacuum_line(s, query_chars)
    if what is None:
        if (s.get("state") or "").startswith("idle in transaction"):
            what = f"idle in transaction *{format_duration(s.get('state_secs'))}*"
        elif s.get("state") == "active":
            what = f"query running *{format_duration(s.get('query_secs'))}*"
        else:
            what = f"{esc(s.get('state') or '?')} *{format_duration(s.get('state_secs'))}*"
    lines = [
        f"*pid {s.get('pid')}* · {what}"
        + (f" (transaction open {format_duration(s['xact_secs'])})" if s.get("xact_secs") is not None else ""),
        " · ".join([
            f"user {code(s.get('user') or '?')}",
            f"db {code(s.get('database') or '?')}",
            f"app {code(s.get('application')) if s.get('application') else '–'}",
            f"client {code(s.get('client_addr')) if s.get('client_addr') else 'local socket'}",
        ]),
    ]
    if s.get("query"):
        lines.append(code(fold_query(s["query"], query_chars)))
    return "\n".join(lines)


def _buttons(s: Mapping[str, Any], token: str | None, kill_disabled: str | None, *, cancel: bool, terminate: bool,
             details_token: str | None = None) -> list[dict[str, Any]]:
    """Cancel / Terminate as offered, and Details (also on a session that cannot be signalled)."""
    pid = s.get("pid")
    details = [details_button(int(pid), details_token)] if details_token and pid is not None else []
    reason = kill_disabled or s.get("cannot_signal")
    if reason:
        blocks = [context(f":no_entry_sign: pid {pid} cannot be signalled from chat: {esc(reason)}")]
        return blocks + ([actions(f"details:{details_token}", *details)] if details else [])
    if token is None:
        return [actions(f"details:{details_token}", *details)] if details else []
    elements = []
    if cancel:
        elements.append(button(f"Cancel {pid}", kill_action_id(CANCEL, token), token))
    if terminate:
        elements.append(button(f"Terminate {pid}", kill_action_id(TERMINATE, token), token, style="danger"))
    elements += details
    return [actions(f"kill:{token}", *elements)] if elements else []


def _title(kind: str, env: str, host: str, facts: Mapping[str, Any]) -> str:
    """Plain words (no server strings): the header and the start of the fallback text."""
    w = where(env, host)
    if kind == LOCK_PILEUP:
        return f"Lock pile-up on {w}: {facts['total']} waiting behind pid {facts['root']['pid']}"
    if kind == IDLE_TX:
        return f"Idle in transaction on {w}: {_plural(facts['count'], 'session')} over {format_duration(facts['threshold'])}"
    if kind == LONG_RUNNING:
        return f"Long-running queries on {w}: {_plural(facts['count'], 'query', 'queries')} over {format_duration(facts['threshold'])}"
    if kind == CONNECTIONS:
        return f"Connections on {w}: {facts['used']} of {facts['usable']} usable slots ({facts['share']:g}%)"
    if kind == XMIN_HORIZON:
        o = facts["oldest"]
        return f"xmin horizon on {w} held for {format_duration(o.get('secs'))} by a {HOLDER_WORD.get(o['type'], o['type'])}"
    if kind == WAL_RECEIVER:
        return f"WAL receiver not streaming on {w}"
    if kind == HOST_UNREACHABLE:
        return f"Unreachable: {w}" + (" primary" if host == "primary" else "")
    if kind == POOL_WAITING:
        return (f"Clients waiting in a pool on {w}: {facts['waiting']} waiting, longest "
                f"{format_duration(facts['longest_wait'])}")
    if kind == WRAPAROUND:
        return (f"Transaction ID wraparound on {w}: the oldest database is "
                f"{max(facts['worst']['xid_age'], facts['worst']['mxid_age']):,} transactions old "
                f"({_plural(facts['count'], 'database')} over {facts['threshold']:,})")
    return f"{kind} on {w}"


HOLDER_WORD = {"backend": "session", "prepared": "prepared transaction", "slot": "replication slot",
               "feedback": "standby (hot_standby_feedback)"}


def _pileup_blocks(f: Mapping[str, Any], tokens: Mapping[int, str], kill_disabled: str | None, query_chars: int,
                   details: Mapping[int, str]) -> list[dict[str, Any]]:
    root = f["root"]
    held = ", ".join(f"{esc(h['mode'])} on {code(h['relation']) if h.get('relation') else 'a non-relation lock'}"
                     for h in f.get("held") or []) or "(the lock it holds could not be read)"
    blocks = [
        section(
            f"{EMOJI[LOCK_PILEUP]} *Root blocker*\n" + session_line(root, query_chars)
            + f"\nstate {esc(root.get('state') or '?')} · holds {held}"
        ),
        section(
            f"*{f['total']}* {'session waits' if f['total'] == 1 else 'sessions wait'} behind it "
            f"(*{f['direct']}* directly) · longest wait *{format_duration(f.get('longest_wait'))}*"
        ),
    ]
    ddl = f.get("ddl")
    if ddl:
        blocks.append(section(
            f":construction: *DDL queue:* pid {ddl['pid']} (app {code(ddl.get('application') or '–')}) asks for "
            f"{esc(ddl.get('wait_mode') or '?')} on {code(ddl.get('wait_relation') or '?')} and waits for the root; "
            f"{_plural(ddl['queued'], 'session queues', 'sessions queue')} behind that request even though "
            f"{'it does' if ddl['queued'] == 1 else 'they do'} not conflict with the root itself. "
            f"Query {code(fold_query(ddl.get('query') or '', 200))}"
        ))
    waiters = f.get("waiters") or []
    if waiters:
        blocks.append(context(cut("Longest waiting: " + "; ".join(
            f"pid {w['pid']} (app {code(w.get('application') or '–')}) wants {esc(w.get('wait_mode') or '?')}"
            f" on {code(w.get('wait_relation') or '?')} for {format_duration(w.get('wait_secs'))}"
            for w in waiters), 1900)))
    idle_tx = f.get("root_idle_in_transaction")
    # Cancel only where a query runs (QUERY_RUNNING_STATES); a root that runs none gets Terminate
    running = runs_query(root.get("state"))
    blocks += _buttons(root, tokens.get(root["pid"]), kill_disabled, cancel=running, terminate=not running,
                       details_token=details.get(root["pid"]))
    if root.get("backend_type") == AUTOVACUUM_WORKER:
        if not kill_disabled and not root.get("cannot_signal"):
            blocks.append(context(AUTOVACUUM_NOTE))
    elif idle_tx:
        blocks.append(context(IDLE_TX_NOTE))
    elif running and not kill_disabled and not root.get("cannot_signal"):
        blocks.append(context("Terminate is offered only for a root idle in transaction; Cancel stops its current "
                              "query (it may still hold its locks until its transaction ends)."))
    return blocks


def _pool_waiting_line(f: Mapping[str, Any]) -> str:
    """```app/appdb`: 37 clients waiting, longest 12s; the pool's 20 server connections are busy — oldest
    transaction 14m (pid 4242, app `billing`, idle in transaction)``` (every server string escaped)."""
    size = f.get("pool_size")
    busy = int(f.get("servers_busy") or 0)
    servers = (f"the pool's {_plural(busy, 'server connection')} {'is' if busy == 1 else 'are'} busy"
               + (f" (pool size {size})" if size is not None and size != busy else ""))
    text = (f"{code(f.get('pool') or '?')} (pooler {code(f.get('pooler') or '?')}): "
            f"{_plural(int(f.get('waiting') or 0), 'client')} waiting, longest {format_duration(f.get('longest_wait'))}; "
            f"{servers}")
    holders = f.get("holders") or []
    if holders:
        h = holders[0]
        age = h.get("xact_secs") if h.get("xact_secs") is not None else h.get("state_secs")
        text += (f" — oldest transaction {format_duration(age)} (pid {h.get('pid')}, app "
                 f"{code(h.get('application')) if h.get('application') else '–'}, {esc(h.get('state') or '?')})")
    return text


def _pool_waiting_blocks(f: Mapping[str, Any], tokens: Mapping[int, str], kill_disabled: str | None, query_chars: int,
                         details: Mapping[int, str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [section(f"{EMOJI[POOL_WAITING]} {_pool_waiting_line(f)}")]
    holders = f.get("holders") or []
    if holders:
        blocks.append(context("The server sessions holding the pool, longest transaction first: Terminate ends the "
                              "session and the transaction of the client linked to it now."))
    for s in holders:
        blocks.append(section(session_line(s, query_chars)))
        blocks += _buttons(s, tokens.get(s["pid"]), kill_disabled, cancel=runs_query(s.get("state")), terminate=True,
                           details_token=details.get(s["pid"]))
    more = int(f.get("holders_total") or 0) - len(holders)
    if more > 0:
        blocks.append(context(f"{more} more not shown (longest transaction first)."))
    return blocks


def _sessions_blocks(kind: str, f: Mapping[str, Any], tokens: Mapping[int, str], kill_disabled: str | None,
                     query_chars: int, details: Mapping[int, str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    sessions = f.get("sessions") or []
    for s in sessions:
        blocks.append(section(session_line(s, query_chars)))
        blocks += _buttons(s, tokens.get(s["pid"]), kill_disabled, cancel=runs_query(s.get("state")), terminate=True,
                           details_token=details.get(s["pid"]))
    if f["count"] > len(sessions):
        blocks.append(context(f"{f['count'] - len(sessions)} more not shown (worst first)."))
    if kind == IDLE_TX:
        blocks.append(context(IDLE_TX_NOTE))
    return blocks


def _counts(pairs: Sequence[tuple[str | None, int]]) -> str:
    return ", ".join(f"{code(k) if k else '–'} {v}" for k, v in pairs) or "–"


def _connections_blocks(f: Mapping[str, Any], bulk_token: str | None, bulk_sessions: Sequence[Mapping[str, Any]],
                        kill_disabled: str | None) -> list[dict[str, Any]]:
    blocks = [
        section(
            f"{EMOJI[CONNECTIONS]} *{f['used']}* client connections of *{f['usable']}* usable "
            f"(max_connections {f['max']} − superuser_reserved_connections {f['reserved']}) · "
            f"*{f['share']:g}%* (alert at {f['threshold']:g}%)\n"
            f"*By application:* {_counts(f['by_app'])}\n*By user:* {_counts(f['by_user'])}\n"
            f"*By state:* {_counts(f['by_state'])}"
        )
    ]
    n = len(bulk_sessions)
    app = f.get("bulk_app")
    if n and app is not None:
        text = (f":broom: App {code(app) if app else '(no application_name)'} has the most idle connections: "
                f"*{n}*. Oldest idle: " + ", ".join(
                    f"pid {s['pid']} ({format_duration(s.get('state_secs'))})" for s in bulk_sessions[:8])
                + ("…" if n > 8 else ""))
        blocks.append(section(cut(text, 2900)))
        if kill_disabled:
            blocks.append(context(f":no_entry_sign: *Terminate these {n}* is not offered: {esc(kill_disabled)}"))
        elif bulk_token:
            blocks.append(actions(f"bulk:{bulk_token}", button(
                f"Terminate these {n}", bulk_action_id(TERMINATE_BULK, bulk_token), bulk_token, style="danger")))
            blocks.append(context(
                f"An approval covers exactly these {n} idle sessions (pid + start time); a session used again "
                "before the approval is skipped, and sessions that connect later are not touched."))
    return blocks


def _holder_line(h: Mapping[str, Any], query_chars: int) -> str:
    behind = f"{h['xid_age']} transactions behind" if h.get("xid_age") is not None else "transactions behind unknown"
    t = h["type"]
    if t == "backend":
        s = h["session"]
        kind = "" if h.get("backend_type") == "client backend" else f" ({esc(h.get('backend_type') or '?')})"
        return session_line(s, query_chars, what=f"transaction open *{format_duration(h.get('secs'))}*{kind}") + f"\n{behind}"
    if t == "prepared":
        return (f"*prepared transaction* {code(h.get('gid'))} · owner {code(h.get('owner'))} · db {code(h.get('database'))}"
                f" · prepared *{format_duration(h.get('secs'))}* ago · {behind}\n"
                f"Ends only with `COMMIT PREPARED` or `ROLLBACK PREPARED` {code(h.get('gid'))} (not from chat).")
    if t == "slot":
        return (f"*replication slot* {code(h.get('slot_name'))} ({esc(h.get('slot_type') or '?')}, "
                f"{'active' if h.get('active') else 'inactive'}) · xmin {code(h.get('xmin'))} · catalog_xmin "
                f"{code(h.get('catalog_xmin'))} · retains {format_bytes(h.get('retained_bytes'))} of WAL · seen "
                f"holding it for *{format_duration(h.get('secs'))}* · {behind}")
    if t == "feedback":
        return (f"*standby* {code(h.get('application'))} ({code(h.get('client_addr'))}) with hot_standby_feedback · "
                f"xmin {code(h.get('xmin'))} · seen for *{format_duration(h.get('secs'))}* · {behind}")
    return esc(str(h))


def _xmin_blocks(f: Mapping[str, Any], tokens: Mapping[int, str], kill_disabled: str | None, query_chars: int,
                 details: Mapping[int, str]) -> list[dict[str, Any]]:
    blocks = [section(f"{EMOJI[XMIN_HORIZON]} Vacuum cannot remove rows newer than the oldest of these "
                      f"(held longer than {format_duration(f['threshold'])}):")]
    for h in f.get("holders") or []:
        blocks.append(section(cut(_holder_line(h, query_chars), 2900)))
        if h["type"] == "backend" and h.get("backend_type") == "client backend":
            blocks += _buttons(h["session"], tokens.get(h["session"]["pid"]), kill_disabled, cancel=False, terminate=True,
                               details_token=details.get(h["session"]["pid"]))
    return blocks


def _wraparound_blocks(f: Mapping[str, Any], tokens: Mapping[int, str], kill_disabled: str | None, query_chars: int,
                       details: Mapping[int, str]) -> list[dict[str, Any]]:
    dbs = "\n".join(
        f"db {code(d.get('name'))} · age(datfrozenxid) *{d['xid_age']:,}* · mxid_age(datminmxid) *{d['mxid_age']:,}*"
        for d in f.get("databases") or [])
    more = f"\n{f['count'] - len(f.get('databases') or [])} more not shown." if f["count"] > len(f.get("databases") or []) else ""
    blocks = [section(cut(
        f"{EMOJI[WRAPAROUND]} PostgreSQL stops taking writes in a database whose oldest unfrozen transaction ID "
        f"or multixact nears {f['limit']:,}, until VACUUM freezes it. Over {f['threshold']:,}:\n{dbs}{more}", 2900))]
    holders = f.get("holders") or []
    if not holders:
        blocks.append(context("Nothing holds the horizon back now: VACUUM (FREEZE) the databases listed, or let "
                              "autovacuum's anti-wraparound vacuum finish (see `pg_stat_progress_vacuum`)."))
        return blocks
    blocks.append(section("VACUUM cannot freeze past the oldest of these (oldest transaction first):"))
    for h in holders:
        blocks.append(section(cut(_holder_line(h, query_chars), 2900)))
        if h["type"] == "backend" and h.get("backend_type") == "client backend":
            blocks += _buttons(h["session"], tokens.get(h["session"]["pid"]), kill_disabled, cancel=False, terminate=True,
                               details_token=details.get(h["session"]["pid"]))
    return blocks


def render_alert(
    kind: str,
    env: str,
    host: str,
    facts: Mapping[str, Any],
    *,
    incident_id: str,
    opened_at: float,
    now: float,
    tokens: Mapping[int, str] | None = None,
    details_tokens: Mapping[int, str] | None = None,
    bulk_token: str | None = None,
    bulk_sessions: Sequence[Mapping[str, Any]] = (),
    kill_disabled: str | None = None,
    ack: Mapping[str, Any] | None = None,
    query_chars: int = 300,
    remind_every: float = 900.0,
) -> dict[str, Any]:
    tokens = tokens or {}
    details = details_tokens or {}
    title = _title(kind, env, host, facts)
    blocks: list[dict[str, Any]] = [header(title)]
    if kind == LOCK_PILEUP:
        body = _pileup_blocks(facts, tokens, kill_disabled, query_chars, details)
    elif kind in (IDLE_TX, LONG_RUNNING):
        body = _sessions_blocks(kind, facts, tokens, kill_disabled, query_chars, details)
    elif kind == CONNECTIONS:
        body = _connections_blocks(facts, bulk_token, bulk_sessions, kill_disabled)
    elif kind == WAL_RECEIVER:
        silent = facts.get("silent_secs")
        body = [section(
            f"{EMOJI[WAL_RECEIVER]} The standby's WAL receiver is *{esc(facts.get('status') or 'not running')}*"
            + (f" (last message from the primary {format_duration(silent)} ago)" if silent is not None else "")
            + ": it receives no WAL, so it falls behind without ever showing replay lag. Check "
            "`primary_conninfo`, the replication slot and the primary's `pg_stat_replication`.")]
    elif kind == POOL_WAITING:
        body = _pool_waiting_blocks(facts, tokens, kill_disabled, query_chars, details)
    elif kind == HOST_UNREACHABLE:
        body = [section(f"{EMOJI[HOST_UNREACHABLE]} The bot cannot read this server: {esc(facts.get('reason') or '?')}"
                        f" ({_plural(int(facts.get('failures') or 0), 'check')} in a row). No session alert can fire "
                        "for it until it answers.")]
    elif kind == WRAPAROUND:
        body = _wraparound_blocks(facts, tokens, kill_disabled, query_chars, details)
    else:
        body = _xmin_blocks(facts, tokens, kill_disabled, query_chars, details)
    tail = [acknowledge_block(incident_id, ack)]
    tail.append(context(
        f"Open since {slack_time(_utc(opened_at))} · updated {slack_time(_utc(now))} · "
        + ("" if ack else f"reminders every {format_duration(remind_every)} until acknowledged · ")
        + "every action asks an approver first"))
    room = MAX_BLOCKS - len(blocks) - len(tail)
    if len(body) > room:
        body = body[: room - 1] + [context("(more not shown: Slack allows 50 blocks)")]
    blocks += body + tail
    return message(f"{EMOJI.get(kind, '')} {title}: {_summary(kind, facts)}", blocks)


def _summary(kind: str, f: Mapping[str, Any]) -> str:
    """The fallback text's details (escaped; names from the database in code spans: in a fallback text
    or a reminder nothing else stops a URL from linking or ``:x:`` from becoming an emoji)."""
    if kind == LOCK_PILEUP:
        r = f["root"]
        if r.get("backend_type") == AUTOVACUUM_WORKER:
            return (f"root blocker pid {r['pid']} ({code(r.get('query') or 'autovacuum worker')}); "
                    f"longest wait {format_duration(f.get('longest_wait'))}")
        return (f"root blocker pid {r['pid']} (user {code(r.get('user') or '?')}, app {code(r.get('application'))}, "
                f"{esc(r.get('state') or '?')}); longest wait {format_duration(f.get('longest_wait'))}")
    if kind in (IDLE_TX, LONG_RUNNING):
        return ", ".join(f"pid {s['pid']} (app {code(s.get('application'))})" for s in (f.get("sessions") or [])[:5])
    if kind == CONNECTIONS:
        return "most connections: " + ", ".join(f"{code(k)} {v}" for k, v in f["by_app"][:3])
    if kind == WAL_RECEIVER:
        return f"status {esc(f.get('status') or 'not running')}"
    if kind == HOST_UNREACHABLE:
        return esc(f.get("reason") or "?")
    if kind == POOL_WAITING:
        return _pool_waiting_line(f)
    if kind == XMIN_HORIZON:
        o = f["oldest"]
        name = {"backend": lambda: f"pid {o['session']['pid']} (app {code(o['session'].get('application'))})",
                "prepared": lambda: f"gid {code(o.get('gid'))}",
                "slot": lambda: f"slot {code(o.get('slot_name'))}",
                "feedback": lambda: f"standby {code(o.get('application'))}"}.get(o["type"], lambda: "?")()
        return f"{name}, {o.get('xid_age')} transactions behind"
    if kind == WRAPAROUND:
        d = f["worst"]
        text = (f"db {esc(d.get('name'))} age(datfrozenxid) {d['xid_age']:,}, "
                f"mxid_age(datminmxid) {d['mxid_age']:,}")
        holders = f.get("holders") or []
        return text + (f"; held back by {_holder_name(holders[0])}" if holders else "")
    return ""


def _holder_name(h: Mapping[str, Any]) -> str:
    """A horizon holder in a few escaped words."""
    t = h["type"]
    if t == "backend":
        return f"pid {h['session']['pid']} (app {esc(h['session'].get('application') or '–')})"
    if t == "prepared":
        return f"prepared transaction {esc(h.get('gid'))}"
    if t == "slot":
        return f"replication slot {esc(h.get('slot_name'))}"
    if t == "feedback":
        return f"standby {esc(h.get('application'))}"
    return "?"


def render_reminder(kind: str, env: str, host: str, facts: Mapping[str, Any], *, opened_at: float, now: float) -> dict[str, Any]:
    text = (f":bell: Still open after {format_duration(now - opened_at)}: {_title(kind, env, host, facts)}: "
            f"{_summary(kind, facts)}. Acknowledge the alert to stop these reminders.")
    return message(text, [section(text)])


def render_resolved(
    kind: str,
    env: str,
    host: str,
    facts: Mapping[str, Any],
    *,
    opened_at: float,
    resolved_at: float,
    done: Sequence[str],
    ack: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    title = _title(kind, env, host, facts) if facts else f"{TITLE.get(kind, kind)} on {where(env, host)}"
    head = f"Resolved: {TITLE.get(kind, kind)} on {where(env, host)}"
    lines = [
        f":white_check_mark: *{head}* · lasted *{format_duration(resolved_at - opened_at)}* "
        f"({slack_time(_utc(opened_at))} – {slack_time(_utc(resolved_at))})",
        f"Was: {esc(title)}" + (f": {_summary(kind, facts)}" if facts else ""),
    ]
    if ack:
        lines.append(f"Acknowledged by <@{ack['by']}>")
    lines.append("*What was done:* " + ("; ".join(done) if done else "nothing through the bot; the condition cleared by itself"))
    text = f"{head}, lasted {format_duration(resolved_at - opened_at)}: " + ("; ".join(done) if done else "cleared by itself")
    return message(text, [section(cut("\n".join(lines), 2900))])


def render_closed(kind: str, env: str, host: str, why: str) -> dict[str, Any]:
    text = f"Closed: {TITLE.get(kind, kind)} on {where(env, host)}: {why}."
    return message(text, [section(f":information_source: {text}")])
