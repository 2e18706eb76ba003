"""Slack mrkdwn as plain terminal text.

What Slack would draw, without colour: ``<@U1>`` becomes ``@name``, ``<!subteam^S1>`` ``@group``,
``<#C1>`` ``#channel``, ``<!date^…|fallback>`` its fallback, ``<url|label>`` ``label (url)``;
``*bold*``, ``_italic_`` and ``~strike~`` lose their markers; inline code and code blocks keep their
backticks and are otherwise left alone; ``&lt;`` ``&gt;`` ``&amp;`` are unescaped; the emoji codes the
bot uses (``:warning:``, ``:turtle:``, ...) become the characters Slack draws, or a short word in
brackets where the terminal cannot print them (``Names.emoji = "word"``); other codes stay as they are.

Strings from a database reach this module already escaped by :func:`bot.render.common.esc` (so no
``<...>`` token, emphasis marker or code span can come from them); the terminal itself shows every
control character as a visible sign (``bot.shell.terminal.Terminal.write``), so an ``ESC[`` sequence in
an application_name is printed, not obeyed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
_TOKEN = re.compile(r"<([^<>\n]+)>")
_BOLD = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?!\s)([^_\n]+?)(?<!\s)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?!\s)([^~\n]+?)(?<!\s)~(?![\w~])")


# every emoji code the bot writes: (what Slack draws, a short word for terminals that cannot print it)
EMOJI: dict[str, tuple[str, str]] = {
    "warning": ("\u26a0\ufe0f", "[!]"),
    "no_entry_sign": ("\U0001f6ab", "[no]"),
    "white_check_mark": ("\u2705", "[ok]"),
    "no_entry": ("\u26d4", "[blocking]"),
    "lock": ("\U0001f512", "[lock]"),
    "grey_question": ("\u2754", "[?]"),
    "x": ("\u274c", "[x]"),
    "rotating_light": ("\U0001f6a8", "[alert]"),
    "hourglass_flowing_sand": ("\u23f3", "[waiting]"),
    "hourglass": ("\u231b", "[delay]"),
    "gear": ("\u2699\ufe0f", "[working]"),
    "electric_plug": ("\U0001f50c", "[unreachable]"),
    "camera_with_flash": ("\U0001f4f8", "[snapshot]"),
    "bell": ("\U0001f514", "[reminder]"),
    "zzz": ("\U0001f4a4", "[idle]"),
    "turtle": ("\U0001f422", "[slow]"),
    "pushpin": ("\U0001f4cc", "[pin]"),
    "mag": ("\U0001f50d", "[look]"),
    "leftwards_arrow_with_hook": ("\u21a9\ufe0f", "[withdrawn]"),
    "large_green_circle": ("\U0001f7e2", "[open]"),
    "information_source": ("\u2139\ufe0f", "[i]"),
    "double_vertical_bar": ("\u23f8\ufe0f", "[paused]"),
    "wastebasket": ("\U0001f5d1\ufe0f", "[gone]"),
    "broom": ("\U0001f9f9", "[clear]"),
    "alarm_clock": ("\u23f0", "[expired]"),
}
_EMOJI = re.compile(r":([a-z0-9_+-]+):")


def can_print_emoji(encoding: str | None) -> bool:
    """Whether a stream with this encoding can print the emoji characters (UTF-8 can, ASCII cannot)."""
    try:
        "".join(char for char, _ in EMOJI.values()).encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


@dataclass
class Names:
    """How ids are shown: user, user-group and channel ids to names (without @ or #); and emoji codes:
    as characters (``"char"``), as short words (``"word"``) or left as codes (``"code"``)."""

    users: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    emoji: str = "char"

    def emoji_of(self, code: str) -> str | None:
        known = EMOJI.get(code)
        if known is None or self.emoji == "code":
            return None
        return known[0] if self.emoji == "char" else known[1]

    def user(self, uid: str, label: str | None = None) -> str:
        return "@" + (self.users.get(uid) or (label.lstrip("@") if label else uid))

    def group(self, gid: str, label: str | None = None) -> str:
        return "@" + (self.groups.get(gid) or (label.lstrip("@") if label else gid))

    def channel(self, cid: str, label: str | None = None) -> str:
        return "#" + (self.channels.get(cid) or (label.lstrip("#") if label else cid))


def unescape(text: str) -> str:
    """Slack escapes exactly these three characters."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _token(inner: str, names: Names) -> str:
    target, _, given = inner.partition("|")
    label = given or None
    if target.startswith("@"):
        return names.user(target[1:], label)
    if target.startswith("#"):
        return names.channel(target[1:], label)
    if target.startswith("!subteam^"):
        return names.group(target[len("!subteam^") :], label)
    if target.startswith("!date^"):
        if label:
            return unescape(label)
        parts = target.split("^")
        try:
            return datetime.fromtimestamp(int(parts[1]), UTC).strftime("%Y-%m-%d %H:%M UTC")
        except (IndexError, ValueError, OverflowError):
            return target
    if target.startswith("!"):
        word = target[1:]
        return label or f"@{word}"
    # a link: <https://x|label> or <https://x>, <mailto:a@b|label>
    url = unescape(target)
    if label:
        label = unescape(label)
        return label if label == url else f"{label} ({url})"
    return url


def _plain(segment: str, names: Names) -> str:
    # tokens first (their labels are still escaped) behind placeholders, then emphasis, then entities
    tokens: list[str] = []

    def hold(m: re.Match[str]) -> str:
        tokens.append(_token(m.group(1), names))
        return f"\ue000{len(tokens) - 1}\ue001"

    text = unescape(_emphasis(_emoji(_TOKEN.sub(hold, segment), names)))
    return re.sub("\ue000(\\d+)\ue001", lambda m: tokens[int(m.group(1))], text)


def _emoji(text: str, names: Names) -> str:
    return _EMOJI.sub(lambda m: names.emoji_of(m.group(1)) or m.group(0), text)


def _emphasis(text: str) -> str:
    text = _BOLD.sub(r"\1", text)
    text = _ITALIC.sub(r"\1", text)
    return _STRIKE.sub(r"\1", text)


def to_text(text: str | None, names: Names | None = None) -> str:
    """mrkdwn → plain text for a terminal."""
    if not text:
        return ""
    names = names or Names()
    codes: list[str] = []

    def hold(m: re.Match[str]) -> str:
        codes.append(unescape(m.group(0)))
        return f"\ue002{len(codes) - 1}\ue003"

    # code is left alone, but emphasis may span it (*pid `4211` on `prod`*)
    text = _plain(_CODE.sub(hold, text), names)
    return re.sub("\ue002(\\d+)\ue003", lambda m: codes[int(m.group(1))], text)


def plain_text(obj: dict[str, Any] | str | None, names: Names | None = None) -> str:
    """A Block Kit text object (plain_text or mrkdwn) as plain text."""
    if obj is None:
        return ""
    if isinstance(obj, str):
        return obj
    text = str(obj.get("text") or "")
    if obj.get("type") == "mrkdwn":
        return to_text(text, names)
    if obj.get("emoji", True):  # Slack draws emoji codes in plain text too, unless told not to
        return _emoji(text, names or Names())
    return text
