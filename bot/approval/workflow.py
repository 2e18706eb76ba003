"""The approval state machine for every kind of action request.

States (:class:`~bot.approval.models.RequestState`)::

    pending ──approve (enough distinct approvals)──▶ executing ──▶ done | failed
       │ ├──deny──▶ denied
       │ ├──withdraw (requester)──▶ withdrawn
       │ └──ttl passed──▶ expired
       └── (bot stopped while executing) ──▶ failed (interrupted, never retried)

Authorization runs in one place, :meth:`Workflow.decide`, always in this order: the request exists and
is pending → it has not expired → the approver is not the requester (unless ``self_approval``) → the
approver is allowed (:meth:`bot.approval.policy.Policy.may_approve`, resolved before the transaction)
→ act. Every transition is a conditional UPDATE in a transaction that locks the request row, so twenty
concurrent Approve clicks signal the backend once and record one outcome.

What "act" means for each action is its executor in the table of actions (bot/approval/actions.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from bot.approval.actions import ACTIONS, ActionKind
from bot.approval.audit import audit_request
from bot.approval.models import (
    BulkOutcome,
    NewRequest,
    Outcome,
    OutcomeStatus,
    Request,
    RequestState,
    SessionTarget,
    SignalOutcome,
    StoredTarget,
    Verdict,
)
from bot.approval.policy import Policy
from bot.approval.ports import Execution, RequestEvents
from bot.config import Config
from bot.metrics import KILL_REQUESTS
from bot.postgres.pools import Databases
from bot.state.store import StateStore

log = logging.getLogger(__name__)

PENDING, EXECUTING = RequestState.PENDING, RequestState.EXECUTING


@dataclass(frozen=True)
class Result:
    """What happened to a decision: ``ok`` False means refused, with ``message`` saying why."""

    ok: bool
    message: str
    request: Request | None = None
    changed: bool = False  # the request's message must be redrawn
    execute: bool = False  # approved and now 'executing': call Workflow.execute


def failed_outcome(action: ActionKind | None, status: OutcomeStatus, detail: str) -> Outcome:
    """An outcome of the action's kind that says only ``status`` and ``detail``."""
    if action is not None and action.target_kind == "session":
        return SignalOutcome(status=status, detail=detail)
    return BulkOutcome(status=status, detail=detail)


