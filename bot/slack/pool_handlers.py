"""`/pgsessions <env> [standby] pool` (issue 25): PgBouncer pools worst first, with the sessions holding
the pools whose clients wait (Details / Terminate as in a listing)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot.approval import tokens as button_tokens
from bot.commands import ShowPools
from bot.postgres.pooler_view import read_pool_view
from bot.postgres.pools import DatabaseUnavailable
from bot.render.errors import unavailable
from bot.render.pools import render_pools
from bot.slack.context import Context
from bot.slack.edge import Router, post_message

log = logging.getLogger(__name__)


def no_poolers(env: str, host: str) -> str:
    where = f"`{env}`" if host == "primary" else f"`{env}` standby `{host}`"
    return (f"{where} has no PgBouncer configured: add its admin console under `environments.{env}.poolers.<name>` "
            "(`dsn: host=… dbname=pgbouncer user=…`" + ("" if host == "primary" else f", `host: {host}`") + ").")


def handle_pools(rt: Context, cmd: ShowPools, body: dict[str, Any], respond: Any) -> None:
    environment = rt.config.environments[cmd.env]
    channel, user = body.get("channel_id"), body.get("user_id")
    if not any(p.host == cmd.host for p in environment.poolers.values()):
        respond(response_type="ephemeral", text=no_poolers(cmd.env, cmd.host))
        return
    try:
        view = read_pool_view(rt.dbs, cmd.env, cmd.host)
    except DatabaseUnavailable as exc:
        log.warning("pool %s/%s failed: %s", cmd.env, cmd.host, exc.reason)
        respond(response_type="ephemeral", text=f":warning: Could not read the sessions holding the pools: {unavailable(exc)}")
        return
    disabled = rt.policy.signalling_off(cmd.env)
    holders = [s for row in view.pools for s in row.holders]
    tokens: dict[int, str] = {}
    details_tokens: dict[int, str] = {}
    if holders:
        try:
            issued = button_tokens.issue(rt.store, cmd.env, cmd.host, channel, user, holders, kill=disabled is None)
            tokens, details_tokens = issued.kill, issued.details
        except SQLAlchemyError as exc:
            log.warning("pool %s/%s shown without buttons: the state store failed (%s)", cmd.env, cmd.host,
                        type(exc).__name__)
    msg = render_pools(view, tokens=tokens, details_tokens=details_tokens, kill_disabled=disabled,
                       query_chars=min(environment.listing.query_chars, 300))
    post_message(rt.client, channel, msg, respond)


def register(rt: Context, router: Router) -> None:
    router.on(ShowPools)(handle_pools)
