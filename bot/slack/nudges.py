"""Nudges: people hear about requests without watching the channel (issue 16).

* The requester gets a direct message (``chat.postMessage`` to their user id, in the app's Messages
  tab) when their request was approved and acted on (done or failed), denied, or expired, with a link
  to the request message (``chat.getPermalink``, else a constructed archive link).
* While a request is pending, its approvers are reminded once, in the request's thread, at half of its
  time to live. That it was sent is remembered in the state store as an audit event
  (``<action>:reminded``), claimed in a transaction that locks the request row, so several replicas
  remind once; the Slack call comes after the transaction.
* An expired request also says so in its thread (the message itself already says so in place).

:func:`after_redraw` is called whenever a request's message is redrawn (the one place every state
change passes); it acts on final states, once per request: that it did is claimed in the state store
(``StateStore.claim_once``, key ``dm:<request id>``) before the Slack calls, so neither a restart nor a
second replica DMs twice. When the store cannot be asked, nothing is sent (a lost nudge, never two).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.approval.models import Request, RequestState
from bot.render.nudges import expired_note, outcome_dm, reminder
from bot.slack.context import Context
from bot.slack.edge import Router

log = logging.getLogger(__name__)

NOTIFY_STATES = (RequestState.DONE, RequestState.FAILED, RequestState.DENIED, RequestState.EXPIRED)
REMIND_EVERY = 5.0  # seconds between checks for due reminders


def _call(rt: Context, what: str, method: str, **kwargs: Any) -> SlackResponse | None:
    try:
        response: SlackResponse = getattr(rt.client, method)(**kwargs)
        return response
    except SlackApiError as exc:
        log.warning("could not %s: %s", what, exc.response.get("error"))
    except Exception as exc:  # Slack unreachable after retries: a nudge is best effort
        log.warning("could not %s: %s", what, type(exc).__name__)
    return None


def permalink(rt: Context, channel: str | None, ts: str | None) -> str | None:
    if not channel or not ts:
        return None
    resp = _call(rt, "get a permalink", "chat_getPermalink", channel=channel, message_ts=ts)
    if resp is not None and resp.get("permalink"):
        return str(resp["permalink"])
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def notice_key(req: Request) -> str:
    """The state-store key that says the requester was told about ``req``'s outcome."""
    return f"dm:{req.id}"


def after_redraw(rt: Context, req: Request) -> None:
    """Tell the requester about a final outcome, and note an expiry in the request's thread."""
    try:
        state = req.state
        # a final state is final: one DM per request, claimed across restarts and replicas
        if state not in NOTIFY_STATES or not rt.store.claim_once(notice_key(req)):
            return
        if state == RequestState.EXPIRED and req.channel and req.message_ts:
            _call(rt, "note the expiry in the thread", "chat_postMessage", channel=req.channel,
                  thread_ts=req.message_ts, **expired_note(req))
        link = permalink(rt, req.channel, req.message_ts)
        _call(rt, f"tell {req.requester} about request {req.id}", "chat_postMessage",
              channel=req.requester, **outcome_dm(req, link))
    except Exception:
        log.exception("nudge for request %s failed", req.id)


# --- the approvers' reminder ----------------------------------------------------------------------


def remind_due(rt: Context, now: float | None = None) -> int:
    """Remind the approvers of every pending request past half of its time to live; returns how many."""
    now = time.time() if now is None else now
    sent = 0
    for req in rt.store.requests_in((RequestState.PENDING,)):
        half = req.created_at + (req.expires_at - req.created_at) / 2
        if now < half or now >= req.expires_at or not req.channel or not req.message_ts:
            continue
        claimed = rt.store.claim_reminder(req.id, f"{req.action}:reminded"[:32],
                                          "approvers reminded in the request's thread")
        if claimed is None:
            continue
        environment = rt.config.env(claimed.env)
        approved = set(rt.store.approvers_of(claimed.id))
        waiting = [p for p in (environment.access.approvers if environment else []) if p not in approved]
        _call(rt, f"remind the approvers of request {claimed.id}", "chat_postMessage",
              channel=claimed.channel, thread_ts=claimed.message_ts, **reminder(claimed, waiting))
        sent += 1
    return sent


def register(app: App, rt: Context, router: Router) -> None:
    rt.scheduler.add_job(
        lambda: remind_due(rt), "interval", seconds=REMIND_EVERY, id="pgs-request-reminders", replace_existing=True
    )
    rt.remind_due = lambda: remind_due(rt)
    rt.messages.after_redraw = lambda req: after_redraw(rt, req)
