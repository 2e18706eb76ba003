"""Slack Events API: the same events over HTTP (``POST /slack/events``) and Socket Mode (``events_api``).

* Retries are processed once: Slack sends an event again (``X-Slack-Retry-Num`` over HTTP,
  ``retry_attempt`` in Socket Mode) when it did not see the acknowledgement in time; every
  ``event_id`` is remembered for :data:`DEDUPE_TTL` seconds in a bounded in-process map and a repeat is
  acknowledged without running anything. (In-process: with several replicas behind one URL a retry
  that lands on another replica would run again; the window is Slack's 3 retries within ~5 minutes.)
* ``app_mention``: ``@pgsessions prod idle`` does what ``/pgsessions prod idle`` does and answers in the
  thread of the mention (``thread_ts`` = the mention's thread, or the mention itself when top-level).
  Mentions in the bot's own messages are ignored.
* ``url_verification`` is answered by Bolt (its challenge echoed back) after the signature check.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext, BoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack import dispatch
from bot.slack.context import Context
from bot.slack.dedupe import DEDUPE_MAX, DEDUPE_TTL, EventDedupe
from bot.slack.edge import Router

__all__ = ["DEDUPE_MAX", "DEDUPE_TTL", "EventDedupe", "mention_text", "register", "run_command"]

log = logging.getLogger(__name__)

class ThreadResponder:
    """A ``respond`` for answers to a mention: ephemeral answers to the person, the rest in the thread.

    ``thread_ts`` is read by :func:`bot.slack.app.post_message`, so listings go into the thread too.
    """

    def __init__(self, client: WebClient, channel: str, user: str, thread_ts: str):
        self.client = client
        self.channel = channel
        self.user = user
        self.thread_ts = thread_ts

    def __call__(self, text: str | None = None, blocks: list[dict[str, Any]] | None = None, response_type: str | None = None,
                 replace_original: bool | None = None, delete_original: bool | None = None, **_: object) -> None:
        msg: dict[str, Any] = {"text": text or " "}
        if blocks:
            msg["blocks"] = blocks
        try:
            if response_type == "in_channel":
                self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, **msg)
            else:
                self.client.chat_postEphemeral(channel=self.channel, user=self.user, thread_ts=self.thread_ts, **msg)
        except SlackApiError as exc:
            log.warning("could not answer a mention in %s: %s", self.channel, exc.response.get("error"))


def mention_text(text: str, bot_user_id: str | None) -> str:
    """The command in a mention's text: the bot's own mention removed, Slack's escaping undone."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    else:  # the mention that triggered the event comes first
        text = re.sub(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>", " ", text)
    # Slack writes user mentions as <@U123>: keep the id for `audit --user`
    return html.unescape(text).strip()


def run_command(rt: Context, router: Router, text: str, channel: str, user: str, respond: Callable[..., Any], extra: dict[str, Any] | None = None) -> None:
    """Serve one command text for ``user`` in ``channel`` with the slash command's rules; answers via ``respond``."""
    step = dispatch.prepare(rt, router, text, channel)
    if isinstance(step, dispatch.Answer):
        respond(response_type="ephemeral", text=f":no_entry_sign: {step.text}" if step.denied else step.text)
        step.count()
        return
    refusal = rt.policy.viewer_refusal(step.env, user)
    if refusal:
        respond(response_type="ephemeral", text=f":no_entry_sign: {refusal}")
        dispatch.Answer(refusal, step.name, "refused", denied=True).count()
        return
    if step.note:
        respond(response_type="ephemeral", text=step.note)
    body = {"channel_id": channel, "user_id": user, "text": step.text, **(extra or {})}
    dispatch.execute(rt, step, body, respond, f"running `@pgsessions {step.text}`")


def _first_everywhere(rt: Context, event_id: str) -> bool:
    """True unless another replica (sharing the state store) already took this event. When the store
    cannot be asked, this replica's own memory decides (the event is processed, not lost)."""
    try:
        return bool(rt.store.claim_once(f"ev:{event_id}"))
    except Exception as exc:
        log.warning("could not record event %s in the state store: %s", event_id, type(exc).__name__)
        return True


def register(app: App, rt: Context, router: Router) -> None:
    dedupe = EventDedupe()
    rt.event_dedupe = dedupe

    def drop_repeated_events(req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]) -> BoltResponse | None:  # Bolt passes these by name
        body = req.body or {}
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if event_id and not (dedupe.first_time(str(event_id)) and _first_everywhere(rt, str(event_id))):
            retry = req.headers.get("x-slack-retry-num") or [str(body.get("retry_attempt"))]
            log.info("event %s seen before (Slack retry %s): acknowledged, not processed again",
                     event_id, (retry or ["?"])[0], extra={"event": "slack_event_retry"})
            return BoltResponse(status=200, body="")
        return next()

    app.use(drop_repeated_events)

    @app.event("app_mention")
    def on_mention(ack: Ack, event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
        ack()
        bot_user = context.get("bot_user_id")
        user = event.get("user")
        if event.get("bot_id") or not user or (bot_user and user == bot_user) or event.get("subtype"):
            return  # the bot's own (or another bot's) message: never a command
        channel = event.get("channel")
        if not channel:
            return
        thread_ts = event.get("thread_ts") or event.get("ts")
        respond = ThreadResponder(client, channel, user, str(thread_ts))
        text = mention_text(event.get("text") or "", bot_user)
        run_command(rt, router, text, channel, user, respond, {"thread_ts": thread_ts})
