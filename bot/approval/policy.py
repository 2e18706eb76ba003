"""Who may see, be offered, request and approve what, per environment: the one access policy.

Every Slack handler and the workflow ask here; the refusal texts are written once. Each method
returns None when allowed, else the reason (shown to the person, so it names the config key to change).
Decisions on a request use an :class:`Authority` read from Slack before the request's transaction
(:meth:`Policy.authority`); the checks on it are pure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bot import session_rules, visibility
from bot.approval.models import Request, RequestState, SessionTarget, with_queries_redacted
from bot.approval.ports import ApproversLookup, DirectoryUnavailable, Principals, identity_refusal
from bot.config import Access, Config, Protect
from bot.session_rules import Markable, OwnConnection, S, SessionFacts, SignalGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Authority:
    """What Slack said, read before a decision's transaction: who the approvers and requesters are now,
    and why a person involved may not take part (guest, another organisation), by user id."""

    approvers: Principals
    requesters: Principals
    user_refusal: str | None
    refusals: dict[str, str | None]


def signalling_off_reason(env: str) -> str:
    return f"signalling is turned off for `{env}` (access.allow_kill: false)"


class Policy:
    def __init__(self, config: Config, approvers: ApproversLookup,
                 own_state: Callable[[], tuple[str, str, str] | None] | None = None):
        self.config = config
        self.approvers = approvers
        # (role, database, application_name) of the bot's own state-store connections (never signalled)
        self._own_state = own_state
        self._own: OwnConnection | None = None

    def own(self) -> OwnConnection | None:
        """How the bot's own state-store connections look (None: SQLite, or not known yet). Read once: a
        store that answered None (SQLite) is not asked again."""
        if self._own_state is not None:
            try:
                found = self._own_state()
            except Exception as exc:  # the store is down: known at the next call
                log.warning("could not read how the state store's connections look: %s", type(exc).__name__)
                return None
            self._own_state = None
            if found is not None:
                self._own = OwnConnection(*found)
        return self._own

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
        rule, ``access.viewers``, and a full member of this workspace: :meth:`identity_view_refusal`)."""
        return (self.may_see(env, channel) and self.viewer_refusal(env, user) is None
                and self.identity_view_refusal(user, "requests or the audit") is None)

    def identity_view_refusal(self, user: str | None, what: str) -> str | None:
        """Why ``user`` may not see ``what`` (query texts, Details, requests, the audit), or None.

        Viewing is gated like acting: guests and people from another organisation (or whose user record
        names no team) never see them, whatever ``access.viewers`` says (its default ``["*"]`` means every
        full member). Reads users.info (cached): call it outside a state transaction. Fails closed."""
        if not user:
            return f"only full members of this workspace may see {what}"
        try:
            return identity_refusal(self.approvers.user_facts(user), f"see {what}")
        except DirectoryUnavailable as exc:
            return str(exc)

    def shown(self, req: Request) -> Request:
        """``req`` as it may be shown: with ``redact_queries`` on for its environment, its query texts
        redacted now (also those stored before ``redact_queries`` was turned on)."""
        environment = self.config.env(req.env)
        return with_queries_redacted(req) if environment is not None and environment.redact_queries else req

    # --- which sessions: ignore and protect (the matching is bot.session_rules) -----------------------

    def ignored(self, env: str, s: SessionFacts) -> bool:
        """Whether ``env``'s ``ignore`` rules hide ``s`` from listings and alerts."""
        environment = self.config.env(env)
        return environment is not None and session_rules.ignored(environment.ignore, s)

    def without_ignored(self, env: str, sessions: Iterable[S]) -> tuple[list[S], int]:
        """(``sessions`` that ``env``'s ``ignore`` rules do not hide, how many they hide)."""
        environment = self.config.env(env)
        return session_rules.split_ignored(environment.ignore if environment is not None else [], sessions)

    def protection(self, env: str) -> Protect:
        """``env``'s ``protect`` rules (the top-level ones, overridden key by key by the environment's)."""
        return self.config.protect_for(env)

    def protected(self, env: str, s: SessionFacts) -> str | None:
        """Why no path may signal ``s`` (``protect``, or the bot's own state-store connection), or None."""
        return session_rules.protected(self.protection(env), s, self.own())

    def protected_target(self, env: str, target: SessionTarget) -> str | None:
        """Why a button's session may not be asked for any more (``protect`` names its role, application or
        database now), or None. Whether its role is a superuser is known to the signalling statement,
        which checks it again at execution (as it checks every rule)."""
        why = session_rules.protection(self.protection(env), user=target.user, application=target.application,
                                       database=target.database, is_superuser=False, own=self.own())
        return f"pid {target.pid} is {why}: it is never signalled" if why else None

    def mark(self, env: str, sessions: Iterable[S]) -> list[S]:
        """``sessions`` as they may be offered: ``cannot_signal`` says why for every one ``protect`` covers
        (a reason the bot's role gives is kept). Every path marks what it read before it draws buttons."""
        return session_rules.mark(self.protection(env), sessions, self.own())

    def guard(self, env: str) -> SignalGuard:
        """What the statement that signals re-checks (``protect`` and the state store's connections)."""
        return SignalGuard(self.protection(env), self.own())

    def session_refusal(self, env: str, s: Markable) -> str | None:
        """Why no Cancel / Terminate is offered for ``s`` in ``env``, or None: signalling off, ``protect``,
        or what the bot's role cannot do."""
        return self.signalling_off(env) or s.cannot_signal or self.protected(env, s)

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

    # --- deciding, on what Slack said (issue 12 §2) -------------------------------------------------

    def authority(self, req: Request, user: str, recorded: list[str]) -> Authority:
        """Ask Slack everything a decision on ``req`` by ``user`` needs (answers at most 5 minutes old);
        raises DirectoryUnavailable. Called before the request's transaction, which only reads it."""
        access = self.config.environments[req.env].access
        people = {user, req.requester, *recorded}
        facts = {p: self.approvers.user_facts(p) for p in people}
        return Authority(
            approvers=self.approvers.resolve(access.approvers),
            requesters=self.approvers.resolve(access.requesters),
            user_refusal=identity_refusal(facts[user], "approve or deny requests"),
            refusals={p: identity_refusal(f, "request or approve") for p, f in facts.items()},
        )

    def request_refusal(self, req: Request, authority: Authority) -> str | None:
        """Why ``req`` may no longer go ahead under the current config (pure: no Slack call)."""
        env = req.env
        access = self._access(env)
        if access is None:
            return f"environment `{env}` is no longer configured"
        if not access.allow_kill:
            return signalling_off_reason(env)
        origin = getattr(req.target, "requested_in", None) or req.channel
        if access.channels and origin not in access.channels:
            return f"`{env}` may no longer be used from <#{origin}> (access.channels)"
        requester = req.requester
        if not authority.requesters.allows(requester):
            return f"<@{requester}> is no longer allowed to request kills in `{env}` (access.requesters)"
        if authority.refusals.get(requester):
            return f"the requester may not ask for this: {authority.refusals[requester]}"
        return None

    def counts(self, approver: str, req: Request, self_approval: bool, authority: Authority) -> bool:
        """Whether ``approver``'s recorded approval counts now (an approver now, a full member, not the
        requester unless self-approval)."""
        if approver == req.requester and not self_approval:
            return False
        if not authority.approvers.allows(approver):
            return False
        if approver in authority.refusals:
            return authority.refusals[approver] is None
        facts = self.approvers.cached_user_facts(approver)  # an approval recorded meanwhile: cache only
        return facts is not None and identity_refusal(facts, "approve") is None

    def counted_approvals(
        self, req: Request, recorded: list[str], known: list[str] | None = None
    ) -> tuple[list[str], list[str]]:
        """(approvals that count now, approvals that no longer do), for drawing a pending request;
        ``known``: the people whose identity Slack is asked about besides the requester (by default the
        recorded approvers themselves).

        Outside any transaction (it may ask Slack); when Slack cannot be asked, every recorded approval
        is shown as recorded (the decision itself never counts on stale data)."""
        access = self._access(req.env)
        if req.state != RequestState.PENDING or access is None or not recorded:
            return recorded, []
        try:
            authority = self.authority(req, req.requester, recorded if known is None else known)
        except DirectoryUnavailable:
            return recorded, []
        counted = [a for a in recorded if self.counts(a, req, access.self_approval, authority)]
        return counted, [a for a in recorded if a not in counted]

    def refusal_before_acting(self, req: Request) -> str | None:
        """The last check, just before the signal (Slack may be asked)."""
        access = self._access(req.env)
        if access is None:
            return f"environment `{req.env}` is no longer configured"
        try:
            authority = Authority(
                approvers=Principals(tuple(access.approvers), {}),
                requesters=self.approvers.resolve(access.requesters),
                user_refusal=None,
                refusals={req.requester: identity_refusal(self.approvers.user_facts(req.requester), "request")},
            )
        except DirectoryUnavailable as exc:
            return str(exc)
        return self.request_refusal(req, authority)
