"""One audit line for a request event (``<action>:<event>``), with what the request acted on."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from bot.approval.models import Request
from bot.state.store import StateStore


def audit_request(
    store: StateStore,
    req: Request,
    event: str,
    actor: str | None,
    conn: Connection | None = None,
    result: str | None = None,
) -> None:
    s = req.session
    if result is None and req.outcome is not None:
        result = req.outcome.detail
    store.add_audit(
        conn,
        env=req.env,
        host=req.host,
        request_id=req.id,
        event=f"{req.action}:{event}",
        actor=actor,
        pid=s.pid if s else None,
        backend_start=s.backend_start if s else None,
        db_user=s.user if s else None,
        application=s.application if s else None,
        query=s.query if s else None,
        reason=req.reason,
        result=result,
    )
