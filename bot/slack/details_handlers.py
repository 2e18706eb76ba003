"""Details button (a modal with one session read at the click) and `/pgsessions <env> [standby] locks`.

Details needs no approval, only the right to view the environment (:func:`may_view`). Slack's
``trigger_id`` expires 3 s after the click, so the read runs beside the ack: if it answers within
:data:`FAST_READ` the modal opens with the content; otherwise a "Reading…" modal opens at once and is
updated with ``views.update`` when the read is done.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.approval import ids
from bot.approval import tokens as button_tokens
from bot.approval.models import StoredTarget
from bot.commands import ShowLocks
from bot.postgres.details import read_details
from bot.postgres.locks import build_forest, read_lock_graph
from bot.postgres.models import hide_query
from bot.postgres.pools import DatabaseUnavailable
from bot.render.common import MAX_BLOCKS, context
from bot.render.details import details_view, loading_view, message_view
from bot.render.errors import unavailable
from bot.render.locks import render_locks, shown_pids
from bot.slack.context import Context
from bot.slack.edge import Router, channel_of, guarded, post_message, tell
from bot.slack.guards import viewer_refusal
from bot.slack.kill_handlers import open_request_form

log = logging.getLogger(__name__)

FAST_READ = 0.5  # seconds: beyond this the "Reading…" modal opens first (views.open well within 1 s)
_reads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pgs-details")  # as many as listeners


def may_view(rt: Context, env: str, user: str, channel: str | None) -> str | None:
    """Why ``user`` may not view sessions of ``env`` from ``channel`` (None: they may).

    Whoever may use the environment's channel and is in ``access.viewers`` (the rule itself is
    :func:`bot.slack.guards.viewer_refusal`, shared with listings, ``pending`` and ``audit``)."""
    environment = rt.config.env(env)
    if environment is None:
        return f"environment `{env}` is no longer configured"
    access = environment.access
    if access.channels and channel not in access.channels:
        return f"`{env}` can only be viewed in " + ", ".join(f"<#{c}>" for c in access.channels)
    return viewer_refusal(rt, env, user) or rt.policy.identity_view_refusal(user, "Details")


def resolve_details_token(
    rt: Context, token: str, user: str, channel: str | None
) -> tuple[StoredTarget | None, str | None]:
    stored = rt.store.get_target(token)
    if stored is None or stored.kind not in ("details", "session"):
        return None, "this button is not known to the bot (it may be from an old or forged message)"
    if stored.channel and channel and stored.channel != channel:
        return None, "this button belongs to a message in another channel"
    refusal = may_view(rt, stored.env, user, channel or stored.channel)
    if refusal:
        return None, refusal
    return stored, None


class _Pusher:
    """Opens the request form on top of the Details modal (a modal's trigger_id needs views.push)."""

    def __init__(self, client: WebClient):
        self.client = client

    def views_open(self, trigger_id: str, view: dict[str, Any]) -> SlackResponse:
        return self.client.views_push(trigger_id=trigger_id, view=view)


def show_details(rt: Context, body: dict[str, Any], action: dict[str, Any], client: WebClient, respond: Callable[..., Any] | None = None) -> None:
    user = (body.get("user") or {}).get("id", "")
    channel = channel_of(body)
    token = ids.parse_details_click(action.get("action_id", ""), action.get("value"))
    if token is None:
        tell(rt.client, respond, channel, user, ":no_entry_sign: That button is not one the bot drew; nothing was shown.")
        return
    target, refusal = resolve_details_token(rt, token, user, channel)
    if target is None:
        tell(rt.client, respond, channel, user, f":no_entry_sign: Not possible: {refusal}.")
        return
    env, host = target.env, target.host
    pid = target.target.pid if hasattr(target.target, "pid") else 0
    trigger = body.get("trigger_id")
    future = _reads.submit(_read_view, rt, target, user)
    try:
        view = future.result(timeout=FAST_READ)
    except FutureTimeout:
        view = None
    try:
        if view is not None:
            client.views_open(trigger_id=trigger, view=view)
            return
        opened = client.views_open(trigger_id=trigger, view=loading_view(pid, env, host))
    except SlackApiError as exc:
        log.warning("views.open for details failed: %s", exc.response.get("error"))
        tell(rt.client, respond, channel, user, ":warning: Slack did not open the details in time; please click again.")
        return
    view_id = (opened.get("view") or {}).get("id")
    try:
        view = future.result(timeout=120)
    except Exception:  # _read_view answers errors itself; this is only a deadline
        view = message_view(pid, ":warning: Reading the session took too long; please click again.")
    try:
        client.views_update(view_id=view_id, view=view)
    except SlackApiError as exc:
        log.warning("views.update for details failed: %s", exc.response.get("error"))


def _read_view(rt: Context, target: StoredTarget, user: str) -> dict[str, Any]:
    env, host, snap = target.env, target.host, target.target
    pid = int(getattr(snap, "pid", 0))
    try:
        d = read_details(rt.dbs, env, host, pid, getattr(snap, "backend_start", None) or "")
    except DatabaseUnavailable as exc:
        return message_view(pid, f":warning: Could not read pid {pid}: {unavailable(exc)}")
    except Exception:
        log.exception("reading details of pid %s on %s/%s failed", pid, env, host)
        return message_view(pid, ":x: Something went wrong while reading this session; nothing was changed.")
    if d.session is not None and not d.cannot_signal:  # protect: the access policy says why, if it applies
        d = replace(d, cannot_signal=rt.policy.protected(env, d.session))
    disabled = rt.policy.signalling_off(env)
    kill_token = None
    if d.status == "ok" and d.session is not None and not disabled and not d.cannot_signal:
        kill_token = button_tokens.issue(rt.store, env, host, target.channel, user, [d.session],
                                         details=False).kill.get(d.session.pid)
    return details_view(d, kill_token, disabled)


def modal_kill(rt: Context, body: dict[str, Any], action: dict[str, Any], client: Any) -> None:
    """Cancel/Terminate drawn in the Details modal: the same approval form, on the listing's channel."""
    verbs = (*ids.SESSION_KINDS, ids.DISCONNECT_CLIENT)  # Disconnect client: a PgBouncer 1.24+ client (issue 25)
    click = ids.parse_click(ids.MODAL_KILL_PREFIX, verbs, action.get("action_id", ""), action.get("value"))
    target = rt.store.get_target(click.token) if click else None
    channel = target.channel if target else None
    open_request_form(
        rt, {**body, "channel": {"id": channel}}, action, None, _Pusher(client), ids.MODAL_KILL_PREFIX,
        verbs=verbs,
    )


def handle_locks(rt: Context, cmd: ShowLocks, body: dict[str, Any], respond: Any) -> None:
    environment = rt.config.environments[cmd.env]
    channel, user = body.get("channel_id"), body.get("user_id")
    try:
        graph = read_lock_graph(rt.dbs, cmd.env, cmd.host, max(environment.listing.query_chars, 200))
    except DatabaseUnavailable as exc:
        log.warning("locks %s/%s failed: %s", cmd.env, cmd.host, exc.reason)
        respond(response_type="ephemeral", text=f":warning: Could not read the locks: {unavailable(exc)}")
        return
    # every session of the trees is drawn, ignored or not (a lock tree without one of its links would
    # misstate who waits for whom); protect marks what may not be offered a signal
    graph = replace(graph, sessions=dict(zip(graph.sessions, rt.policy.mark(cmd.env, graph.sessions.values()),
                                             strict=True)))
    forest = build_forest(graph.waits)
    pids = [p for p in shown_pids(forest) if p in graph.sessions]
    disabled = rt.policy.signalling_off(cmd.env)
    roots = [graph.sessions[t.root] for t in forest if t.root in graph.sessions and t.root in pids]
    issued = button_tokens.issue(rt.store, cmd.env, cmd.host, channel, user, [*roots, *(graph.sessions[p] for p in pids)],
                                 kill=set() if disabled else {s.pid for s in roots}, details={*pids})
    kill_tokens, details_tokens = issued.kill, issued.details
    shown = graph  # the buttons' snapshots keep the texts (only who may see them is shown them)
    if rt.policy.identity_view_refusal(user, "query texts"):  # a guest, another organisation: no query texts
        shown = dataclasses.replace(graph, sessions={p: hide_query(s) for p, s in graph.sessions.items()})
    msg = render_locks(
        shown, forest, kill_tokens=kill_tokens, details_tokens=details_tokens, kill_disabled=disabled,
        query_chars=min(environment.listing.query_chars, 300),
    )
    ignored = sum(1 for p in pids if rt.policy.ignored(cmd.env, graph.sessions[p]))
    if ignored and len(msg.get("blocks") or []) < MAX_BLOCKS:
        msg["blocks"].append(context(
            f":see_no_evil: {ignored} of the sessions drawn {'matches' if ignored == 1 else 'match'} the environment's "
            "`ignore` rules: lock trees draw them anyway, so that the chain of waits stays whole."
        ))
    post_message(rt.client, channel, msg, respond)


def register(app: App, rt: Context, router: Router) -> None:
    router.on(ShowLocks)(handle_locks)

    @app.action(ids.ANY_DETAILS)
    def on_details(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient, respond: Callable[..., Any]) -> None:
        ack()
        guarded("showing the session's details")(show_details)(rt, body, action, client, respond=respond)

    @app.action(ids.ANY_MODAL_KILL)
    def on_modal_kill(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
        ack()
        guarded("opening the request form")(modal_kill)(rt, body, action, client)

    @app.view_closed(ids.DETAILS_CALLBACK)
    def on_closed(ack: Ack) -> None:
        ack()

