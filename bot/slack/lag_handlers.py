"""`/pgsessions <env> lag`, and the scheduled lag watcher's jobs.

``register`` serves the command; the watcher itself (``rt.lagwatch``) is built by the runtime and
its jobs installed by :func:`bot.wiring.install_jobs`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bot.approval import tokens as button_tokens
from bot.commands import ShowLag
from bot.lagwatch.detect import mark_culprits, measure_env
from bot.lagwatch.model import Culprit, StandbyLag, Unreachable
from bot.postgres.models import hide_query
from bot.render.common import esc
from bot.render.lag import MAX_CULPRITS_SHOWN, render_lag_listing
from bot.slack.context import Context
from bot.slack.edge import Router, post_message

log = logging.getLogger(__name__)


def _without_queries(m: StandbyLag) -> StandbyLag:
    def hide(cs: tuple[Culprit, ...]) -> tuple[Culprit, ...]:
        return tuple(dataclasses.replace(c, session=hide_query(c.session)) for c in cs)

    return dataclasses.replace(m, culprits=hide(m.culprits), suspects=hide(m.suspects))


def handle_lag(rt: Context, cmd: ShowLag, body: dict[str, Any], respond: Any) -> None:
    environment = rt.config.environments[cmd.env]
    if not environment.standbys:
        respond(
            response_type="ephemeral",
            text=f"`{cmd.env}` has no standbys configured: add them under `environments.{cmd.env}.standbys` "
            "in the bot's configuration.",
        )
        return
    channel = body.get("channel_id")
    user = body.get("user_id")
    measured, primary_error = measure_env(rt.dbs, cmd.env)
    # the culprits as they may be offered (protect): the access policy marks them
    results = [mark_culprits(r, lambda ss: rt.policy.mark(cmd.env, ss)) if isinstance(r, StandbyLag) else r
               for r in measured]
    if results and all(isinstance(r, Unreachable) for r in results):
        reasons = "\n".join(f"• `{r.host}`: {esc(r.reason)}" for r in results)
        log.warning("lag of %s: no standby answered", cmd.env)
        respond(response_type="ephemeral", text=f":warning: Could not read the lag of any standby of `{cmd.env}`:\n{reasons}")
        return
    disabled = rt.policy.signalling_off(cmd.env)
    tokens: dict[tuple[str, int], str] = {}
    details: dict[tuple[str, int], str] = {}
    for r in results:
        if isinstance(r, StandbyLag) and r.behind and r.holding_back:
            sessions = [c.session for c in r.holding_back[:MAX_CULPRITS_SHOWN]]
            issued = button_tokens.issue(rt.store, cmd.env, r.host, channel, user, sessions, kill=disabled is None)
            tokens.update({(r.host, pid): tok for pid, tok in issued.kill.items()})
            details.update({(r.host, pid): tok for pid, tok in issued.details.items()})
    shown = results  # the buttons' snapshots keep the texts (only who may see them is shown them)
    if rt.policy.identity_view_refusal(user, "query texts"):  # a guest, another organisation: no query texts
        shown = [_without_queries(r) if isinstance(r, StandbyLag) else r for r in results]
    msg = render_lag_listing(
        cmd.env,
        shown,
        alert=environment.lag_alert,
        tokens=tokens,
        kill_disabled=disabled,
        query_chars=environment.listing.query_chars,
        primary_error=primary_error,
        details_tokens=details,
    )
    post_message(rt.client, channel, msg, respond)


def register(rt: Context, router: Router) -> None:
    router.on(ShowLag)(handle_lag)
