"""Messages about the bot's own state store (issue 23 §6): the line on every alert posted while it does
not answer, the one store-down alert and its resolution, and the note on a duplicate alert."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.durations import format_duration
from bot.render.common import MAX_BLOCKS, context, section, slack_time

# the context line added to every alert posted or edited while the state store does not answer
OUTAGE_NOTE = "the bot's state store is not answering: this alert may be posted by more than one replica"
STORE_DOWN = "The bot's state store is not answering"
STORE_BACK = "The bot's state store answers again"


def with_outage_note(msg: dict[str, Any]) -> dict[str, Any]:
    """``msg`` (a ``chat.postMessage`` / ``chat.update`` body) with :data:`OUTAGE_NOTE` as its last block."""
    blocks = list(msg.get("blocks") or [])
    note = context(f":warning: {OUTAGE_NOTE}")
    if any(b == note for b in blocks):
        return msg
    if len(blocks) >= MAX_BLOCKS:
        blocks = blocks[: MAX_BLOCKS - 1]
    out = {**msg, "blocks": [*blocks, note]}
    if out.get("text"):
        out["text"] = f"{out['text']} ({OUTAGE_NOTE})"
    return out


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def render_store_down(since: float, *, replica: str) -> dict[str, Any]:
    text = (
        f"{STORE_DOWN} (since {slack_time(_utc(since))}). Alerts go on from memory on the replica that "
        "led the checks and may be posted by more than one replica; requests, approvals and buttons wait "
        "until it is back. Outcomes of signals sent meanwhile are kept and written when it returns."
    )
    return {
        "text": f":rotating_light: {STORE_DOWN}",
        "blocks": [section(f":rotating_light: *{text}*"), context(f"posted by replica `{replica}`")],
    }


def render_store_back(since: float, back: float, *, replica: str) -> dict[str, Any]:
    text = (
        f"{STORE_BACK}: it did not answer from {slack_time(_utc(since))} to {slack_time(_utc(back))} "
        f"({format_duration(max(0.0, back - since))}). What was alerted meanwhile is recorded."
    )
    return {
        "text": f":white_check_mark: {STORE_BACK}",
        "blocks": [section(f":white_check_mark: {text}"), context(f"posted by replica `{replica}`")],
    }


def render_duplicate_note() -> dict[str, Any]:
    text = (
        "Another replica alerted on the same thing while the bot's state store was down; "
        "this alert goes on there."
    )
    return {"text": text, "blocks": [section(f":information_source: {text}")]}
