"""The nudges' texts: the requester's direct message about an outcome, the approvers' reminder, the
expiry note in the request's thread. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.approval.models import Request
from bot.durations import format_duration
from bot.render.approval import action_verb, mention, target_summary, where
from bot.render.common import context, cut, esc, message, section, slack_time


def _what(req: Request) -> str:
    return f"*{action_verb(req.action)}* {target_summary(req.target)} on {where(req.env, req.host)}"


def _people(ids: str | None) -> str:
    return ", ".join(f"<@{p}>" for p in (ids or "").split(",") if p and "<" not in p) or "an approver"


def outcome_dm(req: Request, link: str | None) -> dict[str, Any]:
    """The requester's direct message when their request was acted on, denied or expired."""
    state = req.state
    what = _what(req)
    detail = esc(cut(str(req.outcome.detail if req.outcome is not None else ""), 500))
    if state == "done":
        head = f":white_check_mark: Your request to {what} was approved by {_people(req.decided_by)} and done"
        text = f"{head}: {detail}" if detail else head + "."
    elif state == "failed":
        head = f":x: Your request to {what} was approved by {_people(req.decided_by)} but not done"
        text = f"{head}: {detail}" if detail else head + "."
    elif state == "denied":
        text = f":no_entry: Your request to {what} was denied by {_people(req.decided_by)}."
    elif state == "expired":
        ttl = format_duration(req.expires_at - req.created_at)
        text = f":alarm_clock: Your request to {what} expired: nobody approved it within {ttl}. Nothing was done."
    else:
        text = f"Your request to {what} is now {esc(state)}."
    blocks = [section(text)]
    if link:
        blocks.append(context(f"<{link}|The request in Slack>"))
    fallback = text + (f" {link}" if link else "")
    return message(cut(fallback.replace("*", ""), 3000), blocks)


def reminder(req: Request, waiting_for: list[str]) -> dict[str, Any]:
    """The approvers' one reminder, in the request's thread, at half of its time to live."""
    who = ", ".join(mention(p) for p in waiting_for) or "approvers"
    expires = slack_time(datetime.fromtimestamp(req.expires_at, UTC))
    text = (
        f":bell: {who}: <@{req.requester}>'s request to {_what(req)} is still waiting for approval; "
        f"it expires {expires}."
    )
    return message(text, [section(text)])


def expired_note(req: Request) -> dict[str, Any]:
    ttl = format_duration(req.expires_at - req.created_at)
    text = f":alarm_clock: This request expired: nobody approved it within {ttl}. Nothing was done."
    return message(text, [section(text)])
