"""The approval state machine for every kind of action request.

States (:class:`~bot.approval.models.RequestState`)::

    pending ──approve (enough distinct approvals)──▶ executing ──▶ done | failed
       │ ├──deny──▶ denied
       │ ├──withdraw (requester)──▶ withdrawn
       │ └──ttl passed──▶ expired
       └── (bot stopped while executing) ──▶ failed (interrupted, never retried)

Authorization runs in one place, :meth:`Workflow.decide`, always in this order: the request exists and
is pending → it has not expired → the approver is not the requester (unless ``self_approval``) → the
approver is a full member of this workspace and an approver now → the request is still allowed (the
environment exists, ``allow_kill``, the requester and the channel are still allowed) → enough approvals
by people who are approvers now → act. Slack (user groups, users.info; answers at most 5 minutes old)
is asked through the approvers-lookup port BEFORE the transaction; every transition is a conditional
UPDATE in a transaction that locks the request row, so twenty concurrent Approve clicks signal the
backend once and record one outcome. :meth:`Workflow.execute` checks the request's authority once more
just before acting, and records the outcome of a signal that was sent even when the state store fails
for a while (retried, kept in memory until it lands).

What "act" means for each action is its executor in the table of actions (bot/approval/actions.py);
who may request is :class:`~bot.approval.policy.Policy`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from bot.approval.actions import ACTIONS, ActionKind
from bot.approval.models import (
    BulkOutcome,
    BulkTarget,
    DatabaseTarget,
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
from bot.approval.policy import Authority, Policy
from bot.approval.ports import DirectoryUnavailable, Execution, RequestEvents
from bot.approval.targets import ages, token_age_refusal
from bot.config import Config
from bot.metrics import KILL_REQUESTS
from bot.phrase import Phrase
from bot.postgres.models import runs_query
from bot.postgres.pools import Databases
from bot.state.store import StateStore

log = logging.getLogger(__name__)

PENDING, EXECUTING = RequestState.PENDING, RequestState.EXECUTING
# seconds between the retries of a state write that records a signal already sent
WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0)


def submission_key(once: str) -> str:
    """The state-store key of one form submission (fixed length, nothing readable in it)."""
    return "sub" + hashlib.sha256(once.encode()).hexdigest()[:29]


@dataclass(frozen=True)
class Result:
    """What happened to a decision: ``ok`` False means refused, with ``message`` saying why."""

    ok: bool
    message: str | Phrase  # the bot's mrkdwn, or a Phrase (names from a database: drawn by bot/render/)
    request: Request | None = None
    changed: bool = False  # the request's message must be redrawn
    execute: bool = False  # approved and now 'executing': call Workflow.execute
    tell: bool = False  # ok, but the clicker should read the message (approvals no longer counted)


# the audit result when an outcome that waited in memory replaces "interrupted"
KEPT_OUTCOME_NOTE = ("the outcome waited in memory while the state store was down; "
                     "it replaces the 'interrupted' written meanwhile")


def failed_outcome(action: ActionKind | None, status: OutcomeStatus, detail: str) -> Outcome:
    """An outcome of the action's kind that says only ``status`` and ``detail``."""
    if action is not None and action.target_kind == "session":
        return SignalOutcome(status=status, detail=detail)
    return BulkOutcome(status=status, detail=detail)


class Heartbeat:
    """While an execution runs, refresh its request's ``updated_at`` every ``every`` seconds, so that no
    replica takes it for interrupted (:meth:`Workflow.recover_interrupted`). Stops by itself when the
    request is no longer 'executing'; a failed refresh is only logged (the next one may land)."""

    def __init__(self, store: StateStore, request_id: str, every: float):
        self.store, self.request_id, self.every = store, request_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pgs-heartbeat-{request_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.store.touch_executing(self.request_id):
                    return
            except Exception as exc:
                log.warning("could not refresh executing request %s: %s", self.request_id, type(exc).__name__)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5.0)


