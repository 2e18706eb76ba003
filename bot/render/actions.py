"""How each kind of request is drawn: its approval message and its request form, keyed by the action
names of :data:`bot.approval.actions.ACTIONS` (the domain's table: target type, labels, executor).

Used by the Slack edge (:mod:`bot.slack.messages`, the request form of :mod:`bot.slack.kill_handlers`);
the domain never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.approval import ids
from bot.approval.actions import ActionKind
from bot.approval.models import Request, StoredTarget
from bot.render.approval import request_message, request_modal
from bot.render.bulk import bulk_modal, bulk_request_message

# message(request, kind, approvals so far, approvals required, configured approvers) -> the approval message
Renderer = Callable[[Request, ActionKind, list[str], int, list[str]], dict[str, Any]]
# modal(stored target, kind, token, channel, reason required) -> the request form
Modal = Callable[[StoredTarget, ActionKind, str, "str | None", bool], dict[str, Any]]


@dataclass(frozen=True)
class Drawing:
    message: Renderer
    modal: Modal


SESSION_REQUEST = Drawing(request_message, request_modal)
BULK_REQUEST = Drawing(bulk_request_message, bulk_modal)

DRAWINGS: Mapping[str, Drawing] = {
    ids.CANCEL: SESSION_REQUEST,
    ids.TERMINATE: SESSION_REQUEST,
    ids.DISCONNECT_CLIENT: SESSION_REQUEST,
    ids.TERMINATE_BULK: BULK_REQUEST,
    ids.CLEAR_DB: BULK_REQUEST,
    ids.CLEAR_DB_BLOCK: BULK_REQUEST,
    ids.ALLOW_CONNECTIONS: BULK_REQUEST,
}
