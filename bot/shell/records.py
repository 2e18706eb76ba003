"""What the terminal chat's local Slack keeps: messages, forms, response_urls, and who hears of every
change (:class:`Listener`). Used by :mod:`bot.shell.webapi`."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

# the local workspace's ids
TEAM_ID = "T0LOCAL"
BOT_USER_ID = "U0PGSBOT"
BOT_ID = "B0PGSBOT"
APP_ID = "A0PGSESS"


@dataclass
class Message:
    """A message as it stands now; ``no`` is the number the terminal shows (``#3``)."""

    no: int
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None
    attachments: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    ephemeral_to: str | None = None  # the one user who sees it
    source: str = "chat.postMessage"
    deleted: bool = False
    version: int = 1

    def payload(self) -> dict[str, Any]:
        """The message as Slack puts it in a block_actions payload."""
        d: dict[str, Any] = {
            "type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": self.text, "ts": self.ts,
            "team": TEAM_ID,
        }
        if self.blocks is not None:
            d["blocks"] = copy.deepcopy(self.blocks)
        if self.attachments is not None:
            d["attachments"] = copy.deepcopy(self.attachments)
        if self.thread_ts:
            d["thread_ts"] = self.thread_ts
        return d

    def content(self) -> tuple[str, str, str]:
        return (self.text, json.dumps(self.blocks, sort_keys=True), json.dumps(self.attachments, sort_keys=True))


@dataclass
class View:
    id: str
    view: dict[str, Any]  # as Slack returns it (id, hash, state, ...)
    user: str
    root_id: str
    previous_id: str | None = None
    closed: bool = False


@dataclass
class ResponseUrl:
    token: str
    channel: str | None
    user: str
    message_no: int | None  # the message replace_original / delete_original act on
    created: float = field(default_factory=time.time)
    uses: int = 0


class Listener(Protocol):
    def posted(self, msg: Message) -> None: ...
    def edited(self, msg: Message) -> None: ...
    def deleted(self, msg: Message) -> None: ...
    def view_opened(self, view: View) -> None: ...
    def view_updated(self, view: View) -> None: ...
    def notice(self, text: str) -> None: ...


class _Silent:
    def posted(self, msg: Message) -> None:
        pass

    def edited(self, msg: Message) -> None:
        pass

    def deleted(self, msg: Message) -> None:
        pass

    def view_opened(self, view: View) -> None:
        pass

    def view_updated(self, view: View) -> None:
        pass

    def notice(self, text: str) -> None:
        pass


class ApiError(Exception):
    def __init__(self, error: str, **extra: Any):
        super().__init__(error)
        self.body = {"ok": False, "error": error, **extra}
