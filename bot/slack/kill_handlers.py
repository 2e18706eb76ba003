"""Slack edge of the approval workflow: buttons → modal → request → approve/deny/withdraw → update.

Handlers stay thin: they acknowledge, read ids from the payload, and call :class:`Workflow`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import weakref

from slack_sdk.errors import SlackApiError

from bot.approval.workflow import Result, Workflow
from bot.commands import Audit, Pending
from bot.render.approval import (
    DECIDE_PREFIX,
    REQUEST_CALLBACK,
    audit_list,
    pending_list,
    request_message,
    request_modal,
    still_can_approve,
)
from bot.render.buttons import ACTION_PREFIX
from bot.render.common import context
from bot.slack import nudges
from bot.slack.app import guarded
from bot.slack.guards import may_view

log = logging.getLogger(__name__)

KILL_ACTION = re.compile(rf"^{ACTION_PREFIX}:(cancel|terminate):([A-Za-z0-9_-]{{1,64}})$")
DECIDE_ACTION = re.compile(rf"^{DECIDE_PREFIX}:(approve|deny|withdraw):([A-Za-z0-9_-]{{1,64}})$")
ANY_KILL_ACTION = re.compile(rf"^{ACTION_PREFIX}:")
ANY_DECIDE_ACTION = re.compile(rf"^{DECIDE_PREFIX}:")

# Renderers for request kinds other than a single session (bulk jobs register theirs).
REQUEST_RENDERERS: dict = {}


def workflow(rt) -> Workflow:
    wf = rt.extensions.get("workflow")
    if wf is None:
        wf = Workflow(rt.config, rt.store, rt.dbs, rt.directory, rt)
        rt.extensions["workflow"] = wf
    return wf


def audit_command(cmd: Audit, body: dict) -> str:
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


def render_request(rt, req: dict) -> dict:
    environment = rt.config.env(req["env"])
    cfg_approvers = environment.access.approvers if environment else []
    required = environment.access.approvals_required if environment else 1
    try:
        approvals = rt.store.approvers_of(req["id"])
    except Exception as exc:  # the state store is down: still draw what happened (the outcome is in memory)
        log.warning("could not read the approvals of %s: %s", req["id"], type(exc).__name__)
        approvals = [req["decided_by"]] if req.get("decided_by") else []
    wf = rt.extensions.get("workflow")
    dropped: list[str] = []
    if wf is not None:  # only approvals by people who are approvers now count (issue 12 §2)
        approvals, dropped = wf.counted_approvals(req, approvals)
    if environment:  # name only who can still approve
        cfg_approvers = still_can_approve(cfg_approvers, approvals, req["requester"], environment.access.self_approval)
    renderer = REQUEST_RENDERERS.get(req["action"], request_message)
    msg = renderer(req, cfg_approvers, approvals, required, cfg_approvers)
    if dropped and req.get("state") == "pending" and len(msg["blocks"]) < 50:
        msg["blocks"].insert(-2, context(
            "No longer counted (not approvers any more): " + ", ".join(f"<@{a}>" for a in dropped)
        ))
    return msg


_REDRAW_LOCKS: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_REDRAW_GUARD = threading.Lock()
_STATE_RANK = {"pending": 0, "executing": 1}  # every other state is final (2)


def _latest(rt, req: dict) -> dict:
    """The newest known version of ``req``: the store's, unless the caller holds a later state (an
    outcome still waiting in memory for an unreachable store)."""
    try:
        stored = rt.store.get_request(req["id"])
    except Exception as exc:  # the store is down: draw what the caller knows
        log.warning("could not re-read request %s before redrawing: %s", req["id"], type(exc).__name__)
        return req
    if stored is None:
        return req
    rank = _STATE_RANK.get(stored["state"], 2), _STATE_RANK.get(req["state"], 2)
    return stored if rank[0] >= rank[1] else req


def redraw(rt, req: dict) -> None:
    """Edit the approval message in place to show the request's current state.

    Redraws of one request run one at a time and each draws the newest state it can read, so a slow
    "pending" redraw can never land after (and hide) the "expired" or "done" one.
    """
    if not req.get("channel") or not req.get("message_ts"):
        return
    with _REDRAW_GUARD:
        lock = _REDRAW_LOCKS.setdefault(req["id"], threading.Lock())
    with lock:
        req = _latest(rt, req)
        try:
            rt.client.chat_update(channel=req["channel"], ts=req["message_ts"], **render_request(rt, req))
        except SlackApiError as exc:
            log.warning("could not update request %s message: %s", req["id"], exc.response.get("error"))
        except Exception as exc:  # Slack unreachable after retries: the state is safe in the store
            log.warning("could not update request %s message: %s", req["id"], type(exc).__name__)
    nudges.after_redraw(rt, req)  # the requester's direct message about a final outcome


def tell(rt, respond, channel: str | None, user: str, text: str) -> None:
    """An ephemeral answer to one person: through response_url when we have one, else chat.postEphemeral."""
    if respond is not None:
        try:
            respond(response_type="ephemeral", replace_original=False, text=text)
            return
        except Exception:
            log.warning("response_url answer failed; falling back to chat.postEphemeral")
    if channel:
        try:
            rt.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError as exc:
            log.warning("could not answer %s: %s", user, exc.response.get("error"))
        except Exception as exc:  # Slack unreachable: the answer is lost, the decision is not
            log.warning("could not answer %s: %s", user, type(exc).__name__)


def _channel_of(body: dict) -> str | None:
    return (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")


def register(app, rt, router) -> None:
    wf = workflow(rt)

    @app.action(ANY_KILL_ACTION)
    def on_kill_click(ack, body, action, respond, client):
        ack()
        open_request_form(rt, wf, body, action, respond, client, KILL_ACTION, request_modal)

    @app.view(REQUEST_CALLBACK)
    def on_submit(ack, body, view):
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
            ack(response_action="errors", errors={"reason": f"Not possible: {result.message}."})
            return
        ack()
        if result.request is None:  # a replay: the first submission already posted the request
            return
        guarded("posting the approval request")(_post_request)(rt, result.request, user, respond=None)

    @app.view_closed(REQUEST_CALLBACK)
    def on_closed(ack):
        ack()

    @app.action(ANY_DECIDE_ACTION)
    def on_decide(ack, body, action, respond):
        ack()
        user = (body.get("user") or {}).get("id", "")
        channel = _channel_of(body)
        m = DECIDE_ACTION.match(action.get("action_id", ""))
        if not m or action.get("value") != m.group(2):
            tell(rt, respond, channel, user, ":no_entry_sign: That button is not one the bot drew; nothing was done.")
            return
        home = (body.get("view") or {}).get("type") == "home" and rt.extensions.get("home_refresh")
        notes: list[str] = []
        if home:  # decided from the Home tab: a refusal is shown on top of it, republished as it is now
            respond = lambda **kw: notes.append(str(kw.get("text") or ""))  # noqa: E731
        guarded("deciding the request")(_decide)(rt, wf, m.group(2), user, m.group(1), channel, respond=respond)
        if home:
            home(user, notes[-1] if notes else None)

    @router.on(Pending)
    def on_pending(rt_, cmd, body, respond):
        reqs = rt.store.requests_in(("pending", "executing"))
        viewer = body.get("user_id") or ""
        allowed = [r for r in reqs if not _hidden(rt, r, body.get("channel_id")) and may_view(rt, r["env"], viewer)]
        respond(response_type="ephemeral", **pending_list(allowed, time.time()))

    @router.on(Audit)
    def on_audit(rt_, cmd: Audit, body, respond):
        since = time.time() - cmd.since if cmd.since is not None else None
        offset = (cmd.page - 1) * cmd.limit
        viewer = body.get("user_id") or ""

        def visible(env: str | None) -> bool:
            return env is None or (not _hidden_env(rt, env, body.get("channel_id")) and may_view(rt, env, viewer))

        entries = rt.store.audit_entries(
            env=cmd.env, limit=cmd.limit, since=since, actor=cmd.actor, action=cmd.action, offset=offset
        )
        entries = [e for e in entries if visible(e.get("env"))]
        counts = rt.store.audit_counts(cmd.env, since=since, actor=cmd.actor, action=cmd.action)
        total = sum(n for e, n in counts.items() if visible(e))
        more = max(0, total - offset - len(entries))
        filtered = cmd.since is not None or cmd.actor is not None or cmd.action is not None or cmd.page > 1
        respond(
            response_type="ephemeral",
            **audit_list(entries, cmd.env, more=more, next_page=audit_command(cmd, body), filtered=filtered),
        )

    rt.scheduler.add_job(
        lambda: _housekeeping(rt, wf), "interval", seconds=10, id="pgs-requests-housekeeping", replace_existing=True
    )
    rt.extensions["kill_housekeeping"] = lambda: _housekeeping(rt, wf)
    rt.scheduler.add_job(
        lambda: _purge_tokens(rt), "interval", hours=1, id="pgs-purge-tokens", replace_existing=True
    )
    rt.scheduler.add_job(
        lambda: _purge_state(rt), "interval", hours=1, id="pgs-purge-state", replace_existing=True
    )


def open_request_form(rt, wf: Workflow, body: dict, action: dict, respond, client, pattern, make_modal) -> None:
    """A Cancel/Terminate/bulk button was clicked: resolve its token on the server and open the form.

    ``pattern`` captures (action, token) from the action_id; the value must repeat the token, and the
    token must resolve to a stored target this user may act on from this channel.
    """
    user = (body.get("user") or {}).get("id", "")
    channel = _channel_of(body)
    m = pattern.match(action.get("action_id", ""))
    if not m or action.get("value") != m.group(2):
        tell(rt, respond, channel, user, ":no_entry_sign: That button is not one the bot drew; nothing was done.")
        return
    kind, token = m.group(1), m.group(2)
    target, refusal = wf.target_for(token, kind, user, channel)
    if target is None:
        tell(rt, respond, channel, user, f":no_entry_sign: Not possible: {refusal}.")
        return
    environment = rt.config.environments[target["env"]]
    view = make_modal(target, kind, token, channel, environment.access.require_reason)
    try:
        client.views_open(trigger_id=body.get("trigger_id"), view=view)
    except SlackApiError as exc:
        log.warning("views.open failed: %s", exc.response.get("error"))
        tell(rt, respond, channel, user, ":warning: Slack did not open the request form in time; please click again.")


def _hidden_env(rt, env: str, channel: str | None) -> bool:
    environment = rt.config.env(env)
    if environment is None:
        return True
    return bool(environment.access.channels) and channel not in environment.access.channels


def _hidden(rt, req: dict, channel: str | None) -> bool:
    return _hidden_env(rt, req["env"], channel)


def _post_request(rt, req: dict, user: str, respond=None) -> None:
    msg = render_request(rt, req)
    try:
        resp = rt.client.chat_postMessage(channel=req["channel"], **msg)
    except SlackApiError as exc:
        log.warning("could not post request %s: %s", req["id"], exc.response.get("error"))
        wf = rt.extensions["workflow"]
        wf.decide(req["id"], req["requester"], "withdraw")
        tell(rt, None, req["channel"], user, f":warning: Could not post the approval request ({exc.response.get('error')}); it was withdrawn.")
        return
    rt.store.set_message(req["id"], resp["channel"], resp["ts"])


def _decide(rt, wf: Workflow, request_id: str, user: str, verdict: str, channel: str | None, respond=None) -> None:
    result: Result = wf.decide(request_id, user, verdict)
    # the shared message first: it is the record everyone sees; the personal notice is best effort
    if result.changed and result.request is not None:
        redraw(rt, rt.store.get_request(result.request["id"]) or result.request)
    if result.extra.get("execute"):
        done = wf.execute(result.request)
        redraw(rt, done.request or result.request)
    if not result.ok:
        tell(rt, respond, channel, user, f":no_entry_sign: {result.message}")
    elif result.extra.get("tell"):
        tell(rt, respond, channel, user, f":information_source: {result.message}")


def _housekeeping(rt, wf: Workflow) -> None:
    for rid in wf.flush_unsaved():  # outcomes that waited in memory for the state store
        req = rt.store.get_request(rid)
        if req is not None:
            redraw(rt, req)
    for req in wf.expire_due():
        redraw(rt, req)
    for req in wf.recover_interrupted():
        redraw(rt, req)


# Button tokens older than this act on nothing ("not known to the bot"); requests keep their own copy
# of the target, so purging never touches a request. A week covers the longest lag incident's buttons.
TOKEN_RETENTION = 7 * 86400


def _purge_tokens(rt) -> int:
    removed = rt.store.purge_targets(time.time() - TOKEN_RETENTION)
    if removed:
        log.info("purged %d button tokens older than %d days", removed, TOKEN_RETENTION // 86400)
    return removed


def _purge_state(rt) -> dict[str, int]:
    """Retention (``state_retention``): finished requests, audit entries, resolved incidents."""
    days = rt.config.state_retention / 86400
    rt.store.backfill_outcome_columns()  # rows finished by a replica of an older release, before any purge
    removed = rt.store.purge_finished(time.time() - rt.config.state_retention)
    if any(removed.values()):
        log.info(
            "purged state older than %g days: %d requests (%d approvals), %d audit entries, %d incidents",
            days, removed["requests"], removed["approvals"], removed["audit"], removed["incidents"],
        )
    return removed
