"""What a bulk button may act on: refusals, snapshots and their tokens.

A bulk target (:class:`~bot.approval.models.BulkTarget`, :class:`~bot.approval.models.DatabaseTarget`)
stores, with the button's random token, the actions the token was issued for (``actions``, checked by
:meth:`Workflow.target_for`) and the exact sessions shown (``sessions``, whose length
``access.max_bulk`` caps: :class:`bot.approval.policy.Policy`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from bot.approval.ids import ALLOW_CONNECTIONS, CLEAR_DB, CLEAR_DB_BLOCK
from bot.approval.ids import (
    TERMINATE_BULK as TERMINATE_BULK,  # re-exported: bot.watch.watcher (off-limits) imports it here
)
from bot.approval.models import BulkTarget, DatabaseTarget, Request, SessionRef
from bot.approval.policy import Policy
from bot.approval.targets import session_ref
from bot.config import Config
from bot.phrase import Phrase
from bot.postgres.bulk import DatabaseInfo, state_changes
from bot.postgres.models import Filters, Listing, Session
from bot.postgres.pools import Databases
from bot.state.store import StateStore

log = logging.getLogger(__name__)

# The listing categories a "Terminate these N" is offered for, and the state a session must still be in.
STATE_LIKE = {"idle": "idle", "idle-tx": "idle in transaction%"}
STATE_WORDS = {"idle": "idle", "idle-tx": "idle in transaction"}


# --- refusals -------------------------------------------------------------------------------------


def state_identity(store: StateStore) -> tuple[str, str, str] | None:
    """(postmaster start, port, database) of the bot's state database, or None for SQLite.

    Raises if the state database cannot be asked (then nothing should be offered: the bot cannot tell
    whether the target is its own state)."""
    return store.server_identity()


def is_state_database(info: DatabaseInfo, state_id: tuple[str, str, str] | None) -> bool:
    return state_id is not None and (info.postmaster_start, info.port, info.name) == state_id


def database_refusal(
    config: Config, env: str, info: DatabaseInfo, state_id: tuple[str, str, str] | None
) -> Phrase | None:
    """Why clear-db must not act on this database at all, or None (a :class:`~bot.phrase.Phrase`: the
    names in it are drawn, escaped, by ``bot/render/``).

    The bot's state database and templates are always refused; ``postgres`` unless ``clear_db.allow``
    lists it (see docs/operating.md)."""
    allow = config.environments[env].clear_db.allow
    name = info.name
    if info.in_recovery:
        return Phrase.of("the {env} DSN points at a server in recovery (a standby): clear-db acts on the primary only",
                         env=env)
    if is_state_database(info, state_id):
        return Phrase.of(
            "{name} is the bot's own state database (config `state:`): terminating its connections would "
            "cut the bot off from its requests and audit log in the middle of acting, so clear-db never acts on it",
            name=name,
        )
    if info.is_template:
        return Phrase.of(
            "{name} is a template database (CREATE DATABASE copies it): clear-db never acts on templates, "
            "whatever `clear_db.allow` says; use psql for the rare case that needs it",
            name=name,
        )
    if name == "postgres" and name not in allow:
        return Phrase.of(
            "`postgres` is the maintenance database that tools, monitoring and often the bot itself connect to: "
            "clear-db refuses it unless it is listed in `environments.{env}.clear_db.allow`",
            env=env,
        )
    return None


def block_refusal(info: DatabaseInfo) -> Phrase | None:
    """Why *Block new connections* cannot work for this database, or None."""
    if info.name == info.bot_database:
        return Phrase.of(
            "the bot itself connects to {name} (its DSN): once closed, the bot could not open a new "
            "connection to allow connections again",
            name=info.name,
        )
    if not info.bot_can_alter:
        return Phrase.of(
            "the bot's role {user} does not own {name} (owner {owner}) and is not a "
            "superuser, so PostgreSQL would refuse `ALTER DATABASE … WITH ALLOW_CONNECTIONS false`; make the "
            "bot's role the owner of {name} (or a member of {owner}) to offer it",
            user=info.bot_user, name=info.name, owner=info.owner,
        )
    return None


def database_offers(
    policy: Policy, env: str, info: DatabaseInfo, sessions: list[Session]
) -> tuple[Phrase | None, Phrase | None, Phrase | None]:
    """Why each clear-db button is not offered, or None: (*Terminate all*, *Block new connections and
    terminate all*, *Allow connections again*)."""
    off_text = policy.signalling_off(env)
    off = Phrase.words(off_text) if off_text else None
    too_many_text = policy.too_many(env, len(sessions))
    too_many = Phrase.words(too_many_text) if too_many_text else None
    terminate_why = off or (Phrase.words("no client session is connected") if not sessions else None) or too_many
    block_why = off or block_refusal(info) or too_many
    allow_why = off or (
        None if info.bot_can_alter else Phrase.of("the bot's role {user} does not own {name} and is not a superuser",
                                                  user=info.bot_user, name=info.name)
    )
    return terminate_why, block_why, allow_why


# --- snapshots ------------------------------------------------------------------------------------


def terminable(connected: Iterable[Session]) -> list[Session]:
    """The client sessions a clear-db covers: every client backend but the bot's own connections.

    Those the bot's role cannot signal stay in (they are reported as such: the database is not empty)."""
    return [c for c in connected if c.is_client and not c.is_bot]


