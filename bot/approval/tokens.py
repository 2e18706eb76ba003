"""Button tokens: the one way to issue them, and to reuse them when a message is drawn again.

Every button the bot draws carries only a random token; the state store keeps, under it, what the
button may act on (:mod:`bot.approval.models`: a ``session`` snapshot for Cancel / Terminate, a
``details`` one for Details, a ``bulk`` one for *Terminate these N*). Listings, ``lag``, ``locks``,
the Details modal and every alert get their tokens here:

* :func:`issue` — one state-store write for every button of one message: Cancel / Terminate for the
  signalable sessions (all, or only those ``kill`` names; ``actions`` narrows what one token may ask
  for, e.g. a pile-up's root), Details for every session shown.
* :func:`reissue` — a message redrawn in place (an alert, every minute): a token drawn before is kept
  while it stays valid until the next redraw (the same channel, and for Cancel / Terminate
  :func:`bot.approval.targets.reusable_token`: young enough and the session still doing what its
  snapshot says), else a fresh one is issued with the others in one write. What it keeps between
  redraws is a plain ``{str: str}`` memory (stored on the incident).
* :func:`reissue_bulk` — the one bulk token of a redrawn message, kept while it covers the same sessions
  in the same channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bot.approval.models import BulkTarget, DetailsTarget, Target
from bot.approval.targets import reusable_token, session_snapshot
from bot.postgres.models import Session
from bot.state.store import StateStore

Memory = dict[str, str]


@dataclass(frozen=True)
class Tokens:
    """``{pid: token}`` of one message's buttons."""

    kill: dict[int, str] = field(default_factory=dict)
    details: dict[int, str] = field(default_factory=dict)


def issue(
    store: StateStore,
    env: str,
    host: str,
    channel: str | None,
    user: str | None,
    sessions: Iterable[Session],
    *,
    kill: bool | Collection[int] = True,
    details: bool | Collection[int] = True,
    actions: Callable[[Session], tuple[str, ...]] | None = None,
) -> Tokens:
    """Tokens for one message in one write. ``kill``: Cancel / Terminate for every signalable session
    (True), none (False), or those pids; ``details`` likewise for Details (a session that cannot be
    signalled gets one too). ``actions``: what a session's Cancel / Terminate token may ask for (default
    both)."""
    shown = list({s.pid: s for s in sessions}.values())
    signalable = [s for s in shown if _chosen(kill, s.pid) and not s.cannot_signal]
    readable = [s for s in shown if _chosen(details, s.pid)]
    now = time.time()  # one read: a session's Cancel / Terminate and Details snapshots say the same
    targets: list[Target] = []
    for s in signalable:
        snap = session_snapshot(s, now)
        targets.append(snap.model_copy(update={"actions": actions(s)}) if actions is not None else snap)
    targets += [session_snapshot(s, now, kind=DetailsTarget) for s in readable]
    tokens = store.put_targets(env, host, channel, user, targets)
    n = len(signalable)
    return Tokens(kill={s.pid: t for s, t in zip(signalable, tokens[:n], strict=True)},
                  details={s.pid: t for s, t in zip(readable, tokens[n:], strict=True)})


def _chosen(which: bool | Collection[int], pid: int) -> bool:
    return which if isinstance(which, bool) else pid in which


def reissue(
    store: StateStore,
    env: str,
    host: str,
    channel: str,
    shown: Sequence[tuple[str, Session]],
    memory: Mapping[str, str],
    *,
    request_ttl: float,
    kill: bool = True,
    actions: Callable[[Session], tuple[str, ...]] | None = None,
) -> tuple[Tokens, Memory]:
    """The tokens of a message drawn again: ``shown`` are (identity key, session) pairs, ``memory`` what
    the previous drawings kept. Returns the tokens to draw and the memory to keep."""
    known: Memory = dict(memory)
    out = Tokens()
    fresh_kill: list[Session] = []
    fresh_details: list[Session] = []
    keys: dict[int, str] = {}
    for key, s in shown:
        keys[s.pid] = key
        if kill and not s.cannot_signal:
            tok = known.get(key)
            if (tok and known.get(f"channel:{key}") == channel
                    and reusable_token(store.get_target(tok), s, request_ttl)):
                out.kill[s.pid] = tok
            else:
                fresh_kill.append(s)
        tok = known.get(f"details:{channel}:{key}")
        if tok:
            out.details[s.pid] = tok
        else:
            fresh_details.append(s)
    if fresh_kill or fresh_details:
        issued = issue(store, env, host, channel, None, [*fresh_kill, *fresh_details],
                       kill={s.pid for s in fresh_kill}, details={s.pid for s in fresh_details}, actions=actions)
        for pid, tok in issued.kill.items():
            out.kill[pid] = known[keys[pid]] = tok
            known[f"channel:{keys[pid]}"] = channel
        for pid, tok in issued.details.items():
            out.details[pid] = known[f"details:{channel}:{keys[pid]}"] = tok
    return out, known


def reissue_bulk(store: StateStore, env: str, host: str, channel: str, target: BulkTarget, ident: str,
                 memory: Mapping[str, str] | None, *, max_age: float) -> tuple[str, Memory]:
    """The bulk token of a message drawn again: the one drawn before while it covers the same sessions
    (``ident``) in the same channel and was issued at most ``max_age`` seconds ago (a button ages like every
    button: ``access.request_ttl`` from the read it came from), else a fresh one. Returns the token and the
    memory to keep."""
    prev = memory or {}
    young = time.time() - float(prev.get("at") or 0) <= max_age
    if prev.get("ident") == ident and prev.get("channel") == channel and prev.get("token") and young:
        return prev["token"], dict(prev)
    (token,) = store.put_targets(env, host, channel, None, [target])
    return token, {"ident": ident, "channel": channel, "token": token, "at": str(target.listed_at or time.time())}
