"""``pgsessions shell``: a terminal chat with the real bot.

The bot runs exactly as under ``serve`` (the same Runtime, ``build_app``, handlers, scheduler); what
a person types becomes signed Slack requests handed to Bolt, and the Slack Web API the bot calls is
:class:`~bot.shell.webapi.Workspace` on 127.0.0.1, which shows every message, edit and form here.

On a terminal it reads lines with readline and prints the bot's messages as they come. With a script
on standard input (``pgsessions shell < script.txt``) it echoes each line after a prompt, waits for
the bot to finish answering before it reads the next one, and exits 0 at the end of the input.
"""

from __future__ import annotations

try:
    import readline
except ImportError:  # pragma: no cover - Windows
    readline = None  # type: ignore[assignment]

import contextlib
import functools
import io
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from slack_bolt import App

from bot.config import Config
from bot.durations import DurationError, parse_duration
from bot.logs import instrument_bolt
from bot.render.common import visible
from bot.runtime import Runtime, SlackSettings
from bot.shell.activity import Activity, TrackedExecutor
from bot.shell.localconfig import channel_name, channel_names
from bot.shell.mrkdwn import Names, can_print_emoji
from bot.shell.payloads import Driver, response_json
from bot.shell.render import BlockRenderer, find_element
from bot.shell.webapi import Message, View, Workspace
from bot.slack.app import build_app

BOT_TOKEN = "xoxb-pgsessions-terminal"  # only the local Web API accepts it
DEFAULT_CHANNEL = "C0SHELL"
DEFAULT_CHANNEL_NAME = "shell"
ACK_LIMIT = 3.0

HELP = """\
Talk to the bot as in Slack:
  /pgsessions ENV [standby] [filters]   a slash command (the /pgsessions may be left out: `ENV ...`)
  /pgsessions help                      the bot's own help
Act on what it posts:
  click N         press button [N] (also `N` alone, or `click Terminate 4211` by its label)
  show N          show message #N again as it is now;  messages: one line per message
Be someone else:
  as NAME|ID      act as another person (from the config's users, or any Slack id U...)
  whoami / users  who you are / the people this terminal knows
  in CHANNEL      talk in another channel (#{default} is the default)
  group S... NAME...   set who is in a Slack user group (everyone in `users` by default)
Scripts:
  wait N [TEXT]   wait up to N seconds for the bot to post or change a message (one containing TEXT)
  sleep N         wait N seconds, showing what the bot posts meanwhile
  # ...           a comment
  help, quit (or Ctrl-D)"""


@dataclass
class ButtonRef:
    container: str  # "msg" or "view"
    key: int | str  # message number or view id
    action_id: str


class Terminal:
    """Writes lines without tearing them apart across threads; redraws the prompt on a terminal."""

    def __init__(self, out: IO[str], inp: IO[str], interactive: bool):
        self.out = out
        self.inp = inp
        self.interactive = interactive
        self.lock = threading.RLock()
        self._prompt: str | None = None
        self._readline: Any = None
        if interactive:
            self._readline = readline

    def write(self, lines: list[str]) -> None:
        # nothing reaches the terminal raw: a control character in a database string (ESC[ ..., a
        # carriage return, a bidi override) is shown as a visible sign, never interpreted
        lines = [visible(line) for line in "\n".join(lines).split("\n")]
        with self.lock:
            text = "\n".join(lines) + "\n"
            if self.interactive and self._prompt is not None:
                buf = self._readline.get_line_buffer() if self._readline else ""
                self.out.write("\n" + text + self._prompt + buf)
            else:
                self.out.write(text)
            self.out.flush()

    def read(self, prompt: str) -> str | None:
        """One line (without its newline), or None at the end of the input."""
        if self.interactive:
            with self.lock:
                self._prompt = prompt
            try:
                return input(prompt)
            except EOFError:
                self.out.write("\n")
                return None
            finally:
                with self.lock:
                    self._prompt = None
        line = self.inp.readline()
        if not line:
            return None
        line = line.rstrip("\r\n")
        self.write([prompt + line])
        return line


