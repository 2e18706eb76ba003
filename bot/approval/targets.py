"""Session snapshots behind button tokens, and what Cancel / Terminate do once approved.

Tokens are issued and reused in one place, :mod:`bot.approval.tokens`, from the snapshots made here.

A listing stores a snapshot of every session it offers buttons for (pid, backend_start at full
microsecond precision, who/what it was, and the query_start / xact_start / state_change a signal is
bound to); the button carries only the random token. A click with an unknown token, or one from
another channel than the listing's, acts on nothing. A token is honoured for ``access.request_ttl``
after it was issued (:func:`token_age_refusal`); a living lag alert issues fresh ones as it is updated.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TypeVar, overload

from bot.approval.ids import ALLOW_CONNECTIONS
from bot.approval.models import (
    BulkTarget,
    DatabaseTarget,
    OutcomeStatus,
    PooledClientRef,
    Request,
    SessionRef,
    SessionSnapshot,
    SessionTarget,
    SignalOutcome,
    StoredTarget,
)
from bot.approval.ports import Execution
from bot.durations import format_duration
from bot.phrase import Phrase
from bot.postgres.models import Session, iso
from bot.postgres.signals import signal
from bot.state.store import StateStore


def session_ref(s: Session, *, state_change: datetime | None = None, changed_after_listing: bool = False) -> SessionRef:
    """The one way a :class:`~bot.postgres.models.Session` becomes a stored
    :class:`~bot.approval.models.SessionRef`: the session named by ``(pid, backend_start)`` at full
    microsecond precision, and who and what it was when read. The bulk snapshots are these (*Terminate
    these N* under a listing and under the watch's connections alert, clear-db's *Terminate all*); a
    button's snapshot (:func:`session_snapshot`) is built on it. It keeps no query text (a bulk
    snapshot never shows one; clear-db reads it unredacted, only for the ignore rules).

    ``state_change`` is what a bulk terminate binds the session to (it is skipped if its state changed
    since): None binds nothing, as clear-db does (it empties a database whatever its sessions do).
    ``changed_after_listing``: the session was seen in use between the listing and the snapshot (it is
    never terminated).
    """
    return SessionRef(
        pid=s.pid,
        backend_start=iso(s.backend_start),
        state_change=iso(state_change),
        changed_after_listing=changed_after_listing,
        user=s.user,
        database=s.database,
        application=s.application,
        client_addr=s.client_addr,
        state=s.state,
        state_secs=s.state_secs,
        cannot_signal=s.cannot_signal,
        in_transaction=s.xact_start is not None,
    )


Snapshot = TypeVar("Snapshot", bound=SessionSnapshot)


@overload
def session_snapshot(s: Session, listed_at: float | None = None) -> SessionTarget: ...
@overload
def session_snapshot(s: Session, listed_at: float | None = None, *, kind: type[Snapshot]) -> Snapshot: ...
def session_snapshot(s: Session, listed_at: float | None = None, *,
                     kind: type[SessionSnapshot] = SessionTarget) -> SessionSnapshot:
    """What the approver will see and what a signal is bound to: the one way a
    :class:`~bot.postgres.models.Session` (of a listing, Details, the lock tree, a lag culprit or a watch
    alert) becomes the snapshot a Cancel / Terminate token (``kind`` :class:`SessionTarget`) or a Details
    token (:class:`~bot.approval.models.DetailsTarget`) stores: :func:`session_ref` and what a button adds.

    Besides ``(pid, backend_start)`` it keeps ``query_start``, ``xact_start`` and ``state_change``
    exactly: a cancel or terminate acts only while the session is still doing what was listed
    (bot.postgres.signals). ``listed_at`` (epoch seconds) is shown on the request and approval.
    """
    what, secs = s.duration
    return kind(**dict(
        session_ref(s, state_change=s.state_change),
        query_start=iso(s.query_start),
        xact_start=iso(s.xact_start),
        listed_at=time.time() if listed_at is None else listed_at,
        query=s.query,
        categories=tuple(c.value for c in s.categories),
        duration_what=what,
        duration_secs=secs,
        idle_in_transaction=s.is_idle_in_transaction,
        # an autovacuum worker is only ever cancelled (stopping the process is not the bot's to do)
        actions=("cancel",) if s.is_autovacuum else None,
        pooled=pooled_ref(s),
    ))


def pooled_ref(s: Session) -> PooledClientRef | None:
    """The pooler's client linked to this session when it was read, or None (a direct connection)."""
    via = s.via
    if via is None or via.client is None:
        return None
    c = via.client
    return PooledClientRef(
        pooler=via.pooler, pool=via.pool, pool_mode=via.pool_mode, client_id=c.id, addr=c.addr, port=c.port,
        application=c.application, user=c.user, database=c.database, disconnect_refusal=via.kill_client_refusal,
    )


def listing_command(env: str, host: str = "primary") -> str:
    """The command that lists ``env``'s sessions again (for 'list again' answers)."""
    return f"/pgsessions {env}" + ("" if host == "primary" else f" {host}")


