"""`/pgsessions <env> [standby] [filters]`: read, issue button tokens, render, post."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot.approval import tokens as button_tokens
from bot.commands import ListSessions
from bot.postgres.activity import list_sessions
from bot.postgres.models import Listing, hide_query
from bot.postgres.pools import DatabaseUnavailable
from bot.render.common import context
from bot.render.errors import unavailable
from bot.render.listing import render_listing
from bot.slack.context import Context
from bot.slack.edge import CommandHandler, ListingExtra, Router, post_message

log = logging.getLogger(__name__)

STORE_DOWN = (
    ":warning: Cancel / Terminate requests are unavailable right now: the bot's state store is not answering. "
    "The sessions above are current; list again in a moment to get the buttons back."
)


def make_handle_list(extras: list[ListingExtra]) -> CommandHandler:
    """The listing handler; ``extras`` add blocks under a listing (e.g. the bulk 'Terminate these N')."""

    def handle_list(rt: Context, cmd: ListSessions, body: dict[str, Any], respond: Callable[..., Any]) -> None:
        environment = rt.config.environments[cmd.env]
        channel = body.get("channel_id")
        user = body.get("user_id")
        try:
            read = list_sessions(rt.dbs, cmd.env, cmd.host, cmd.filters)
            # the sessions as they may be offered (protect): the access policy marks them
            listing: Listing = replace(read, sessions=tuple(rt.policy.mark(cmd.env, read.sessions)))
        except DatabaseUnavailable as exc:
            log.warning("listing %s/%s failed: %s", cmd.env, cmd.host, exc.reason)
            respond(response_type="ephemeral", text=f":warning: Could not list sessions: {unavailable(exc)}")
            return
        limit = environment.listing.max_sessions
        disabled = rt.policy.signalling_off(cmd.env)
        tokens: dict[int, str] = {}
        details_tokens: dict[int, str] = {}
        extra_blocks: list[dict[str, Any]] = []
        try:
            issued = button_tokens.issue(rt.store, cmd.env, cmd.host, channel, user, listing.sessions[:limit],
                                         kill=disabled is None)
            tokens, details_tokens = issued.kill, issued.details
            for extra in extras:
                extra_blocks += extra(rt, cmd, listing, body)
        except SQLAlchemyError as exc:
            # the bot's own state store is down: the listing is still worth showing, without buttons
            log.warning("listing %s/%s shown without buttons: the state store failed (%s)", cmd.env, cmd.host,
                        type(exc).__name__)
            tokens, details_tokens, extra_blocks = {}, {}, [context(STORE_DOWN)]
        shown = listing  # the buttons' snapshots keep the texts (only who may see them is shown them)
        if rt.policy.identity_view_refusal(user, "query texts"):  # a guest, another organisation: no query texts
            shown = dataclasses.replace(listing, sessions=tuple(hide_query(s) for s in listing.sessions))
        msg = render_listing(
            shown,
            max_sessions=limit,
            query_chars=environment.listing.query_chars,
            tokens=tokens,
            details_tokens=details_tokens,
            kill_disabled=disabled,
            extra_blocks=extra_blocks,
        )
        post_message(rt.client, channel, msg, respond)

    return handle_list


def register(rt: Context, router: Router) -> None:
    router.on(ListSessions)(make_handle_list(router.listing_extras))