class Workflow:
    def __init__(
        self,
        config: Config,
        store: StateStore,
        dbs: Databases,
        policy: Policy,
        events: RequestEvents,
        actions: Mapping[str, ActionKind] = ACTIONS,
        interrupted_after: float | None = None,
    ):
        self.config = config
        self.store = store
        self.dbs = dbs
        self.policy = policy
        self.events = events
        self.actions = actions
        # An execution (connect + statement timeouts, a terminate's wait) takes far less than this; a
        # bulk executor refreshes updated_at as it goes. PGSESSIONS_INTERRUPTED_AFTER (seconds) overrides
        # it, for tests that restart a killed bot and must not wait two minutes.
        if interrupted_after is None:
            interrupted_after = float(os.environ.get("PGSESSIONS_INTERRUPTED_AFTER") or 120.0)
        self.interrupted_after = interrupted_after

    @property
    def execution(self) -> Execution:
        return Execution(self.config, self.store, self.dbs, self.events)

    # --- requesting ---------------------------------------------------------------------------------

    def target_for(
        self, token: str, action: str, user: str, channel: str | None
    ) -> tuple[StoredTarget | None, str | None]:
        """Resolve a button token to its stored target; (target, None) or (None, why not)."""
        stored = self.store.get_target(token)
        if stored is None:
            return None, "this button is not known to the bot (it may be from an old or forged message)"
        if stored.channel and channel and stored.channel != channel:
            return None, "this button belongs to a message in another channel"
        target = stored.target
        kind = self.actions.get(action)
        if isinstance(target, SessionTarget):
            if kind is None or kind.target_kind != "session":
                return None, f"`{action}` is not an action for a session"
            if kind.refuses_idle_in_transaction and target.idle_in_transaction:
                return None, (
                    "cancel does nothing to a session idle in transaction (PostgreSQL reports success but "
                    "the transaction stays open): use Terminate"
                )
        elif kind is None or kind.target_kind == "session" or action not in target.actions:
            # bulk and database targets name the actions their token was issued for
            return None, f"`{action}` is not what this button was issued for"
        refusal = self.policy.may_request(stored.env, user, channel)
        if refusal:
            return None, refusal
        return stored, None

    def submit(self, token: str, action: str, user: str, channel: str | None, reason: str | None) -> Result:
        stored, refusal = self.target_for(token, action, user, channel)
        if stored is None:
            return Result(False, refusal or "refused")
        environment = self.config.environments[stored.env]
        reason = (reason or "").strip()
        if environment.access.require_reason and not reason:
            return Result(False, "a reason is required")
        if not isinstance(stored.target, SessionTarget):
            too_big = self.policy.request_too_big(stored.env, len(stored.target.sessions))
            if too_big:
                return Result(False, too_big)
        now = time.time()
        request = self.store.create_request(
            NewRequest(
                env=stored.env,
                host=stored.host,
                action=action,
                target_token=token,
                target=stored.target,
                requester=user,
                reason=reason or None,
                channel=environment.access.approval_channel or channel,
                expires_at=now + environment.access.request_ttl,
            )
        )
        audit_request(self.store, request, "requested", user)
        KILL_REQUESTS.labels(request.env, action, "pending", "requested").inc()
        return Result(True, "requested", request, changed=True)

    # --- deciding -----------------------------------------------------------------------------------

    def decide(self, request_id: str, user: str, verdict: str) -> Result:
        """Approve, deny or withdraw. The checks run here, in one fixed order, for every verdict.

        A Result with ``execute`` is an approved request now 'executing': call :meth:`execute`.
        """
        try:
            v = Verdict(verdict)
        except ValueError:
            return Result(False, f"unknown decision `{verdict}`")
        # who may approve may need Slack (user groups): resolved before the row is locked
        peek = self.store.get_request(request_id)
        not_approver = None
        if peek is not None and v is not Verdict.WITHDRAW:
            not_approver = self.policy.may_approve(peek.env, user)
        with self.store.tx() as c:
            # 1. the request exists and is pending
            req = self.store.get_request(request_id, conn=c, lock=True)
            if req is None:
                return Result(False, "this request does not exist (it may be from another bot or a forged button)")
            if req.state != PENDING:
                by = f" by <@{req.decided_by}>" if req.decided_by and "<" not in req.decided_by else ""
                return Result(False, f"this request is already {req.state}{by}; nothing was changed", req)
            environment = self.config.env(req.env)
            if environment is None:
                return Result(False, f"environment `{req.env}` is no longer configured; nothing was changed", req)
            access = environment.access
            # 2. it has not expired
            now = time.time()
            if req.expires_at <= now:
                self.store.transition(c, request_id, PENDING, RequestState.EXPIRED, decided_at=now)
                expired = self._reread(c, request_id)
                audit_request(self.store, expired, "expired", None, conn=c)
                KILL_REQUESTS.labels(req.env, req.action, "expired", "expired").inc()
                return Result(False, "this request has expired; nothing was changed", expired, changed=True)
            if v is Verdict.WITHDRAW:
                if user != req.requester:
                    return Result(False, "only the person who made the request can withdraw it")
                return self._close(c, req, RequestState.WITHDRAWN, user, now)
            # 3. not the requester (unless self-approval is allowed)
            if user == req.requester and v is Verdict.APPROVE and not access.self_approval:
                return Result(
                    False,
                    "you made this request, so another approver must decide it (access.self_approval is false)",
                )
            # 4. the approver is allowed
            if not_approver:
                return Result(False, not_approver)
            # 5. act
            if v is Verdict.DENY:
                return self._close(c, req, RequestState.DENIED, user, now)
            if not self.store.add_approval(c, request_id, user):
                return Result(False, "you have already approved this request; it needs another approver")
            approvers = self.store.approvers_of(request_id, conn=c)
            audit_request(self.store, req, "approved", user, conn=c)
            if len(approvers) < access.approvals_required:
                return Result(
                    True,
                    f"approval {len(approvers)} of {access.approvals_required} recorded",
                    self._reread(c, request_id),
                    changed=True,
                )
            if not self.store.transition(
                c, request_id, PENDING, EXECUTING, decided_at=now, decided_by=",".join(approvers)
            ):
                return Result(False, "another approval got there first; nothing was changed")
            to_execute = self._reread(c, request_id)
        # The caller sends the signal with execute(), outside the row lock (it can take seconds) and after
        # redrawing the message as "acting now"; the state is 'executing' until then.
        return Result(True, "approved", to_execute, changed=True, execute=True)

    def _reread(self, c: Connection, request_id: str) -> Request:
        req = self.store.get_request(request_id, conn=c)
        assert req is not None  # read inside the transaction that changed it
        return req

    def _close(self, c: Connection, req: Request, state: RequestState, user: str, now: float) -> Result:
        """Deny or withdraw a pending request."""
        self.store.transition(c, req.id, PENDING, state, decided_at=now, decided_by=user)
        done = self._reread(c, req.id)
        audit_request(self.store, done, state.value, user, conn=c)
        KILL_REQUESTS.labels(req.env, req.action, state.value, state.value).inc()
        return Result(True, state.value, done, changed=True)

    def execute(self, req: Request) -> Result:
        kind = self.actions.get(req.action)
        outcome: Outcome
        try:
            if kind is None:
                outcome = failed_outcome(None, OutcomeStatus.FAILED, f"unknown action {req.action}")
            else:
                outcome = kind.executor(self.execution, req)
        except Exception as exc:  # never leave a request in 'executing'
            log.exception("executing request %s failed", req.id)
            outcome = failed_outcome(
                kind, OutcomeStatus.FAILED, f"the bot failed while acting ({type(exc).__name__}); see logs"
            )
        final = RequestState.DONE if outcome.status == OutcomeStatus.DONE else RequestState.FAILED
        with self.store.tx() as c:
            self.store.transition(c, req.id, EXECUTING, final, outcome=outcome)
            done = self._reread(c, req.id)
        KILL_REQUESTS.labels(req.env, req.action, final.value, outcome.status.value).inc()
        return Result(True, outcome.detail or final.value, done, changed=True)

    # --- housekeeping -------------------------------------------------------------------------------

    def expire_due(self) -> list[Request]:
        """Expire pending requests whose TTL has passed; returns the ones this call expired."""
        out = []
        now = time.time()
        for req in self.store.due_for_expiry(now):
            with self.store.tx() as c:
                if self.store.transition(c, req.id, PENDING, RequestState.EXPIRED, decided_at=now):
                    expired = self._reread(c, req.id)
                    audit_request(self.store, expired, "expired", None, conn=c)
                    out.append(expired)
                    KILL_REQUESTS.labels(req.env, req.action, "expired", "expired").inc()
        return out

    def recover_interrupted(self, older_than: float | None = None) -> list[Request]:
        """Requests left 'executing' by a bot that stopped: end them as failed, never signal again.

        Only requests that have been executing for longer than any execution takes (another replica may
        be acting on a younger one right now).
        """
        out = []
        limit = time.time() - (self.interrupted_after if older_than is None else older_than)
        for req in self.store.requests_in((EXECUTING,)):
            if req.updated_at > limit:
                continue
            outcome = failed_outcome(
                self.actions.get(req.action),
                OutcomeStatus.INTERRUPTED,
                "the bot stopped while acting on this request; it was not retried. "
                "Check the session and make a new request if it is still needed",
            )
            with self.store.tx() as c:
                if self.store.transition(c, req.id, EXECUTING, RequestState.FAILED, outcome=outcome):
                    done = self._reread(c, req.id)
                    audit_request(self.store, done, "interrupted", None, conn=c, result=outcome.detail)
                    out.append(done)
        return out
