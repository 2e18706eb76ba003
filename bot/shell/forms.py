"""The questions ``pgsessions shell`` asks the person: the forms the bot opens, and what a click needs.

A form (``views.open`` / ``views.push``) is filled in one input at a time, then submitted or closed
through the bot's real ``view_submission`` / ``view_closed`` handlers, and asked again as often as the
bot answers with errors, an update or a pushed form. A click may need a confirmation (the button's
``confirm`` dialog) or a choice (a select, overflow, checkboxes or picker).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Protocol

from bot.shell.payloads import Driver, response_json
from bot.shell.render import BlockRenderer
from bot.shell.screen import Screen
from bot.shell.terminal import Terminal
from bot.shell.webapi import View, Workspace


class Host(Protocol):
    """What the forms use of the shell (:class:`bot.shell.console.Shell`)."""

    @property
    def term(self) -> Terminal: ...
    @property
    def screen(self) -> Screen: ...
    @property
    def ws(self) -> Workspace: ...
    @property
    def user(self) -> str: ...
    @property
    def driver(self) -> Driver | None: ...

    def settle(self) -> None: ...
    def timed(self, what: str, fn: Callable[[], Any]) -> Any: ...
    def resolve_user(self, who: str) -> str | None: ...


class Forms:
    """Asks the person at the terminal what Slack would ask them in a dialog or a form."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.term = host.term
        self.screen = host.screen
        self.ws = host.ws
        self.names = host.screen.names

    # --- what a click needs -------------------------------------------------------------------------

    def confirm(self, confirm: dict[str, Any]) -> bool:
        r = BlockRenderer(self.names)
        lines = [f"? {r.text(confirm.get('title'))}", *("  " + x for x in r.text(confirm.get("text")).split("\n"))]
        self.screen.say(*lines)
        yes = r.text(confirm.get("confirm")) or "Yes"
        no = r.text(confirm.get("deny")) or "Cancel"
        while True:
            answer = self.term.read(f"{yes} or {no}? ")
            if answer is None:
                return False
            a = answer.strip().lower()
            if a in ("y", "yes", yes.lower()):
                return True
            if a in ("n", "no", "", no.lower()):
                return False

    def choose(self, element: dict[str, Any]) -> dict[str, Any] | None:
        """What a select / overflow / checkboxes / picker click sends; {} for a button; None if abandoned."""
        kind = str(element.get("type") or "")
        if kind in ("button", "workflow_button"):
            return {}
        r = BlockRenderer(self.names)
        options = list(element.get("options") or [])
        for group in element.get("option_groups") or []:
            options += list(group.get("options") or [])
        if kind in ("overflow", "static_select", "radio_buttons"):
            picked = self._pick(options, r, many=False)
            return None if picked is None else {"selected_option": picked[0]}
        if kind in ("checkboxes", "multi_static_select"):
            picked = self._pick(options, r, many=True)
            return None if picked is None else {"selected_options": picked}
        answer = self.term.read(f"{kind.replace('_', ' ')}: ")
        if answer is None:
            return None
        value = answer.strip()
        keys = {
            "datepicker": "selected_date", "timepicker": "selected_time", "users_select": "selected_user",
            "conversations_select": "selected_conversation", "channels_select": "selected_channel",
        }
        if kind == "users_select":
            value = self.host.resolve_user(value) or value
        return {keys.get(kind, "value"): value}

    def _pick(self, options: list[dict[str, Any]], r: BlockRenderer, many: bool) -> list[dict[str, Any]] | None:
        if not options:
            self.screen.say("(nothing to choose from)")
            return None
        self.screen.say(*(f"  {i}) {r.text(o.get('text'))}" for i, o in enumerate(options, 1)))
        while True:
            answer = self.term.read("numbers, separated by commas: " if many else "number: ")
            if answer is None:
                return None
            try:
                picks = [int(x) for x in re.split(r"[,\s]+", answer.strip()) if x]
            except ValueError:
                continue
            if picks and all(1 <= p <= len(options) for p in picks) and (many or len(picks) == 1):
                return [options[p - 1] for p in picks]

    # --- forms --------------------------------------------------------------------------------------

    def fill_pending(self) -> None:
        """Every form the bot opened since the last prompt, one after the other."""
        while True:
            view = self.screen.next_form()
            if view is None:
                return
            if view.closed:
                continue
            try:
                self.fill_in(view)
            except KeyboardInterrupt:
                self.ws.close_view(view.id)
                self.screen.say("", "(form closed)")

    def fill_in(self, view: View) -> None:
        """Ask for each input of a form, then submit or close it, as often as the bot asks for fixes."""
        assert self.host.driver is not None
        values: dict[str, dict[str, dict[str, Any]]] = {}
        errors: dict[str, str] = {}
        while not view.closed:
            if view.user != self.host.user:
                self.screen.say(f"(a form for {self.screen.who(view.user)} opened; only they could fill it in)")
                self.ws.close_view(view.id)
                return
            r = BlockRenderer(self.names)
            inputs = [b for b in view.view.get("blocks") or [] if b.get("type") == "input"]
            for b in inputs:
                bid = b.get("block_id") or ""
                if errors and bid not in errors and bid in values:
                    continue  # only the fields the bot complained about are asked again
                got = self._ask_input(b, r, values.get(bid), errors.get(bid))
                if got is None:
                    self._close(view)
                    return
                aid = (b.get("element") or {}).get("action_id") or ""
                values[bid] = {aid: got} if got else {}
            submit = r.text(view.view.get("submit")) if view.view.get("submit") else None
            close = r.text(view.view.get("close")) or "Close"
            choice = self._ask_submit(submit, close)
            if choice != "submit":
                self._close(view)
                return
            state = {"values": {bid: v for bid, v in values.items()}}
            submitted = {**view.view, "state": state}
            trigger = self.ws.trigger_id(self.host.user)
            driver = self.host.driver
            assert driver is not None
            resp = self.host.timed(
                "the form", functools.partial(driver.view_submission, self.host.user, submitted, trigger)
            )
            if resp.status != 200:
                self.screen.notice(f"the bot answered the form with HTTP {resp.status}: Slack would keep the "
                                   "form open and say it had trouble connecting")
                errors = {}
                continue
            body = response_json(resp) or {}
            action = body.get("response_action")
            if action == "errors":
                errors = {str(k): str(v) for k, v in (body.get("errors") or {}).items()}
                lines = [f"! {self._label(view, k)}: {v}" for k, v in errors.items()]
                self.screen.say(*lines)
                if not any(k in values for k in errors):
                    errors = {}  # not about an input we ask for: ask everything again
                continue
            if action == "update" and isinstance(body.get("view"), dict):
                view = self.ws.replace_view(view.id, body["view"])
                self.screen.say(*self.screen.render_view(view, "updated"))
                values, errors = {}, {}
                continue
            if action == "push" and isinstance(body.get("view"), dict):
                pushed = self.ws.replace_view(view.id, body["view"], push=True)
                self.screen.say(*self.screen.render_view(pushed))
                self.host.settle()
                self.fill_in(pushed)
                values, errors = {}, {}
                continue
            self.ws.close_view(view.id)  # Slack closes a form the bot accepted without a response_action
            self.host.settle()
            return

    def _label(self, view: View, block_id: str) -> str:
        for b in view.view.get("blocks") or []:
            if b.get("block_id") == block_id and b.get("label"):
                return BlockRenderer(self.names).text(b["label"])
        return block_id

    def _close(self, view: View) -> None:
        assert self.host.driver is not None
        self.ws.close_view(view.id)
        if view.view.get("notify_on_close"):
            self.host.driver.view_closed(self.host.user, view.view)
        self.screen.say("(form closed)")
        self.host.settle()

    def _ask_submit(self, submit: str | None, close: str) -> str | None:
        options = f"{submit} or {close}" if submit else close
        while True:
            answer = self.term.read(f"{options}? ")
            if answer is None:
                return None
            a = answer.strip().lower()
            if submit and a in (submit.lower(), "submit", "send", "ok", "y", "yes", submit.lower()[:1]):
                return "submit"
            if a in (close.lower(), "close", "cancel", "no", "n", close.lower()[:1]):
                return "close"
            self.screen.say(f"(answer `{submit.lower() if submit else close.lower()}`{' or `' + close.lower() + '`' if submit else ''})")

    def _ask_input(self, block: dict[str, Any], r: BlockRenderer, previous: dict[str, Any] | None, error: str | None) -> dict[str, Any] | None:
        """The state value of one input block ({} when left empty), or None to close the form."""
        el = block.get("element") or {}
        kind = el.get("type")
        label = r.text(block.get("label")) or "Value"
        optional = bool(block.get("optional"))
        prev_value = None
        if previous:
            inner: dict[str, Any] = next(iter(previous.values()), {})
            prev_value = inner.get("value")
        if kind in ("static_select", "radio_buttons", "checkboxes", "multi_static_select"):
            options = list(el.get("options") or [])
            for group in el.get("option_groups") or []:
                options += list(group.get("options") or [])
            self.screen.say(f"{label}{' (optional)' if optional else ''}:")
            picked = self._pick(options, r, many=kind in ("checkboxes", "multi_static_select"))
            if picked is None:
                return None
            key = "selected_options" if kind in ("checkboxes", "multi_static_select") else "selected_option"
            return {"type": kind, key: picked if key == "selected_options" else picked[0]}
        hint = ""
        if optional:
            hint = " (Enter to leave empty)" if "optional" in label.lower() else " (optional, Enter to leave empty)"
        if prev_value:
            hint += f" [Enter keeps: {prev_value}]"
        if el.get("multiline") and not previous:
            hint += " (\\n for a new line)"
        while True:
            answer = self.term.read(f"{label}{hint}: ")
            if answer is None:
                return None
            value = answer.strip()
            if not value and prev_value:
                value = prev_value
            if el.get("multiline"):
                value = value.replace("\\n", "\n")
            if not value and not optional:
                self.screen.say(f"({label} is required: Slack does not send the form without it)")
                continue
            if el.get("max_length") and len(value) > int(el["max_length"]):
                self.screen.say(f"({label}: at most {el['max_length']} characters)")
                continue
            if not value:
                return {}
            state_key = {
                "datepicker": "selected_date", "timepicker": "selected_time", "users_select": "selected_user",
                "conversations_select": "selected_conversation", "channels_select": "selected_channel",
            }.get(str(kind), "value")
            if kind == "users_select":
                value = self.host.resolve_user(value) or value
            return {"type": kind, state_key: value}

