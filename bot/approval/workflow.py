"""The approval state machine for kill requests.

States::

    pending ──approve (enough distinct approvals)──▶ executing ──▶ done | failed
       │ ├──deny──▶ denied
       │ ├──withdraw (requester)──▶ withdrawn
       │ └──ttl passed──▶ expired
       └── (bot stopped while executing) ──▶ failed (interrupted, never retried)

Authorization runs in one place, :meth:`Workflow.decide`, always in this order: the request exists and
is pending → it has not expired → the approver is not the requester (unless ``self_approval``) → the
approver is allowed → act. Every transition is a conditional UPDATE in a transaction that locks the
request row, so twenty concurrent Approve clicks signal the backend once and record one outcome.

Executors (what "act" means for an action) are registered by name: ``cancel`` and ``terminate`` here,
bulk actions by the bulk feature.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.config import Config
from bot.metrics import KILL_REQUESTS
from bot.postgres.pools import Databases
from bot.postgres.signals import signal
from bot.slack.directory import Directory
from bot.state.store import StateStore

log = logging.getLogger(__name__)

OPEN = ("pending",)
FINAL = ("done", "failed", "denied", "withdrawn", "expired")

# An executor acts on an approved request and returns its outcome:
#   {"status": "done"|"failed"|..., "detail": str, ...}
Executor = Callable[[Any, dict], dict]
EXECUTORS: dict[str, Executor] = {}
# Actions on a single session (the target's snapshot holds pid + backend_start).
SESSION_ACTIONS = ("cancel", "terminate")


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
        if not self.directory.allowed(user, access.requesters):
            return f"you are not allowed to request kills in `{env}` (access.requesters)"
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
            offered = target["payload"].get("actions")  # a session token may name the actions it was drawn with
            if offered is not None and action not in offered:
                return None, f"`{action}` is not what this button was issued for"
        elif action in SESSION_ACTIONS or action not in (target["payload"].get("actions") or ()):
            # bulk and database targets name the actions their token was issued for
            return None, f"`{action}` is not what this button was issued for"
        refusal = self.may_request(target["env"], user, channel)
        if refusal:
            return None, refusal
        return target, None

    def submit(self, token: str, action: str, user: str, channel: str | None, reason: str | None) -> Result:
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
        now = time.time()
        request = self.store.create_request(
            env=target["env"],
            host=target["host"],
            action=action,
            target_token=token,
            target=target["payload"],
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
            # 3. not the requester (unless self-approval is allowed)
            if user == req["requester"] and verdict == "approve" and not access.self_approval:
                return Result(
                    False,
                    "you made this request, so another approver must decide it (access.self_approval is false)",
                )
            # 4. the approver is allowed
            if not self.directory.allowed(user, access.approvers):
                return Result(False, f"you are not an approver for `{req['env']}` (access.approvers)")
            # 5. act
            if verdict == "deny":
                self.store.transition(c, request_id, "pending", "denied", decided_at=now, decided_by=user)
                done = self.store.get_request(request_id, conn=c)
                self._audit(done, "denied", user, conn=c)
                KILL_REQUESTS.labels(req["env"], req["action"], "denied", "denied").inc()
                return Result(True, "denied", done, changed=True)
            if not self.store.add_approval(c, request_id, user):
                return Result(False, "you have already approved this request; it needs another approver")
            approvers = self.store.approvers_of(request_id, conn=c)
            self._audit(req, "approved", user, conn=c)
            if len(approvers) < access.approvals_required:
                return Result(
                    True,
                    f"approval {len(approvers)} of {access.approvals_required} recorded",
                    self.store.get_request(request_id, conn=c),
                    changed=True,
                )
            if not self.store.transition(
                c, request_id, "pending", "executing", decided_at=now, decided_by=",".join(approvers)
            ):
                return Result(False, "another approval got there first; nothing was changed")
            to_execute = self.store.get_request(request_id, conn=c)
        # The caller sends the signal with execute(), outside the row lock (it can take seconds) and after
        # redrawing the message as "acting now"; the state is 'executing' until then.
        return Result(True, "approved", to_execute, changed=True, extra={"execute": True})

    def execute(self, req: dict) -> Result:
        run = EXECUTORS.get(req["action"])
        try:
            outcome = run(self, req) if run else {"status": "failed", "detail": f"unknown action {req['action']}"}
        except Exception as exc:  # never leave a request in 'executing'
            log.exception("executing request %s failed", req["id"])
            outcome = {"status": "failed", "detail": f"the bot failed while acting ({type(exc).__name__}); see logs"}
        final = "done" if outcome.get("status") == "done" else "failed"
        with self.store.tx() as c:
            self.store.transition(c, req["id"], "executing", final, outcome=outcome)
            done = self.store.get_request(req["id"], conn=c)
        KILL_REQUESTS.labels(req["env"], req["action"], final, outcome.get("status", "failed")).inc()
        return Result(True, outcome.get("detail", final), done, changed=True)

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
            if req["updated_at"] > limit:
                continue
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
    res = signal(wf.dbs, req["env"], req["host"], req["action"], int(t["pid"]), t["backend_start"])
    outcome = {"status": res.status, "detail": res.detail, "signalled": res.signalled}
    wf._audit({**req, "outcome": outcome}, "executed" if res.ok else res.status, None, result=res.detail)
    return outcome