def read_at(stored: StoredTarget) -> float:
    """When the read behind a button token was made (epoch seconds): the snapshot's ``listed_at`` or
    the token's issue time, whichever is earlier (a token is never younger than the read it came from)."""
    created = float(stored.created_at or 0)
    listed = getattr(stored.target, "listed_at", None)
    return min(created, float(listed)) if listed is not None else created


def fresh_listing_command(stored: StoredTarget) -> str:
    """The command whose answer has fresh buttons for what ``stored`` showed (plain: names in it come
    from a database or a person, so it is shown through ``code()``)."""
    host = stored.host or "primary"
    target = stored.target
    if isinstance(target, DatabaseTarget):
        return f"/pgsessions {stored.env} clear-db {target.database}"
    if isinstance(target, BulkTarget) and target.filters:
        return f"{listing_command(stored.env, host)} {target.filters}"
    return listing_command(stored.env, host)


def ages(stored: StoredTarget, action: str) -> bool:
    """Does ``access.request_ttl`` bound this token? Every token that can lead to a signal: a session's
    Cancel / Terminate (listing, lag culprit, lock root, Details, alerts), *Terminate these N* (app
    sweep, connections alert) and clear-db's *Terminate all* / *Block new connections and terminate
    all*. Only *Allow connections again* does not: it signals nobody, and it must keep working under a
    request that closed a database for as long as the database stays closed (housekeeping re-issues it)."""
    return not (isinstance(stored.target, DatabaseTarget) and action == ALLOW_CONNECTIONS)


def token_age_refusal(stored: StoredTarget, request_ttl: float, now: float | None = None) -> Phrase | None:
    """Why a button issued with ``stored`` is too old to act on, or None.

    A listing is a photograph: after ``access.request_ttl`` from the read it came from its buttons stop
    working and the click is answered with how to get a fresh one.
    """
    now = time.time() if now is None else now
    age = now - read_at(stored)
    if age <= request_ttl:
        return None
    return Phrase.of(
        f"this button is from a listing made {format_duration(age)} ago, longer than access.request_ttl "
        f"({format_duration(request_ttl)}) allows: run {{command}} for a fresh listing and click there",
        command=fresh_listing_command(stored),
    )


BINDING_KEYS = ("state", "query_start", "xact_start", "state_change")


def reusable_token(stored: StoredTarget | None, s: Session, request_ttl: float, now: float | None = None) -> bool:
    """May a message that is redrawn (a living lag alert) keep showing the button of ``stored``?

    Only while the token is young (less than half of ``access.request_ttl``: it must still work when
    the next update comes) and the session is still doing exactly what the token's snapshot says;
    otherwise the redraw issues a fresh token.
    """
    if stored is None or not isinstance(stored.target, SessionTarget):
        return False
    now = time.time() if now is None else now
    if now - read_at(stored) > request_ttl / 2:
        return False
    snap = session_snapshot(s, listed_at=0.0)
    return all(getattr(stored.target, k) == getattr(snap, k) for k in BINDING_KEYS)


def listed_facts(store: StateStore, req: Request, s: SessionTarget) -> dict[str, object]:
    """What a signal is bound to: the snapshot, with its listing time.

    A request made by an earlier release has neither the exact timestamps nor ``listed_at``; its
    button token (kept a week) says when the listing was made, which is what the signalling statement
    needs to recognise the query, transaction or idle period that was listed (begun at or before the
    listing, still going on)."""
    facts: dict[str, object] = s.model_dump()
    if facts.get("listed_at") is None and req.target_token:
        stored = store.get_target(req.target_token)
        if stored is not None:
            facts["listed_at"] = stored.created_at
    return facts


def signal_session(ex: Execution, req: Request) -> SignalOutcome:
    """The executor of ``cancel`` and ``terminate``: signal the one approved backend, if it is still that
    backend and still doing what the approver saw (fail closed)."""
    s = req.session
    if s is None or s.backend_start is None:
        return SignalOutcome(status=OutcomeStatus.FAILED, detail="the request names no session")
    # protect is re-checked in the signalling statement: a session that became protected since is not signalled
    guard = ex.guard_for(req.env)  # the access policy's
    res = signal(ex.dbs, req.env, req.host, req.action, s.pid, s.backend_start, listed=listed_facts(ex.store, req, s),
                 guard=guard)
    outcome = SignalOutcome(status=OutcomeStatus(res.status), detail=res.detail, signalled=res.signalled)
    # every signal sent has an 'executed' entry (also a cancel/terminate that was sent but not yet
    # effective: not_done); a signal not sent is recorded by its reason (gone, moved, refused, …)
    event = "executed" if res.signalled or res.ok else res.status
    done = req.model_copy(update={"outcome": outcome})
    if ex.audit_durably is not None:
        ex.audit_durably(done, event, None, res.detail)
    else:
        ex.store.audit_request(done, event, None, result=res.detail)
    return outcome
