"""Who is in a Slack user group (usergroups.users.list is Tier 2: cached) and display names."""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)


class Directory:
    def __init__(self, client: WebClient, ttl: float = 300.0):
        self.client = client
        self.ttl = ttl
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
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
            log.warning("could not read user group %s: %s", group_id, exc.response.get("error"))
            if hit:  # a stale answer beats none
                return hit[1]
            return frozenset()
        with self._lock:
            self._groups[group_id] = (now, members)
        return members

    def allowed(self, user_id: str, principals: list[str]) -> bool:
        """True if ``user_id`` is listed, is in a listed user group, or the list has "*"."""
        if "*" in principals or user_id in principals:
            return True
        return any(p.startswith("S") and user_id in self.group_members(p) for p in principals)
