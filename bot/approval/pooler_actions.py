"""Disconnect client (issue 25): the approved ``KILL_CLIENT`` of one PgBouncer client.

The request covers exactly the client shown: its ``id`` (PgBouncer 1.24+, stable while it is connected)
with the address and port it had, on the pooler named in the snapshot. Just before acting the pooler is
asked again (:func:`bot.postgres.pgbouncer.kill_client`): a client that left, or an id now used by
another connection, is not touched and the outcome says so; after acting, the outcome says whether the
client is gone.
"""

from __future__ import annotations

from bot.approval.models import OutcomeStatus, Request, SessionTarget, SignalOutcome
from bot.approval.ports import Execution
from bot.postgres import pgbouncer

STATUS = {
    "done": OutcomeStatus.DONE,
    "gone": OutcomeStatus.GONE,
    "moved": OutcomeStatus.MOVED,
    "refused": OutcomeStatus.REFUSED,
    "not_done": OutcomeStatus.NOT_DONE,
    "failed": OutcomeStatus.FAILED,
}


def disconnect_refusal(target: SessionTarget) -> str | None:
    """Why Disconnect client cannot be requested for this session (mrkdwn), or None."""
    p = target.pooled
    if p is None:
        return "this session has no pooler client linked to it: Disconnect client is for sessions opened by PgBouncer"
    if p.disconnect_refusal:
        return p.disconnect_refusal
    if p.client_id is None:
        return "the pooler showed no client id for this client"
    return None


def disconnect_client(ex: Execution, req: Request) -> SignalOutcome:
    """The executor of ``disconnect_client`` (never raises on purpose)."""
    t = req.target
    if not isinstance(t, SessionTarget) or t.pooled is None or t.pooled.client_id is None:
        outcome = SignalOutcome(status=OutcomeStatus.REFUSED, detail="the request names no pooler client")
    else:
        environment = ex.config.environments.get(req.env)
        pooler = environment.poolers.get(t.pooled.pooler) if environment is not None else None
        if pooler is None:
            outcome = SignalOutcome(status=OutcomeStatus.REFUSED,
                                    detail=f"pooler {t.pooled.pooler} is no longer configured: nothing was done")
        else:
            res = pgbouncer.kill_client(pooler, t.pooled.client_id, addr=t.pooled.addr, port=t.pooled.port)
            outcome = SignalOutcome(status=STATUS.get(res.status, OutcomeStatus.FAILED), detail=res.detail,
                                    signalled=res.status in ("done", "not_done"))
    event = "executed" if outcome.signalled else outcome.status.value
    done = req.model_copy(update={"outcome": outcome})
    if ex.audit_durably is not None:
        ex.audit_durably(done, event, None, outcome.detail)
    else:
        ex.store.audit_request(done, event, None, result=outcome.detail)
    return outcome
