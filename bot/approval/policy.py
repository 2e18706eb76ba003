"""Who may see, be offered, request and approve what, per environment: the one access policy.

Every Slack handler and the workflow ask here; the refusal texts are written once. Each method
returns None when allowed, else the reason (shown to the person, so it names the config key to change).
"""

from __future__ import annotations

from bot import visibility
from bot.approval.ports import ApproversLookup, DirectoryUnavailable, identity_refusal
from bot.config import Access, Config


def signalling_off_reason(env: str) -> str:
    return f"signalling is turned off for `{env}` (access.allow_kill: false)"


class Policy:
    def __init__(self, config: Config, approvers: ApproversLookup):
        self.config = config
        self.approvers = approvers

    def _access(self, env: str) -> Access | None:
        environment = self.config.env(env)
        return environment.access if environment is not None else None

    # --- seeing -------------------------------------------------------------------------------------

    def channel_refusal(self, env: str, channel: str | None) -> str | None:
        """Why ``env`` cannot be used from ``channel`` (``access.channels``), or None."""
        access = self._access(env)
        if access is not None and access.channels and channel not in access.channels:
            return f"`{env}` can only be used in " + ", ".join(f"<#{c}>" for c in access.channels)
        return None

    def may_see(self, env: str | None, channel: str | None) -> bool:
        """Whether requests and audit entries of ``env`` may be shown in ``channel``."""
        if env is None:
            return True
        return self._access(env) is not None and self.channel_refusal(env, channel) is None

    def viewer_refusal(self, env: str | None, user: str) -> str | None:
        """Why ``user`` may not see ``env``'s sessions (``access.viewers``), or None. Fails closed when
        Slack cannot say who is in a viewers user group (the rule is :mod:`bot.visibility`)."""
        return visibility.viewer_refusal(self.config, self.approvers, env, user)

    def viewers_decidable_offline(self, env: str | None) -> bool:
        """True when ``access.viewers`` of ``env`` names no user group (no Slack call needed to decide)."""
        access = self._access(env) if env is not None else None
        return access is None or not any(p.startswith("S") for p in access.viewers)

    def may_view(self, env: str | None, user: str, channel: str | None) -> bool:
        """Whether ``user`` may see requests and audit entries of ``env`` in ``channel`` (the channel
        rule and ``access.viewers``)."""
        return self.may_see(env, channel) and self.viewer_refusal(env, user) is None

    # --- offering buttons ---------------------------------------------------------------------------

    def signalling_off(self, env: str) -> str | None:
        """Why no button that signals may be drawn for ``env`` (``access.allow_kill``), or None."""
        access = self._access(env)
        return signalling_off_reason(env) if access is not None and not access.allow_kill else None

    def too_many(self, env: str, sessions: int) -> str | None:
        """Why a bulk action over ``sessions`` sessions is not offered (``access.max_bulk``), or None."""
        access = self._access(env)
        if access is not None and sessions > access.max_bulk:
            return f"{sessions} sessions are more than `access.max_bulk` ({access.max_bulk}) allows in one request"
        return None

    def may_be_offered(self, env: str, sessions: int | None = None) -> str | None:
        """Why an action button (over ``sessions`` sessions, for bulk ones) is not drawn, or None."""
        return self.signalling_off(env) or (self.too_many(env, sessions) if sessions is not None else None)

    # --- requesting ---------------------------------------------------------------------------------

    def may_request(self, env: str, user: str, channel: str | None) -> str | None:
        """Why ``user`` may not ask to signal in ``env`` from ``channel``, or None."""
        access = self._access(env)
        if access is None:
            return f"environment `{env}` is no longer configured"
        off = self.signalling_off(env)
        if off:
            return off
        refusal = self.channel_refusal(env, channel)
        if refusal:
            return refusal
        try:
            if not self.approvers.allowed(user, access.requesters):
                return f"you are not allowed to request kills in `{env}` (access.requesters)"
            who = identity_refusal(self.approvers.user_facts(user), "request")
        except DirectoryUnavailable as exc:
            return str(exc)
        if who:
            return who
        if not access.approvers:
            return f"no approvers are configured for `{env}`: set environments.{env}.access.approvers"
        return None

    def request_too_big(self, env: str, sessions: int) -> str | None:
        """The same ``access.max_bulk`` limit, checked again when the request is submitted."""
        access = self._access(env)
        if access is not None and sessions > access.max_bulk:
            return (
                f"this request covers {sessions} sessions, more than access.max_bulk ({access.max_bulk}); "
                "narrow it down"
            )
        return None

    # --- approving ----------------------------------------------------------------------------------

    def may_approve(self, env: str, user: str) -> str | None:
        """Why ``user`` may not approve or deny requests of ``env`` (``access.approvers``), or None.

        This may ask Slack (user groups): call it before opening a state transaction."""
        access = self._access(env)
        if access is None:
            return f"environment `{env}` is no longer configured; nothing was changed"
        try:
            if not self.approvers.allowed(user, access.approvers):
                return f"you are not an approver for `{env}` (access.approvers)"
        except DirectoryUnavailable as exc:
            return str(exc)
        return None
