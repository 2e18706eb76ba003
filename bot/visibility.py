"""Who may *see* an environment: ``access.viewers`` (principals, default ``["*"]``).

The one rule, used by listings, ``lag``, ``pending``, ``audit``, Details, mentions and the Home tab
(``bot.slack.guards.viewer_refusal`` is the same function for handlers that hold a runtime). When
Slack cannot be asked about a user group and the cached answer is too old, the answer is "no", with
the reason.
"""

from __future__ import annotations

from bot.approval.ports import ApproversLookup, DirectoryUnavailable
from bot.config import Config


def viewer_refusal(config: Config, directory: ApproversLookup, env: str | None, user: str | None) -> str | None:
    """Why ``user`` may not see ``env``'s sessions (access.viewers), or None."""
    if env is None:
        return None
    environment = config.env(env)
    if environment is None:
        return f"environment `{env}` is not configured"
    if not user:
        return f"you are not allowed to see sessions of `{env}` (access.viewers)"
    try:
        if directory.allowed(user, environment.access.viewers):
            return None
    except DirectoryUnavailable as exc:
        return str(exc)
    return f"you are not allowed to see sessions of `{env}` (access.viewers)"


def may_view(config: Config, directory: ApproversLookup, user: str | None, env: str) -> bool:
    return viewer_refusal(config, directory, env, user) is None


def view_refusal(config: Config, directory: ApproversLookup, user: str | None, env: str | None) -> str | None:
    """Why ``user`` may not see ``env``, or None (argument order of the event handlers)."""
    return viewer_refusal(config, directory, env, user)
