"""The approval messages in Slack: drawing a request with its kind's renderer, and redrawing it when
it changes (this is the workflow's :class:`~bot.approval.ports.RequestEvents` port)."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.approval.actions import ACTIONS, ActionKind
from bot.approval.models import Request, RequestState, with_queries_redacted
from bot.config import Config
from bot.render.actions import DRAWINGS, Drawing
from bot.render.approval import still_can_approve
from bot.render.common import context
from bot.state.store import StateStore

log = logging.getLogger(__name__)

_REDRAW_LOCKS: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_REDRAW_GUARD = threading.Lock()


def _rank(state: RequestState) -> int:
    """pending < executing < every final state."""
    return {RequestState.PENDING: 0, RequestState.EXECUTING: 1}.get(state, 2)


class RequestMessages:
    def __init__(
        self, client: WebClient, store: StateStore, config: Config, actions: Mapping[str, ActionKind] = ACTIONS,
        drawings: Mapping[str, Drawing] = DRAWINGS,
    ):
        self.client = client
        self.store = store
        self.config = config
        self.actions = actions
        self.drawings = drawings
        # (counted, no longer counted) approvals of a pending request: the workflow's, set once it exists
        self.count_approvals: Callable[[Request, list[str]], tuple[list[str], list[str]]] | None = None
        # called after every redraw (the one place every state change passes): the nudges feature
        self.after_redraw: Callable[[Request], None] | None = None

    def render(self, req: Request, approvals: list[str] | None = None) -> dict[str, Any]:
        """The request's message; ``approvals``: who approved it, when the caller has just read it."""
        environment = self.config.env(req.env)
        cfg_approvers = environment.access.approvers if environment else []
        required = environment.access.approvals_required if environment else 1
        if approvals is None:
            try:
                approvals = self.store.approvers_of(req.id)
            except Exception as exc:  # the state store is down: still draw what happened (the outcome is in memory)
                log.warning("could not read the approvals of %s: %s", req.id, type(exc).__name__)
                approvals = [req.decided_by] if req.decided_by else []
        dropped: list[str] = []
        if self.count_approvals is not None:  # only approvals by people who are approvers now count (§2)
            approvals, dropped = self.count_approvals(req, approvals)
        if environment:  # name only who can still approve
            cfg_approvers = still_can_approve(cfg_approvers, approvals, req.requester, environment.access.self_approval)
        if environment is not None and environment.redact_queries:  # also texts stored before it was on
            req = with_queries_redacted(req)
        kind = self.actions[req.action]
        msg = self.drawings[req.action].message(req, kind, approvals, required, cfg_approvers)
        if dropped and req.state == RequestState.PENDING and len(msg["blocks"]) < 50:
            msg["blocks"].insert(-2, context(
                "No longer counted (not approvers any more): " + ", ".join(f"<@{a}>" for a in dropped)
            ))
        return msg

    def _latest(self, req: Request) -> tuple[Request, list[str] | None]:
        """The newest known version of ``req`` (the store's, unless the caller holds a later state: an
        outcome still waiting in memory for an unreachable store) and who approved it, in one read."""
        try:
            stored, approvals = self.store.request_with_approvals(req.id)
        except Exception as exc:  # the store is down: draw what the caller knows
            log.warning("could not re-read request %s before redrawing: %s", req.id, type(exc).__name__)
            return req, None
        if stored is None:
            return req, None
        return (stored if _rank(stored.state) >= _rank(req.state) else req), approvals

    def redraw(self, req: Request) -> None:
        """Edit the approval message in place to show the request's current state.

        Redraws of one request run one at a time and each draws the newest state it can read, so a slow
        "pending" redraw can never land after (and hide) the "expired" or "done" one.
        """
        if not req.channel or not req.message_ts:
            return
        with _REDRAW_GUARD:
            lock = _REDRAW_LOCKS.setdefault(req.id, threading.Lock())
        with lock:
            req, approvals = self._latest(req)
            try:
                self.client.chat_update(channel=req.channel or "", ts=req.message_ts or "",
                                        **self.render(req, approvals))
            except SlackApiError as exc:
                log.warning("could not update request %s message: %s", req.id, exc.response.get("error"))
            except Exception as exc:  # Slack unreachable after retries: the state is safe in the store
                log.warning("could not update request %s message: %s", req.id, type(exc).__name__)
        if self.after_redraw is not None:
            self.after_redraw(req)  # e.g. the requester's direct message about a final outcome

    # RequestEvents
    def changed(self, request: Request) -> None:
        self.redraw(request)
