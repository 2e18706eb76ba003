"""Who is in a Slack user group (usergroups.users.list is Tier 2: cached) and who a user is (users.info).

Answers are cached for at most :data:`MAX_AGE` (5 minutes). When Slack cannot be asked and the cached
answer is older, :class:`DirectoryUnavailable` is raised: an authorization never rests on stale data.

Authorization decisions that run inside a state-store transaction never call Slack: they take a
:class:`Principals` resolved BEFORE the transaction (:meth:`Directory.resolve`), whose checks are pure.
"""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

# the vocabulary of the approvers-lookup port, defined with the port; importable from here as before
from bot.approval.ports import (  # noqa: F401
    DirectoryUnavailable,
    Principals,
    UserFacts,
    identity_refusal,
)

log = logging.getLogger(__name__)

MAX_AGE = 300.0  # seconds: never authorize on a user-group or user answer older than this


# Slack's answers that say a user group does not exist (a definite answer: no members), as opposed to
# errors that mean Slack could not be asked (rate limits, outages, a token without the scope).
GROUP_ABSENT = frozenset({"no_such_subteam", "subteam_not_found"})


class Directory:
    def __init__(self, client: WebClient, ttl: float = MAX_AGE, team_id: str | None = None):
        self.client = client
        self.ttl = min(ttl, MAX_AGE)
        self.team_id = team_id  # config slack.team_id: users of another workspace are external
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._users: dict[str, tuple[float, UserFacts]] = {}
        self._home: str | None = None
        self._lock = threading.Lock()

    def group_members(self, group_id: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._groups.get(group_id)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        try:
            resp = self.client.usergroups_users_list(usergroup=group_id)
            members = frozenset(resp.get("users") or [])
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("could not read user group %s: %s", group_id, error)
            if error in GROUP_ABSENT:  # a definite answer: nobody is in a group that does not exist
                with self._lock:
                    self._groups[group_id] = (now, frozenset())
                return frozenset()
            raise DirectoryUnavailable(
                f"Slack did not say who is in user group {group_id} ({error}), and the bot does not decide "
                "on membership older than 5 minutes; try again in a moment"
            ) from None
        except Exception as exc:  # Slack unreachable after retries
            log.warning("could not read user group %s: %s", group_id, type(exc).__name__)
            raise DirectoryUnavailable(
                f"Slack could not be asked who is in user group {group_id}, and the bot does not decide on "
                "membership older than 5 minutes; try again in a moment"
            ) from None
        with self._lock:
            self._groups[group_id] = (now, members)
        return members

    def resolve(self, principals: list[str]) -> Principals:
        """Read every user group of ``principals`` now (cached ≤ 5 min); raises DirectoryUnavailable."""
        groups = {p: self.group_members(p) for p in principals if p.startswith("S")}
        return Principals(tuple(principals), groups)

    def allowed(self, user_id: str, principals: list[str]) -> bool:
        """True if ``user_id`` is listed, is in a listed user group, or the list has "*"."""
        if "*" in principals or user_id in principals:
            return True
        return any(p.startswith("S") and user_id in self.group_members(p) for p in principals)

    # --- who a user is ------------------------------------------------------------------------------

    def user_facts(self, user_id: str) -> UserFacts:
        """users.info (cached ≤ 5 min): guest, another organisation's user; raises DirectoryUnavailable."""
        now = time.monotonic()
        with self._lock:
            hit = self._users.get(user_id)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        try:
            user = self.client.users_info(user=user_id).get("user") or {}
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("could not read user %s: %s", user_id, error)
            raise DirectoryUnavailable(
                f"Slack did not say who <@{user_id}> is ({error}); the bot needs that to know you are a full "
                "member of this workspace; try again in a moment"
            ) from None
        except Exception as exc:
            log.warning("could not read user %s: %s", user_id, type(exc).__name__)
            raise DirectoryUnavailable(
                f"Slack could not be asked who <@{user_id}> is; the bot needs that to know you are a full "
                "member of this workspace; try again in a moment"
            ) from None
        team = user.get("team_id")
        home = self.home_team()
        # a record without a team is nobody's member here: external, never internal
        external = bool(user.get("is_stranger")) or not team or bool(home and team != home)
        facts = UserFacts(
            user_id=user_id,
            team_id=team,
            guest=bool(user.get("is_restricted") or user.get("is_ultra_restricted")),
            external=external,
            deleted=bool(user.get("deleted")),
        )
        with self._lock:
            self._users[user_id] = (now, facts)
        return facts

    def home_team(self) -> str | None:
        """This workspace: config ``slack.team_id``, else what auth.test says (asked once)."""
        if self.team_id:
            return self.team_id
        if self._home is None:
            try:
                self._home = str(self.client.auth_test().get("team_id") or "")
            except Exception as exc:
                log.warning("auth.test failed: %s", type(exc).__name__)
                raise DirectoryUnavailable(
                    "Slack could not be asked which workspace this is; try again in a moment"
                ) from None
        return self._home or None

    def cached_user_facts(self, user_id: str) -> UserFacts | None:
        """The cached answer if young enough, else None (never calls Slack: safe inside a transaction)."""
        now = time.monotonic()
        with self._lock:
            hit = self._users.get(user_id)
        return hit[1] if hit and now - hit[0] < self.ttl else None