def issue_database_tokens(
    store: StateStore,
    env: str,
    host: str,
    channel: str | None,
    user: str | None,
    info: DatabaseInfo,
    sessions: list[Session],
    offer_terminate: bool,
    offer_block: bool,
    offer_allow: bool,
) -> dict[str, str]:
    """``{action: token}`` for the buttons of a clear-db message (one token may serve two actions)."""
    out: dict[str, str] = {}
    common = DatabaseTarget(database=info.name, oid=info.oid, owner=info.owner, listed_at=time.time())
    acts = ([CLEAR_DB] if offer_terminate else []) + ([CLEAR_DB_BLOCK] if offer_block else [])
    if acts:
        target = common.model_copy(
            # no state_change: clear-db terminates every session of the snapshot whatever it does since
            update={"actions": tuple(acts), "sessions": tuple(session_ref(c) for c in sessions)}
        )
        (token,) = store.put_targets(env, host, channel, user, [target])
        for a in acts:
            out[a] = token
    if offer_allow:
        (token,) = store.put_targets(
            env, host, channel, user, [common.model_copy(update={"actions": (ALLOW_CONNECTIONS,)})]
        )
        out[ALLOW_CONNECTIONS] = token
    return out


def issue_allow_token(store: StateStore, req: Request, oid: int | None) -> str:
    """The *Allow connections again* button drawn under a request that closed a database."""
    t = req.target
    assert isinstance(t, DatabaseTarget)
    target = DatabaseTarget(
        actions=(ALLOW_CONNECTIONS,),
        database=t.database,
        oid=oid,
        owner=t.owner,
        listed_at=time.time(),
        source_request=req.id,
    )
    (token,) = store.put_targets(req.env, req.host, req.channel, None, [target])
    return token


def in_category(state: str | None, category: str) -> bool:
    if category == "idle":
        return state == "idle"
    return bool(state and state.startswith("idle in transaction"))


def bulk_category(filters: Filters) -> str | None:
    """``idle`` / ``idle-tx`` when the listing's filter is exactly that category with ``--app``, else None."""
    if filters.app is None or len(filters.categories) != 1:
        return None
    (cat,) = tuple(filters.categories)
    return cat if cat in STATE_LIKE else None


@dataclass(frozen=True)
class BulkOffer:
    category: str
    token: str | None
    sessions: tuple[SessionRef, ...]
    refusal: str | None = None
    unsignalable: int = 0
    protected: int = 0  # listed sessions of the category that ``protect`` leaves out of the offer


def offer_for_listing(
    dbs: Databases,
    store: StateStore,
    policy: Policy,
    listing: Listing,
    filters: Filters,
    channel: str | None,
    user: str | None,
) -> BulkOffer | None:
    """Snapshot what a ``idle|idle-tx --app NAME`` listing found and store it for *Terminate these N*.

    The listing's sessions are read again by (pid, backend_start) for their exact ``state_change``: a
    session that was used between the listing and this read (its state or idle time no longer matches)
    is kept with no state_change of its own and so is skipped at execution. Returns None when the
    listing's filter does not call for the offer.
    """
    category = bulk_category(filters)
    if category is None:
        return None
    env, host = listing.env, listing.host
    listed: list[Session] = [s for s in listing.sessions if in_category(s.state, category)]
    # protect: never offered, so never in the snapshot (the listing's rows say why)
    chosen = [s for s in listed if not policy.protected(env, s)]
    left_out = len(listed) - len(chosen)
    if not chosen:
        return BulkOffer(category, None, (), protected=left_out)
    too_many = policy.too_many(env, len(chosen))
    if too_many:
        return BulkOffer(
            category,
            None,
            tuple(SessionRef(pid=s.pid) for s in chosen),
            refusal=f"{too_many}: narrow the list with `--older`, `--user` or `--db`",
            protected=left_out,
        )
    with dbs.connection(env, host, op="bulk_snapshot") as conn:
        exact = state_changes(conn, [(s.pid, s.started) for s in chosen])
    sessions = []
    for s in chosen:
        now = exact.get((s.pid, s.started))
        state_change = None
        used = True
        if now is not None:
            state, changed, secs = now
            # unchanged since the listing: same state, and idle at least as long as the listing saw
            if state == s.state and (s.state_secs is None or secs + 0.001 >= s.state_secs):
                state_change, used = changed, False
        sessions.append(session_ref(s, state_change=state_change, changed_after_listing=used))
    target = BulkTarget(
        actions=(TERMINATE_BULK,),
        category=category,
        state_like=STATE_LIKE[category],
        filters=filters.describe(),
        app=filters.app,
        user=filters.user,
        database=filters.database,
        min_seconds=filters.min_seconds,
        listed_at=time.time(),
        sessions=tuple(sessions),
    )
    (token,) = store.put_targets(env, host, channel, user, [target])
    return BulkOffer(category, token, tuple(sessions), unsignalable=sum(1 for s in chosen if s.cannot_signal),
                     protected=left_out)
