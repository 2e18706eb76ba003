"""Who may *see* an environment (listings through mentions, the Home tab).

One small function so that it can be switched to ``access.viewers`` (issue 12) in one place: when the
environment's access has a non-empty ``viewers`` list, that list decides; otherwise the people who
may request or approve there may see it (``requesters: ["*"]``, the default, lets everyone see).
"""

from __future__ import annotations

from bot.config import Config


def may_view(config: Config, directory, user: str | None, env: str) -> bool:
    environment = config.env(env)
    if environment is None or not user:
        return False
    access = environment.access
    viewers = getattr(access, "viewers", None)
    if viewers:
        return directory.allowed(user, list(viewers))
    return directory.allowed(user, access.requesters) or directory.allowed(user, access.approvers)


def view_refusal(config: Config, directory, user: str | None, env: str | None) -> str | None:
    """Why ``user`` may not see ``env``, or None."""
    if env is None or may_view(config, directory, user, env):
        return None
    return f"you may not see `{env}` (only its requesters and approvers may: environments.{env}.access)"
