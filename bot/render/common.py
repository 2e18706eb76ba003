"""Helpers shared by every renderer: escaping, folding, Slack's size limits."""

from __future__ import annotations

import re
from datetime import UTC, datetime

MAX_BLOCKS = 50
SECTION_TEXT = 3000
FIELD_TEXT = 2000
HEADER_TEXT = 150
BUTTON_TEXT = 75
CONTEXT_TEXT = 2000
FALLBACK_TEXT = 3000

_WS = re.compile(r"\s+")


def esc(text: object) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def fold_query(query: str, limit: int) -> str:
    """One line, cut to ``limit`` characters, safe inside an inline code span."""
    one_line = _WS.sub(" ", query or "").strip()
    return cut(one_line, limit).replace("`", "ˋ")


def code(text: str) -> str:
    return f"`{esc(text)}`" if text else "–"


def mrkdwn(text: str, limit: int = SECTION_TEXT) -> dict:
    return {"type": "mrkdwn", "text": cut(text, limit)}


def plain(text: str, limit: int) -> dict:
    return {"type": "plain_text", "text": cut(text, limit), "emoji": True}


def section(text: str, **extra) -> dict:
    return {"type": "section", "text": mrkdwn(text), **extra}


def context(*texts: str) -> dict:
    return {"type": "context", "elements": [mrkdwn(t, CONTEXT_TEXT) for t in texts if t][:10]}


def header(text: str) -> dict:
    return {"type": "header", "text": plain(text, HEADER_TEXT)}


def divider() -> dict:
    return {"type": "divider"}


def button(text: str, action_id: str, value: str, style: str | None = None, confirm: dict | None = None) -> dict:
    b = {"type": "button", "text": plain(text, BUTTON_TEXT), "action_id": action_id[:255], "value": value[:2000]}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def actions(block_id: str | None, *elements: dict) -> dict:
    block = {"type": "actions", "elements": list(elements)[:25]}
    if block_id:
        block["block_id"] = block_id[:255]
    return block


def slack_time(when: datetime | None) -> str:
    """A timestamp every reader sees in their own time zone, with a UTC fallback."""
    if when is None:
        return "–"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    epoch = int(when.timestamp())
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{epoch}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def message(text: str, blocks: list[dict]) -> dict:
    """A chat message payload: blocks within limits, always with a plain fallback text."""
    if len(blocks) > MAX_BLOCKS:
        raise ValueError(f"{len(blocks)} blocks: a message holds at most {MAX_BLOCKS}")
    return {"text": cut(text, FALLBACK_TEXT), "blocks": blocks}
