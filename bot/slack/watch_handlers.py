"""Slack edge of the session watch (issue 14): the Acknowledge button of every alert.

The alerts' Cancel / Terminate and *Terminate these N* buttons are the listing's (``pgs_kill:`` and
``pgs_bulk:``), served by the kill and bulk handlers through the approval workflow.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App

from bot.render.watch import ACK, ACK_PREFIX
from bot.slack.context import Context
from bot.slack.edge import Router, guarded
from bot.slack.edge import tell as tell_user
from bot.slack.outbox import THREAD_REPLY, Outbox
from bot.watch.incidents import WatchIncidents

log = logging.getLogger(__name__)


def tell(rt: Context, respond: Callable[..., Any] | None, channel: str | None, user: str, text: str) -> None:
    tell_user(rt.client, respond, channel, user, text)

ACK_ACTION = re.compile(rf"^{ACK_PREFIX}:{ACK}:([A-Za-z0-9_-]{{1,64}})$")
ANY_WATCH_ACTION = re.compile(rf"^{ACK_PREFIX}:")
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{1,30}$")


def acknowledge(rt: Context, incident_id: str, user: str, channel: str | None,
                respond: Callable[..., Any] | None) -> None:
    incidents = WatchIncidents(rt.store, "acknowledge")
    inc, why = incidents.acknowledge(incident_id, user) if _may_view(rt, incident_id, channel) else (None, None)
    if why is not None:
        tell(rt, respond, channel, user, f":information_source: {why}; nothing was changed.")
        return
    if inc is None:  # not asked: the channel may not view the alert's environment
        tell(rt, respond, channel, user, ":no_entry_sign: Not possible: this alert belongs to an environment "
             "that cannot be used in this channel.")
        return
    log.info("watch: %s acknowledged %s on %s/%s", user, inc.kind, inc.env, inc.host)
    if inc.channel and inc.message_ts:
        # through the durable outbox, in order after the alert's other calls (kept if Slack is failing)
        Outbox(rt.store, lambda: rt.client).send(
            THREAD_REPLY, inc.id, inc.channel, {"text": f":eyes: <@{user}> acknowledged this alert: no more reminders."},
            ts=inc.message_ts,
        )


def _may_view(rt: Context, incident_id: str, channel: str | None) -> bool:
    """Anyone who may view the environment: its ``access.channels`` (when set) include this channel."""
    inc = WatchIncidents(rt.store, "acknowledge").get(incident_id)
    if inc is None:
        return True  # acknowledge() says it is unknown
    environment = rt.config.env(inc.env)
    if environment is None:
        return False
    allowed = environment.access.channels
    return not allowed or channel in allowed


def register(app: App, rt: Context, router: Router) -> None:
    @app.action(ANY_WATCH_ACTION)
    def on_watch_click(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        m = ACK_ACTION.match(action.get("action_id", ""))
        if not m or action.get("value") != m.group(1) or not SLACK_USER.match(user):
            tell(rt, respond, channel, user, ":no_entry_sign: That button is not one the bot drew; nothing was done.")
            return
        guarded("acknowledging the alert")(acknowledge)(rt, m.group(1), user, channel, respond=respond)
