"""The Bolt app: thin handlers that parse, acknowledge within Slack's 3 s, then call the domain.

Every listener acknowledges first and then does its slow work (Bolt's default mode runs listeners
in a thread pool and answers Slack as soon as ``ack()`` is called). Nothing a listener raises ever
reaches Slack as a stack trace: :func:`guarded` turns it into a short ephemeral message with a
reference that matches the log line.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App
from slack_bolt.error import BoltError, BoltUnhandledRequestError
from slack_sdk.errors import SlackApiError

from bot.channel_defaults import apply_channel_default
from bot.commands import USAGE, Command, CommandError, Help, known_envs, parse
from bot.metrics import COMMANDS
from bot.postgres.pools import DatabaseUnavailable, watch_unavailable
from bot.runtime import Runtime
from bot.slack import listing_handlers
from bot.slack.guards import install_workspace_guard, viewer_refusal, viewers_decidable_offline

log = logging.getLogger(__name__)

CommandHandler = Callable[[Runtime, Any, dict, Callable[..., Any]], None]


class Router:
    """Maps each parsed command type to the function that serves it (feature modules register here)."""

    def __init__(self) -> None:
        self.handlers: dict[type, CommandHandler] = {}
        self.progress: dict[type, Callable[[Any], str | None]] = {}

    def on(self, kind: type, progress: Callable[[Any], str | None] | None = None):
        def deco(fn: CommandHandler) -> CommandHandler:
            self.handlers[kind] = fn
            if progress is not None:
                self.progress[kind] = progress
            return fn

        return deco


def new_ref() -> str:
    return secrets.token_hex(4)


def guarded(what: str):
    """Run a listener's slow part; on an unexpected error tell the user briefly and log the details."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            respond = kwargs.get("respond")
            try:
                return fn(*args, **kwargs)
            except Exception:
                ref = new_ref()
                log.exception("unexpected error while %s (ref %s)", what, ref)
                if respond is not None:
                    try:
                        respond(
                            response_type="ephemeral",
                            replace_original=False,
                            text=f":x: Something went wrong while {what}. Nothing was changed. "
                            f"Reference `{ref}` (for the bot's logs).",
                        )
                    except Exception:
                        log.warning("could not tell the user about error %s", ref)

        return wrapper

    return deco


def env_of(cmd: Command) -> str | None:
    return getattr(cmd, "env", None)


def channel_refusal(rt: Runtime, env: str | None, channel_id: str | None) -> str | None:
    if env is None:
        return None
    allowed = rt.config.environments[env].access.channels
    if allowed and channel_id not in allowed:
        where = ", ".join(f"<#{c}>" for c in allowed)
        return f"`{env}` can only be used in {where}."
    return None


