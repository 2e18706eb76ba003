"""Slack edge of the bulk clean-ups: ``clear-db``, *Terminate these N* under an idle listing, the
``pgs_bulk:<action>:<token>`` buttons.

A bulk button opens a modal that submits through the same callback as a session's request
(``pgs_kill_request``), so clicking, requesting, approving and executing all go through
:mod:`bot.slack.kill_handlers` and :class:`~bot.approval.workflow.Workflow`; this module serves the
``clear-db`` command and draws the *Terminate these N* offer under a listing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot.approval.ids import ALLOW_CONNECTIONS, CLEAR_DB, CLEAR_DB_BLOCK
from bot.bulk.targets import (
    database_offers,
    database_refusal,
    issue_database_tokens,
    offer_for_listing,
    state_identity,
    terminable,
)
from bot.commands import ClearDb, ListSessions
from bot.postgres.bulk import connected_to, database_info, database_names
from bot.postgres.models import Listing
from bot.postgres.pools import DatabaseUnavailable
from bot.render.bulk import bulk_offer_blocks, clear_db_message, unknown_database
from bot.render.common import code, context, phrase
from bot.render.errors import unavailable
from bot.slack.context import Context
from bot.slack.edge import Router, post_message

log = logging.getLogger(__name__)


def handle_clear_db(rt: Context, cmd: ClearDb, body: dict[str, Any], respond: Callable[..., Any]) -> None:
    channel = body.get("channel_id")
    user = body.get("user_id")
    try:
        with rt.dbs.connection(cmd.env, cmd.host, op="clear_db_overview") as conn:
            info = database_info(conn, cmd.database)
            if info is None:
                respond(response_type="ephemeral", text=f":grey_question: {unknown_database(cmd.database, database_names(conn))}")
                return
            connected = connected_to(conn, cmd.database)
    except DatabaseUnavailable as exc:
        log.warning("clear-db overview %s/%s failed: %s", cmd.env, cmd.host, exc.reason)
        respond(response_type="ephemeral", text=f":warning: Could not read who is connected to {code(cmd.database)}: {unavailable(exc)}")
        return
    try:
        state_id = state_identity(rt.store)
    except Exception as exc:
        log.warning("clear-db: could not identify the state database: %s", type(exc).__name__)
        respond(
            response_type="ephemeral",
            text=":warning: The bot could not read its own state database, so it cannot tell whether "
            f"{code(cmd.database)} is that database: nothing is offered.",
        )
        return
    refusal = database_refusal(rt.config, cmd.env, info, state_id)
    if refusal:
        respond(response_type="ephemeral", text=f":no_entry_sign: clear-db refuses {code(info.name)}: {phrase(refusal)}.")
        return
    # as they may be offered (protect: the access policy marks them; they stay in, reported as such)
    connected = rt.policy.mark(cmd.env, connected)
    sessions = terminable(connected)
    # clear-db empties a database: sessions the ignore rules match are included, and counted
    _, ignored = rt.policy.without_ignored(cmd.env, sessions)
    terminate_why, block_why, allow_why = database_offers(rt.policy, cmd.env, info, sessions)
    tokens = issue_database_tokens(
        rt.store,
        cmd.env,
        cmd.host,
        channel,
        user,
        info,
        sessions,
        offer_terminate=terminate_why is None,
        offer_block=block_why is None,
        offer_allow=allow_why is None and not info.allow_connections,
    )
    msg = clear_db_message(
        cmd.env, info, connected, tokens=tokens, block_why=block_why, terminate_why=terminate_why, allow_why=allow_why,
        ignored=ignored,
    )
    post_message(rt.client, channel, msg, respond)


def listing_offer(rt: Context, cmd: ListSessions, listing: Listing, body: dict[str, Any]) -> list[dict[str, Any]]:
    """*Terminate these N* under an ``idle`` / ``idle-tx`` listing filtered with ``--app``."""
    if rt.policy.signalling_off(cmd.env):
        return []
    try:
        offer = offer_for_listing(
            rt.dbs, rt.store, rt.policy, listing, cmd.filters, body.get("channel_id"), body.get("user_id")
        )
    except DatabaseUnavailable as exc:
        return [context(f":warning: *Terminate these N* is not offered: {unavailable(exc)}")]
    except Exception:  # the listing itself must still be posted
        log.exception("preparing Terminate these N failed")
        return [context(":warning: *Terminate these N* is not offered: the bot failed while preparing it (see logs).")]
    if offer is None:
        return []
    drawn = min(len(listing.sessions), rt.config.environments[cmd.env].listing.max_sessions)
    return bulk_offer_blocks(
        category=offer.category,
        app=cmd.filters.app or "",
        token=offer.token,
        sessions=list(offer.sessions),
        drawn=drawn,
        refusal=offer.refusal,
        unsignalable=offer.unsignalable,
        protected=offer.protected,
        filters=cmd.filters.describe(),
    )


def register(rt: Context, router: Router) -> None:
    router.on(ClearDb)(handle_clear_db)
    router.listing_extras.append(listing_offer)


__all__ = ["ALLOW_CONNECTIONS", "CLEAR_DB", "CLEAR_DB_BLOCK", "handle_clear_db", "listing_offer", "register"]
