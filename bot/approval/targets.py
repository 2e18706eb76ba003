"""Button tokens: what a Cancel/Terminate button may act on, decided and stored by the bot.

A listing stores a snapshot of every session it offers buttons for (pid, backend_start at full
microsecond precision, who/what it was); the button carries only the random token. A click with an
unknown token, or one from another channel than the listing's, acts on nothing. A token is honoured
for ``access.request_ttl`` after it was issued (:func:`token_age_refusal`); a living lag alert issues
fresh ones as it is updated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from bot.durations import format_duration
from bot.postgres.models import Session
from bot.state.store import StateStore


def _exact(when: datetime | None) -> str | None:
    """A timestamp at full microsecond precision (the signal compares it for equality), or None."""
    return when.isoformat(timespec="microseconds") if when is not None else None


def session_snapshot(s: Session, listed_at: float | None = None) -> dict:
    """What the approver will see and what a signal is bound to.

    Besides ``(pid, backend_start)`` it keeps ``query_start``, ``xact_start`` and ``state_change``
    exactly: a cancel or terminate acts only while the session is still doing what was listed
    (bot.postgres.signals). ``listed_at`` (epoch seconds) is shown on the request and approval.
    """
    what, secs = s.duration
    return {
        "pid": s.pid,
        "backend_start": s.backend_start.isoformat(timespec="microseconds"),
        "query_start": _exact(s.query_start),
        "xact_start": _exact(s.xact_start),
        "state_change": _exact(s.state_change),
        "listed_at": time.time() if listed_at is None else listed_at,
        "user": s.user,
        "database": s.database,
        "application": s.application,
        "client_addr": s.client_addr,
        "state": s.state,
        "query": s.query,
        "categories": [c.value for c in s.categories],
        "duration_what": what,
        "duration_secs": secs,
        "idle_in_transaction": s.is_idle_in_transaction,
    }


def issue_session_tokens(
    store: StateStore, env: str, host: str, sessions: Iterable[Session], channel: str | None, user: str | None
) -> dict[int, str]:
    """Store a snapshot for every signalable session and return ``{pid: token}``."""
    chosen = [s for s in sessions if not s.cannot_signal]
    tokens = store.put_targets("session", env, host, channel, user, [session_snapshot(s) for s in chosen])
    return {s.pid: t for s, t in zip(chosen, tokens, strict=True)}


def issue_details_tokens(
    store: StateStore, env: str, host: str, sessions: Iterable[Session], channel: str | None, user: str | None
) -> dict[int, str]:
    """Tokens for the Details button of every session shown (signalable or not); kind ``details``.

    A details token only lets its holder read the session it names (pid + backend_start); the kill
    workflow refuses it for Cancel/Terminate (it is not a ``session`` target)."""
    chosen = list({s.pid: s for s in sessions}.values())
    tokens = store.put_targets("details", env, host, channel, user, [session_snapshot(s) for s in chosen])
    return {s.pid: t for s, t in zip(chosen, tokens, strict=True)}


def listing_command(env: str, host: str = "primary") -> str:
    """The command that lists ``env``'s sessions again (for 'list again' answers)."""
    return f"/pgsessions {env}" + ("" if host == "primary" else f" {host}")


def token_age_refusal(target: dict, request_ttl: float, now: float | None = None) -> str | None:
    """Why a button issued with ``target`` is too old to act on, or None.

    A listing is a photograph: after ``access.request_ttl`` its buttons stop working and the click is
    answered with how to get a fresh one.
    """
    now = time.time() if now is None else now
    age = now - float(target.get("created_at") or 0)
    if age <= request_ttl:
        return None
    return (
        f"this button is from a listing made {format_duration(age)} ago, longer than access.request_ttl "
        f"({format_duration(request_ttl)}) allows: run `{listing_command(target['env'], target.get('host') or 'primary')}` for a fresh listing and click there"
    )


BINDING_KEYS = ("state", "query_start", "xact_start", "state_change")


def reusable_token(target: dict | None, s: Session, request_ttl: float, now: float | None = None) -> bool:
    """May a message that is redrawn (a living lag alert) keep showing the button of ``target``?

    Only while the token is young (less than half of ``access.request_ttl``: it must still work when
    the next update comes) and the session is still doing exactly what the token's snapshot says;
    otherwise the redraw issues a fresh token.
    """
    if target is None:
        return False
    now = time.time() if now is None else now
    if now - float(target.get("created_at") or 0) > request_ttl / 2:
        return False
    snap = session_snapshot(s, listed_at=0.0)
    payload = target.get("payload") or {}
    return all(payload.get(k) == snap[k] for k in BINDING_KEYS)
