"""Bulk clean-ups as Block Kit: the clear-db overview, the *Terminate these N* offer under a listing,
the request modal and the approval message in its every state (with progress and totals)."""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.approval.actions import ActionKind
from bot.approval.ids import (
    ALLOW_CONNECTIONS,
    CLEAR_DB,
    CLEAR_DB_BLOCK,
    REQUEST_CALLBACK,
    TERMINATE_BULK,
    bulk_action_id,
)
from bot.approval.models import (
    BulkTarget,
    DatabaseTarget,
    ItemResult,
    OutcomeStatus,
    Request,
    RequestState,
    SessionRef,
    StoredTarget,
)
from bot.approval.targets import session_ref
from bot.bulk.tally import RESULT_WORDS
from bot.bulk.targets import STATE_WORDS
from bot.durations import format_duration
from bot.phrase import Phrase
from bot.postgres.bulk import DatabaseInfo
from bot.postgres.models import Session
from bot.render.approval import STATE_LINE, decision_footer, header_where, where
from bot.render.common import (
    MAX_BLOCKS,
    actions,
    button,
    code,
    context,
    cut,
    esc,
    header,
    message,
    phrase,
    plain,
    section,
    slack_time,
)

MAX_GROUP_LINES = 25


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def state_counts(states: Iterable[str | None]) -> str:
    counts = Counter((s or "unknown") for s in states)
    order = ["active", "idle in transaction", "idle in transaction (aborted)", "idle"]
    keys = sorted(counts, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{counts[k]} {esc(k)}" for k in keys)


def group_lines(sessions: Iterable[SessionRef], limit: int = MAX_GROUP_LINES, chars: int = 2600) -> list[str]:
    """One line per (user, application), biggest first: count, states, client addresses.

    At most ``limit`` lines and about ``chars`` characters (a section holds 3000), then a line saying
    how many more groups there are."""
    groups: dict[tuple[str, str], list[SessionRef]] = {}
    for s in sessions:
        groups.setdefault((s.user or "?", s.application or ""), []).append(s)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    lines: list[str] = []
    size = 0
    for (user, app), members in ordered[:limit]:
        if size > chars:
            break
        clients = sorted({m.client_addr or "local socket" for m in members})
        shown_clients = ", ".join(esc(c) for c in clients[:3]) + (f" and {len(clients) - 3} more" if len(clients) > 3 else "")
        lines.append(
            f"• user {code(user)} · app {code(app) if app else '–'} · *{len(members)}* "
            f"({state_counts(m.state for m in members)}) · from {shown_clients}"
        )
        size += len(lines[-1]) + 1
    if len(ordered) > len(lines):
        rest = sum(len(m) for _, m in ordered[len(lines):])
        lines.append(f"• … and {len(ordered) - len(lines)} more user/application pairs ({rest} sessions)")
    return lines


def database_state_line(name: str, allow: bool | None) -> str:
    if allow is None:
        return f":grey_question: whether {code(name)} allows new connections is not known"
    if allow:
        return f":large_green_circle: {code(name)} allows new connections"
    return (
        f":no_entry: {code(name)} does *not* allow new connections (`ALLOW_CONNECTIONS false`): clients that "
        "try to connect are refused"
    )


def unknown_database(name: str, names: Iterable[str]) -> str:
    """There is no database ``name``: the closest names (mrkdwn)."""
    guess = difflib.get_close_matches(name, list(names), n=3)
    hint = (" Did you mean " + " or ".join(code(g) for g in guess) + "?") if guess else ""
    return f"There is no database {code(name)} on this server.{hint}"


# --- clear-db overview ----------------------------------------------------------------------------


def clear_db_message(
    env: str,
    info: DatabaseInfo,
    connected: list[Session],
    *,
    tokens: Mapping[str, str],
    block_why: Phrase | str | None,
    terminate_why: Phrase | str | None,
    allow_why: Phrase | str | None = None,
    ignored: int = 0,
) -> dict[str, Any]:
    """Who is connected to a database and the buttons that may empty it.

    ``ignored``: how many of the client sessions the environment's ``ignore`` rules match (they are
    included: clear-db empties the database, and says so).

    ``tokens`` maps each offered action to its token; ``*_why`` say why an action is not offered (a
    :class:`~bot.phrase.Phrase`, whose names are escaped here, or the bot's own mrkdwn)."""
    clients = [c for c in connected if c.is_client and not c.is_bot]
    own = [c for c in connected if c.is_bot]
    others = [c for c in connected if not c.is_client and not c.is_bot]
    n = len(clients)
    blocks: list[dict[str, Any]] = [header(f"Connections to database {info.name} on {env}", emoji=False)]
    if n:
        users = len({c.user for c in clients})
        apps = len({c.application for c in clients})
        addrs = len({c.client_addr or "local" for c in clients})
        oldest = max((c.backend_secs or 0.0) for c in clients)
        first = (
            f"*{_plural(n, 'session')}* connected ({state_counts(c.state for c in clients)}) · "
            f"{_plural(users, 'user')}, {_plural(apps, 'application')}, {_plural(addrs, 'client address', 'client addresses')}"
            f" · oldest connected {format_duration(oldest)} ago"
        )
    else:
        first = "*No client session* is connected to this database."
    facts = [first, database_state_line(info.name, info.allow_connections)]
    limit = "no connection limit" if info.conn_limit < 0 else f"connection limit {info.conn_limit}"
    facts.append(f"owner {code(info.owner)} · {limit}" + (" · template database" if info.is_template else ""))
    blocks.append(section("\n".join(facts)))
    if clients:
        blocks.append(section("*By user and application*\n" + "\n".join(group_lines(session_ref(c) for c in clients))))
    notes = []
    busy = [c for c in clients if c.state and c.state != "idle"]
    if busy:
        notes.append(
            f":warning: {_plural(len(busy), 'session is', 'sessions are')} not idle ({state_counts(c.state for c in busy)}): "
            "terminating rolls back their open transactions."
        )
    if ignored:
        notes.append(
            f":see_no_evil: {ignored} of them {'matches' if ignored == 1 else 'match'} the environment's `ignore` "
            "rules (hidden from listings and alerts); clear-db empties the database, so "
            f"{'it is' if ignored == 1 else 'they are'} included."
        )
    blocked_out = [c for c in clients if c.cannot_signal]
    if blocked_out:
        reasons = Counter(c.cannot_signal for c in blocked_out)
        notes.append(
            f":no_entry_sign: {_plural(len(blocked_out), 'session')} cannot be terminated by the bot: "
            + "; ".join(f"{esc(k)} ({v})" for k, v in reasons.items())
            + ". They will be reported, and the database will not be empty."
        )
    if others or info.prepared_xacts or info.logical_slots:
        parts = [f"{v} {k}" for k, v in Counter(c.backend_type or "" for c in others).items()]
        if info.prepared_xacts:
            parts.append(_plural(info.prepared_xacts, "prepared transaction"))
        if info.logical_slots:
            parts.append(_plural(info.logical_slots, "logical replication slot"))
        notes.append("Not touched by the bot: " + ", ".join(esc(p) for p in parts) + ".")
    if own:
        notes.append(f"The bot's own connections here ({len(own)}) are never terminated.")
    if notes:
        blocks.append(context(*notes))
    elements = []
    if CLEAR_DB in tokens:
        elements.append(button(f"Terminate all {n}", bulk_action_id(CLEAR_DB, tokens[CLEAR_DB]), tokens[CLEAR_DB],
                               style="danger"))
    if CLEAR_DB_BLOCK in tokens:
        label = f"Block new connections and terminate all {n}" if n else "Block new connections"
        elements.append(button(label, bulk_action_id(CLEAR_DB_BLOCK, tokens[CLEAR_DB_BLOCK]), tokens[CLEAR_DB_BLOCK],
                               style="danger"))
    if ALLOW_CONNECTIONS in tokens:
        elements.append(button("Allow connections again", bulk_action_id(ALLOW_CONNECTIONS, tokens[ALLOW_CONNECTIONS]),
                               tokens[ALLOW_CONNECTIONS], style="primary"))
    if elements:
        blocks.append(actions(f"clear-db:{info.oid}", *elements))
    explain = []
    if CLEAR_DB in tokens or CLEAR_DB_BLOCK in tokens:
        text = (
            f"Each button asks an approver first. An approval covers exactly these {n} sessions (pid + start time): "
            "sessions that connect later are not touched."
        )
        if CLEAR_DB_BLOCK in tokens:  # what it does is explained only where it is offered
            text += (
                f" *Block new connections* first runs `ALTER DATABASE {esc(info.name, in_code=True)} WITH ALLOW_CONNECTIONS false`, "
                "so that clients that reconnect at once stay out until someone uses *Allow connections again*."
            )
        explain.append(text)
    # why a button is missing, each reason once (signalling turned off is one reason for all three)
    missing: dict[str, list[str]] = {}
    for label, why in (
        ("Terminate all", terminate_why),
        ("Block new connections", block_why),
        ("Allow connections again", allow_why if not info.allow_connections else None),
    ):
        if why:
            missing.setdefault(phrase(why), []).append(f"*{label}*")
    for why, labels in missing.items():
        names = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
        explain.append(f"{names} {'is' if len(labels) == 1 else 'are'} not offered: {why}.")
    if explain:
        blocks.append(context(*explain))
    text = f"{_plural(n, 'session')} connected to {code(info.name)} on {env}" + (
        "" if info.allow_connections else " (the database does not allow new connections)"
    )
    return message(text, blocks[:MAX_BLOCKS])


def clear_db_refused(text: str) -> dict[str, Any]:
    return message(text, [section(f":no_entry_sign: {text}")])


# --- the offer under an idle / idle-tx listing ----------------------------------------------------


def bulk_offer_blocks(
    *, category: str, app: str, token: str | None, sessions: list[SessionRef], drawn: int,
    refusal: str | None = None, unsignalable: int = 0, filters: str = "", protected: int = 0,
) -> list[dict[str, Any]]:
    n = len(sessions)
    what = STATE_WORDS.get(category, category)
    left_out = (f"{_plural(protected, 'listed session is', 'listed sessions are')} protected (`protect`) and "
                "left out: never offered a signal") if protected else ""
    if not n:
        return [context(f":shield: *Terminate these N* is not offered: {left_out}.")] if protected else []
    if refusal or token is None:
        return [context(f":no_entry_sign: *Terminate these {n}* is not offered: {refusal or 'not available'}.")]
    beyond = n - min(drawn, n)
    scope = f"the {min(drawn, n)} drawn above" + (f" and {beyond} more found by the same filter" if beyond else "")
    text = (
        f":broom: *Terminate these {n}* sessions of app {code(app)} that are {esc(what)} ({scope}; filter {code(filters)}).\n"
        + "\n".join(group_lines(sessions, limit=5))
    )
    notes = [
        "An approval covers exactly these sessions (pid + start time): sessions that connect later are not "
        f"touched, and a session used again before the approval (no longer {esc(what)}, or {esc(what)} since "
        "later) is skipped and reported."
    ]
    if unsignalable:
        notes.append(f"{_plural(unsignalable, 'of them', 'of them')} cannot be signalled by the bot's role and will be reported.")
    if left_out:
        notes.append(f":shield: {left_out}.")
    return [
        section(cut(text, 2900)),
        actions(f"bulk:{token}", button(f"Terminate these {n}", bulk_action_id(TERMINATE_BULK, token), token, style="danger")),
        context(*notes),
    ]


# --- modal ----------------------------------------------------------------------------------------


def _scope_lines(action: str, env: str, host: str, t: BulkTarget | DatabaseTarget) -> list[str]:
    n = len(t.sessions)
    db = esc(t.database or "?", in_code=True)  # only ever shown inside a code span
    if isinstance(t, BulkTarget) and action == TERMINATE_BULK:
        what = STATE_WORDS.get(t.category or "", "matching")
        return [
            f"*Terminate {_plural(n, 'session')}* of app {code(t.app or '?')} that {'is' if n == 1 else 'are'} "
            f"{esc(what)} on {where(env, host)} (filter {code(t.filters or '')}).",
            "Only the sessions listed, by pid and start time; any used again before the approval is skipped.",
        ]
    if action in (CLEAR_DB, CLEAR_DB_BLOCK):
        lines = []
        if action == CLEAR_DB_BLOCK:
            lines.append(
                f"*Block new connections* to `{db}` on {where(env, host)} "
                f"(`ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false`)" + (", then" if n else ".")
            )
        if n or action == CLEAR_DB:
            lines.append(
                f"*terminate {_plural(n, 'session')}* connected to `{db}` when it was listed, by pid and start time "
                "(sessions that connect later are not touched; the bot's own connections never)."
            )
        if action == CLEAR_DB_BLOCK:
            lines.append("The database stays closed until someone uses *Allow connections again* (also approved).")
        return lines
    if action == ALLOW_CONNECTIONS:
        return [f"*Allow new connections* to `{db}` on {where(env, host)} again "
                f"(`ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true`)."]
    return [f"*{esc(action)}* on {where(env, host)}"]


def bulk_modal(stored: StoredTarget, kind: ActionKind, token: str, channel: str | None, require_reason: bool) -> dict[str, Any]:
    """The modal a bulk button opens; submitted through the same callback as a session's request."""
    t = stored.target
    assert isinstance(t, (BulkTarget, DatabaseTarget))
    action = kind.name
    meta = json.dumps({"token": token, "action": action, "channel": channel})
    blocks = [section("Ask an approver to:\n" + "\n".join(_scope_lines(action, stored.env, stored.host, t)))]
    sessions = t.sessions
    if sessions:
        blocks.append(section("*By user and application*\n" + "\n".join(group_lines(sessions, limit=10))))
    blocks.append(
        {
            "type": "input",
            "block_id": "reason",
            "optional": not require_reason,
            "label": plain("Reason" + ("" if require_reason else " (optional)"), 2000),
            "element": {
                "type": "plain_text_input",
                "action_id": "reason",
                "multiline": True,
                "max_length": 500,
                "placeholder": plain("Maintenance window, incident link, ticket…", 150),
            },
        }
    )
    blocks.append(context("Nothing is done until a second, authorized person approves."))
    return {
        "type": "modal",
        "callback_id": REQUEST_CALLBACK,
        "private_metadata": meta,
        "title": plain(kind.title, 24),
        "submit": plain("Request", 24),
        "close": plain("Close", 24),
        "blocks": blocks,
    }


# --- the approval message -------------------------------------------------------------------------


def _headline(req: Request, *, mrkdwn: bool = False) -> str:
    """For a header (plain_text: no markup is parsed) or, with ``mrkdwn``, for a fallback text (names in
    code spans: in a fallback text nothing else stops a URL from linking or ``:x:`` from being an emoji)."""
    q = code if mrkdwn else str
    t = req.target
    n = len(req.sessions)
    action, env = req.action, header_where(req.env, req.host)
    if isinstance(t, BulkTarget) and action == TERMINATE_BULK:
        return f"Terminate {_plural(n, 'session')} of app {q(t.app or '?')} on {env}"
    if action == CLEAR_DB:
        return f"Terminate all {_plural(n, 'session')} of database {q(t.database)} on {env}"
    if action == CLEAR_DB_BLOCK:
        if not n:
            return f"Block new connections to {q(t.database)} on {env}"
        return f"Block new connections to {q(t.database)} and terminate all {n} on {env}"
    if action == ALLOW_CONNECTIONS:
        return f"Allow connections to {q(t.database)} again on {env}"
    return f"{q(action)} on {env}"


def _counts_line(counts: Mapping[str, int]) -> str:
    return " · ".join(
        f"*{counts.get(k, 0)}* {w}" for k, w in RESULT_WORDS.items() if counts.get(k) or k in ("ended", "gone")
    )


def _item_lines(items: tuple[ItemResult, ...], limit: int = 10) -> str:
    return "\n".join(
        f"• pid {i.pid} ({code(i.user or '?')}, app {code(i.application or '–')}): {esc(i.result or '')}"
        for i in items[:limit]
    )


def bulk_request_message(
    req: Request, kind: ActionKind, approvals: list[str], required: int, cfg_approvers: list[str]
) -> dict[str, Any]:
    t = req.target
    assert isinstance(t, (BulkTarget, DatabaseTarget))
    state = req.state
    action = req.action
    out = req.bulk_outcome
    n = len(t.sessions)
    db = t.database
    blocks: list[dict[str, Any]] = [header(_headline(req), emoji=False)]
    blocks.append(
        section(
            f"<@{req.requester}> asks to:\n" + "\n".join(_scope_lines(action, req.env, req.host, t))
            + f"\n*Reason:* {esc(req.reason or '(none given)')}"
        )
    )
    if n:
        size = f"*Size:* {_plural(n, 'session')}"
        if t.listed_at:
            size += f" (snapshot taken {slack_time(_dt(t.listed_at))})"
        blocks.append(section(size + "\n" + "\n".join(group_lines(t.sessions, limit=12))))
    details = []
    status = out.status if out is not None else None
    if state == RequestState.DONE and status == OutcomeStatus.DONE:
        details.append(STATE_LINE["done"])
    elif state == RequestState.FAILED and status == OutcomeStatus.PARTIAL:
        details.append(":warning: *Done, with problems*")
    elif state == RequestState.EXECUTING and out is not None and out.progress is not None:
        p = out.progress
        details.append(f":gear: *Approved: acting now…* {p.handled} of {p.total} handled")
    else:
        details.append(STATE_LINE.get(state, state))
    if approvals:
        details.append("Approved by " + ", ".join(f"<@{a}>" for a in approvals))
    if state == RequestState.DENIED and req.decided_by:
        details.append(f"Denied by <@{req.decided_by}>")
    counts: Mapping[str, int] | None = None
    if out is not None:
        counts = out.counts or (out.progress.counts if out.progress is not None else None)
    finished_states = (RequestState.DONE, RequestState.FAILED)
    if counts and (n or sum(counts.values())):
        details.append(_counts_line(counts))
    if out is not None and out.detail and state in finished_states and not (status == OutcomeStatus.DONE and counts):
        details.append(f"*Outcome:* {esc(out.detail)}")
    if out is not None and out.arrived:
        details.append(
            f"{_plural(out.arrived, 'session')} connected after the listing and "
            + ("is" if out.arrived == 1 else "are")
            + " still there (not covered by this approval)."
        )
    blocks.append(section(cut("\n".join(details), 2900)))
    if out is not None and out.problems:
        blocks.append(section(cut("*Not ended*\n" + _item_lines(out.problems), 2900)))
    if out is not None and out.skipped:
        blocks.append(section(cut("*Skipped*\n" + _item_lines(out.skipped), 2900)))
    # the database's state, and the way to open it again
    if (
        action in (CLEAR_DB, CLEAR_DB_BLOCK, ALLOW_CONNECTIONS)
        and db
        and state in (RequestState.EXECUTING, *finished_states)
    ):
        reopened = out.reopened if out is not None else None
        allow = out.allow_connections if out is not None else None
        blocked = bool(out is not None and out.blocked)
        if blocked and not reopened and allow is None:
            allow = False
        # not read yet (the approval was just given): say nothing rather than "not known"
        line = database_state_line(db, allow) if allow is not None else ""
        if blocked and out is not None and out.closed_at and not reopened:
            line += f" · closed by this request {slack_time(_dt(out.closed_at))}"
        if reopened and reopened.how == "dropped":
            line = f":wastebasket: {code(db)} no longer exists (seen {slack_time(_dt(reopened.at))})"
        elif reopened:
            line = (line or code(db)) + f" · reopened {slack_time(_dt(reopened.at))}"
            if reopened.by:
                line += " (approved by " + ", ".join(f"<@{u}>" for u in str(reopened.by).split(",") if u) + ")"
            elif reopened.how:
                line += f" ({esc(reopened.how)})"
        if line:
            blocks.append(section(line))
        token = out.allow_token if out is not None else None
        if token and blocked and not reopened and state in finished_states:
            blocks.append(
                actions(
                    f"allow:{req.id}",
                    button("Allow connections again", bulk_action_id(ALLOW_CONNECTIONS, token), token, style="primary"),
                )
            )
    finished = None
    if out is not None and out.finished_at and state in finished_states:
        finished = f"finished {slack_time(_dt(out.finished_at))}"
        if out.duration_s is not None:
            d = float(out.duration_s)
            finished += f" in {d:.1f}s" if d < 10 else f" in {format_duration(d)}"
    blocks += decision_footer(req, approvals, required, cfg_approvers, finished)
    text = f"{_headline(req, mrkdwn=True)} (requested by <@{req.requester}>): {state}"
    if out is not None and out.detail and state in finished_states:
        text += f" — {esc(out.detail)}"
    return message(text, blocks[:MAX_BLOCKS])
