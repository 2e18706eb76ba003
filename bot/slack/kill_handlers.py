"""Slack edge of the approval workflow: buttons → modal → request → approve/deny/withdraw → update.

Handlers stay thin: they acknowledge, parse ids (:mod:`bot.approval.ids`), and call
:class:`~bot.approval.workflow.Workflow`; what each kind of action draws comes from its entry in the
table of actions (:mod:`bot.approval.actions`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.approval import ids
from bot.approval.actions import kinds_with_prefix
from bot.approval.models import Request, RequestState
from bot.commands import Audit, Pending
from bot.render.actions import DRAWINGS
from bot.render.approval import audit_list, pending_list
from bot.render.common import phrase
from bot.slack.context import Context
from bot.slack.edge import Router, channel_of, guarded, tell

log = logging.getLogger(__name__)

NOT_OURS = ":no_entry_sign: That button is not one the bot drew; nothing was done."


def audit_command(cmd: Audit, body: dict[str, Any]) -> str:
    """The command that shows the page after ``cmd``'s (same filters as typed)."""
    words = ["/pgsessions audit"]
    if cmd.env:
        words.append(cmd.env)
    typed = (body.get("text") or "").split()
    for i, w in enumerate(typed):  # --since as it was typed
        if w.lower() == "--since" and i + 1 < len(typed):
            words += ["--since", typed[i + 1]]
        elif w.lower().startswith("--since="):
            words.append(w)
    if cmd.actor:
        words += ["--user", cmd.actor]
    if cmd.action:
        words += ["--action", cmd.action]
    words += ["--page", str(cmd.page + 1)]
    return " ".join(words)


