"""A replayed Slack request does nothing: slash commands and button clicks are served once.

Slack signs every HTTP request (``X-Slack-Signature`` over the timestamp and the body) and Bolt refuses
a signature older than 5 minutes; within those 5 minutes a byte-identical copy of a signed request (a
replay by whoever saw it, or a proxy that sent it twice) would pass the check again. So every signed
slash command and ``block_actions`` click is claimed once, keyed by a hash of its signature and body,
in the state store (shared by replicas; :meth:`bot.state.store.StateStore.claim_delivery`) for
:data:`REPLAY_WINDOW` seconds, and a copy is acknowledged with an empty 200 and nothing else. Over
Socket Mode (no signature) the envelope id is the key (:class:`OnceSocketModeHandler`). Events (by
``event_id``, :mod:`bot.slack.events`) and view submissions (by view id and hash,
:meth:`bot.approval.workflow.Workflow.submit`) have their own de-duplication.

When the state store cannot be asked, this replica's memory decides (the request is served, not lost).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.slack.context import Context
from bot.slack.dedupe import EventDedupe
from bot.state.store import DELIVERY_WINDOW

log = logging.getLogger(__name__)

REPLAY_WINDOW = DELIVERY_WINDOW
# the interaction payloads that act (or open a form to act); view submissions are de-duplicated by view
SERVED_ONCE = ("block_actions",)


def _first(headers: dict[str, Sequence[str]] | None, name: str) -> str:
    values = (headers or {}).get(name) or []
    return str(values[0]) if values else ""


def replay_key(req: BoltRequest) -> str | None:
    """The key that names this exact signed request, or None when it is not one served once.

    A hash of the signature (which covers the timestamp and the body) and the body: a byte-identical
    copy has the same key, any other request another."""
    if req.mode != "http":
        return None
    body = req.body
    if not isinstance(body, dict) or not (body.get("command") or body.get("type") in SERVED_ONCE):
        return None
    signature = _first(req.headers, "x-slack-signature")
    stamp = _first(req.headers, "x-slack-request-timestamp")
    digest = hashlib.sha256(f"{signature}\n{stamp}\n{req.raw_body}".encode()).hexdigest()
    return "rq" + digest[:30]


def envelope_key(envelope_id: str) -> str:
    return "se" + hashlib.sha256(envelope_id.encode()).hexdigest()[:30]


class Deliveries:
    """Which requests were served already: this replica's memory, then the state store (all replicas)."""

    def __init__(self, rt: Context, window: float = REPLAY_WINDOW):
        self.rt = rt
        self.window = window
        self.local = EventDedupe(ttl=window)

    def first_time(self, key: str) -> bool:
        if not self.local.first_time(key):
            return False
        try:
            return bool(self.rt.store.claim_delivery(key, self.window))
        except Exception as exc:
            log.warning("could not record a Slack request in the state store: %s", type(exc).__name__)
            return True


def register(app: App, rt: Context) -> Deliveries:
    """Install the middleware that drops replayed slash commands and clicks (after Bolt's signature check)."""
    deliveries = Deliveries(rt)

    def drop_replayed_requests(req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]) -> BoltResponse:
        key = replay_key(req)
        if key is not None and not deliveries.first_time(key):
            log.warning("a replayed Slack request (the same signed body again) was acknowledged and ignored",
                        extra={"event": "slack_replay"})
            return BoltResponse(status=200, body="")
        return next()

    app.use(drop_replayed_requests)
    return deliveries


class OnceSocketModeHandler(SocketModeHandler):
    """Bolt's Socket Mode handler, serving each envelope id once: a redelivered envelope (Slack sends it
    again when it did not see the acknowledgement) is acknowledged and not run again."""

    def __init__(self, app: App, app_token: str | None, deliveries: Deliveries | None, **kwargs: Any):
        super().__init__(app, app_token, **kwargs)
        self.deliveries = deliveries

    def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        if self.deliveries is not None and req.envelope_id and req.type != "events_api":
            if not self.deliveries.first_time(envelope_key(str(req.envelope_id))):
                log.warning("a Socket Mode envelope delivered again was acknowledged and ignored",
                            extra={"event": "slack_replay"})
                client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
                return
        super().handle(client, req)
