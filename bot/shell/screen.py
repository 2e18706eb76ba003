"""What the person at ``pgsessions shell`` sees of the local Slack.

Every message and form the bot sends is drawn as text the moment it comes (the :class:`Screen` is the
:class:`~bot.shell.webapi.Workspace`'s listener), with each button numbered (``[3]``) so that
``click 3`` (or ``click Terminate``) can press it later. The screen remembers what it showed (for
``wait N TEXT``) and the forms the bot opened, until the console asks the person to fill them in.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.shell.mrkdwn import Names
from bot.shell.render import BlockRenderer, find_element
from bot.shell.terminal import Terminal
from bot.shell.webapi import Message, View, Workspace


@dataclass
class Seat:
    """Who the person at the terminal is now, and in which channel (``as NAME``, ``in CHANNEL``)."""

    user: str
    channel: str


@dataclass
class ButtonRef:
    container: str  # "msg" or "view"
    key: int | str  # message number or view id
    action_id: str


class Screen:
    """Draws what the bot posts, numbers its buttons and finds them again."""

    def __init__(self, term: Terminal, names: Names, ws: Workspace, seat: Seat) -> None:
        self.term = term
        self.names = names
        self.ws = ws
        self.seat = seat
        self._buttons: dict[int, ButtonRef] = {}
        self._button_no: dict[tuple[str, int | str, str], int] = {}
        self._next_button = 1
        self._numbers_lock = threading.Lock()
        self._views: list[View] = []  # forms opened by the bot, waiting for the person to fill them in
        self._shown: list[tuple[int, str]] = []  # (event number, rendered text) for `wait N TEXT`
        self._shown_lock = threading.Lock()

    def who(self, uid: str | None = None) -> str:
        return self.names.user(uid or self.seat.user)

    def where(self, cid: str | None = None) -> str:
        return self.names.channel(cid or self.seat.channel)

    # --- output (the Workspace's listener) ----------------------------------------------------------

    def say(self, *lines: str) -> None:
        self.term.write(list(lines))

    def _numberer(self, container: str, key: int | str) -> Callable[[dict[str, Any], str | None], int | None]:
        def number(element: dict[str, Any], block_id: str | None) -> int | None:
            aid = element.get("action_id")
            if not aid:
                return None
            with self._numbers_lock:
                k = (container, key, aid)
                n = self._button_no.get(k)
                if n is None:
                    n = self._button_no[k] = self._next_button
                    self._next_button += 1
                    self._buttons[n] = ButtonRef(container, key, aid)
                return n

        return number

    def render_message(self, msg: Message, what: str = "") -> list[str]:
        renderer = BlockRenderer(self.names, self._numberer("msg", msg.no))
        bits = [f"#{msg.no}"]
        if what:
            bits.append(what)
        bits.append(f"pgsessions in {self.where(msg.channel)}")
        if msg.thread_ts:
            bits.append("in a thread")
        if msg.ephemeral_to:
            to = "you" if msg.ephemeral_to == self.seat.user else self.who(msg.ephemeral_to)
            bits.append(f"only visible to {to}")
        bits.append(time.strftime("%H:%M:%S"))
        head = "--- " + " · ".join(bits) + " ---"
        if msg.deleted:
            return [head]
        body = renderer.message(msg.text, msg.blocks, msg.attachments)
        return [head, *("  " + line if line else "" for line in body)]

    def _remember(self, lines: list[str]) -> None:
        with self._shown_lock:
            self._shown.append((self.ws.activity.events, "\n".join(lines)))
            del self._shown[:-200]

    def posted(self, msg: Message) -> None:
        lines = self.render_message(msg)
        self.say(*lines)
        self._remember(lines)

    def edited(self, msg: Message) -> None:
        lines = self.render_message(msg, "edited")
        self.say(*lines)
        self._remember(lines)

    def deleted(self, msg: Message) -> None:
        lines = self.render_message(msg, "deleted")
        self.say(*lines)
        self._remember(lines)

    def render_view(self, view: View, what: str = "") -> list[str]:
        renderer = BlockRenderer(self.names, self._numberer("view", view.id))
        head = f"--- form{' · ' + what if what else ''} · for {self.who(view.user)} ---"
        return [head, *("  " + line for line in renderer.view(view.view))]

    def view_opened(self, view: View) -> None:
        lines = self.render_view(view)
        self.say(*lines)
        self._remember(lines)
        with self._shown_lock:
            self._views.append(view)

    def view_updated(self, view: View) -> None:
        lines = self.render_view(view, "updated")
        self.say(*lines)
        self._remember(lines)

    def notice(self, text: str) -> None:
        self.say(f"! {text}")

    # --- what was shown -----------------------------------------------------------------------------

    def next_form(self) -> View | None:
        """The oldest form the bot opened that the person was not asked to fill in yet."""
        with self._shown_lock:
            return self._views.pop(0) if self._views else None

    def shown_since(self, event: int) -> list[str]:
        """The text of every message and form drawn since the Activity's event number ``event``."""
        with self._shown_lock:
            return [text for ev, text in self._shown if ev >= event]

    def on_screen(self) -> list[str]:
        """Every message as it stands now, as text (for `wait N TEXT`)."""
        r = BlockRenderer(self.names)
        msgs = [m for m in self.ws.all_messages() if not m.deleted]
        return ["\n".join(r.message(m.text, m.blocks, m.attachments)) for m in msgs]

    def show(self, what: str) -> None:
        what = what.lstrip("#")
        msg = self.ws.message(int(what)) if what.isdigit() else None
        if msg is None:
            self.say(f"There is no message #{what}.")
            return
        self.say(*self.render_message(msg))

    def list_messages(self) -> None:
        msgs = self.ws.all_messages()
        if not msgs:
            self.say("(no messages yet)")
            return
        r = BlockRenderer(self.names)
        lines = []
        for m in msgs:
            first = (r.message(m.text, m.blocks, m.attachments) or [""])[0]
            state = " (deleted)" if m.deleted else " (edited)" if m.version > 1 else ""
            private = " (only visible to " + ("you" if m.ephemeral_to == self.seat.user else self.who(m.ephemeral_to)) + ")" if m.ephemeral_to else ""
            lines.append(f"  #{m.no} {self.where(m.channel)}{private}{state}: {first[:100]}")
        self.say(*lines)

    # --- buttons ------------------------------------------------------------------------------------

    def button(self, n: int) -> ButtonRef | None:
        return self._buttons.get(n)

    def find_button(self, what: str) -> tuple[int | None, str | None]:
        what = what.strip()
        if what.startswith("[") and what.endswith("]"):
            what = what[1:-1]
        if re.fullmatch(r"\d+", what):
            return int(what), None
        # by label: the newest visible button with this text
        label = what.lower()
        with self._numbers_lock:
            refs = sorted(self._buttons.items(), key=lambda kv: -kv[0])
        for n, ref in refs:
            el = self.element(ref)[1]
            if el is not None and str((el.get("text") or {}).get("text", "")).lower() == label:
                return n, None
        return None, f"No button labelled `{what}` is on screen."

    def element(self, ref: ButtonRef) -> tuple[str | None, dict[str, Any] | None]:
        """The block id and element a numbered button stands for now; (None, None) once it is gone."""
        if ref.container == "msg":
            msg = self.ws.message(int(ref.key))
            if msg is None or msg.deleted:
                return None, None
            return find_element(msg.blocks, ref.action_id)
        view = self.ws.view(str(ref.key))
        if view is None or view.closed:
            return None, None
        return find_element(view.view.get("blocks"), ref.action_id)
