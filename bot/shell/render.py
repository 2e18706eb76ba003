"""Block Kit as plain terminal lines: every block and element kind the bot draws, and the rest readably.

Interactive elements are drawn with a number (``[2] Terminate 4211``) that the caller hands out
through ``number(element, block_id)``; the console uses it for ``click 2``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.shell.mrkdwn import Names, plain_text, to_text

DIVIDER = "-" * 40
SELECTS = {
    "static_select", "external_select", "users_select", "conversations_select", "channels_select",
    "multi_static_select", "multi_external_select", "multi_users_select", "multi_conversations_select",
    "multi_channels_select",
}
TEXT_INPUTS = {"plain_text_input", "number_input", "email_text_input", "url_text_input", "rich_text_input"}
_LABEL_ONLY = re.compile(r"^\*[^*\n]+\*:?$")

Numberer = Callable[[dict[str, Any], "str | None"], "int | None"]


def _no_numbers(element: dict[str, Any], block_id: str | None) -> int | None:
    return None


class BlockRenderer:
    def __init__(self, names: Names | None = None, number: Numberer | None = None):
        self.names = names or Names()
        self.number = number or _no_numbers

    # --- text ---------------------------------------------------------------------------------------

    def text(self, obj: dict[str, Any] | str | None) -> str:
        return plain_text(obj, self.names)

    def mrkdwn(self, text: str | None) -> str:
        return to_text(text, self.names)

    # --- elements -----------------------------------------------------------------------------------

    def _tag(self, element: dict[str, Any], block_id: str | None) -> str:
        n = self.number(element, block_id)
        return f"[{n}] " if n is not None else "[ ] "

    def _options(self, element: dict[str, Any]) -> list[dict[str, Any]]:
        opts = list(element.get("options") or [])
        for group in element.get("option_groups") or []:
            opts += list(group.get("options") or [])
        return opts

    def _selected(self, element: dict[str, Any]) -> list[dict[str, Any]]:
        if element.get("initial_option"):
            return [element["initial_option"]]
        return list(element.get("initial_options") or [])

    def element(self, el: dict[str, Any], block_id: str | None = None) -> str:
        """One element on one line (buttons and other interactive ones carry their number)."""
        kind = el.get("type")
        if kind in ("plain_text", "mrkdwn"):
            return self.text(el)
        if kind == "image":
            return f"[image: {el.get('alt_text') or el.get('image_url') or ''}]"
        if kind == "button":
            out = self._tag(el, block_id) + self.text(el.get("text"))
            if el.get("url"):
                out += f" -> {el['url']}"
            return out
        if kind == "overflow":
            labels = " | ".join(self.text(o.get("text")) for o in self._options(el))
            return f"{self._tag(el, block_id)}more: {labels}"
        if kind in SELECTS:
            chosen = ", ".join(self.text(o.get("text")) for o in self._selected(el))
            label = self.text(el.get("placeholder")) or "choose"
            opts = " | ".join(self.text(o.get("text")) for o in self._options(el))
            out = f"{self._tag(el, block_id)}{label}"
            if chosen:
                out += f" = {chosen}"
            if opts:
                out += f" ({opts})"
            return out
        if kind in ("checkboxes", "radio_buttons"):
            values = {o.get("value") for o in self._selected(el)}
            mark = ("[x]", "[ ]") if kind == "checkboxes" else ("(o)", "( )")
            opts = "  ".join(
                f"{mark[0] if o.get('value') in values else mark[1]} {self.text(o.get('text'))}"
                for o in self._options(el)
            )
            return f"{self._tag(el, block_id)}{opts}"
        if kind in ("datepicker", "timepicker", "datetimepicker"):
            value = el.get("initial_date") or el.get("initial_time") or el.get("initial_date_time") or ""
            what = kind.replace("picker", "")
            return f"{self._tag(el, block_id)}{what}: {value or self.text(el.get('placeholder')) or 'pick one'}"
        if kind in TEXT_INPUTS:
            bits = ["text" if kind == "plain_text_input" else kind.replace("_input", "").replace("_", " ")]
            if el.get("multiline"):
                bits.append("several lines")
            if el.get("max_length"):
                bits.append(f"up to {el['max_length']} characters")
            hint = self.text(el.get("placeholder"))
            out = "<" + ", ".join(bits) + (f": {hint}" if hint else "") + ">"
            if el.get("initial_value"):
                out += f" = {el['initial_value']}"
            return out
        if kind == "workflow_button":
            return self._tag(el, block_id) + self.text(el.get("text"))
        return f"[{kind} element]"

    # --- blocks -------------------------------------------------------------------------------------

    def _field(self, f: dict[str, Any]) -> list[str]:
        raw = str(f.get("text") or "")
        lines = raw.split("\n")
        if f.get("type") == "mrkdwn" and len(lines) > 1 and _LABEL_ONLY.match(lines[0].strip()):
            label = self.mrkdwn(lines[0]).strip().rstrip(":")
            rest = " ".join(self.mrkdwn(x).strip() for x in lines[1:] if x.strip())
            return [f"- {label}: {rest}"]
        text = self.text(f).split("\n")
        return ["- " + text[0], *("  " + x for x in text[1:])]

    def block(self, b: dict[str, Any]) -> list[str]:
        kind = b.get("type")
        bid = b.get("block_id")
        if kind == "header":
            return [f"== {self.text(b.get('text'))} =="]
        if kind == "divider":
            return [DIVIDER]
        if kind == "section":
            out: list[str] = []
            if b.get("text"):
                out += self.text(b["text"]).split("\n")
            for f in b.get("fields") or []:
                out += self._field(f)
            acc = b.get("accessory")
            if acc:
                out.append(self.element(acc, bid))
            return out
        if kind == "context":
            parts = [self.element(e, bid) for e in b.get("elements") or []]
            return ["> " + line for line in "  ".join(parts).split("\n")]
        if kind == "actions":
            return ["   ".join(self.element(e, bid) for e in b.get("elements") or [])]
        if kind == "input":
            label = self.text(b.get("label"))
            if b.get("optional") and "optional" not in label.lower():
                label += " (optional)"
            out = [f"{label}: {self.element(b.get('element') or {}, bid)}"]
            if b.get("hint"):
                out.append("  " + self.text(b["hint"]))
            return out
        if kind == "image":
            title = self.text(b.get("title"))
            return [f"[image{': ' + title if title else ''}: {b.get('alt_text') or ''}] {b.get('image_url') or ''}".rstrip()]
        if kind == "rich_text":
            return rich_text_lines(b, self.names)
        if kind == "file":
            return [f"[file {b.get('external_id') or ''}]".replace(" ]", "]")]
        if kind == "video":
            return [f"[video: {self.text(b.get('title'))}] {b.get('video_url') or ''}".rstrip()]
        return [f"[{kind} block]"]

    def blocks(self, blocks: list[dict[str, Any]] | None) -> list[str]:
        out: list[str] = []
        for b in blocks or []:
            if isinstance(b, dict):
                out += self.block(b)
        return out

    def message(self, text: str | None, blocks: list[dict[str, Any]] | None, attachments: list[dict[str, Any]] | None = None) -> list[str]:
        """A message as Slack shows it: the blocks when there are any (the text is then only the
        notification fallback), else the text; attachments under it, marked with '| '."""
        out = self.blocks(blocks) if blocks else self.mrkdwn(text or "").split("\n")
        for a in attachments or []:
            out += ["| " + line for line in self.attachment(a)]
        return out

    def attachment(self, a: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for key in ("pretext", "author_name", "title"):
            if a.get(key):
                out += self.mrkdwn(a[key]).split("\n")
        if a.get("text"):
            out += self.mrkdwn(a["text"]).split("\n")
        for f in a.get("fields") or []:
            out.append(f"- {self.mrkdwn(f.get('title') or '')}: {self.mrkdwn(f.get('value') or '')}")
        out += self.blocks(a.get("blocks"))
        if a.get("footer"):
            out.append("> " + self.mrkdwn(a["footer"]))
        return out or [self.mrkdwn(a.get("fallback") or "")]

    def view(self, view: dict[str, Any]) -> list[str]:
        """A modal: its title, blocks (inputs described) and its submit / close buttons."""
        out = [f"== {self.text(view.get('title')) or 'Modal'} (a form) =="]
        out += self.blocks(view.get("blocks"))
        buttons = []
        if view.get("submit"):
            buttons.append(f"[{self.text(view['submit'])}]")
        buttons.append(f"[{self.text(view.get('close')) or 'Close'}]")
        out.append("   ".join(buttons))
        return out


def rich_text_lines(block: dict[str, Any], names: Names | None = None) -> list[str]:
    names = names or Names()

    def inline(elements: list[dict[str, Any]]) -> str:
        parts = []
        for e in elements or []:
            kind = e.get("type")
            if kind == "text":
                t = e.get("text", "")
                parts.append(f"`{t}`" if (e.get("style") or {}).get("code") else t)
            elif kind == "link":
                url, label = e.get("url", ""), e.get("text")
                parts.append(f"{label} ({url})" if label and label != url else url)
            elif kind == "user":
                parts.append(names.user(e.get("user_id", "")))
            elif kind == "usergroup":
                parts.append(names.group(e.get("usergroup_id", "")))
            elif kind == "channel":
                parts.append(names.channel(e.get("channel_id", "")))
            elif kind == "emoji":
                parts.append(f":{e.get('name', '')}:")
            elif kind == "broadcast":
                parts.append(f"@{e.get('range', 'here')}")
            elif kind == "date":
                parts.append(e.get("fallback") or str(e.get("timestamp", "")))
            else:
                parts.append(e.get("text", ""))
        return "".join(parts)

    out: list[str] = []
    for el in block.get("elements") or []:
        kind = el.get("type")
        if kind == "rich_text_section":
            out += inline(el.get("elements")).split("\n")
        elif kind == "rich_text_list":
            ordered = el.get("style") == "ordered"
            for i, item in enumerate(el.get("elements") or [], 1):
                pad = "  " * int(el.get("indent") or 0)
                out.append(f"{pad}{f'{i}.' if ordered else '•'} {inline(item.get('elements'))}")
        elif kind == "rich_text_preformatted":
            out += ["```", *inline(el.get("elements")).split("\n"), "```"]
        elif kind == "rich_text_quote":
            out += ["> " + line for line in inline(el.get("elements")).split("\n")]
        else:
            out.append(inline(el.get("elements") or []))
    return out


def interactive_elements(blocks: list[dict[str, Any]] | None) -> list[tuple[str | None, dict[str, Any]]]:
    """(block_id, element) of every element a person can act on, in reading order."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    for b in blocks or []:
        if not isinstance(b, dict):
            continue
        bid = b.get("block_id")
        if b.get("type") == "actions":
            out += [(bid, e) for e in b.get("elements") or [] if isinstance(e, dict)]
        elif b.get("type") == "section" and isinstance(b.get("accessory"), dict):
            if b["accessory"].get("type") != "image":
                out.append((bid, b["accessory"]))
    return out


def find_element(blocks: list[dict[str, Any]] | None, action_id: str) -> tuple[str | None, dict[str, Any] | None]:
    for bid, el in interactive_elements(blocks):
        if el.get("action_id") == action_id:
            return bid, el
    return None, None
