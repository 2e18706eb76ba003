"""Button tokens: what a Cancel/Terminate button may act on, decided and stored by the bot.

A listing stores a snapshot of every session it offers buttons for (pid, backend_start at full
microsecond precision, who/what it was); the button carries only the random token. A click with an
unknown token, or one from another channel than the listing's, acts on nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.postgres.models import Session
from bot.state.store import StateStore


def session_snapshot(s: Session) -> dict:
    what, secs = s.duration
    return {
        "pid": s.pid,
        "backend_start": s.backend_start.isoformat(timespec="microseconds"),
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
