"""Which sessions an environment's ``ignore:`` and ``protect:`` rules name: the one matching of both.

Pure (no database, no Slack): every path that lists, alerts on or signals sessions asks here through
the access policy (:class:`bot.approval.policy.Policy`), and the statements that signal re-check the
same rules with the bound parameters of :meth:`SignalGuard.params`.

* ``ignore`` (per environment, a list of items; every key an item gives must match, ``query`` is a
  regular expression searched in the query text): such sessions are never listed as needing attention
  nor alerted on.
* ``protect`` (top level and per environment: ``roles``, ``applications``, ``databases``, exact names,
  and ``superusers``, true by default): such sessions are never offered a signal nor signalled. The
  bot's own state-store connections (:class:`OwnConnection`) are always protected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Protocol, TypeVar

from bot.config import Config, IgnoreRule, Protect


class SessionFacts(Protocol):
    """What the rules look at (every session type of the bot has these)."""

    @property
    def user(self) -> str | None: ...
    @property
    def application(self) -> str: ...
    @property
    def database(self) -> str | None: ...
    @property
    def is_superuser(self) -> bool: ...
    @property
    def query(self) -> str: ...


class Markable(SessionFacts, Protocol):
    @property
    def cannot_signal(self) -> str | None: ...


S = TypeVar("S", bound=Markable)


# --- ignore ---------------------------------------------------------------------------------------


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def rule_matches(rule: IgnoreRule, *, app: str | None, user: str | None, db: str | None, query: str | None) -> bool:
    """Every key the rule gives must match (``query`` is searched, as a regular expression)."""
    if rule.app is not None and (app or "") != rule.app:
        return False
    if rule.user is not None and (user or "") != rule.user:
        return False
    if rule.db is not None and (db or "") != rule.db:
        return False
    if rule.query is not None and not _compiled(rule.query).search(query or ""):
        return False
    return True


def is_ignored(rules: Sequence[IgnoreRule], *, app: str | None, user: str | None, db: str | None,
               query: str | None) -> bool:
    return any(rule_matches(r, app=app, user=user, db=db, query=query) for r in rules)


def ignored(rules: Sequence[IgnoreRule], s: SessionFacts) -> bool:
    """Whether ``s`` matches one of ``rules``."""
    return bool(rules) and is_ignored(rules, app=s.application, user=s.user, db=s.database, query=s.query)


def split_ignored(rules: Sequence[IgnoreRule], sessions: Iterable[S]) -> tuple[list[S], int]:
    """(the sessions no rule matches, how many did match)."""
    kept: list[S] = []
    hidden = 0
    for s in sessions:
        if ignored(rules, s):
            hidden += 1
        else:
            kept.append(s)
    return kept, hidden


# --- protect --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnConnection:
    """How the bot's own state-store connections look in ``pg_stat_activity`` (a PostgreSQL state store):
    its role, database and application_name. They are never signalled, whatever server they are on."""

    user: str
    database: str
    application: str

    def matches(self, *, user: str | None, database: str | None, application: str | None) -> bool:
        return (user, database, application or "") == (self.user, self.database, self.application)


OWN_STATE_REASON = "protected: the bot's own state-store connection"


def protection(protect: Protect, *, user: str | None, application: str | None, database: str | None,
               is_superuser: bool, own: OwnConnection | None = None) -> str | None:
    """Why ``protect`` (or being the bot's own state-store connection) forbids signalling a session, or
    None. Plain text: escaped where it is drawn."""
    if own is not None and own.matches(user=user, database=database, application=application):
        return OWN_STATE_REASON
    if protect.superusers and is_superuser:
        return "protected: superuser session (protect.superusers)"
    if user is not None and user in protect.roles:
        return f"protected: role {user} (protect.roles)"
    if application and application in protect.applications:
        return f"protected: application {application} (protect.applications)"
    if database is not None and database in protect.databases:
        return f"protected: database {database} (protect.databases)"
    return None


def protected(protect: Protect, s: SessionFacts, own: OwnConnection | None = None) -> str | None:
    return protection(protect, user=s.user, application=s.application, database=s.database,
                      is_superuser=s.is_superuser, own=own)


def mark(protect: Protect, sessions: Iterable[S], own: OwnConnection | None = None) -> list[S]:
    """``sessions`` with ``cannot_signal`` saying why, for those the rules protect. A reason the bot's
    role gives already (PostgreSQL would refuse) is kept: it is true whatever the rules say."""
    out: list[S] = []
    for s in sessions:
        why = None if s.cannot_signal else protected(protect, s, own)
        out.append(replace(s, cannot_signal=why) if why else s)  # type: ignore[type-var]
    return out


@dataclass(frozen=True)
class SignalGuard:
    """The protection a statement that signals re-checks itself (``signal_*.sql``, ``bulk_terminate.sql``):
    a session that became protected after it was shown is not signalled."""

    protect: Protect
    own: OwnConnection | None = None

    def params(self) -> dict[str, Any]:
        own = self.own
        return {
            "protect_superusers": self.protect.superusers,
            "protect_roles": list(self.protect.roles),
            "protect_apps": list(self.protect.applications),
            "protect_dbs": list(self.protect.databases),
            "own_user": own.user if own else None,
            "own_db": own.database if own else None,
            "own_app": own.application if own else None,
        }


def guard_for(config: Config, env: str, own: tuple[str, str, str] | None = None) -> SignalGuard:
    """The guard of ``env`` (``own``: the state store's (role, database, application_name))."""
    return SignalGuard(config.protect_for(env), OwnConnection(*own) if own is not None else None)