def register(app: App, rt: Context, router: Router) -> None:
    wf = rt.workflow

    @app.action(ids.ANY_KILL)
    def on_kill_click(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Callable[..., Any], client: WebClient) -> None:
        ack()
        open_request_form(rt, body, action, respond, client, ids.KILL_PREFIX)

    @app.action(ids.ANY_BULK)
    def on_bulk_click(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Callable[..., Any], client: WebClient) -> None:
        ack()
        open_request_form(rt, body, action, respond, client, ids.BULK_PREFIX)

    @app.view(ids.REQUEST_CALLBACK)
    def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user = (body.get("user") or {}).get("id", "")
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            token, kind, channel = str(meta["token"]), str(meta["action"]), meta.get("channel")
        except (ValueError, KeyError, TypeError):
            ack(response_action="errors", errors={"reason": "This form is damaged; close it and click the button again."})
            return
        values = (view.get("state") or {}).get("values") or {}
        reason = ((values.get("reason") or {}).get("reason") or {}).get("value") or ""
        # a retried or replayed submission of the same modal makes one request (issue 12 §2)
        once = f"{view.get('id')}:{view.get('hash') or ''}:{user}" if view.get("id") else None
        result = wf.submit(token, kind, user, channel, reason, once=once)
        if not result.ok:
            ack(response_action="errors", errors={"reason": f"Not possible: {phrase(result.message)}."})
            return
        ack()
        if result.request is None:  # a replay: the first submission already posted the request
            return
        _post_request(rt, result.request, user, respond=None)

    @app.view_closed(ids.REQUEST_CALLBACK)
    def on_closed(ack: Ack) -> None:
        ack()

    @app.action(ids.ANY_DECIDE)
    def on_decide(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        user = (body.get("user") or {}).get("id", "")
        channel = channel_of(body)
        click = ids.parse_click(ids.DECIDE_PREFIX, ids.VERDICTS, action.get("action_id", ""), action.get("value"))
        if click is None:
            tell(rt.client, respond, channel, user, NOT_OURS)
            return
        home = rt.home_refresh if (body.get("view") or {}).get("type") == "home" else None
        notes: list[str] = []
        if home is not None:  # decided from the Home tab: a refusal is shown on top of it, republished as it is now
            respond = lambda **kw: notes.append(str(kw.get("text") or ""))  # noqa: E731
        _decide(rt, click.token, user, click.verb, channel, respond=respond)
        if home is not None:
            home(user, notes[-1] if notes else None)

    @router.on(Pending)
    def on_pending(rt_: Context, cmd: Pending, body: dict[str, Any], respond: Callable[..., Any]) -> None:
        viewer = body.get("user_id") or ""
        refusal = rt.policy.identity_view_refusal(viewer, "requests")
        if refusal:
            respond(response_type="ephemeral", text=f":no_entry_sign: Not possible: {refusal}.")
            return
        reqs = rt.store.requests_in((RequestState.PENDING, RequestState.EXECUTING))
        allowed = [rt.policy.shown(r) for r in reqs if rt.policy.may_view(r.env, viewer, body.get("channel_id"))]
        respond(response_type="ephemeral", **pending_list(allowed, time.time()))

    @router.on(Audit)
    def on_audit(rt_: Context, cmd: Audit, body: dict[str, Any], respond: Callable[..., Any]) -> None:
        since = time.time() - cmd.since if cmd.since is not None else None
        offset = (cmd.page - 1) * cmd.limit
        viewer = body.get("user_id") or ""
        refusal = rt.policy.identity_view_refusal(viewer, "the audit")
        if refusal:
            respond(response_type="ephemeral", text=f":no_entry_sign: Not possible: {refusal}.")
            return

        def visible(env: str | None) -> bool:
            return rt.policy.may_view(env, viewer, body.get("channel_id"))

        # the environments with matching entries that this viewer may see: pages are filled with those only
        counts = rt.store.audit_counts(cmd.env, since=since, actor=cmd.actor, action=cmd.action)
        shown = {e for e in counts if visible(e)}
        total = sum(n for e, n in counts.items() if e in shown)
        entries = rt.store.audit_entries(
            env=cmd.env, limit=cmd.limit, since=since, actor=cmd.actor, action=cmd.action, offset=offset, envs=shown
        ) if shown else []
        more = max(0, total - offset - len(entries))
        filtered = cmd.since is not None or cmd.actor is not None or cmd.action is not None or cmd.page > 1
        respond(
            response_type="ephemeral",
            **audit_list(entries, cmd.env, more=more, next_page=audit_command(cmd, body), filtered=filtered),
        )


def open_request_form(
    rt: Context, body: dict[str, Any], action: dict[str, Any], respond: Any, client: Any, prefix: str,
    verbs: tuple[str, ...] | None = None,
) -> None:
    """A Cancel/Terminate/bulk button was clicked: resolve its token on the server and open the form.

    The action id must be ``<prefix>:<an action of that prefix>:<token>`` and the value must repeat the
    token, and the token must resolve to a stored target this user may act on from this channel.
    """
    user = (body.get("user") or {}).get("id", "")
    channel = channel_of(body)
    click = ids.parse_click(prefix, verbs or kinds_with_prefix(prefix), action.get("action_id", ""), action.get("value"))
    if click is None:
        tell(rt.client, respond, channel, user, NOT_OURS)
        return
    stored, refusal = rt.workflow.target_for(click.token, click.verb, user, channel)
    if stored is None:
        tell(rt.client, respond, channel, user, f":no_entry_sign: Not possible: {phrase(refusal or 'refused')}.")
        return
    environment = rt.config.environments[stored.env]
    kind = rt.workflow.actions[click.verb]
    view = DRAWINGS[click.verb].modal(stored, kind, click.token, channel, environment.access.require_reason)
    try:
        client.views_open(trigger_id=body.get("trigger_id"), view=view)
    except SlackApiError as exc:
        log.warning("views.open failed: %s", exc.response.get("error"))
        tell(rt.client, respond, channel, user, ":warning: Slack did not open the request form in time; please click again.")


@guarded("posting the approval request")
def _post_request(rt: Context, req: Request, user: str, respond: Any = None) -> None:
    msg = rt.messages.render(req)
    try:
        resp = rt.client.chat_postMessage(channel=req.channel or "", **msg)
    except SlackApiError as exc:
        log.warning("could not post request %s: %s", req.id, exc.response.get("error"))
        rt.workflow.decide(req.id, req.requester, "withdraw")
        tell(rt.client, None, req.channel, user,
             f":warning: Could not post the approval request ({exc.response.get('error')}); it was withdrawn.")
        return
    rt.store.set_message(req.id, resp["channel"], resp["ts"])


@guarded("deciding the request")
def _decide(rt: Context, request_id: str, user: str, verdict: str, channel: str | None, respond: Any = None) -> None:
    wf = rt.workflow
    result = wf.decide(request_id, user, verdict)
    # the shared message first: it is the record everyone sees; the personal notice is best effort
    if result.changed and result.request is not None:
        rt.messages.redraw(result.request)  # it draws the request as stored now
    if result.execute and result.request is not None:
        done = wf.execute(result.request)
        rt.messages.redraw(done.request or result.request)
    if not result.ok:
        tell(rt.client, respond, channel, user, f":no_entry_sign: {phrase(result.message)}")
    elif result.tell:
        tell(rt.client, respond, channel, user, f":information_source: {phrase(result.message)}")
