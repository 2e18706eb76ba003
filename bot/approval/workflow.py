"""The approval state machine for kill requests.

States::

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
is asked BEFORE the transaction; every transition is a conditional UPDATE in a transaction that locks
the request row, so twenty concurrent Approve clicks signal the backend once and record one outcome.
:meth:`Workflow.execute` checks the request's authority once more just before acting, and records the
outcome of a signal that was sent even when the state store fails for a while (retried, kept in
memory until it lands).

Executors (what "act" means for an action) are registered by name: ``cancel`` and ``terminate`` here,
bulk actions by the bulk feature.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.approval.targets import token_age_refusal
from bot.config import Config
from bot.metrics import KILL_REQUESTS
from bot.postgres.models import runs_query
from bot.postgres.pools import Databases
from bot.postgres.signals import signal
from bot.slack.directory import Directory, DirectoryUnavailable, Principals, identity_refusal
from bot.state.store import StateStore

log = logging.getLogger(__name__)

OPEN = ("pending",)
# seconds between the retries of a state write that records a signal already sent
WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0)
FINAL = ("done", "failed", "denied", "withdrawn", "expired")

# An executor acts on an approved request and returns its outcome:
#   {"status": "done"|"failed"|..., "detail": str, ...}
Executor = Callable[[Any, dict], dict]
EXECUTORS: dict[str, Executor] = {}
# Actions on a single session (the target's snapshot holds pid + backend_start).
SESSION_ACTIONS = ("cancel", "terminate")


def submission_key(once: str) -> str:
    """The state-store key of one form submission (fixed length, nothing readable in it)."""
    return "sub" + hashlib.sha256(once.encode()).hexdigest()[:29]


def executor(action: str):
    def deco(fn: Executor) -> Executor:
        EXECUTORS[action] = fn
        return fn

    return deco


@dataclass(frozen=True)
class Result:
    """What happened to a decision: ``ok`` False means refused, with ``message`` saying why."""

    ok: bool
    message: str
    request: dict | None = None
    changed: bool = False  # the request's message must be redrawn
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Authority:
    """What Slack said, read before a decision's transaction: who the approvers and requesters are now,
    and why a person involved may not take part (guest, another organisation), by user id."""

    approvers: Principals
    requesters: Principals
    user_refusal: str | None
    refusals: dict[str, str | None]


class Workflow:
    def __init__(self, config: Config, store: StateStore, dbs: Databases, directory: Directory, rt: Any = None):
        self.config = config
        self.store = store
        self.dbs = dbs
        self.directory = directory
        self.rt = rt
        # An execution (connect + statement timeouts, a terminate's wait) takes far less than this; a
        # bulk executor refreshes updated_at as it goes. PGSESSIONS_INTERRUPTED_AFTER (seconds) overrides
        # it, for tests that restart a killed bot and must not wait two minutes.
        self.interrupted_after = float(os.environ.get("PGSESSIONS_INTERRUPTED_AFTER") or 120.0)
        # state writes that recorded something that already happened, waiting for the store (§3)
        self._unsaved: list[tuple[str, Callable[[], Any], str | None]] = []
        self._unsaved_lock = threading.Lock()

    # --- requesting ---------------------------------------------------------------------------------

    def may_request(self, env: str, user: str, channel: str | None) -> str | None:
        """Why ``user`` may not ask to signal in ``env`` from ``channel``, or None."""
        environment = self.config.env(env)
        if environment is None:
            return f"environment `{env}` is no longer configured"
        access = environment.access
        if not access.allow_kill:
            return f"signalling is turned off for `{env}` (access.allow_kill: false)"
        if access.channels and channel not in access.channels:
            return f"`{env}` can only be used in " + ", ".join(f"<#{c}>" for c in access.channels)
        try:
            if not self.directory.allowed(user, access.requesters):
                return f"you are not allowed to request kills in `{env}` (access.requesters)"
            who = identity_refusal(self.directory.user_facts(user), "request")
        except DirectoryUnavailable as exc:
            return str(exc)
        if who:
            return who
        if not access.approvers:
            return f"no approvers are configured for `{env}`: set environments.{env}.access.approvers"
        return None

    def target_for(self, token: str, action: str, user: str, channel: str | None) -> tuple[dict | None, str | None]:
        """Resolve a button token to its stored target; (target, None) or (None, why not)."""
        target = self.store.get_target(token)
        if target is None:
            return None, "this button is not known to the bot (it may be from an old or forged message)"
        if target["channel"] and channel and target["channel"] != channel:
            return None, "this button belongs to a message in another channel"
        if target["kind"] == "session":
            if action not in SESSION_ACTIONS:
                return None, f"`{action}` is not an action for a session"
            if action == "cancel" and target["payload"].get("idle_in_transaction"):
                return None, (
                    "cancel does nothing to a session idle in transaction (PostgreSQL reports success but "
                    "the transaction stays open): use Terminate"
                )
            if action == "cancel" and not runs_query(target["payload"].get("state")):
                return None, "cancel does nothing to a session that is not running a query: use Terminate"
            offered = target["payload"].get("actions")  # a session token may name the actions it was drawn with
            if offered is not None and action not in offered:
                return None, f"`{action}` is not what this button was issued for"
        elif action in SESSION_ACTIONS or action not in (target["payload"].get("actions") or ()):
            # bulk and database targets name the actions their token was issued for
            return None, f"`{action}` is not what this button was issued for"
        too_old = self._listing_too_old(target)
        if too_old:
            return None, too_old
        refusal = self.may_request(target["env"], user, channel)
        if refusal:
            return None, refusal
        return target, None

    def _listing_too_old(self, target: dict) -> str | None:
        """A listing's (or bulk offer's) buttons work for ``access.request_ttl``; database tokens are
        kept fresh by their own housekeeping."""
        if target["kind"] not in ("session", "bulk"):
            return None
        environment = self.config.env(target["env"])
        if environment is None:
            return None  # may_request says so
        return token_age_refusal(target, environment.access.request_ttl)

    def submit(
        self, token: str, action: str, user: str, channel: str | None, reason: str | None, once: str | None = None
    ) -> Result:
        """Create a request. ``once``: a key for this submission (a modal's view id + user); a replay of
        a submission already turned into a request creates nothing (``Result.request`` is None)."""
        target, refusal = self.target_for(token, action, user, channel)
        if target is None:
            return Result(False, refusal or "refused")
        environment = self.config.environments[target["env"]]
        reason = (reason or "").strip()
        if environment.access.require_reason and not reason:
            return Result(False, "a reason is required")
        if target["kind"] == "bulk" or target["kind"] == "database":
            size = len(target["payload"].get("sessions", []))
            if size > environment.access.max_bulk:
                return Result(
                    False,
                    f"this request covers {size} sessions, more than access.max_bulk ({environment.access.max_bulk}); "
                    "narrow it down",
                )
        if once is not None and not self.store.claim_once(submission_key(once)):
            log.info("a replayed request form submission was ignored")
            return Result(True, "already requested", None)
        now = time.time()
        request = self.store.create_request(
            env=target["env"],
            host=target["host"],
            action=action,
            target_token=token,
            target={**target["payload"], "requested_in": channel},
            requester=user,
            reason=reason or None,
            channel=environment.access.approval_channel or channel,
            expires_at=now + environment.access.request_ttl,
        )
        self._audit(request, "requested", user)
        KILL_REQUESTS.labels(request["env"], action, "pending", "requested").inc()
        return Result(True, "requested", request, changed=True)

    # --- deciding -----------------------------------------------------------------------------------

    def decide(self, request_id: str, user: str, verdict: str) -> Result:
        """Approve, deny or withdraw. The checks run here, in one fixed order, for every verdict.

        A Result with ``extra["execute"]`` is an approved request now 'executing': call :meth:`execute`.
        """
        if verdict not in ("approve", "deny", "withdraw"):
            return Result(False, f"unknown decision `{verdict}`")
        # Every Slack lookup (user groups, users.info) happens here, BEFORE the row lock: one slow
        # Slack answer must not stall every other click. The transaction below only reads the result.
        authority: Authority | None = None
        if verdict != "withdraw":
            pre = self.store.get_request(request_id)
            if pre is not None and pre["state"] == "pending" and self.config.env(pre["env"]) is not None:
                try:
                    authority = self._resolve_authority(pre, user)
                except DirectoryUnavailable as exc:
                    return Result(False, f"{exc}. Nothing was changed")
        with self.store.tx() as c:
            # 1. the request exists and is pending
            req = self.store.get_request(request_id, conn=c, lock=True)
            if req is None:
                return Result(False, "this request does not exist (it may be from another bot or a forged button)")
            if req["state"] != "pending":
                by = f" by <@{req['decided_by']}>" if req.get("decided_by") and "<" not in req["decided_by"] else ""
                return Result(False, f"this request is already {req['state']}{by}; nothing was changed", req)
            environment = self.config.env(req["env"])
            if environment is None:
                return Result(False, f"environment `{req['env']}` is no longer configured; nothing was changed", req)
            access = environment.access
            # 2. it has not expired
            now = time.time()
            if req["expires_at"] <= now:
                self.store.transition(c, request_id, "pending", "expired", decided_at=now)
                expired = self.store.get_request(request_id, conn=c)
                self._audit(expired, "expired", None, conn=c)
                KILL_REQUESTS.labels(req["env"], req["action"], "expired", "expired").inc()
                return Result(False, "this request has expired; nothing was changed", expired, changed=True)
            if verdict == "withdraw":
                if user != req["requester"]:
                    return Result(False, "only the person who made the request can withdraw it")
                self.store.transition(c, request_id, "pending", "withdrawn", decided_at=now, decided_by=user)
                done = self.store.get_request(request_id, conn=c)
                self._audit(done, "withdrawn", user, conn=c)
                KILL_REQUESTS.labels(req["env"], req["action"], "withdrawn", "withdrawn").inc()
                return Result(True, "withdrawn", done, changed=True)
            if authority is None:  # it became pending-with-an-environment after our first read: resolve again
                return Result(False, "this request changed while you clicked; nothing was changed, please click again")
            # 3. not the requester (unless self-approval is allowed)
            if user == req["requester"] and verdict == "approve" and not access.self_approval:
                return Result(
                    False,
                    "you made this request, so another approver must decide it (access.self_approval is false)",
                )
            # 4. the approver is allowed: a full member of this workspace, listed in access.approvers now
            if authority.user_refusal:
                return Result(False, f"{authority.user_refusal}; nothing was changed")
            if not authority.approvers.allows(user):
                return Result(False, f"you are not an approver for `{req['env']}` (access.approvers)")
            # 5. a denial needs nothing more
            if verdict == "deny":
                self.store.transition(c, request_id, "pending", "denied", decided_at=now, decided_by=user)
                done = self.store.get_request(request_id, conn=c)
                self._audit(done, "denied", user, conn=c)
                KILL_REQUESTS.labels(req["env"], req["action"], "denied", "denied").inc()
                return Result(True, "denied", done, changed=True)
            # 6. the request itself is still allowed: signalling on, requester and channel still allowed
            refusal = self._request_refusal(req, authority)
            if refusal:
                return Result(False, f"{refusal}; nothing was changed", req)
            if not self.store.add_approval(c, request_id, user):
                return Result(False, "you have already approved this request; it needs another approver")
            recorded = self.store.approvers_of(request_id, conn=c)
            self._audit(req, "approved", user, conn=c)
            # 7. enough approvals: only people who are approvers NOW count (re-evaluated at every approval), the requester
            # only with self_approval (and once: approvals are unique per person)
            counted = [a for a in recorded if self._counts(a, req, access.self_approval, authority)]
            if len(counted) < access.approvals_required:
                dropped = [a for a in recorded if a not in counted]
                note = (
                    " (no longer counted: " + ", ".join(f"<@{a}>" for a in dropped) + ", not approvers any more)"
                    if dropped else ""
                )
                return Result(
                    True,
                    f"approval {len(counted)} of {access.approvals_required} recorded{note}",
                    self.store.get_request(request_id, conn=c),
                    changed=True,
                    extra={"tell": bool(dropped)},
                )
            # decided_by holds the approval that completed the request (one id: fits the column whatever
            # approvals_required is); every approver is in the approvals table
            if not self.store.transition(
                c, request_id, "pending", "executing", decided_at=now, decided_by=user
            ):
                return Result(False, "another approval got there first; nothing was changed")
            to_execute = self.store.get_request(request_id, conn=c)
        # The caller sends the signal with execute(), outside the row lock (it can take seconds) and after
        # redrawing the message as "acting now"; the state is 'executing' until then.
        return Result(True, "approved", to_execute, changed=True, extra={"execute": True})

    def execute(self, req: dict) -> Result:
        run = EXECUTORS.get(req["action"])
        try:
            refusal = self._refusal_before_acting(req)
            if refusal:
                outcome = {"status": "refused", "detail": f"nothing was signalled: {refusal}"}
                self.audit_durably({**req, "outcome": outcome}, "refused", None, result=outcome["detail"])
            elif run is None:
                outcome = {"status": "failed", "detail": f"unknown action {req['action']}"}
            else:
                outcome = run(self, req)
        except Exception as exc:  # never leave a request in 'executing'
            log.exception("executing request %s failed", req["id"])
            outcome = {"status": "failed", "detail": f"the bot failed while acting ({type(exc).__name__}); see logs"}
        final = "done" if outcome.get("status") == "done" else "failed"
        done = self._record_outcome(req, final, outcome)
        KILL_REQUESTS.labels(req["env"], req["action"], final, outcome.get("status", "failed")).inc()
        return Result(True, outcome.get("detail", final), done, changed=True)

    # --- outcomes are never lost (issue 12 §3) ---------------------------------------------------------

    def _record_outcome(self, req: dict, final: str, outcome: dict) -> dict:
        """Store the outcome of an executed request; when the state store fails, retry, keep it in memory
        until it lands (:meth:`flush_unsaved`), and return the request as it really is now, so the message
        shows what happened (a signal that was sent is never reported as "nothing was changed")."""

        def write() -> None:
            with self.store.tx() as c:
                self.store.transition(c, req["id"], "executing", final, outcome=outcome)

        self.durably(f"the outcome of request {req['id']}", write, request_id=req["id"])
        try:
            stored = self.store.get_request(req["id"])
        except Exception as exc:
            log.warning("could not read back request %s: %s", req["id"], type(exc).__name__)
            stored = None
        if stored is not None and stored["state"] == final:
            return stored
        return {**req, "state": final, "outcome": outcome, "updated_at": time.time()}

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
        """Retry the writes kept in memory, in order; returns the ids of requests whose writes all landed."""
        with self._unsaved_lock:
            pending, self._unsaved = self._unsaved, []
        left: list[tuple[str, Callable[[], Any], str | None]] = []
        blocked: set[str | None] = set()
        for item in pending:
            what, write, rid = item
            if rid is not None and rid in blocked:  # keep one request's writes in order
                left.append(item)
                continue
            try:
                write()
                log.info("recorded %s after all", what)
            except Exception as exc:
                log.warning("still could not record %s (%s)", what, type(exc).__name__)
                left.append(item)
                if rid is not None:
                    blocked.add(rid)
        with self._unsaved_lock:
            self._unsaved[:0] = left
        held = {rid for _w, _f, rid in left}
        return [rid for _w, _f, rid in pending if rid is not None and rid not in held]

    def holds_unsaved(self, request_id: str) -> bool:
        with self._unsaved_lock:
            return any(rid == request_id for _w, _f, rid in self._unsaved)

    def audit_durably(self, req: dict, event: str, actor: str | None, result: str | None = None) -> None:
        """An audit entry for something that happened (a signal sent): retried, never lost, never raises."""
        self.durably(
            f"audit entry {req['action']}:{event} of request {req['id']}",
            lambda: self._audit(req, event, actor, result=result),
            request_id=req["id"],
        )

    # --- authority (issue 12 §2) ----------------------------------------------------------------------

    def _resolve_authority(self, req: dict, user: str) -> Authority:
        """Ask Slack everything a decision on ``req`` needs (cached ≤ 5 min); raises DirectoryUnavailable.

        Called before the request's transaction; the transaction only reads the answer.
        """
        access = self.config.environments[req["env"]].access
        people = {user, req["requester"], *self.store.approvers_of(req["id"])}
        facts = {p: self.directory.user_facts(p) for p in people}
        return Authority(
            approvers=self.directory.resolve(access.approvers),
            requesters=self.directory.resolve(access.requesters),
            user_refusal=identity_refusal(facts[user], "approve or deny requests"),
            refusals={p: identity_refusal(f, "request or approve") for p, f in facts.items()},
        )

    def _request_refusal(self, req: dict, authority: Authority) -> str | None:
        """Why ``req`` may no longer go ahead under the current config (pure: no Slack call)."""
        env = req["env"]
        environment = self.config.env(env)
        if environment is None:
            return f"environment `{env}` is no longer configured"
        access = environment.access
        if not access.allow_kill:
            return f"signalling is turned off for `{env}` (access.allow_kill: false)"
        origin = req["target"].get("requested_in", req.get("channel"))
        if access.channels and origin not in access.channels:
            return f"`{env}` may no longer be used from <#{origin}> (access.channels)"
        requester = req["requester"]
        if not authority.requesters.allows(requester):
            return f"<@{requester}> is no longer allowed to request kills in `{env}` (access.requesters)"
        if authority.refusals.get(requester):
            return f"the requester may not ask for this: {authority.refusals[requester]}"
        return None

    def _counts(self, approver: str, req: dict, self_approval: bool, authority: Authority) -> bool:
        if approver == req["requester"] and not self_approval:
            return False
        if not authority.approvers.allows(approver):
            return False
        if approver in authority.refusals:
            return authority.refusals[approver] is None
        facts = self.directory.cached_user_facts(approver)  # an approval recorded meanwhile: cache only
        return facts is not None and identity_refusal(facts, "approve") is None

    def counted_approvals(self, req: dict, recorded: list[str]) -> tuple[list[str], list[str]]:
        """(approvals that count now, approvals that no longer do), for drawing a pending request.

        Outside any transaction (it may ask Slack); when Slack cannot be asked, every recorded approval
        is shown as recorded (the decision itself never counts on stale data).
        """
        if req.get("state") != "pending" or self.config.env(req["env"]) is None or not recorded:
            return recorded, []
        try:
            authority = self._resolve_authority(req, req["requester"])
        except DirectoryUnavailable:
            return recorded, []
        self_approval = self.config.environments[req["env"]].access.self_approval
        counted = [a for a in recorded if self._counts(a, req, self_approval, authority)]
        return counted, [a for a in recorded if a not in counted]

    def _refusal_before_acting(self, req: dict) -> str | None:
        """The last check, just before the signal (outside any transaction, so Slack may be asked)."""
        if self.config.env(req["env"]) is None:
            return f"environment `{req['env']}` is no longer configured"
        access = self.config.environments[req["env"]].access
        try:
            authority = Authority(
                approvers=Principals(tuple(access.approvers), {}),
                requesters=self.directory.resolve(access.requesters),
                user_refusal=None,
                refusals={req["requester"]: identity_refusal(self.directory.user_facts(req["requester"]), "request")},
            )
        except DirectoryUnavailable as exc:
            return str(exc)
        return self._request_refusal(req, authority)

    # --- housekeeping -------------------------------------------------------------------------------

    def expire_due(self) -> list[dict]:
        """Expire pending requests whose TTL has passed; returns the ones this call expired."""
        out = []
        now = time.time()
        for req in self.store.due_for_expiry(now):
            with self.store.tx() as c:
                if self.store.transition(c, req["id"], "pending", "expired", decided_at=now):
                    expired = self.store.get_request(req["id"], conn=c)
                    self._audit(expired, "expired", None, conn=c)
                    out.append(expired)
                    KILL_REQUESTS.labels(req["env"], req["action"], "expired", "expired").inc()
        return out

    def recover_interrupted(self, older_than: float | None = None) -> list[dict]:
        """Requests left 'executing' by a bot that stopped: end them as failed, never signal again.

        Only requests that have been executing for longer than any execution takes (another replica may
        be acting on a younger one right now).
        """
        out = []
        limit = time.time() - (self.interrupted_after if older_than is None else older_than)
        for req in self.store.requests_in(("executing",)):
            if req["updated_at"] > limit or self.holds_unsaved(req["id"]):
                continue  # young, or its outcome is known here and waiting for the store
            outcome = {
                "status": "interrupted",
                "detail": "the bot stopped while acting on this request; it was not retried. "
                "Check the session and make a new request if it is still needed",
            }
            with self.store.tx() as c:
                if self.store.transition(c, req["id"], "executing", "failed", outcome=outcome):
                    done = self.store.get_request(req["id"], conn=c)
                    self._audit(done, "interrupted", None, conn=c, result=outcome["detail"])
                    out.append(done)
        return out

    # --- audit --------------------------------------------------------------------------------------

    def _audit(self, req: dict, event: str, actor: str | None, conn=None, result: str | None = None) -> None:
        t = req["target"]
        if result is None and req.get("outcome"):
            result = req["outcome"].get("detail")
        self.store.add_audit(
            conn,
            env=req["env"],
            host=req["host"],
            request_id=req["id"],
            event=f"{req['action']}:{event}",
            actor=actor,
            pid=t.get("pid"),
            backend_start=t.get("backend_start"),
            db_user=t.get("user"),
            application=t.get("application"),
            query=t.get("query"),
            reason=req.get("reason"),
            result=result,
        )


@executor("cancel")
@executor("terminate")
def _signal_one(wf: Workflow, req: dict) -> dict:
    t = req["target"]
    res = signal(wf.dbs, req["env"], req["host"], req["action"], int(t["pid"]), t["backend_start"], listed=t)
    outcome = {"status": res.status, "detail": res.detail, "signalled": res.signalled}
    # every signal sent has an 'executed' entry (also a cancel/terminate that was sent but not yet
    # effective: not_done); a signal not sent is recorded by its reason (gone, moved, refused, …)
    event = "executed" if res.signalled or res.ok else res.status
    wf.audit_durably({**req, "outcome": outcome}, event, None, result=res.detail)
    return outcome
