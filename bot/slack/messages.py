"""The approval messages in Slack: drawing a request with its kind's renderer, and redrawing it when
it changes (this is the workflow's :class:`~bot.approval.ports.RequestEvents` port)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.approval.actions import ACTIONS, ActionKind
from bot.approval.models import Request
from bot.config import Config
from bot.state.store import StateStore

log = logging.getLogger(__name__)


class RequestMessages:
    def __init__(
        self, client: WebClient, store: StateStore, config: Config, actions: Mapping[str, ActionKind] = ACTIONS
    ):
        self.client = client
        self.store = store
        self.config = config
        self.actions = actions

    def render(self, req: Request) -> dict:
        environment = self.config.env(req.env)
        cfg_approvers = environment.access.approvers if environment else []
        required = environment.access.approvals_required if environment else 1
        approvals = self.store.approvers_of(req.id)
        kind = self.actions[req.action]
        return kind.renderer(req, kind, approvals, required, cfg_approvers)

    def redraw(self, req: Request) -> None:
        """Edit the approval message in place to show the request's current state."""
        if not req.channel or not req.message_ts:
            return
        try:
            self.client.chat_update(channel=req.channel, ts=req.message_ts, **self.render(req))
        except SlackApiError as exc:
            log.warning("could not update request %s message: %s", req.id, exc.response.get("error"))
        except Exception as exc:  # Slack unreachable after retries: the state is safe in the store
            log.warning("could not update request %s message: %s", req.id, type(exc).__name__)

    # RequestEvents
    def changed(self, request: Request) -> None:
        self.redraw(request)
