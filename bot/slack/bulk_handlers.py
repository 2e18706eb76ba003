"""Slack edge of the bulk clean-ups: ``clear-db``, *Terminate these N* under an idle listing, the
``pgs_bulk:<action>:<token>`` buttons.

A bulk button opens a modal that submits through the same callback as a session's request
(``pgs_kill_request``), so requesting, approving and executing all go through :class:`Workflow`; this
module only adds the bulk actions' renderer and the redraw hook their executors report progress with.
"""

from __future__ import annotations

import logging
import re

# importing bot.bulk.execute registers the bulk executors with the workflow
from bot.bulk.execute import refresh_closed_databases, repair_interrupted_blocks
from bot.bulk.targets import (
    ALLOW_CONNECTIONS,
    BULK_ACTIONS,
    CLEAR_DB,
    CLEAR_DB_BLOCK,
    block_refusal,
    database_refusal,
    issue_database_tokens,
    offer_for_listing,
    state_identity,
    terminable,
    unknown_database,
)
from bot.commands import ClearDb, ListSessions
from bot.postgres.bulk import connected_to, database_info, database_names
from bot.postgres.pools import DatabaseUnavailable
from bot.render.bulk import BULK_PREFIX, bulk_modal, bulk_offer_blocks, bulk_request_message, clear_db_message
from bot.render.common import code, context
from bot.slack.kill_handlers import REQUEST_RENDERERS, open_request_form, redraw, workflow
from bot.slack.listing_handlers import kill_disabled_reason

log = logging.getLogger(__name__)

BULK_ACTION = re.compile(
    rf"^{BULK_PREFIX}:({'|'.join(BULK_ACTIONS)}):([A-Za-z0-9_-]{{1,64}})$"
)
ANY_BULK_ACTION = re.compile(rf"^{BULK_PREFIX}:")


def handle_clear_db(rt, cmd: ClearDb, body: dict, respond) -> None:
    from bot.slack.app import post_message

    channel = body.get("channel_id")
    user = body.get("user_id")
    environment = rt.config.environments[cmd.env]
    try:
        with rt.dbs.connection(cmd.env, cmd.host, op="clear_db_overview") as conn:
            info = database_info(conn, cmd.database)
            if info is None:
                respond(response_type="ephemeral", text=f":grey_question: {unknown_database(cmd.database, database_names(conn))}")
                return
            connected = connected_to(conn, cmd.database)
    except DatabaseUnavailable as exc:
        log.warning("clear-db overview %s/%s failed: %s", cmd.env, cmd.host, exc.reason)
        respond(response_type="ephemeral", text=f":warning: Could not read who is connected to {code(cmd.database)}: {exc}")
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
        respond(response_type="ephemeral", text=f":no_entry_sign: clear-db refuses {code(info.name)}: {refusal}.")
        return
    sessions = terminable(connected)
    off = kill_disabled_reason(rt, cmd.env)
    max_bulk = environment.access.max_bulk
    terminate_why = off
    if terminate_why is None and not sessions:
        terminate_why = "no client session is connected"
    if terminate_why is None and len(sessions) > max_bulk:
        terminate_why = (
            f"{len(sessions)} sessions are more than `access.max_bulk` ({max_bulk}) allows in one request"
        )
    block_why = off or block_refusal(info)
    if block_why is None and len(sessions) > max_bulk:
        block_why = f"{len(sessions)} sessions are more than `access.max_bulk` ({max_bulk}) allows in one request"
    allow_why = off or (
        None if info.bot_can_alter else f"the bot's role {code(info.bot_user)} does not own {code(info.name)} and is not a superuser"
    )
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
        cmd.env, info, connected, tokens=tokens, block_why=block_why, terminate_why=terminate_why, allow_why=allow_why
    )
    post_message(rt, channel, msg, respond)


def listing_offer(rt, cmd: ListSessions, listing, body: dict) -> list[dict]:
    """*Terminate these N* under an ``idle`` / ``idle-tx`` listing filtered with ``--app``."""
    if kill_disabled_reason(rt, cmd.env):
        return []
    try:
        offer = offer_for_listing(
            rt.dbs, rt.store, rt.config, listing, cmd.filters, body.get("channel_id"), body.get("user_id")
        )
    except DatabaseUnavailable as exc:
        return [context(f":warning: *Terminate these N* is not offered: {exc}")]
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
        filters=cmd.filters.describe(),
    )


def register(app, rt, router) -> None:
    wf = workflow(rt)
    for action in BULK_ACTIONS:
        REQUEST_RENDERERS[action] = bulk_request_message
    rt.extensions["bulk_redraw"] = lambda req: redraw(rt, req)

    previous = rt.extensions.get("listing_extra")

    def listing_extra(rt_, cmd, listing, body):
        blocks = list(previous(rt_, cmd, listing, body)) if previous else []
        return blocks + listing_offer(rt_, cmd, listing, body)

    rt.extensions["listing_extra"] = listing_extra
    router.on(ClearDb)(handle_clear_db)

    def housekeeping() -> None:
        repair_interrupted_blocks(wf)
        refresh_closed_databases(wf)

    rt.scheduler.add_job(housekeeping, "interval", seconds=30, id="pgs-bulk-housekeeping", replace_existing=True)
    rt.extensions["bulk_housekeeping"] = housekeeping

    @app.action(ANY_BULK_ACTION)
    def on_bulk_click(ack, body, action, respond, client):
        ack()
        open_request_form(rt, wf, body, action, respond, client, BULK_ACTION, bulk_modal)

__all__ = ["ALLOW_CONNECTIONS", "CLEAR_DB", "CLEAR_DB_BLOCK", "handle_clear_db", "listing_offer", "register"]