class Shell:
    """The bot, the local Slack and the terminal, started and stopped together."""

    def __init__(
        self,
        config: Config,
        *,
        user: str | None = None,
        channel: str | None = None,
        state: str | None = None,
        out: IO[str] | None = None,
        inp: IO[str] | None = None,
        interactive: bool | None = None,
        settle_limit: float = 15.0,
        quiet: float = 0.3,
        banner: list[str] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pgsessions-shell-")
            state = f"sqlite:///{os.path.join(self._tmp.name, 'state.db')}"
        if state != "config":
            config = config.model_copy(update={"state": state})
        self.config = config
        inp = inp or sys.stdin
        self.term = Terminal(out or sys.stdout, inp, inp.isatty() if interactive is None else interactive)
        self.settle_limit = settle_limit
        self.quiet = quiet
        self.banner = banner or []
        self.activity = Activity()

        # people, groups, channels
        self.people: dict[str, str] = dict(config.users)  # name -> id
        user_names = {uid: name for name, uid in self.people.items() if uid[:1] in "UW"}
        group_names = {gid: name for name, gid in self.people.items() if gid[:1] == "S"}
        default_user = next(iter(user_names), None)
        if user:
            resolved = self._resolve_user(user)
            if resolved is None:
                known = ", ".join(user_names.values()) or "none in the config"
                raise ValueError(f"who is {user!r}? Give a name from the config's users ({known}) or a Slack id U...")
            self.user = resolved
        else:
            self.user = default_user or "U0YOU"
            if default_user is None:
                user_names[self.user] = "you"
        self.channel = channel or self._default_channel()
        self.names = Names(
            users=user_names, groups=group_names,
            channels=channel_names(config, (DEFAULT_CHANNEL, DEFAULT_CHANNEL_NAME)),
            emoji="char" if can_print_emoji(getattr(self.term.out, "encoding", None)) else "word",
        )
        members = list(user_names) or [self.user]
        groups = {gid: list(members) for gid in self._referenced_groups()}

        self.ws = Workspace(
            BOT_TOKEN, users=user_names, groups=groups, channels=self.names.channels, listener=self,
            activity=self.activity,
        )
        self._buttons: dict[int, ButtonRef] = {}
        self._button_no: dict[tuple[str, int | str, str], int] = {}
        self._next_button = 1
        self._numbers_lock = threading.Lock()
        self._views: list[View] = []  # forms opened by the bot, waiting for the person to fill them in
        self._shown: list[tuple[int, str]] = []  # (event number, rendered text) for `wait N TEXT`
        self._shown_lock = threading.Lock()
        self.rt: Runtime | None = None
        self.app: App | None = None
        self.driver: Driver | None = None

    # --- setup --------------------------------------------------------------------------------------

    def _default_channel(self) -> str:
        for env in self.config.environments.values():
            if env.access.channels:
                return env.access.channels[0]
        return DEFAULT_CHANNEL

    def _referenced_groups(self) -> set[str]:
        out = {gid for gid in self.people.values() if gid.startswith("S")}
        for env in self.config.environments.values():
            out |= {p for p in [*env.access.requesters, *env.access.approvers] if p.startswith("S")}
        return out

    def start(self) -> Shell:
        self.ws.start()
        signing_secret = secrets.token_hex(16)
        settings = SlackSettings(bot_token=BOT_TOKEN, signing_secret=signing_secret, app_token=None,
                                 api_url=self.ws.api_url)
        self.rt = Runtime(self.config, settings)
        try:
            self.app = build_app(self.rt)
            self._track_listeners(self.app)
            self.driver = Driver(self.app, signing_secret, names=self.names.users)
            self.rt.start_background()
            self.rt.ready.set()
        except BaseException:
            self.close()
            raise
        return self

    def _track_listeners(self, app: App) -> None:
        with contextlib.suppress(ImportError):
            instrument_bolt(app)
        runner = app.listener_runner
        runner.listener_executor = TrackedExecutor(runner.listener_executor, self.activity)
        lazy = getattr(runner, "lazy_listener_runner", None)
        if lazy is not None and hasattr(lazy, "executor"):
            lazy.executor = TrackedExecutor(lazy.executor, self.activity)

    def close(self) -> None:
        if self.rt is not None:
            self.rt.ready.clear()
            try:
                self.rt.close()
            finally:
                self.rt = None
        executor = getattr(getattr(self.app, "listener_runner", None), "listener_executor", None)
        if isinstance(executor, TrackedExecutor):
            with contextlib.suppress(Exception):
                executor.shutdown(wait=False, cancel_futures=True)
        self.ws.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Shell:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- who and where ------------------------------------------------------------------------------

    def _resolve_user(self, who: str) -> str | None:
        who = who.lstrip("@")
        if who in self.people and self.people[who][:1] in "UW":
            return self.people[who]
        lowered = {k.lower(): v for k, v in self.people.items()}
        if who.lower() in lowered and lowered[who.lower()][:1] in "UW":
            return lowered[who.lower()]
        if re.fullmatch(r"[UW][A-Z0-9]{2,}", who):
            return who
        return None

    def who(self, uid: str | None = None) -> str:
        return self.names.user(uid or self.user)

    def where(self, cid: str | None = None) -> str:
        return self.names.channel(cid or self.channel)

    @property
    def prompt(self) -> str:
        return f"{self.who()[1:]} in {self.where()}> "

    # --- output (also the Workspace's listener) -----------------------------------------------------

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
            to = "you" if msg.ephemeral_to == self.user else self.who(msg.ephemeral_to)
            bits.append(f"only visible to {to}")
        bits.append(time.strftime("%H:%M:%S"))
        head = "--- " + " · ".join(bits) + " ---"
        if msg.deleted:
            return [head]
        body = renderer.message(msg.text, msg.blocks, msg.attachments)
        return [head, *("  " + line if line else "" for line in body)]

    def _remember(self, lines: list[str]) -> None:
        with self._shown_lock:
            self._shown.append((self.activity.events, "\n".join(lines)))
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

    # --- waiting ------------------------------------------------------------------------------------

    def settle(self) -> None:
        if not self.activity.settle(self.quiet, self.settle_limit):
            self.say(f"(the bot is still working after {self.settle_limit:g}s; its answer will show when it comes)")

    # --- the loop -----------------------------------------------------------------------------------

    def intro(self) -> list[str]:
        envs = []
        for name, env in self.config.environments.items():
            hosts = ["primary", *env.standbys]
            envs.append(f"{name} ({', '.join(hosts)})")
        others = [n for n, uid in self.people.items() if uid[:1] in "UW" and uid != self.user]
        switch = f"`as {others[0]}` to act as someone else" if others else "`as U0BOB` to act as someone else"
        return [
            "pgsessions terminal chat: the real bot, with this terminal in place of Slack.",
            "Environments: " + ", ".join(envs),
            *self.banner,
            f"You are {self.who()} ({self.user}) in {self.where()}. {switch}; `help` for commands, `quit` to leave.",
        ]

    def run(self) -> int:
        self.say(*self.intro())
        try:
            while True:
                self._forms()
                line = self.term.read(self.prompt)
                if line is None:
                    break
                if not self.handle(line):
                    break
        except KeyboardInterrupt:
            self.say("", "(interrupted)")
        return 0

    def handle(self, line: str) -> bool:
        """Run one line; False to stop."""
        text = line.strip()
        if not text or text.startswith("#"):
            return True
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        cmd = word.lower()
        if cmd in ("quit", "exit", "bye", "/quit", "/exit"):
            return False
        if cmd in ("help", "?", "/help") and not rest:
            self.say(HELP.format(default=DEFAULT_CHANNEL_NAME))
            return True
        if text.startswith("/"):
            self.slash(word, rest)
        elif cmd in ("click", "press", "c") and rest:
            self.click(rest)
        elif re.fullmatch(r"\d+", text) and text not in self.config.environments:
            self.click(text)
        elif cmd == "as" and rest:
            self.become(rest)
        elif cmd == "whoami" and not rest:
            self.say(f"You are {self.who()} ({self.user}) in {self.where()}.")
        elif cmd == "users" and not rest:
            self.list_people()
        elif cmd in ("in", "channel") and rest:
            self.move(rest)
        elif cmd == "show" and rest:
            self.show(rest)
        elif cmd in ("messages", "history") and not rest:
            self.list_messages()
        elif cmd == "group":
            self.group(rest)
        elif cmd == "wait":
            self.wait(rest)
        elif cmd == "sleep":
            self.sleep(rest)
        else:
            self.slash("/pgsessions", text)
        self._forms()
        return True

    # --- commands -----------------------------------------------------------------------------------

    def _timed(self, what: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        resp = fn()
        took = time.monotonic() - started
        if took > ACK_LIMIT:
            self.notice(f"the bot took {took:.1f}s to acknowledge {what}: Slack gives up after {ACK_LIMIT:g}s")
        return resp

    def slash(self, command: str, text: str) -> None:
        driver = self.driver
        assert driver is not None
        channel = self.channel
        url = self.ws.response_url(channel, self.user)
        trigger = self.ws.trigger_id(self.user)
        name = self.names.channels.get(channel, channel.lower())
        resp = self._timed(command, lambda: driver.slash(command, text, self.user, channel, name, url, trigger))
        if resp.status != 200:
            why = "the bot does not handle it" if resp.status == 404 else f"HTTP {resp.status}"
            self.notice(f'{command} failed with the error "dispatch_failed" ({why})')
        else:
            body = response_json(resp)
            if body and (body.get("text") or body.get("blocks")):
                in_channel = body.get("response_type") == "in_channel"
                self.ws.add_message(
                    channel, str(body.get("text") or ""), body.get("blocks"), attachments=body.get("attachments"),
                    ephemeral_to=None if in_channel else self.user, source="ack",
                )
        self.settle()

    def _find_button(self, what: str) -> tuple[int | None, str | None]:
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
            el = self._element(ref)[1]
            if el is not None and str((el.get("text") or {}).get("text", "")).lower() == label:
                return n, None
        return None, f"No button labelled `{what}` is on screen."

    def _element(self, ref: ButtonRef) -> tuple[str | None, dict[str, Any] | None]:
        if ref.container == "msg":
            msg = self.ws.message(int(ref.key))
            if msg is None or msg.deleted:
                return None, None
            return find_element(msg.blocks, ref.action_id)
        view = self.ws.view(str(ref.key))
        if view is None or view.closed:
            return None, None
        return find_element(view.view.get("blocks"), ref.action_id)

    def click(self, what: str) -> None:
        assert self.driver is not None
        n, problem = self._find_button(what)
        if n is None:
            self.say(problem or "Which button?")
            return
        ref = self._buttons.get(n)
        if ref is None:
            self.say(f"There is no button [{n}].")
            return
        block_id, element = self._element(ref)
        msg = self.ws.message(int(ref.key)) if ref.container == "msg" else None
        view = self.ws.view(str(ref.key)) if ref.container == "view" else None
        if element is None:
            if msg is not None and msg.deleted:
                self.say(f"Message #{msg.no} was deleted; its buttons are gone.")
            elif msg is not None:
                self.say(f"Button [{n}] is no longer on message #{msg.no} (the bot changed the message).")
            else:
                self.say(f"Button [{n}] belonged to a form that is closed.")
            return
        if msg is not None and msg.ephemeral_to and msg.ephemeral_to != self.user:
            self.say(f"Message #{msg.no} is only visible to {self.who(msg.ephemeral_to)}: you cannot click on it.")
            return
        if element.get("confirm") and not self._confirm(element["confirm"]):
            self.say("(not confirmed: nothing was sent)")
            return
        selection = self._choose(element)
        if selection is None:
            return
        trigger = self.ws.trigger_id(self.user)
        driver = self.driver
        assert driver is not None
        label = str((element.get("text") or {}).get("text") or element.get("action_id"))
        if msg is not None:
            channel = msg.channel
            url = self.ws.response_url(channel, self.user, msg.no)
            resp = self._timed(
                f"the click on {label}",
                lambda: driver.block_action(
                    self.user, element, block_id, trigger, channel=channel,
                    channel_name=self.names.channels.get(channel, channel.lower()),
                    message=None if msg.ephemeral_to else msg.payload(), ephemeral=bool(msg.ephemeral_to),
                    response_url=url, selection=selection,
                ),
            )
        else:
            assert view is not None
            resp = self._timed(
                f"the click on {label}",
                lambda: driver.block_action(self.user, element, block_id, trigger, view=view.view,
                                                 selection=selection),
            )
        if resp.status != 200:
            self.notice(f"the bot answered the click with HTTP {resp.status} (Slack shows a warning sign)")
        self.settle()

    def _confirm(self, confirm: dict[str, Any]) -> bool:
        r = BlockRenderer(self.names)
        lines = [f"? {r.text(confirm.get('title'))}", *("  " + x for x in r.text(confirm.get("text")).split("\n"))]
        self.say(*lines)
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

    def _choose(self, element: dict[str, Any]) -> dict[str, Any] | None:
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
            value = self._resolve_user(value) or value
        return {keys.get(kind, "value"): value}

    def _pick(self, options: list[dict[str, Any]], r: BlockRenderer, many: bool) -> list[dict[str, Any]] | None:
        if not options:
            self.say("(nothing to choose from)")
            return None
        self.say(*(f"  {i}) {r.text(o.get('text'))}" for i, o in enumerate(options, 1)))
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

    def become(self, who: str) -> None:
        uid = self._resolve_user(who)
        if uid is None:
            known = ", ".join(n for n, i in self.people.items() if i[:1] in "UW") or "none configured"
            self.say(f"Who is `{who}`? Known people: {known}; or give a Slack user id (U...).")
            return
        self.user = uid
        self.say(f"You are now {self.who()} ({uid}).")

    def list_people(self) -> None:
        lines = []
        for name, uid in self.people.items():
            mark = " (you)" if uid == self.user else ""
            lines.append(f"  {name}: {uid}{mark}")
        if self.user not in self.people.values():
            lines.append(f"  {self.who()[1:]}: {self.user} (you)")
        for gid, members in sorted(self.ws.groups.items()):
            lines.append(f"  group {self.names.group(gid)}: " + (", ".join(self.who(m) for m in members) or "nobody"))
        self.say(*lines)

    def move(self, where: str) -> None:
        where = where.strip().lstrip("#")
        for cid, name in self.names.channels.items():
            if name == where:
                where = cid
        if not re.fullmatch(r"[CGD][A-Z0-9]{2,}", where):
            self.say("Give a channel id such as C0OPS (or `shell`).")
            return
        self.channel = where
        self.names.channels.setdefault(where, channel_name(where))
        self.ws.channels.setdefault(where, self.names.channels[where])
        self.say(f"You are now in {self.where()}.")

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
            private = " (only visible to " + ("you" if m.ephemeral_to == self.user else self.who(m.ephemeral_to)) + ")" if m.ephemeral_to else ""
            lines.append(f"  #{m.no} {self.where(m.channel)}{private}{state}: {first[:100]}")
        self.say(*lines)

    def group(self, rest: str) -> None:
        words = rest.split()
        if not words:
            self.list_people()
            return
        gid = self.people.get(words[0], words[0])
        if not re.fullmatch(r"S[A-Z0-9]{2,}", gid):
            self.say("Write `group S0DBAS name name ...` (a user-group id, then its members).")
            return
        members = []
        for w in words[1:]:
            uid = self._resolve_user(w)
            if uid is None:
                self.say(f"Who is `{w}`?")
                return
            members.append(uid)
        self.ws.groups[gid] = members
        if self.rt is not None:
            with contextlib.suppress(AttributeError):
                self.rt.directory._groups.pop(gid, None)  # the bot caches group members for 5 minutes
        self.say(f"{self.names.group(gid)}: " + (", ".join(self.who(m) for m in members) or "nobody"))

    def _seconds(self, word: str) -> float | None:
        try:
            return float(parse_duration(word))
        except (DurationError, ValueError, TypeError):
            self.say(f"`{word}` is not a number of seconds.")
            return None

    def _on_screen(self) -> list[str]:
        """Every message as it stands now, as text (for `wait N TEXT`)."""
        r = BlockRenderer(self.names)
        msgs = [m for m in self.ws.all_messages() if not m.deleted]
        return ["\n".join(r.message(m.text, m.blocks, m.attachments)) for m in msgs]

    def wait(self, rest: str) -> None:
        """`wait N`: until the bot shows something new; `wait N TEXT`: until a message contains TEXT
        (at once if one already does; TEXT in lower case matches any case)."""
        words = rest.split(maxsplit=1)
        seconds = self._seconds(words[0]) if words else 10.0
        if seconds is None:
            return
        needle = words[1].strip().strip('"') if len(words) > 1 else None
        start = self.activity.events

        def contains(text: str) -> bool:
            assert needle is not None
            return needle in text if needle != needle.lower() else needle in text.lower()

        def seen() -> bool:
            if needle is None:
                return self.activity.events > start
            with self._shown_lock:
                new = [text for ev, text in self._shown if ev >= start]
            return any(contains(t) for t in new) or any(contains(t) for t in self._on_screen())

        if self.activity.wait_for(seen, seconds):
            self.settle()
        else:
            what = f"containing `{needle}` " if needle else ""
            self.say(f"(no message {what}within {seconds:g}s)")

    def sleep(self, rest: str) -> None:
        seconds = self._seconds(rest.split()[0]) if rest.split() else None
        if seconds is None:
            return
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))
        self.settle()

    # --- forms --------------------------------------------------------------------------------------

    def _forms(self) -> None:
        while True:
            with self._shown_lock:
                if not self._views:
                    return
                view = self._views.pop(0)
            if view.closed:
                continue
            try:
                self.fill_in(view)
            except KeyboardInterrupt:
                self.ws.close_view(view.id)
                self.say("", "(form closed)")

    def fill_in(self, view: View) -> None:
        """Ask for each input of a form, then submit or close it, as often as the bot asks for fixes."""
        assert self.driver is not None
        values: dict[str, dict[str, dict[str, Any]]] = {}
        errors: dict[str, str] = {}
        while not view.closed:
            if view.user != self.user:
                self.say(f"(a form for {self.who(view.user)} opened; only they could fill it in)")
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
            trigger = self.ws.trigger_id(self.user)
            driver = self.driver
            assert driver is not None
            resp = self._timed(
                "the form", functools.partial(driver.view_submission, self.user, submitted, trigger)
            )
            if resp.status != 200:
                self.notice(f"the bot answered the form with HTTP {resp.status}: Slack would keep the form open "
                            "and say it had trouble connecting")
                errors = {}
                continue
            body = response_json(resp) or {}
            action = body.get("response_action")
            if action == "errors":
                errors = {str(k): str(v) for k, v in (body.get("errors") or {}).items()}
                lines = [f"! {self._label(view, k)}: {v}" for k, v in errors.items()]
                self.say(*lines)
                if not any(k in values for k in errors):
                    errors = {}  # not about an input we ask for: ask everything again
                continue
            if action == "update" and isinstance(body.get("view"), dict):
                view = self.ws.replace_view(view.id, body["view"])
                self.say(*self.render_view(view, "updated"))
                values, errors = {}, {}
                continue
            if action == "push" and isinstance(body.get("view"), dict):
                pushed = self.ws.replace_view(view.id, body["view"], push=True)
                self.say(*self.render_view(pushed))
                self.settle()
                self.fill_in(pushed)
                values, errors = {}, {}
                continue
            self.ws.close_view(view.id)  # Slack closes a form the bot accepted without a response_action
            self.settle()
            return

    def _label(self, view: View, block_id: str) -> str:
        for b in view.view.get("blocks") or []:
            if b.get("block_id") == block_id and b.get("label"):
                return BlockRenderer(self.names).text(b["label"])
        return block_id

    def _close(self, view: View) -> None:
        assert self.driver is not None
        self.ws.close_view(view.id)
        if view.view.get("notify_on_close"):
            self.driver.view_closed(self.user, view.view)
        self.say("(form closed)")
        self.settle()

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
            self.say(f"(answer `{submit.lower() if submit else close.lower()}`{' or `' + close.lower() + '`' if submit else ''})")

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
            self.say(f"{label}{' (optional)' if optional else ''}:")
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
                self.say(f"({label} is required: Slack does not send the form without it)")
                continue
            if el.get("max_length") and len(value) > int(el["max_length"]):
                self.say(f"({label}: at most {el['max_length']} characters)")
                continue
            if not value:
                return {}
            state_key = {
                "datepicker": "selected_date", "timepicker": "selected_time", "users_select": "selected_user",
                "conversations_select": "selected_conversation", "channels_select": "selected_channel",
            }.get(str(kind), "value")
            if kind == "users_select":
                value = self._resolve_user(value) or value
            return {"type": kind, state_key: value}


def text_stream(stream: IO[str]) -> IO[str]:
    """stdout that never fails on a character the terminal cannot show."""
    if isinstance(stream, io.TextIOWrapper):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace", line_buffering=True)
    return stream

