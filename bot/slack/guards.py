"""Who may talk to the bot at all (workspace binding) and who may see sessions (``access.viewers``).

- :func:`install_workspace_guard`: a Bolt middleware that refuses, before any listener runs, every
  request from a workspace other than ``slack.team_id`` (when configured), and every request to act or
  approve from a user of another organisation (Slack Connect: the payload's user belongs to another team
  than the payload's workspace). Guests and users.info-level checks live in the workflow
  (:func:`bot.slack.directory.identity_refusal`).
- :func:`viewer_refusal` / :func:`may_view`: ``access.viewers`` gates listings, lag, pending, audit and
  every read-only view (decided by :class:`bot.approval.policy.Policy`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltResponse
from slack_sdk.webhook import WebhookClient

from bot.approval import ids
from bot.slack.context import Context

log = logging.getLogger(__name__)

# action ids that ask to act or decide (the rest of the bot's buttons only show things)
ACTING_PREFIXES = ids.ACTING_PREFIXES


def payload_teams(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the workspace the request came from, the team of the user who sent it), as far as known."""
    team = (body.get("team") or {}).get("id") if isinstance(body.get("team"), dict) else None
    team = team or body.get("team_id")
    user = body.get("user") if isinstance(body.get("user"), dict) else {}
    return team, (user or {}).get("team_id")


def _is_acting(body: dict[str, Any]) -> bool:
    kind = body.get("type")
    if kind == "view_submission":
        return True
    if kind == "block_actions":
        return any(str(a.get("action_id", "")).startswith(ACTING_PREFIXES) for a in body.get("actions") or [])
    return False


def workspace_refusal(configured_team: str | None, body: dict[str, Any]) -> str | None:
    """Why this request may not be served (another workspace / organisation), or None."""
    team, user_team = payload_teams(body)
    if configured_team:
        for t in (team, user_team):
            if t and t != configured_team:
                return "this bot serves one Slack workspace only; requests from another workspace are refused"
        if team is None and body.get("type") in ("block_actions", "view_submission", "view_closed"):
            return "this request does not say which workspace it comes from; it is refused"
    if _is_acting(body) and team and user_team and team != user_team:
        return "people from another organisation or workspace may not request or approve (only members of this workspace)"
    return None


def _answer_elsewhere(body: dict[str, Any], text: str) -> None:
    """Tell the person through the interaction's response_url (best effort, off the ack path)."""
    url = body.get("response_url")
    if not url:
        return

    def post() -> None:
        try:
            WebhookClient(url, timeout=5).send(text=text, response_type="ephemeral", replace_original=False,
                                               unfurl_links=False, unfurl_media=False)
        except Exception as exc:  # the refusal stands; only the notice is lost
            log.warning("could not tell the user about a refused request: %s", type(exc).__name__)

    threading.Thread(target=post, name="pgs-refusal", daemon=True).start()


def refusal_response(body: dict[str, Any], text: str) -> BoltResponse:
    """The HTTP answer for a refused request, in the form Slack shows for its kind."""
    kind = body.get("type")
    if kind == "view_submission":
        payload = {"response_action": "errors", "errors": {"reason": f"Not possible: {text}."}}
        return BoltResponse(status=200, body=json.dumps(payload), headers={"content-type": "application/json"})
    if kind in ("block_actions", "view_closed", "block_suggestion"):
        _answer_elsewhere(body, f":no_entry_sign: Not possible: {text}.")
        return BoltResponse(status=200, body="")
    # a slash command: the body is shown to the user, only to them
    payload = {"response_type": "ephemeral", "text": f":no_entry_sign: Not possible: {text}."}
    return BoltResponse(status=200, body=json.dumps(payload), headers={"content-type": "application/json"})


def install_workspace_guard(app: App, rt: Context) -> None:
    def workspace_guard(body: dict[str, Any], next: Callable[[], BoltResponse]) -> BoltResponse:  # Bolt passes it by this name
        refusal = workspace_refusal(rt.config.slack.team_id, body or {})
        if refusal is None:
            return next()
        team, user_team = payload_teams(body or {})
        log.warning("refused a Slack request from team %s (user team %s): %s", team, user_team, refusal)
        return refusal_response(body or {}, refusal)

    app.middleware(workspace_guard)


def viewer_refusal(rt: Context, env: str | None, user: str) -> str | None:
    """Why ``user`` may not see ``env``'s sessions (access.viewers), or None (the access policy decides)."""
    return rt.policy.viewer_refusal(env, user)


def viewers_decidable_offline(rt: Context, env: str | None) -> bool:
    """True when ``access.viewers`` of ``env`` names no user group (no Slack call needed to decide)."""
    return bool(rt.policy.viewers_decidable_offline(env))


def may_view(rt: Context, env: str, user: str) -> bool:
    return rt.policy.viewer_refusal(env, user) is None
