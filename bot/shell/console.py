"""``pgsessions shell``: a terminal chat with the real bot.

The bot runs exactly as under ``serve`` (the same Runtime, ``build_app``, handlers, scheduler); what
a person types becomes signed Slack requests handed to Bolt, and the Slack Web API the bot calls is
:class:`~bot.shell.webapi.Workspace` on 127.0.0.1, which shows every message, edit and form here.

On a terminal it reads lines with readline and prints the bot's messages as they come. With a script
on standard input (``pgsessions shell < script.txt``) it echoes each line after a prompt, waits for
the bot to finish answering before it reads the next one, and exits 0 at the end of the input.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from slack_bolt import App

from bot.config import Config
from bot.durations import DurationError, parse_duration
from bot.logs import instrument_bolt
from bot.runtime import Runtime, SlackSettings
from bot.shell.activity import Activity, TrackedExecutor
from bot.shell.forms import Forms
from bot.shell.localconfig import channel_name, channel_names
from bot.shell.mrkdwn import Names, can_print_emoji
from bot.shell.payloads import Driver, response_json
from bot.shell.screen import Screen, Seat
from bot.shell.terminal import Terminal
from bot.shell.webapi import Workspace
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
            resolved = self.resolve_user(user)
            if resolved is None:
                known = ", ".join(user_names.values()) or "none in the config"
                raise ValueError(f"who is {user!r}? Give a name from the config's users ({known}) or a Slack id U...")
            me = resolved
        else:
            me = default_user or "U0YOU"
            if default_user is None:
                user_names[me] = "you"
        self.seat = Seat(user=me, channel=channel or self._default_channel())
        self.names = Names(
            users=user_names, groups=group_names,
            channels=channel_names(config, (DEFAULT_CHANNEL, DEFAULT_CHANNEL_NAME)),
            emoji="char" if can_print_emoji(getattr(self.term.out, "encoding", None)) else "word",
        )
        members = list(user_names) or [me]
        groups = {gid: list(members) for gid in self._referenced_groups()}

        self.ws = Workspace(
            BOT_TOKEN, users=user_names, groups=groups, channels=self.names.channels, activity=self.activity,
        )
        self.screen = Screen(self.term, self.names, self.ws, self.seat)
        self.ws.listener = self.screen  # every message and form the bot sends is drawn as it comes
        self.forms = Forms(self)
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

    def resolve_user(self, who: str) -> str | None:
        who = who.lstrip("@")
        if who in self.people and self.people[who][:1] in "UW":
            return self.people[who]
        lowered = {k.lower(): v for k, v in self.people.items()}
        if who.lower() in lowered and lowered[who.lower()][:1] in "UW":
            return lowered[who.lower()]
        if re.fullmatch(r"[UW][A-Z0-9]{2,}", who):
            return who
        return None

    @property
    def user(self) -> str:
        return self.seat.user

    @property
    def channel(self) -> str:
        return self.seat.channel

    @property
    def prompt(self) -> str:
        return f"{self.screen.who()[1:]} in {self.screen.where()}> "

    # --- waiting ------------------------------------------------------------------------------------

    def settle(self) -> None:
        if not self.activity.settle(self.quiet, self.settle_limit):
            self.screen.say(f"(the bot is still working after {self.settle_limit:g}s; its answer will show when it comes)")

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
            f"You are {self.screen.who()} ({self.user}) in {self.screen.where()}. {switch}; `help` for commands, `quit` to leave.",
        ]

    def run(self) -> int:
        self.screen.say(*self.intro())
        try:
            while True:
                self.forms.fill_pending()
                line = self.term.read(self.prompt)
                if line is None:
                    break
                if not self.handle(line):
                    break
        except KeyboardInterrupt:
            self.screen.say("", "(interrupted)")
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
            self.screen.say(HELP.format(default=DEFAULT_CHANNEL_NAME))
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
            self.screen.say(f"You are {self.screen.who()} ({self.user}) in {self.screen.where()}.")
        elif cmd == "users" and not rest:
            self.list_people()
        elif cmd in ("in", "channel") and rest:
            self.move(rest)
        elif cmd == "show" and rest:
            self.screen.show(rest)
        elif cmd in ("messages", "history") and not rest:
            self.screen.list_messages()
        elif cmd == "group":
            self.group(rest)
        elif cmd == "wait":
            self.wait(rest)
        elif cmd == "sleep":
            self.sleep(rest)
        else:
            self.slash("/pgsessions", text)
        self.forms.fill_pending()
        return True

    # --- commands -----------------------------------------------------------------------------------

    def timed(self, what: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        resp = fn()
        took = time.monotonic() - started
        if took > ACK_LIMIT:
            self.screen.notice(f"the bot took {took:.1f}s to acknowledge {what}: Slack gives up after {ACK_LIMIT:g}s")
        return resp

    def slash(self, command: str, text: str) -> None:
        driver = self.driver
        assert driver is not None
        channel = self.channel
        url = self.ws.response_url(channel, self.user)
        trigger = self.ws.trigger_id(self.user)
        name = self.names.channels.get(channel, channel.lower())
        resp = self.timed(command, lambda: driver.slash(command, text, self.user, channel, name, url, trigger))
        if resp.status != 200:
            why = "the bot does not handle it" if resp.status == 404 else f"HTTP {resp.status}"
            self.screen.notice(f'{command} failed with the error "dispatch_failed" ({why})')
        else:
            body = response_json(resp)
            if body and (body.get("text") or body.get("blocks")):
                in_channel = body.get("response_type") == "in_channel"
                self.ws.add_message(
                    channel, str(body.get("text") or ""), body.get("blocks"), attachments=body.get("attachments"),
                    ephemeral_to=None if in_channel else self.user, source="ack",
                )
        self.settle()

    def click(self, what: str) -> None:
        assert self.driver is not None
        n, problem = self.screen.find_button(what)
        if n is None:
            self.screen.say(problem or "Which button?")
            return
        ref = self.screen.button(n)
        if ref is None:
            self.screen.say(f"There is no button [{n}].")
            return
        block_id, element = self.screen.element(ref)
        msg = self.ws.message(int(ref.key)) if ref.container == "msg" else None
        view = self.ws.view(str(ref.key)) if ref.container == "view" else None
        if element is None:
            if msg is not None and msg.deleted:
                self.screen.say(f"Message #{msg.no} was deleted; its buttons are gone.")
            elif msg is not None:
                self.screen.say(f"Button [{n}] is no longer on message #{msg.no} (the bot changed the message).")
            else:
                self.screen.say(f"Button [{n}] belonged to a form that is closed.")
            return
        if msg is not None and msg.ephemeral_to and msg.ephemeral_to != self.user:
            self.screen.say(f"Message #{msg.no} is only visible to {self.screen.who(msg.ephemeral_to)}: you cannot click on it.")
            return
        if element.get("confirm") and not self.forms.confirm(element["confirm"]):
            self.screen.say("(not confirmed: nothing was sent)")
            return
        selection = self.forms.choose(element)
        if selection is None:
            return
        trigger = self.ws.trigger_id(self.user)
        driver = self.driver
        assert driver is not None
        label = str((element.get("text") or {}).get("text") or element.get("action_id"))
        if msg is not None:
            channel = msg.channel
            url = self.ws.response_url(channel, self.user, msg.no)
            resp = self.timed(
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
            resp = self.timed(
                f"the click on {label}",
                lambda: driver.block_action(self.user, element, block_id, trigger, view=view.view,
                                                 selection=selection),
            )
        if resp.status != 200:
            self.screen.notice(f"the bot answered the click with HTTP {resp.status} (Slack shows a warning sign)")
        self.settle()

    def become(self, who: str) -> None:
        uid = self.resolve_user(who)
        if uid is None:
            known = ", ".join(n for n, i in self.people.items() if i[:1] in "UW") or "none configured"
            self.screen.say(f"Who is `{who}`? Known people: {known}; or give a Slack user id (U...).")
            return
        self.seat.user = uid
        self.screen.say(f"You are now {self.screen.who()} ({uid}).")

    def list_people(self) -> None:
        lines = []
        for name, uid in self.people.items():
            mark = " (you)" if uid == self.user else ""
            lines.append(f"  {name}: {uid}{mark}")
        if self.user not in self.people.values():
            lines.append(f"  {self.screen.who()[1:]}: {self.user} (you)")
        for gid, members in sorted(self.ws.groups.items()):
            lines.append(f"  group {self.names.group(gid)}: " + (", ".join(self.screen.who(m) for m in members) or "nobody"))
        self.screen.say(*lines)

    def move(self, where: str) -> None:
        where = where.strip().lstrip("#")
        for cid, name in self.names.channels.items():
            if name == where:
                where = cid
        if not re.fullmatch(r"[CGD][A-Z0-9]{2,}", where):
            self.screen.say("Give a channel id such as C0OPS (or `shell`).")
            return
        self.seat.channel = where
        self.names.channels.setdefault(where, channel_name(where))
        self.ws.channels.setdefault(where, self.names.channels[where])
        self.screen.say(f"You are now in {self.screen.where()}.")

    def group(self, rest: str) -> None:
        words = rest.split()
        if not words:
            self.list_people()
            return
        gid = self.people.get(words[0], words[0])
        if not re.fullmatch(r"S[A-Z0-9]{2,}", gid):
            self.screen.say("Write `group S0DBAS name name ...` (a user-group id, then its members).")
            return
        members = []
        for w in words[1:]:
            uid = self.resolve_user(w)
            if uid is None:
                self.screen.say(f"Who is `{w}`?")
                return
            members.append(uid)
        self.ws.groups[gid] = members
        if self.rt is not None:
            with contextlib.suppress(AttributeError):
                self.rt.directory._groups.pop(gid, None)  # the bot caches group members for 5 minutes
        self.screen.say(f"{self.names.group(gid)}: " + (", ".join(self.screen.who(m) for m in members) or "nobody"))

    def _seconds(self, word: str) -> float | None:
        try:
            return float(parse_duration(word))
        except (DurationError, ValueError, TypeError):
            self.screen.say(f"`{word}` is not a number of seconds.")
            return None

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
            new = self.screen.shown_since(start)
            return any(contains(t) for t in new) or any(contains(t) for t in self.screen.on_screen())

        if self.activity.wait_for(seen, seconds):
            self.settle()
        else:
            what = f"containing `{needle}` " if needle else ""
            self.screen.say(f"(no message {what}within {seconds:g}s)")

    def sleep(self, rest: str) -> None:
        seconds = self._seconds(rest.split()[0]) if rest.split() else None
        if seconds is None:
            return
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))
        self.settle()