class Workflow:
    @property
    def config(self) -> Config:
        """The configuration the policy decides with (replacing it here replaces it there)."""
        return self.policy.config

    @config.setter
    def config(self, value: Config) -> None:
        self.policy.config = value

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
        policy.config = config
        self.store = store
        self.dbs = dbs
        self.policy = policy
        self.directory = policy.approvers
        self.events = events
        self.actions = actions
        # An execution (connect + statement timeouts, a terminate's wait) takes far less than this; a
        # bulk executor refreshes updated_at as it goes. PGSESSIONS_INTERRUPTED_AFTER (seconds) overrides
        # it, for tests that restart a killed bot and must not wait two minutes.
        if interrupted_after is None:
            interrupted_after = float(os.environ.get("PGSESSIONS_INTERRUPTED_AFTER") or 120.0)
        self.interrupted_after = interrupted_after
        # state writes that recorded something that already happened, waiting for the store (§3)
        self._unsaved: list[tuple[str, Callable[[], Any], str | None]] = []
        self._unsaved_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # requests this process is acting on now (never 'interrupted' by its own housekeeping)
        self._running: set[str] = set()
        self._running_lock = threading.Lock()

    @property
    def execution(self) -> Execution:
        return Execution(self.config, self.store, self.dbs, self.events, self.audit_durably, self.durably,
                         guard=self.policy.guard)

    # --- requesting ---------------------------------------------------------------------------------

    def target_for(
        self, token: str, action: str, user: str, channel: str | None
    ) -> tuple[StoredTarget | None, str | Phrase | None]:
        """Resolve a button token to its stored target; (target, None) or (None, why not: the bot's mrkdwn,
        or a :class:`~bot.phrase.Phrase` with names in it, drawn by ``bot.render.common.phrase``)."""
        stored = self.store.get_target(token)
        if stored is None or stored.kind == "details":
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
            if kind.refuses_idle_in_transaction and not runs_query(target.state):
                return None, "cancel does nothing to a session that is not running a query: use Terminate"
            refusal = kind.session_refusal(target) if kind.session_refusal is not None else None
            if refusal:
                return None, refusal
            offered = target.actions  # a session token may name the actions it was drawn with
            if offered is not None and action not in offered:
                return None, f"`{action}` is not what this button was issued for"
            protected = self.policy.protected_target(stored.env, target)
            if protected:
                return None, protected
        elif kind is None or kind.target_kind == "session" or action not in getattr(target, "actions", ()):
            # bulk and database targets name the actions their token was issued for
            return None, f"`{action}` is not what this button was issued for"
        too_old = self._listing_too_old(stored, action)
        if too_old:
            return None, too_old
        refusal = self.policy.may_request(stored.env, user, channel)
        if refusal:
            return None, refusal
        return stored, None

    def _listing_too_old(self, stored: StoredTarget, action: str) -> Phrase | None:
        """Every button that can lead to a signal works for ``access.request_ttl`` from the read it came
        from (:func:`bot.approval.targets.ages`: all but *Allow connections again*)."""
        if not ages(stored, action):
            return None
        environment = self.config.env(stored.env)
        if environment is None:
            return None  # may_request says so
        return token_age_refusal(stored, environment.access.request_ttl)

    def submit(
        self, token: str, action: str, user: str, channel: str | None, reason: str | None, once: str | None = None
    ) -> Result:
        """Create a request. ``once``: a key for this submission (a modal's view id + user); a replay of
        a submission already turned into a request creates nothing (``Result.request`` is None)."""
        stored, refusal = self.target_for(token, action, user, channel)
        if stored is None:
            return Result(False, refusal or "refused")
        environment = self.config.environments[stored.env]
        reason = (reason or "").strip()
        if environment.access.require_reason and not reason:
            return Result(False, "a reason is required")
        if isinstance(stored.target, (BulkTarget, DatabaseTarget)):
            too_big = self.policy.request_too_big(stored.env, len(stored.target.sessions))
            if too_big:
                return Result(False, too_big)
        now = time.time()
        new = NewRequest(
            env=stored.env,
            host=stored.host,
            action=action,
            target_token=token,
            target=stored.target.model_copy(update={"requested_in": channel}),
            requester=user,
            reason=reason or None,
            channel=environment.access.approval_channel or channel,
            expires_at=now + environment.access.request_ttl,
        )
        # one submission, one request: the "seen this submission" marker, the request and its audit entry
        # land in ONE transaction, so a failure in between leaves no marker and Slack's retry is served
        with self.store.tx() as c:
            if once is not None and not self.store.claim_once(submission_key(once), conn=c):
                log.info("a replayed request form submission was ignored")
                return Result(True, "already requested", None)
            request = self.store.create_request(new, conn=c)
            self.store.audit_request(request, "requested", user, conn=c)
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
        # Every Slack lookup (user groups, users.info) happens here, BEFORE the row lock: one slow
        # Slack answer must not stall every other click. The transaction below only reads the result.
        authority: Authority | None = None
        if v is not Verdict.WITHDRAW:
            pre, approved = self.store.request_with_approvals(request_id)
            if pre is not None and pre.state == PENDING and self.config.env(pre.env) is not None:
                try:
                    authority = self.policy.authority(pre, user, approved)
                except DirectoryUnavailable as exc:
                    return Result(False, f"{exc}. Nothing was changed")
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
                expired = self.store.transition(c, request_id, PENDING, RequestState.EXPIRED, decided_at=now) or req
                self.store.audit_request(expired, "expired", None, conn=c)
                KILL_REQUESTS.labels(req.env, req.action, "expired", "expired").inc()
                return Result(False, "this request has expired; nothing was changed", expired, changed=True)
            if v is Verdict.WITHDRAW:
                if user != req.requester:
                    return Result(False, "only the person who made the request can withdraw it")
                return self._close(c, req, RequestState.WITHDRAWN, user, now)
            if authority is None:  # it became pending-with-an-environment after our first read: resolve again
                return Result(False, "this request changed while you clicked; nothing was changed, please click again")
            # 3. not the requester (unless self-approval is allowed)
            if user == req.requester and v is Verdict.APPROVE and not access.self_approval:
                return Result(
                    False,
                    "you made this request, so another approver must decide it (access.self_approval is false)",
                )
            # 4. the approver is allowed: a full member of this workspace, listed in access.approvers now
            if authority.user_refusal:
                return Result(False, f"{authority.user_refusal}; nothing was changed")
            if not authority.approvers.allows(user):
                return Result(False, f"you are not an approver for `{req.env}` (access.approvers)")
            # 5. a denial needs nothing more
            if v is Verdict.DENY:
                return self._close(c, req, RequestState.DENIED, user, now)
            # 6. the request itself is still allowed: signalling on, requester and channel still allowed
            refusal = self.policy.request_refusal(req, authority)
            if refusal:
                return Result(False, f"{refusal}; nothing was changed", req)
            recorded = self.store.approve(c, req, user)  # with its audit line
            if recorded is None:
                return Result(False, "you have already approved this request; it needs another approver")
            # 7. enough approvals: only people who are approvers NOW count (re-evaluated at every
            # approval), the requester only with self_approval (and once: approvals are unique per person)
            counted = [a for a in recorded if self.policy.counts(a, req, access.self_approval, authority)]
            if len(counted) < access.approvals_required:
                dropped = [a for a in recorded if a not in counted]
                note = (
                    " (no longer counted: " + ", ".join(f"<@{a}>" for a in dropped) + ", not approvers any more)"
                    if dropped else ""
                )
                return Result(
                    True,
                    f"approval {len(counted)} of {access.approvals_required} recorded{note}",
                    req,  # its row is as read: an approval is a row of its own
                    changed=True,
                    tell=bool(dropped),
                )
            # decided_by holds the approval that completed the request (one id: fits the column whatever
            # approvals_required is); every approver is in the approvals table
            to_execute = self.store.transition(c, request_id, PENDING, EXECUTING, decided_at=now, decided_by=user)
            if to_execute is None:
                return Result(False, "another approval got there first; nothing was changed")
        # The caller sends the signal with execute(), outside the row lock (it can take seconds) and after
        # redrawing the message as "acting now"; the state is 'executing' until then.
        return Result(True, "approved", to_execute, changed=True, execute=True)

    def _close(self, c: Connection, req: Request, state: RequestState, user: str, now: float) -> Result:
        """Deny or withdraw a pending request (its row is locked: the transition cannot miss)."""
        done = self.store.transition(c, req.id, PENDING, state, decided_at=now, decided_by=user)
        if done is None:
            return Result(False, "another decision got there first; nothing was changed")
        self.store.audit_request(done, state.value, user, conn=c)
        KILL_REQUESTS.labels(req.env, req.action, state.value, state.value).inc()
        return Result(True, state.value, done, changed=True)

    def execute(self, req: Request) -> Result:
        """Act on an approved request, once: the request is claimed first (it must still be 'executing':
        the recovery of interrupted requests may have ended it), kept alive while the executor runs
        (:class:`Heartbeat`), and its outcome is written only if it is still 'executing' then. Whichever
        of the two writes the final state, the message is drawn from what the store holds."""
        try:
            claimed = self.store.touch_executing(req.id)
        except Exception as exc:  # the store is down: act, and keep the outcome until it lands (§3)
            log.warning("could not claim request %s before acting (%s); acting", req.id, type(exc).__name__)
            claimed = True
        if not claimed:
            ended = self.store.get_request(req.id) or req
            log.warning("request %s was ended (%s) before it was acted on; nothing was done", req.id, ended.state)
            return Result(True, ended.state.value, ended, changed=True)
        with self._running_lock:
            self._running.add(req.id)
        try:
            with Heartbeat(self.store, req.id, self.heartbeat_every):
                return self._execute(req)
        finally:
            with self._running_lock:
                self._running.discard(req.id)

    @property
    def heartbeat_every(self) -> float:
        """How often an execution says it is alive: well within ``interrupted_after``."""
        return max(0.05, self.interrupted_after / 4)

    def _execute(self, req: Request) -> Result:
        kind = self.actions.get(req.action)
        outcome: Outcome
        try:
            refusal = self.policy.refusal_before_acting(req)
            if refusal:
                outcome = failed_outcome(kind, OutcomeStatus.REFUSED, f"nothing was signalled: {refusal}")
                self.audit_durably(req.model_copy(update={"outcome": outcome}), "refused", None,
                                   result=outcome.detail)
            elif kind is None:
                outcome = failed_outcome(None, OutcomeStatus.FAILED, f"unknown action {req.action}")
            else:
                outcome = kind.executor(self.execution, req)
        except Exception as exc:  # never leave a request in 'executing'
            log.exception("executing request %s failed", req.id)
            outcome = failed_outcome(
                kind, OutcomeStatus.FAILED, f"the bot failed while acting ({type(exc).__name__}); see logs"
            )
        final = RequestState.DONE if outcome.status == OutcomeStatus.DONE else RequestState.FAILED
        done = self._record_outcome(req, final, outcome)
        KILL_REQUESTS.labels(req.env, req.action, final.value, outcome.status.value).inc()
        return Result(True, outcome.detail or final.value, done, changed=True)

    # --- outcomes are never lost (issue 12 §3) ---------------------------------------------------------

    def _record_outcome(self, req: Request, final: RequestState, outcome: Outcome) -> Request:
        """Store the outcome of an executed request; when the state store fails, retry, keep it in memory
        until it lands (:meth:`flush_unsaved`), and return the request as it really is now, so the message
        shows what happened (a signal that was sent is never reported as "nothing was changed")."""

        won: list[Request] = []  # the request as the write that landed left it
        kept: list[bool] = []  # the write waited in memory for the state store (it was down)

        def write() -> None:
            with self.store.tx() as c:
                moved = self.store.transition(c, req.id, EXECUTING, final, outcome=outcome)
                if moved is None and kept:
                    # the signal was sent while the store was down, and another replica's recovery took the
                    # request for interrupted meanwhile: the outcome kept in memory is what happened, and
                    # it replaces "interrupted, not retried" (issue 23 §6)
                    moved = self.store.transition(c, req.id, RequestState.FAILED, final, outcome=outcome,
                                                  outcome_status=OutcomeStatus.INTERRUPTED.value)
                    if moved is not None:
                        self.store.audit_request(req.model_copy(update={"outcome": outcome}), "outcome_kept",
                                                 None, conn=c, result=KEPT_OUTCOME_NOTE)
            if moved is not None:  # committed
                won.append(moved)

        landed = self.durably(f"the outcome of request {req.id}", write, request_id=req.id)
        if won:
            return won[-1]
        if not landed:
            kept.append(True)
        try:
            stored = self.store.get_request(req.id)
        except Exception as exc:
            log.warning("could not read back request %s: %s", req.id, type(exc).__name__)
            stored = None
        if landed:
            # another path (the recovery of interrupted requests) wrote this request's end first: that is
            # the one truth, and the message shows it (what this execution did is in the audit log)
            log.warning("request %s was ended as %s while it was being acted on (%s); its outcome was not "
                        "written over", req.id, stored.state if stored else "?", outcome.status)
            if stored is not None:
                return stored
        if stored is not None and stored.state == final:
            return stored
        return req.model_copy(update={"state": final, "outcome": outcome, "updated_at": time.time()})

    def durably(self, what: str, write: Callable[[], Any], request_id: str | None = None) -> bool:
        """Run a state write that records something that already happened (a signal was sent): retried
        a few times, then kept in memory and retried by housekeeping until it lands. Never raises."""
        for delay in (0.0, *WRITE_RETRY_DELAYS):
            if delay:
                time.sleep(delay)
            try:
                write()
                return True
            except Exception as exc:
                log.warning("could not record %s (%s); retrying", what, type(exc).__name__)
        with self._unsaved_lock:
            self._unsaved.append((what, write, request_id))
        log.error("could not record %s: kept in memory until the state store takes it", what)
        return False

    def flush_unsaved(self) -> list[str]:
        """Retry the writes kept in memory, in order; returns the ids of requests whose writes all landed.

        A write stays in memory (:meth:`holds_unsaved`) until it has landed, so the recovery of
        interrupted requests never takes its request meanwhile; one flush runs at a time."""
        if not self._flush_lock.acquire(blocking=False):
            return []
        try:
            with self._unsaved_lock:
                pending = list(self._unsaved)
            done: list[tuple[str, Callable[[], Any], str | None]] = []
            blocked: set[str | None] = set()
            for item in pending:
                what, write, rid = item
                if rid is not None and rid in blocked:  # keep one request's writes in order
                    continue
                try:
                    write()
                    log.info("recorded %s after all", what)
                    done.append(item)
                except Exception as exc:
                    log.warning("still could not record %s (%s)", what, type(exc).__name__)
                    if rid is not None:
                        blocked.add(rid)
            with self._unsaved_lock:
                self._unsaved = [i for i in self._unsaved if not any(i is d for d in done)]
                held = {rid for _w, _f, rid in self._unsaved}
            return list(dict.fromkeys(rid for _w, _f, rid in done if rid is not None and rid not in held))
        finally:
            self._flush_lock.release()

    def is_running(self, request_id: str) -> bool:
        with self._running_lock:
            return request_id in self._running

    def holds_unsaved(self, request_id: str) -> bool:
        with self._unsaved_lock:
            return any(rid == request_id for _w, _f, rid in self._unsaved)

    def audit_durably(self, req: Request, event: str, actor: str | None, result: str | None = None) -> None:
        """An audit entry for something that happened (a signal sent): retried, never lost, never raises."""
        self.durably(
            f"audit entry {req.action}:{event} of request {req.id}",
            lambda: self.store.audit_request(req, event, actor, result=result),
            request_id=req.id,
        )

    # --- authority (issue 12 §2): the access policy decides, on what Slack said ----------------------

    # --- housekeeping -------------------------------------------------------------------------------

    def expire_due(self) -> list[Request]:
        """Expire pending requests whose TTL has passed; returns the ones this call expired."""
        out = []
        now = time.time()
        for req in self.store.due_for_expiry(now):
            with self.store.tx() as c:
                expired = self.store.transition(c, req.id, PENDING, RequestState.EXPIRED, decided_at=now)
                if expired is not None:
                    self.store.audit_request(expired, "expired", None, conn=c)
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
            if req.updated_at > limit or self.holds_unsaved(req.id) or self.is_running(req.id):
                continue  # young, acted on here now, or its outcome is known here and waiting for the store
            outcome = failed_outcome(
                self.actions.get(req.action),
                OutcomeStatus.INTERRUPTED,
                "the bot stopped while acting on this request; it was not retried. "
                "Check the session and make a new request if it is still needed",
            )
            with self.store.tx() as c:
                # only if still not updated since: an execution alive elsewhere keeps updating it and wins
                done = self.store.transition(c, req.id, EXECUTING, RequestState.FAILED, outcome=outcome,
                                             stale_before=limit)
                if done is not None:
                    self.store.audit_request(done, "interrupted", None, conn=c, result=outcome.detail)
                    out.append(done)
        return out
