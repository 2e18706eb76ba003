"""What the approval workflow needs from the outside, as interfaces (the Slack edge implements them).

* :class:`ApproversLookup`: is this user one of these principals (user ids, user groups, ``*``)?
  (:class:`bot.slack.directory.Directory` answers it from Slack user groups.)
* :class:`Execution`: what an executor acts with.
* :class:`RequestEvents`: a request changed (progress, outcome, reopened database): redraw it.
  (:class:`bot.slack.messages.RequestMessages` edits the approval message in place.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.approval.models import Request
from bot.config import Config
from bot.postgres.pools import Databases
from bot.session_rules import SignalGuard, guard_for
from bot.state.store import StateStore


class DirectoryUnavailable(Exception):
    """Slack could not be asked and no answer young enough is cached; ``str()`` says so for the user."""


@dataclass(frozen=True)
class Principals:
    """A principal list (user ids, user-group ids, "*") with every group's members read beforehand."""

    principals: tuple[str, ...]
    members: dict[str, frozenset[str]]

    def allows(self, user_id: str) -> bool:
        if "*" in self.principals or user_id in self.principals:
            return True
        return any(user_id in self.members.get(p, frozenset()) for p in self.principals if p.startswith("S"))


@dataclass(frozen=True)
class UserFacts:
    """What users.info says about a person that matters for authority."""

    user_id: str
    team_id: str | None
    guest: bool  # is_restricted or is_ultra_restricted
    external: bool  # Slack Connect: another organisation's user
    deleted: bool = False


def identity_refusal(facts: UserFacts, doing: str) -> str | None:
    """Why this person may not ``doing`` (e.g. 'request', 'approve'), whatever the principal lists say."""
    if facts.deleted:
        return f"deactivated accounts may not {doing}"
    if facts.guest:
        return f"guest accounts may not {doing} (only full members of this workspace)"
    if facts.external:
        return f"people from another organisation or workspace may not {doing} (only members of this workspace)"
    return None


class ApproversLookup(Protocol):
    """Who is who in Slack (answers at most 5 minutes old; raises DirectoryUnavailable otherwise)."""

    def allowed(self, user_id: str, principals: list[str]) -> bool: ...

    def resolve(self, principals: list[str]) -> Principals: ...

    def user_facts(self, user_id: str) -> UserFacts: ...

    def cached_user_facts(self, user_id: str) -> UserFacts | None:
        """Never calls Slack: safe inside a transaction."""
        ...


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
    # an audit entry for something that happened (a signal sent): retried, never lost, never raises
    audit_durably: Callable[[Request, str, str | None, str | None], None] | None = None
    # a state write recording something that happened: retried, kept until it lands (never raises)
    record: Callable[[str, Callable[[], object], str | None], bool] | None = None
    # what the statement that signals re-checks in an environment (the access policy's ``guard``:
    # protect, and the state store's own connections); without it, built from the config and the store
    guard: Callable[[str], SignalGuard] | None = None

    def guard_for(self, env: str) -> SignalGuard:
        if self.guard is not None:
            return self.guard(env)
        return guard_for(self.config, env, self.store.own_connection())

    def durably(self, what: str, write: Callable[[], object], request_id: str | None = None) -> bool:
        if self.record is not None:
            return self.record(what, write, request_id)
        write()
        return True
