"""Button tokens for sessions, and what Cancel / Terminate do once approved.

A listing stores a snapshot of every session it offers buttons for (pid, backend_start at full
microsecond precision, who/what it was); the button carries only the random token. A click with an
unknown token, or one from another channel than the listing's, acts on nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.approval.audit import audit_request
from bot.approval.models import OutcomeStatus, Request, SessionTarget, SignalOutcome, iso
from bot.approval.ports import Execution
from bot.postgres.models import Session
from bot.postgres.signals import signal
from bot.state.store import StateStore


def session_snapshot(s: Session) -> SessionTarget:
    what, secs = s.duration
    return SessionTarget(
        pid=s.pid,
        backend_start=iso(s.backend_start),
        user=s.user,
        database=s.database,
        application=s.application,
        client_addr=s.client_addr,
        state=s.state,
        query=s.query,
        categories=tuple(c.value for c in s.categories),
        duration_what=what,
        duration_secs=secs,
        idle_in_transaction=s.is_idle_in_transaction,
    )


def issue_session_tokens(
    store: StateStore, env: str, host: str, sessions: Iterable[Session], channel: str | None, user: str | None
) -> dict[int, str]:
    """Store a snapshot for every signalable session and return ``{pid: token}``."""
    chosen = [s for s in sessions if not s.cannot_signal]
    tokens = store.put_targets(env, host, channel, user, [session_snapshot(s) for s in chosen])
    return {s.pid: t for s, t in zip(chosen, tokens, strict=True)}


def signal_session(ex: Execution, req: Request) -> SignalOutcome:
    """The executor of ``cancel`` and ``terminate``: signal the one approved backend, if still it."""
    s = req.session
    if s is None or s.backend_start is None:
        return SignalOutcome(status=OutcomeStatus.FAILED, detail="the request names no session")
    res = signal(ex.dbs, req.env, req.host, req.action, s.pid, s.backend_start)
    outcome = SignalOutcome(status=OutcomeStatus(res.status), detail=res.detail, signalled=res.signalled)
    audit_request(ex.store, req.model_copy(update={"outcome": outcome}), "executed" if res.ok else res.status,
                  None, result=res.detail)
    return outcome
