"""Serving a command text, the same way whether it came as ``/pgsessions …`` or as ``@pgsessions …``.

Two steps, so that each way in answers at its own moment (a slash command must be acknowledged within
3 s, with the early answers in the acknowledgement; a mention answers in its thread):

* :func:`prepare` parses the text (after the channel's default environment) and decides what needs no
  database and no Slack call: a parse error, help, the channel rule (``access.channels``), a command this
  version does not serve. It returns an :class:`Answer` to give as it is, or a :class:`Ready` command.
* :func:`execute` runs a ready command's handler (``access.viewers`` first, when that needs Slack),
  turns anything it raises into a short message (:func:`bot.slack.edge.guarded`) and counts the outcome
  in ``pgsessions_commands_total``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.channel_defaults import apply_channel_default
from bot.commands import USAGE, Command, CommandError, Help, known_envs, parse
from bot.metrics import COMMANDS
from bot.postgres.pools import DatabaseUnavailable, watch_unavailable
from bot.slack.context import Context
from bot.slack.edge import Router, guarded


def env_of(cmd: Command) -> str | None:
    env = getattr(cmd, "env", None)
    return env if isinstance(env, str) else None


def command_name(cmd: Command) -> str:
    """``ListSessions`` -> ``list_sessions``: the metric label for a parsed command."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(cmd).__name__).lower()


def help_text(rt: Context) -> str:
    return f"{USAGE}\n\n*Environments:* {known_envs(rt.config)}"


@dataclass(frozen=True)
class Answer:
    """Said at once, nothing run: ``outcome`` is the metric's (``ok``, ``bad_input``, ``refused``)."""

    text: str
    name: str
    outcome: str
    denied: bool = False  # refused by an access rule (the channel's, or access.viewers)

    def count(self) -> None:
        COMMANDS.labels(self.name, self.outcome).inc()


@dataclass(frozen=True)
class Ready:
    """A parsed command that may run here: its handler, and a progress note to give first (or None)."""

    text: str
    cmd: Command
    name: str
    handler: Callable[..., Any]
    note: str | None

    @property
    def env(self) -> str | None:
        return env_of(self.cmd)


def prepare(rt: Context, router: Router, text: str, channel_id: str | None) -> Answer | Ready:
    text = apply_channel_default(text, rt.config, channel_id)
    try:
        cmd = parse(text, rt.config)
    except CommandError as exc:
        return Answer(exc.answer(), "invalid", "bad_input")
    name = command_name(cmd)
    if isinstance(cmd, Help):
        return Answer(help_text(rt), name, "ok")
    env = env_of(cmd)
    refusal = rt.policy.channel_refusal(env, channel_id) if env is not None else None
    if refusal:
        return Answer(f"{refusal}.", name, "refused", denied=True)
    handler = router.handlers.get(type(cmd))
    if handler is None:
        return Answer(f"`{text}` is not available in this version of the bot.", name, "refused")
    progress = router.progress.get(type(cmd))
    return Ready(text, cmd, name, handler, progress(cmd) if progress else None)


def execute(rt: Context, ready: Ready, body: dict[str, Any], respond: Any, doing: str, *, viewer_later: str | None = None) -> None:
    """Run the handler; ``viewer_later``: the user whose ``access.viewers`` check was left for now (it
    needs a user group read from Slack, which must not delay an acknowledgement)."""
    failed: list[bool] = []

    def run(*args: Any, **kwargs: Any) -> Any:
        if viewer_later is not None:
            late = rt.policy.viewer_refusal(ready.env, viewer_later)
            if late:
                kwargs["respond"](response_type="ephemeral", text=f":no_entry_sign: Not possible: {late}.")
                return None
        try:
            return ready.handler(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, DatabaseUnavailable):
                failed.append(True)
            raise

    with watch_unavailable() as unavailable:
        guarded(doing)(run)(rt, ready.cmd, body, respond=respond)
    COMMANDS.labels(ready.name, "error" if failed else "unavailable" if unavailable else "ok").inc()
