"""What the approval workflow needs from the outside, as interfaces (the Slack edge implements them).

* :class:`ApproversLookup`: is this user one of these principals (user ids, user groups, ``*``)?
  (:class:`bot.slack.directory.Directory` answers it from Slack user groups.)
* :class:`Execution`: what an executor acts with.
* :class:`RequestEvents`: a request changed (progress, outcome, reopened database): redraw it.
  (:class:`bot.slack.messages.RequestMessages` edits the approval message in place.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.approval.models import Request
from bot.config import Config
from bot.postgres.pools import Databases
from bot.state.store import StateStore


class ApproversLookup(Protocol):
    def allowed(self, user_id: str, principals: list[str]) -> bool: ...


class RequestEvents(Protocol):
    def changed(self, request: Request) -> None:
        """Called after a request's stored state changed outside a decision (never raises)."""
        ...


class NoEvents:
    """A sink that ignores every event (tests, tools without Slack)."""

    def changed(self, request: Request) -> None:
        return None


@dataclass(frozen=True)
class Execution:
    """What an executor (bot/approval/actions.py) acts with: the configuration, the state store, the
    monitored servers, and where to report a request's progress."""

    config: Config
    store: StateStore
    dbs: Databases
    events: RequestEvents
