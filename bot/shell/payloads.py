"""Slack's requests to the bot, built and signed the way Slack builds them, handed to the real Bolt app.

A slash command is form-encoded; an interaction is a form field ``payload`` holding JSON
(``block_actions``, ``view_submission``, ``view_closed``). Each is signed with the signing secret
(``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``), so Bolt's request verification runs as it does
for Slack, and dispatched with ``App.dispatch``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from slack_bolt import App, BoltRequest, BoltResponse

from bot.shell.webapi import APP_ID, TEAM_ID

TEAM_DOMAIN = "terminal"
VERIFICATION_TOKEN = "pgsessions-shell"


def sign(secret: str, timestamp: str, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def _action_ts() -> str:
    return f"{time.time():.6f}"


class Driver:
    """Sends a person's slash commands, clicks and form submissions to the Bolt app."""

    def __init__(self, app: App, signing_secret: str, names: dict[str, str] | None = None):
        self.app = app
        self.signing_secret = signing_secret
        self.names = names or {}  # user id -> user name (Slack sends both)

    def dispatch(self, body: str) -> BoltResponse:
        ts = str(int(time.time()))
        headers: dict[str, str | Sequence[str]] = {
            "content-type": ["application/x-www-form-urlencoded"],
            "x-slack-request-timestamp": [ts],
            "x-slack-signature": [sign(self.signing_secret, ts, body)],
            "user-agent": ["Slackbot 1.0 (+https://api.slack.com/robots)"],
        }
        return self.app.dispatch(BoltRequest(body=body, headers=headers))

    def _user(self, user_id: str) -> dict[str, str]:
        name = self.names.get(user_id, user_id.lower())
        return {"id": user_id, "username": name, "name": name, "team_id": TEAM_ID}

    @staticmethod
    def _team() -> dict[str, str]:
        return {"id": TEAM_ID, "domain": TEAM_DOMAIN}

    def _payload(self, payload: dict[str, Any]) -> BoltResponse:
        return self.dispatch(urlencode({"payload": json.dumps(payload, separators=(",", ":"))}))

    # --- the three things a person does -------------------------------------------------------------

    def slash(
        self, command: str, text: str, user: str, channel: str, channel_name: str, response_url: str, trigger_id: str
    ) -> BoltResponse:
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": self.names.get(user, user.lower()),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
        return self.dispatch(urlencode(fields))

    def block_action(
        self,
        user: str,
        element: dict[str, Any],
        block_id: str | None,
        trigger_id: str,
        *,
        channel: str | None = None,
        channel_name: str | None = None,
        message: dict[str, Any] | None = None,
        ephemeral: bool = False,
        response_url: str | None = None,
        view: dict[str, Any] | None = None,
        selection: dict[str, Any] | None = None,
    ) -> BoltResponse:
        """A click on ``element`` in a message (``message`` / ``channel``) or in a form (``view``).

        ``selection``: what a select, overflow, checkboxes... sends besides the element itself
        (``selected_option``, ``selected_options``, ``selected_date``, ...)."""
        action: dict[str, Any] = {
            "action_id": element.get("action_id"),
            "block_id": block_id or "",
            "type": element.get("type", "button"),
            "action_ts": _action_ts(),
        }
        if element.get("type") == "button":
            action["text"] = element.get("text") or {"type": "plain_text", "text": "", "emoji": True}
            if "value" in element:
                action["value"] = element["value"]
            if element.get("style"):
                action["style"] = element["style"]
        action.update(selection or {})
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "trigger_id": trigger_id,
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "state": {"values": {}},
            "actions": [action],
        }
        if view is not None:
            payload["container"] = {"type": "view", "view_id": view.get("id")}
            payload["view"] = view
        else:
            ts = (message or {}).get("ts") or _action_ts()
            payload["container"] = {
                "type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": ephemeral,
            }
            payload["channel"] = {"id": channel, "name": channel_name or str(channel).lower()}
            if message is not None and not ephemeral:
                payload["message"] = message
            payload["response_url"] = response_url
        return self._payload(payload)

    def view_submission(self, user: str, view: dict[str, Any], trigger_id: str) -> BoltResponse:
        payload = {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "trigger_id": trigger_id,
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return self._payload(payload)

    def view_closed(self, user: str, view: dict[str, Any]) -> BoltResponse:
        payload = {
            "type": "view_closed",
            "team": self._team(),
            "user": self._user(user),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "view": view,
            "is_cleared": False,
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return self._payload(payload)


def response_json(resp: BoltResponse) -> dict[str, Any] | None:
    """The ack body as JSON (None when empty or not JSON)."""
    body = resp.body
    if not body:
        return None
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return {"text": str(body)}
    return data if isinstance(data, dict) else None
