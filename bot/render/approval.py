"""Approval requests as Block Kit: the request modal, the approval message in its every state."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from bot.approval.actions import ACTIONS, ActionKind
from bot.approval.ids import REQUEST_CALLBACK, decide_action_id
from bot.approval.models import (
    BulkTarget,
    DatabaseTarget,
    Request,
    RequestState,
    SessionTarget,
    StoredTarget,
    Target,
)
from bot.durations import format_duration
from bot.render.common import (
    actions,
    button,
    code,
    context,
    cut,
    esc,
    fold_query,
    header,
    message,
    plain,
    section,
    slack_time,
)

# what an audit event's outcome part means, in words (events are stored as ``action:outcome``)
EVENT_WORDS = {
    "requested": "requested",
    "approved": "approved",
    "denied": "denied",
    "withdrawn": "withdrawn",
    "expired": "expired",
    "interrupted": "interrupted",
    "executed": "done",
    "done": "done",
    "ended": "ended",
    "gone": "session gone",
    "moved": "session moved on, nothing signalled",
    "reminded": "approvers reminded",
    "skipped": "skipped",
    "failed": "could not be signalled",
    "not_done": "signalled but still connected",
    "not_attempted": "not attempted",
    "refused": "refused, nothing signalled",  # by PostgreSQL, or authority gone just before acting
    "unavailable": "server not reachable",
    "blocked": "new connections blocked",
}


def action_label(action: str) -> str:
    """'Clear database' for ``clear_db``: the words a user reads for an action kind (its label in the
    table of actions)."""
    kind = ACTIONS.get(action)
    return kind.label if kind is not None else action.replace("_", " ").capitalize()


def action_verb(action: str) -> str:
    """'terminate every session of' for ``clear_db``: the verb phrase of an action kind."""
    kind = ACTIONS.get(action)
    return kind.verb if kind is not None else action


def event_words(event: str) -> str:
    """'Clear database: ended' for ``clear_db:ended``, 'Terminate: session gone' for ``terminate:gone``."""
    action, _, outcome = (event or "").partition(":")
    if not outcome:
        return action_label(action)
    return f"{action_label(action)}: {EVENT_WORDS.get(outcome, outcome.replace('_', ' '))}"


STATE_LINE = {
    "pending": ":hourglass: *Waiting for approval*",
    "executing": ":gear: *Approved: acting now…*",
    "done": ":white_check_mark: *Done*",
    "failed": ":x: *Not done*",
    "denied": ":no_entry: *Denied*",
    "withdrawn": ":leftwards_arrow_with_hook: *Withdrawn by the requester*",
    "expired": ":alarm_clock: *Expired*: nobody approved in time; the buttons no longer work",
}


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def mention(principal: str) -> str:
    if principal == "*":
        return "anyone"
    if principal.startswith("S"):
        return f"<!subteam^{principal}>"
    return f"<@{principal}>"


def where(env: str, host: str) -> str:
    return f"{code(env)}" + ("" if host == "primary" else f" standby {code(host)}")


def header_where(env: str, host: str | None) -> str:
    """Where a request acts, for a header (plain text): 'prod', or 'prod standby replica1'."""
    return env if not host or host == "primary" else f"{env} standby {host}"


def listed_when(t: SessionTarget, now: float | None = None, requested_at: float | None = None) -> str | None:
    """'*listed* <when, N ago>': when the session was seen as shown (the approval covers exactly that).

    The time is a Slack date with ``{ago}`` (every reader sees the live age); the fallback, and the
    text after it, carry the age when drawn and, on a request, how long after the listing it was made.
    """
    listed_at = t.listed_at
    if not isinstance(listed_at, (int, float)) or listed_at <= 0:
        return None
    now = time.time() if now is None else now
    when = datetime.fromtimestamp(listed_at, UTC)
    age = format_duration(max(0.0, now - listed_at))
    fallback = when.strftime("%Y-%m-%d %H:%M:%S UTC") + f", {age} ago"
    line = f"*listed* <!date^{int(listed_at)}^{{date_short_pretty}} {{time_secs}}, {{ago}}|{fallback}> ({age} ago)"
    if requested_at is not None:
        line += f" · requested {format_duration(max(0.0, requested_at - listed_at))} after the listing"
    return line


def target_lines(
    t: SessionTarget, query_chars: int = 500, now: float | None = None, requested_at: float | None = None
) -> str:
    lines = [
        f"*pid* {t.pid} · *user* {code(t.user or '?')} · *db* {code(t.database or '?')} · "
        f"*app* {code(t.application or '–')} · *client* {esc(t.client_addr or 'local socket')}",
        f"*state* {esc(t.state or '?')} · {esc(t.duration_what or 'for')} "
        f"{format_duration(t.duration_secs)} (when listed) · *backend started* {esc(t.backend_start)}",
    ]
    if t.pooled is not None:
        p = t.pooled
        where_ = f"{p.addr}:{p.port}" if p.addr and p.port is not None else (p.addr or "local socket")
        lines.append(
            f":link: *via pooler* {code(p.pooler)} (pool {code(p.pool or '?')}, {esc(p.pool_mode or '?')} pooling) · "
            f"*client linked when listed* {code(where_)} · *app* {code(p.application or '–')}"
            + (f" · *client id* {p.client_id}" if p.client_id is not None else "")
            + " (a Terminate of this server connection ends what that client does on it now)"
        )
    when = listed_when(t, now, requested_at)
    if when:
        lines.append(when)
    if t.query:
        lines.append(f"{code(fold_query(t.query, query_chars))}")
    return "\n".join(lines)


def request_modal(
    stored: StoredTarget, kind: ActionKind, token: str, channel: str | None, require_reason: bool
) -> dict[str, Any]:
    """The modal a Cancel/Terminate click opens. Its submit button says *Request*."""
    verb = kind.verb
    t = stored.target
    assert isinstance(t, SessionTarget)
    meta = json.dumps({"token": token, "action": kind.name, "channel": channel})
    reason_block = {
        "type": "input",
        "block_id": "reason",
        "optional": not require_reason,
        "label": plain("Reason" + ("" if require_reason else " (optional)"), 2000),
        "element": {
            "type": "plain_text_input",
            "action_id": "reason",
            "multiline": True,
            "max_length": 500,
            "placeholder": plain("Why should this session be stopped? Incident link, ticket…", 150),
        },
    }
    return {
        "type": "modal",
        "callback_id": REQUEST_CALLBACK,
        "private_metadata": meta,
        "title": plain(kind.title, 24),
        "submit": plain("Request", 24),
        "close": plain("Close", 24),
        "blocks": [
            section(f"Ask an approver to *{verb}* this session on {where(stored.env, stored.host)}:"),
            section(target_lines(t)),
            reason_block,
            context("Nothing is signalled until a second, authorized person approves."),
        ],
    }


def still_can_approve(cfg_approvers: list[str], approvals: list[str], requester: str, self_approval: bool) -> list[str]:
    """The configured approvers (people and groups) who may still decide: not those who already approved,
    nor the requester when self-approval is off (their click would be refused)."""
    return [p for p in cfg_approvers if p not in approvals and (self_approval or p != requester)]


def decision_footer(
    req: Request, approvals: list[str], required: int, cfg_approvers: list[str], finished: str | None = None
) -> list[dict[str, Any]]:
    """Where the Approve / Deny / Withdraw buttons are drawn, for every kind of request.

    Pending: when it was asked, when it expires, who must decide, and the buttons. Decided: the times only.
    """
    times = f"Requested {slack_time(_dt(req.created_at))}"
    if req.state != RequestState.PENDING:
        if req.decided_at:
            times += f" · decided {slack_time(_dt(req.decided_at))}"
        if finished:
            times += f" · {finished}"
        return [context(cut(times, 1900))]
    who = ", ".join(mention(p) for p in cfg_approvers) or "nobody left in access.approvers"
    need = required - len(approvals)
    times += f" · expires {slack_time(_dt(req.expires_at))} · needs {need} more approval{'s' if need != 1 else ''} from {who}"
    rid = req.id
    return [
        context(cut(times, 1900)),
        actions(
            f"req:{rid}",
            button("Approve", decide_action_id("approve", rid), rid, style="primary"),
            button("Deny", decide_action_id("deny", rid), rid, style="danger"),
            button("Withdraw", decide_action_id("withdraw", rid), rid),
        ),
    ]


def request_message(
    req: Request, kind: ActionKind, approvals: list[str], required: int, cfg_approvers: list[str]
) -> dict[str, Any]:
    label, verb = kind.label, kind.verb
    t = req.target
    assert isinstance(t, SessionTarget)
    state = req.state
    blocks = [
        header(f"{label} request: pid {t.pid} on {header_where(req.env, req.host)}"),
        section(
            f"<@{req.requester}> asks to *{verb}* pid {t.pid} on {where(req.env, req.host)}.\n"
            f"*Reason:* {esc(req.reason or '(none given)')}"
        ),
        section(target_lines(t, requested_at=req.created_at)),
    ]
    status = STATE_LINE.get(state, state)
    details = [status]
    if approvals:
        details.append("Approved by " + ", ".join(f"<@{a}>" for a in approvals))
    if state == RequestState.DENIED and req.decided_by:
        details.append(f"Denied by <@{req.decided_by}>")
    if req.outcome is not None:
        details.append(f"*Outcome:* {esc(req.outcome.detail)}")
    blocks.append(section("\n".join(details)))
    finished = None
    if req.updated_at and state in (RequestState.DONE, RequestState.FAILED):
        finished = f"finished {slack_time(_dt(req.updated_at))}"
    blocks += decision_footer(req, approvals, required, cfg_approvers, finished)
    text = f"{label} request for pid {t.pid} on {header_where(req.env, req.host)} by <@{req.requester}>: {state}"
    return message(text, blocks)


def target_summary(t: Target) -> str:
    """'pid 4211', or for bulk requests '12 sessions of app `x`' / 'database `appdb` (12 sessions)'."""
    if not isinstance(t, (BulkTarget, DatabaseTarget)):
        return f"pid {t.pid}"
    n = len(t.sessions)
    app = getattr(t, "app", None)
    if app:
        return f"{n} session{'s' if n != 1 else ''} of app {code(app)}"
    if t.database:
        return f"database {code(t.database)} ({n} session{'s' if n != 1 else ''})"
    return f"{n} sessions"


def pending_list(reqs: list[Request], now: float) -> dict[str, Any]:
    if not reqs:
        return message("No open requests.", [section(":white_check_mark: No open kill requests.")])
    blocks = [header(f"Open requests ({len(reqs)})")]
    for r in reqs[:45]:
        age = format_duration(now - r.created_at)
        left = format_duration(max(0.0, r.expires_at - now))
        blocks.append(
            section(
                f"*{esc(action_label(r.action))}* {target_summary(r.target)} on {where(r.env, r.host)} · by <@{r.requester}> · "
                f"{age} old · expires in {left}\n*Reason:* {esc(r.reason or '–')}"
            )
        )
    if len(reqs) > 45:
        blocks.append(context(f"{len(reqs) - 45} more not shown."))
    return message(f"{len(reqs)} open requests", blocks)


def audit_list(
    entries: list[dict[str, Any]], env: str | None, *, more: int = 0, next_page: str | None = None, filtered: bool = False
) -> dict[str, Any]:
    """The audit entries, newest first. ``more``: how many older entries match but are not shown, and
    ``next_page`` the command that shows the next ones; ``filtered``: a time window, a person or a page
    was asked for."""
    title = f"Audit log{' for ' + env if env else ''}"
    if not entries:
        return message(f"{title}: empty", [section(f"{title}: no entries {'match' if filtered else 'yet'}.")])
    lines = []
    for e in entries:
        actor = f"<@{e['actor']}>" if e.get("actor") else "bot"
        pid = f" pid {e['pid']}" if e.get("pid") else ""
        result = f" → {esc(cut(e['result'], 160))}" if e.get("result") else ""
        lines.append(
            f"{slack_time(_dt(e['at']))} {code(e['env'] or '')} {esc(event_words(e['event']))}{pid} {actor}{result}"
        )
    blocks = [header(title)]
    chunk: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) > 2800:
            blocks.append(section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        blocks.append(section("\n".join(chunk)))
    blocks = blocks[:49]
    if more > 0:
        older = f"{more} older entr{'ies' if more != 1 else 'y'} not shown"
        how = f": `{esc(next_page)}` shows the next ones" if next_page else ""
        blocks.append(context(f"{older}{how}; narrow with `--since 1h` or `--user U0123ABCD` (a member ID)."))
    return message(f"{title}: {len(entries)} latest entries" + (f" ({more} more)" if more > 0 else ""), blocks)
