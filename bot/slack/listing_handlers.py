"""`/pgsessions <env> [standby] [filters]`: read, issue button tokens, render, post."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from bot.approval.targets import issue_details_tokens, issue_session_tokens
from bot.commands import ListSessions
from bot.postgres.activity import list_sessions
from bot.postgres.pools import DatabaseUnavailable
from bot.render.common import context
from bot.render.listing import render_listing

log = logging.getLogger(__name__)

STORE_DOWN = (
    ":warning: Cancel / Terminate requests are unavailable right now: the bot's state store is not answering. "
    "The sessions above are current; list again in a moment to get the buttons back."
)


def kill_disabled_reason(rt, env: str) -> str | None:
    access = rt.config.environments[env].access
    if not access.allow_kill:
        return f"signalling is turned off for `{env}` (access.allow_kill: false)"
    return None


def extra_listing_blocks(rt, cmd: ListSessions, listing, body: dict) -> list[dict]:
    """Blocks other features add under a listing (e.g. the bulk 'Terminate these N')."""
    hook = rt.extensions.get("listing_extra")
    return hook(rt, cmd, listing, body) if hook else []


def handle_list(rt, cmd: ListSessions, body: dict, respond) -> None:
    from bot.slack.app import post_message

    environment = rt.config.environments[cmd.env]
    channel = body.get("channel_id")
    user = body.get("user_id")
    try:
        listing = list_sessions(rt.dbs, cmd.env, cmd.host, cmd.filters)
    except DatabaseUnavailable as exc:
        log.warning("listing %s/%s failed: %s", cmd.env, cmd.host, exc.reason)
        respond(response_type="ephemeral", text=f":warning: Could not list sessions: {exc}")
        return
    limit = environment.listing.max_sessions
    disabled = kill_disabled_reason(rt, cmd.env)
    tokens = {}
    details_tokens: dict[int, str] = {}
    extra: list[dict] = []
    try:
        if disabled is None:
            tokens = issue_session_tokens(rt.store, cmd.env, cmd.host, listing.sessions[:limit], channel, user)
        details_tokens = issue_details_tokens(rt.store, cmd.env, cmd.host, listing.sessions[:limit], channel, user)
        extra = extra_listing_blocks(rt, cmd, listing, body)
    except SQLAlchemyError as exc:
        # the bot's own state store is down: the listing is still worth showing, without buttons
        log.warning("listing %s/%s shown without buttons: the state store failed (%s)", cmd.env, cmd.host,
                    type(exc).__name__)
        tokens, details_tokens, extra = {}, {}, [context(STORE_DOWN)]
    msg = render_listing(
        listing,
        max_sessions=limit,
        query_chars=environment.listing.query_chars,
        tokens=tokens,
        details_tokens=details_tokens,
        kill_disabled=disabled,
        extra_blocks=extra,
    )
    post_message(rt, channel, msg, respond)


def register(router) -> None:
    router.on(ListSessions)(handle_list)
