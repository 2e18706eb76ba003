"""What every Slack handler shares: the command router, the error guard, posting and telling.

Handler modules import this module, never :mod:`bot.slack.app` (which imports them): no cycle.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.postgres.models import Listing
from bot.slack.context import Context

log = logging.getLogger(__name__)

CommandHandler = Callable[[Context, Any, dict[str, Any], Callable[..., Any]], None]
# blocks a feature adds under a session listing (e.g. the bulk *Terminate these N*)
ListingExtra = Callable[[Context, Any, Listing, dict[str, Any]], list[dict[str, Any]]]


class Router:
    """Maps each parsed command type to the function that serves it (feature modules register here)."""

    def __init__(self) -> None:
        self.handlers: dict[type, CommandHandler] = {}
        self.progress: dict[type, Callable[[Any], str | None]] = {}
        self.listing_extras: list[ListingExtra] = []

    def on(self, kind: type, progress: Callable[[Any], str | None] | None = None) -> Callable[[CommandHandler], CommandHandler]:
        def deco(fn: CommandHandler) -> CommandHandler:
            self.handlers[kind] = fn
            if progress is not None:
                self.progress[kind] = progress
            return fn

        return deco


def new_ref() -> str:
    return secrets.token_hex(4)


def guarded(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a listener's slow part; on an unexpected error tell the user briefly and log the details."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
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


def post_message(client: WebClient, channel: str | None, msg: dict[str, Any], respond: Any = None) -> tuple[str, str] | None:
    """chat.postMessage; where the bot cannot post (private channel, DM) fall back to response_url."""
    thread_ts = getattr(respond, "thread_ts", None)  # an answer to a mention goes into its thread
    if thread_ts:
        msg = {**msg, "thread_ts": thread_ts}
    try:
        resp = client.chat_postMessage(channel=channel or "", **msg)
        return resp["channel"], resp["ts"]
    except SlackApiError as exc:
        error = exc.response.get("error")
        if respond is not None and error in ("channel_not_found", "not_in_channel", "is_archived", "restricted_action"):
            respond(response_type="in_channel", replace_original=False, **msg)
            return None
        raise


def tell(client: WebClient, respond: Any, channel: str | None, user: str, text: str) -> None:
    """An ephemeral answer to one person: through response_url when we have one, else chat.postEphemeral."""
    if respond is not None:
        try:
            respond(response_type="ephemeral", replace_original=False, text=text)
            return
        except Exception:
            log.warning("response_url answer failed; falling back to chat.postEphemeral")
    if channel:
        try:
            client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError as exc:
            log.warning("could not answer %s: %s", user, exc.response.get("error"))
        except Exception as exc:  # Slack unreachable: the answer is lost, the decision is not
            log.warning("could not answer %s: %s", user, type(exc).__name__)


def channel_of(body: dict[str, Any]) -> str | None:
    return (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
