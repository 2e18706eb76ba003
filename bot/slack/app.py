"""The Bolt app: thin handlers that parse, acknowledge within Slack's 3 s, then call the domain.

A command text is served by :mod:`bot.slack.dispatch`, the same way for ``/pgsessions`` (here) and for
``@pgsessions`` (:mod:`bot.slack.events`).

Every listener acknowledges first and then does its slow work (Bolt's default mode runs listeners
in a thread pool and answers Slack as soon as ``ack()`` is called). Nothing a listener raises ever
reaches Slack as a stack trace: :func:`bot.slack.edge.guarded` turns it into a short ephemeral message with a
reference that matches the log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, App, BoltResponse
from slack_bolt.error import BoltError, BoltUnhandledRequestError

from bot.runtime import Runtime
from bot.slack import dispatch
from bot.slack.edge import Router
from bot.slack.guards import install_workspace_guard
from bot.slack.web import install_quiet_respond
from bot.wiring import install_jobs, register_features

log = logging.getLogger(__name__)


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
    install_quiet_respond(app)
    router = router or Router()
    register_features(app, rt, router)
    install_jobs(rt)

    @app.command("/pgsessions")
    def on_command(ack: Ack, command: dict[str, Any], respond: Callable[..., Any], body: dict[str, Any]) -> None:
        step = dispatch.prepare(rt, router, command.get("text") or "", command.get("channel_id"))
        if isinstance(step, dispatch.Answer):
            ack(response_type="ephemeral", text=step.text)
            step.count()
            return
        viewer = command.get("user_id") or ""
        # access.viewers: decided before the ack when no user group must be read from Slack, else right
        # after it (a slow Slack must not delay the ack)
        later = not rt.policy.viewers_decidable_offline(step.env)
        refusal = None if later else rt.policy.viewer_refusal(step.env, viewer)
        if refusal:
            ack(response_type="ephemeral", text=refusal)
            dispatch.Answer(refusal, step.name, "refused", denied=True).count()
            return
        if step.note:
            ack(response_type="ephemeral", text=step.note)
        else:
            ack()
        dispatch.execute(rt, step, body, respond, f"running `/pgsessions {step.text}`",
                         viewer_later=viewer if later else None)

    @app.error
    def on_error(error: Exception, body: dict[str, Any], logger: logging.Logger, response: BoltResponse | None) -> None:
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
