"""Helpers shared by every renderer: escaping, folding, Slack's size limits."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from bot.phrase import Phrase

MAX_BLOCKS = 50
SECTION_TEXT = 3000
FIELD_TEXT = 2000
HEADER_TEXT = 150
BUTTON_TEXT = 75
CONTEXT_TEXT = 2000
FALLBACK_TEXT = 3000

_WS = re.compile(r"\s+")


# Look-alikes for Slack's formatting markers (the same choice as jsx-slack's <Escape>).
BACKTICK = "\u02cb"  # ˋ modifier letter grave accent: a backtick in data can never open or close a code span
LOOKALIKE = {"*": "\u2217", "_": "\u02cd", "~": "\u223c"}  # ∗ ˍ ∼
_MARKER = re.compile(r"[*_~]")
# C0 and C1 controls, DEL, line/paragraph separators and bidirectional overrides
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible_control(m: re.Match[str]) -> str:
    ch = m.group(0)
    o = ord(ch)
    if ch == "\n":
        return "\u21b5"  # ↵
    if o < 0x20:
        return chr(0x2400 + o)  # Unicode control pictures: ␛ for ESC, ␉ for TAB, ...
    if o == 0x7F:
        return "\u2421"  # ␡
    return f"[U+{o:04X}]"


def visible(text: object) -> str:
    """``text`` with every control character (newline, ESC, bidi overrides...) shown as a visible sign.

    For plain_text objects and terminals, where nothing else needs escaping; :func:`esc` includes it.
    """
    return _CONTROL.sub(_visible_control, str(text))


def _marker(m: re.Match[str]) -> str:
    s, i = m.string, m.start()
    inside_word = 0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()
    return m.group(0) if inside_word else LOOKALIKE[m.group(0)]


def esc(text: object, *, in_code: bool = False) -> str:
    """THE escaping function: a string from a database (or a user) as inert mrkdwn text.

    Every string that comes from a monitored server (application_name, user, database, client host,
    query text, error messages, relation names...) goes through this function (or :func:`code`,
    which uses it) before it is put in any mrkdwn text or fallback ``text``. The result can neither
    mention, link nor format, and shows as typed:

    * ``&``, ``<``, ``>`` become ``&amp;``, ``&lt;``, ``&gt;`` (Slack's control characters: no
      ``<!channel>``, ``<@U1>``, ``<#C1>`` or ``<https://x|label>`` can form);
    * a backtick becomes ``ˋ`` (U+02CB), so data can never open or close a code span;
    * control characters become visible signs: newline ``↵``, ESC ``␛`` (U+241B) and the other
      control pictures, DEL ``␡``, C1 controls and bidi overrides ``[U+202E]``;
    * outside code spans (``in_code=False``), ``*``, ``_`` and ``~`` that could open or close
      emphasis (any not between two letters or digits) become the look-alikes ``∗`` ``ˍ`` ``∼``;
      ``pg_dump`` stays as it is. Inside a code span (``in_code=True``, used by :func:`code`)
      Slack formats nothing, so they are kept exactly.
    """
    out = visible(text)
    if not in_code:  # decided on the characters as typed (before & < > become entities)
        out = _MARKER.sub(_marker, out)
    return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", BACKTICK)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def fold_query(query: str, limit: int) -> str:
    """One line, cut to ``limit`` characters, safe inside an inline code span."""
    one_line = _WS.sub(" ", query or "").strip()
    return cut(one_line, limit).replace("`", "ˋ")


def code(text: object) -> str:
    """``text`` (data) as an inline code span: exactly as typed, nothing in it can format or link."""
    return f"`{esc(text, in_code=True)}`" if text not in (None, "") else "–"


def phrase(p: Phrase | str) -> str:
    """A :class:`~bot.phrase.Phrase` as mrkdwn: every name in it as a :func:`code` span. A ``str`` is the
    bot's own mrkdwn already (a policy refusal) and is returned as it is."""
    if isinstance(p, str):
        return p
    return p.template.format(**{k: code(v) for k, v in p.names})


def mrkdwn(text: str, limit: int = SECTION_TEXT) -> dict[str, Any]:
    """A mrkdwn text object with ``verbatim: true``: Slack turns no bare URL, ``#channel`` or ``@here`` in it
    into a link or a mention (the bot's own ``<@U…>``, ``<#C…>`` and ``<!date…>`` markup still works).
    Every mrkdwn object the bot draws is built here; an ``:emoji:`` is still drawn outside a code span,
    so names from a database go in :func:`code` spans."""
    return {"type": "mrkdwn", "text": cut(text, limit), "verbatim": True}


def plain(text: str, limit: int, *, emoji: bool = True) -> dict[str, Any]:
    """A plain_text object: Slack parses no mentions, links or formatting in it; controls are made visible.
    ``emoji=False`` for text that holds a name from a database: an ``:x:`` in it is not drawn as an emoji."""
    return {"type": "plain_text", "text": cut(visible(text), limit), "emoji": emoji}


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn(text), **extra}


def context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(t, CONTEXT_TEXT) for t in texts if t][:10]}


def header(text: str, *, emoji: bool = True) -> dict[str, Any]:
    """A header; ``emoji=False`` when it holds a name from a database (see :func:`plain`)."""
    return {"type": "header", "text": plain(text, HEADER_TEXT, emoji=emoji)}


def divider() -> dict[str, Any]:
    return {"type": "divider"}


def button(text: str, action_id: str, value: str, style: str | None = None, confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    b = {"type": "button", "text": plain(text, BUTTON_TEXT), "action_id": action_id[:255], "value": value[:2000]}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def actions(block_id: str | None, *elements: dict[str, Any]) -> dict[str, Any]:
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


def message(text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """A chat message payload: blocks within limits, always with a plain fallback text."""
    if len(blocks) > MAX_BLOCKS:
        raise ValueError(f"{len(blocks)} blocks: a message holds at most {MAX_BLOCKS}")
    return {"text": cut(text, FALLBACK_TEXT), "blocks": blocks}