def command_name(cmd: Command) -> str:
    """``ListSessions`` -> ``list_sessions``: the metric label for a parsed command."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(cmd).__name__).lower()


def help_text(rt: Runtime) -> str:
    return f"{USAGE}\n\n*Environments:* {known_envs(rt.config)}"


def build_app(rt: Runtime, router: Router | None = None) -> App:
    s = rt.slack
    if not s.bot_token:
        raise BoltError("SLACK_BOT_TOKEN is not set")
    app = App(
        signing_secret=s.signing_secret or "",
        client=rt.client,
        request_verification_enabled=True,
        process_before_response=False,
        # a signed request no listener handles (an unknown action id, a shortcut, a malformed payload) is
        # answered 200 by on_error below: Slack shows the user an error for any other status
        raise_error_for_unhandled_request=True,
        # more workers than calls to hung hosts can ever hold (bot/postgres/pools.py bounds those), so acks stay fast
        # (threads are started only when needed; the cap keeps a config of hundreds of hosts sane)
        listener_executor=ThreadPoolExecutor(max_workers=32 + min(480, rt.dbs.max_blocked_threads()),
                                             thread_name_prefix="pgs-listener"),
        logger=logging.getLogger("pgsessions.bolt"),
    )
    install_workspace_guard(app, rt)
    router = router or Router()
    rt.extensions["router"] = router
    listing_handlers.register(router)
    for register in _feature_modules():
        register(app, rt, router)

    @app.command("/pgsessions")
    def on_command(ack, command, respond, body):
        text = apply_channel_default(command.get("text") or "", rt.config, command.get("channel_id"))
        try:
            cmd = parse(text, rt.config)
        except CommandError as exc:
            ack(response_type="ephemeral", text=exc.answer())
            COMMANDS.labels("invalid", "bad_input").inc()
            return
        name = command_name(cmd)
        if isinstance(cmd, Help):
            ack(response_type="ephemeral", text=help_text(rt))
            COMMANDS.labels(name, "ok").inc()
            return
        refusal = channel_refusal(rt, env_of(cmd), command.get("channel_id"))
        viewer = command.get("user_id") or ""
        # access.viewers (pending/audit filter per entry): decided before the ack when no user group must
        # be read from Slack, else right after it (a slow Slack must not delay the ack)
        check_viewer_later = refusal is None and not viewers_decidable_offline(rt, env_of(cmd))
        if refusal is None and not check_viewer_later:
            refusal = viewer_refusal(rt, env_of(cmd), viewer)
        if refusal:
            ack(response_type="ephemeral", text=refusal)
            COMMANDS.labels(name, "refused").inc()
            return
        handler = router.handlers.get(type(cmd))
        if handler is None:
            ack(response_type="ephemeral", text=f"`{text}` is not available in this version of the bot.")
            COMMANDS.labels(name, "refused").inc()
            return
        progress = router.progress.get(type(cmd))
        note = progress(cmd) if progress else None
        if note:
            ack(response_type="ephemeral", text=note)
        else:
            ack()
        failed = []

        def run(*args, **kwargs):
            if check_viewer_later:
                late = viewer_refusal(rt, env_of(cmd), viewer)
                if late:
                    kwargs["respond"](response_type="ephemeral", text=f":no_entry_sign: Not possible: {late}.")
                    return None
            try:
                return handler(*args, **kwargs)
            except Exception as exc:
                if not isinstance(exc, DatabaseUnavailable):
                    failed.append(True)
                raise

        with watch_unavailable() as unavailable:
            guarded(f"running `/pgsessions {text}`")(run)(rt, cmd, body, respond=respond)
        COMMANDS.labels(name, "error" if failed else "unavailable" if unavailable else "ok").inc()

    @app.error
    def on_error(error, body, logger, response):
        if isinstance(error, BoltUnhandledRequestError):
            logger.warning("no listener for a Slack request (type %r); answered 200", (body or {}).get("type"))
            if response is not None:
                response.status, response.body = 200, ""
            return
        # Bolt answers 500 for an error raised before ack (e.g. its matchers on a payload without an
        # action_id); Slack must never see a 500: log it and answer 200 with nothing.
        logger.error("unhandled error while handling a Slack request: %s", type(error).__name__)
        if response is not None and response.status >= 500:
            response.status, response.body = 200, ""

    return app


def _feature_modules() -> list[Callable[[App, Runtime, Router], None]]:
    """Feature modules (kill workflow, lag, bulk, ...) register their commands and actions here."""
    mods: list[Callable[[App, Runtime, Router], None]] = []
    import importlib

    for name in ("bot.slack.kill_handlers", "bot.slack.lag_handlers", "bot.slack.bulk_handlers",
                 "bot.slack.details_handlers", "bot.slack.events", "bot.slack.nudges", "bot.slack.home_handlers",
                 "bot.slack.watch_handlers"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mods.append(module.register)
    return mods


def post_message(rt: Runtime, channel: str, msg: dict, respond=None) -> tuple[str, str] | None:
    """chat.postMessage; where the bot cannot post (private channel, DM) fall back to response_url."""
    thread_ts = getattr(respond, "thread_ts", None)  # an answer to a mention goes into its thread
    if thread_ts:
        msg = {**msg, "thread_ts": thread_ts}
    try:
        resp = rt.client.chat_postMessage(channel=channel, **msg)
        return resp["channel"], resp["ts"]
    except SlackApiError as exc:
        error = exc.response.get("error")
        if respond is not None and error in ("channel_not_found", "not_in_channel", "is_archived", "restricted_action"):
            respond(response_type="in_channel", replace_original=False, **msg)
            return None
        raise
