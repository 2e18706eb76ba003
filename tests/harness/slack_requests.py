"""Requests to the bot exactly as Slack sends them: signed slash commands and interaction payloads.

    sender = SlackSender("http://127.0.0.1:PORT", "signing-secret", fake=fake_slack)
    status, headers, body = sender.slash("list primary", user_id="U1")
    reply = sender.block_action("approve", "req-1", user_id="U2", message=fake.last_message("C1"))
    fake.wait_for_response(reply.response_name)

Every method returns a ``SlackReply`` that unpacks as ``(status, headers, body)`` and also carries
the ``response_url`` / ``response_name`` / ``trigger_id`` it sent.  With ``fake=`` the response_url
points at the fake (bound to the clicked message, so replace_original/delete_original act on it);
without it, it points at a closed local port.  Only the standard library is used for HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .fake_slack import find_element

if TYPE_CHECKING:
    from .fake_slack import FakeSlack, StoredMessage

__all__ = ["SlackReply", "SlackSender", "make_trigger_id", "new_event_id", "sign", "socket_envelope"]

_seq = itertools.count(1)


def sign(secret: str, timestamp: int | str, body: str | bytes) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def make_trigger_id() -> str:
    """A trigger_id shaped like Slack's (``digits.digits.hex``); the first part is its birth in ms,
    which lets FakeSlack expire it after 3 s like Slack does."""
    return f"{int(time.time() * 1000)}.{next(_seq)}.{secrets.token_hex(16)}"


def _action_ts() -> str:
    now = time.time()
    return f"{now:.6f}"


@dataclass
class SlackReply:
    """What the bot answered; unpacks as ``status, headers, body``."""

    status: int
    headers: dict[str, str]
    body: str
    request_body: str = ""
    response_url: str | None = None
    response_name: str | None = None
    trigger_id: str | None = None
    payload: dict[str, Any] | None = field(default=None, repr=False)

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class SlackSender:
    """POSTs signed requests to ``{base_url}/slack/events`` (or ``path``)."""

    def __init__(
        self,
        base_url: str,
        signing_secret: str,
        *,
        fake: FakeSlack | None = None,
        path: str = "/slack/events",
        team_id: str = "T1",
        team_domain: str = "testteam",
        api_app_id: str = "A0PGSESS",
        verification_token: str = "legacy-verification-token",
        timeout: float = 10,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.signing_secret = signing_secret
        self.fake = fake
        self.path = path
        self.team_id = team_id
        # the team of the user in interaction payloads; set it to another team to act as a Slack Connect
        # (other organisation) user in this workspace's channel. None: the workspace's team.
        self.user_team_id: str | None = None
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.verification_token = verification_token
        self.timeout = timeout

    @property
    def url(self) -> str:
        return self.base_url + self.path

    # ---- raw -------------------------------------------------------------------------------------

    def post(
        self,
        body: str | bytes,
        *,
        content_type: str = "application/x-www-form-urlencoded",
        timestamp: int | str | None = None,
        stale: bool = False,
        bad_signature: bool = False,
        signature: str | None = None,
        sign_request: bool = True,
        extra_headers: dict[str, str] | None = None,
    ) -> SlackReply:
        """POST a raw body.  ``stale``: timestamp 10 minutes old (Bolt allows 5);
        ``bad_signature``: signed with the wrong secret; ``signature``: send exactly this;
        ``sign_request=False``: no signature headers at all."""
        raw = body.encode("utf-8") if isinstance(body, str) else body
        ts = str(timestamp if timestamp is not None else int(time.time()) - (600 if stale else 0))
        headers = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        if sign_request:
            sig = signature or sign(self.signing_secret + ("-wrong" if bad_signature else ""), ts, raw)
            headers["X-Slack-Request-Timestamp"] = ts
            headers["X-Slack-Signature"] = sig
        headers.update(extra_headers or {})
        req = urllib.request.Request(self.url, data=raw, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # local test URL
                return SlackReply(
                    resp.status,
                    dict(resp.headers.items()),
                    resp.read().decode("utf-8", "replace"),
                    raw.decode("utf-8", "replace"),
                )
        except urllib.error.HTTPError as err:
            return SlackReply(
                err.code,
                dict(err.headers.items()),
                err.read().decode("utf-8", "replace"),
                raw.decode("utf-8", "replace"),
            )

    def _send_form(self, fields: dict[str, str], opts: dict[str, Any]) -> SlackReply:
        return self.post(urlencode(fields), **opts)

    def _send_payload(self, payload: dict[str, Any], opts: dict[str, Any]) -> SlackReply:
        return self.post(urlencode({"payload": json.dumps(payload, separators=(",", ":"))}), **opts)

    def _response_url(
        self, kind: str, channel: str | None, message_ts: str | None, ephemeral_message: Any = None
    ) -> tuple[str, str]:
        name = f"{kind}-{next(_seq)}"
        if self.fake is not None:
            url = self.fake.response_url(
                name, channel=channel, message_ts=message_ts, ephemeral_message=ephemeral_message
            )
            return url, name
        return f"http://127.0.0.1:9/response/{name}", name  # port 9 (discard) is closed: fails fast

    def _user(self, user_id: str, user_name: str | None) -> dict[str, str]:
        name = user_name or user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": self.user_team_id or self.team_id}

    def _team(self) -> dict[str, str]:
        return {"id": self.team_id, "domain": self.team_domain}

    # ---- slash command ---------------------------------------------------------------------------

    def slash(
        self,
        text: str,
        user_id: str = "U1",
        channel_id: str = "C1",
        command: str = "/pgsessions",
        response_url: str | None = None,
        trigger_id: str | None = None,
        user_name: str | None = None,
        team_id: str | None = None,
        channel_name: str | None = None,
        **opts: Any,
    ) -> SlackReply:
        """A slash command, form-encoded with every field Slack sends.  ``opts`` go to ``post()``."""
        name = None
        if response_url is None:
            response_url, name = self._response_url("slash", channel_id, None)
        trigger_id = trigger_id or make_trigger_id()
        fields = {
            "token": self.verification_token,
            "team_id": team_id or self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name or f"channel-{channel_id.lower()}",
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
        reply = self._send_form(fields, opts)
        reply.response_url, reply.response_name, reply.trigger_id = response_url, name, trigger_id
        reply.payload = fields
        return reply

    # ---- interactions ----------------------------------------------------------------------------

    def block_action(
        self,
        action_id: str,
        value: str | None,
        user_id: str = "U1",
        channel_id: str | None = None,
        message: dict | StoredMessage | None = None,
        block_id: str | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
        user_name: str | None = None,
        ephemeral: bool = False,
        message_ts: str | None = None,
        view: dict | None = None,
        **opts: Any,
    ) -> SlackReply:
        """A button click (``block_actions``).

        ``message``: the message clicked (a dict or a FakeSlack ``StoredMessage``); if it contains the
        button, its block_id, text and (when ``value`` is None) value are taken from it, as Slack does.
        ``ephemeral``: the click came from an ephemeral message (Slack then sends no ``message``).
        ``view``: the click came from inside this modal (container type ``view``).
        ``channel_id`` defaults to the StoredMessage's channel, else "C1".
        """
        stored = message if hasattr(message, "to_dict") else None
        if channel_id is None:
            channel_id = getattr(stored, "channel", None) or "C1"
        if stored is not None and getattr(stored, "ephemeral", False):
            ephemeral = True
        msg = message.to_dict() if stored is not None else (dict(message) if message else None)  # type: ignore[union-attr]
        if msg is not None and "ts" not in msg:
            msg["ts"] = message_ts or _action_ts()
        ts = (msg or {}).get("ts") or message_ts or _action_ts()
        found_block, element = find_element((msg or view or {}).get("blocks") or [], action_id)
        if value is None and element is not None:
            value = element.get("value")
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id or found_block or "b",
            "text": (element or {}).get("text") or {"type": "plain_text", "text": action_id, "emoji": True},
            "value": value,
            "type": (element or {}).get("type", "button"),
            "action_ts": _action_ts(),
        }
        if element is not None and element.get("style"):
            action["style"] = element["style"]
        if value is None:
            del action["value"]
        name = None
        if response_url is None and view is None:
            response_url, name = self._response_url(
                "action", channel_id, None if ephemeral else ts, stored if ephemeral else None
            )
        trigger_id = trigger_id or make_trigger_id()
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user_id, user_name),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "trigger_id": trigger_id,
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "state": {"values": {}},
            "actions": [action],
        }
        if view is not None:
            payload["container"] = {"type": "view", "view_id": view.get("id", "V1")}
            payload["view"] = view
        else:
            payload["container"] = {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel_id,
                "is_ephemeral": ephemeral,
            }
            payload["channel"] = {"id": channel_id, "name": f"channel-{channel_id.lower()}"}
            if msg is not None and not ephemeral:
                payload["message"] = msg
            payload["response_url"] = response_url
        reply = self._send_payload(payload, opts)
        reply.response_url, reply.response_name, reply.trigger_id = response_url, name, trigger_id
        reply.payload = payload
        return reply

    def _view(
        self,
        view_id: str,
        callback_id: str,
        private_metadata: str,
        state_values: dict[str, Any] | None,
        view: dict | None,
    ) -> dict[str, Any]:
        base = dict(view) if view else {}
        values = {}
        for block_id, actions in (state_values or {}).items():
            values[block_id] = {
                aid: (v if isinstance(v, dict) else {"type": "plain_text_input", "value": v})
                for aid, v in actions.items()
            }
        base.update(
            id=base.get("id") or view_id,
            team_id=self.team_id,
            type="modal",
            callback_id=callback_id,
            private_metadata=private_metadata,
            state={"values": values},
        )
        base.setdefault("blocks", [])
        base.setdefault("title", {"type": "plain_text", "text": "pgsessions", "emoji": True})
        base.setdefault("submit", {"type": "plain_text", "text": "Submit", "emoji": True})
        base.setdefault("close", {"type": "plain_text", "text": "Cancel", "emoji": True})
        base.setdefault("hash", f"{int(time.time())}.{secrets.token_hex(4)}")
        base.setdefault("clear_on_close", False)
        base.setdefault("notify_on_close", False)
        base.setdefault("external_id", "")
        base.setdefault("previous_view_id", None)
        base.setdefault("root_view_id", base["id"])
        base.setdefault("app_id", self.api_app_id)
        base.setdefault("app_installed_team_id", self.team_id)
        base.setdefault("bot_id", "BBOT")
        return base

    def view_submission(
        self,
        callback_id: str,
        private_metadata: str = "",
        state_values: dict[str, Any] | None = None,
        user_id: str = "U1",
        view_id: str = "V1",
        view: dict | None = None,
        user_name: str | None = None,
        trigger_id: str | None = None,
        **opts: Any,
    ) -> SlackReply:
        """A modal submit (``view_submission``).  ``state_values``: {block_id: {action_id: value}};
        a plain string value becomes a plain_text_input state, a dict is sent as given.  ``view``: the
        view the fake returned from views.open (its blocks/title/hash are kept)."""
        trigger_id = trigger_id or make_trigger_id()
        payload = {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user_id, user_name),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "trigger_id": trigger_id,
            "view": self._view(view_id, callback_id, private_metadata, state_values, view),
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        reply = self._send_payload(payload, opts)
        reply.trigger_id = trigger_id
        reply.payload = payload
        return reply

    def view_closed(
        self,
        callback_id: str,
        private_metadata: str = "",
        user_id: str = "U1",
        view_id: str = "V1",
        view: dict | None = None,
        is_cleared: bool = False,
        user_name: str | None = None,
        **opts: Any,
    ) -> SlackReply:
        """A modal dismissed with Cancel/X (``view_closed``; only sent when notify_on_close)."""
        payload = {
            "type": "view_closed",
            "team": self._team(),
            "user": self._user(user_id, user_name),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "view": self._view(view_id, callback_id, private_metadata, None, view),
            "is_cleared": is_cleared,
            "is_enterprise_install": False,
            "enterprise": None,
        }
        reply = self._send_payload(payload, opts)
        reply.payload = payload
        return reply


    # ---- Events API ------------------------------------------------------------------------------

    def event_payload(self, event: dict[str, Any], event_id: str | None = None,
                      bot_user_id: str = "UBOT") -> dict[str, Any]:
        """The ``event_callback`` body Slack POSTs for one event."""
        now = int(time.time())
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or new_event_id(),
            "event_time": now,
            "authorizations": [{
                "enterprise_id": None, "team_id": self.team_id, "user_id": bot_user_id,
                "is_bot": True, "is_enterprise_install": False,
            }],
            "is_ext_shared_channel": False,
            "event_context": "4-" + secrets.token_hex(12),
        }

    def send_event(self, event: dict[str, Any], event_id: str | None = None, retry_num: int | None = None,
                   retry_reason: str = "http_timeout", payload: dict[str, Any] | None = None,
                   **opts: Any) -> SlackReply:
        """POST an Events API request (JSON, signed). ``retry_num``: send it as Slack's n-th retry
        (``X-Slack-Retry-Num`` / ``X-Slack-Retry-Reason``); ``payload``: send exactly this body."""
        body = payload or self.event_payload(event, event_id)
        headers = dict(opts.pop("extra_headers", None) or {})
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason})
        reply = self.post(json.dumps(body, separators=(",", ":")), content_type="application/json",
                          extra_headers=headers, **opts)
        reply.payload = body
        return reply

    def url_verification(self, challenge: str, **opts: Any) -> SlackReply:
        body = {"token": self.verification_token, "challenge": challenge, "type": "url_verification"}
        reply = self.post(json.dumps(body), content_type="application/json", **opts)
        reply.payload = body
        return reply

    def mention_event(self, text: str, user_id: str = "U1", channel_id: str = "C1", ts: str | None = None,
                      thread_ts: str | None = None, bot_user_id: str = "UBOT",
                      bot_id: str | None = None) -> dict[str, Any]:
        """An ``app_mention`` event; ``text`` gets ``<@bot_user_id>`` in front unless it has it."""
        ts = ts or _action_ts()
        mention = f"<@{bot_user_id}>"
        full = text if mention in text else f"{mention} {text}".rstrip()
        event: dict[str, Any] = {
            "type": "app_mention",
            "user": user_id,
            "text": full,
            "ts": ts,
            "team": self.team_id,
            "channel": channel_id,
            "event_ts": ts,
            "client_msg_id": secrets.token_hex(16),
            "blocks": [{"type": "rich_text", "block_id": "m", "elements": [
                {"type": "rich_text_section", "elements": [{"type": "text", "text": full}]}]}],
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = user_id
        if bot_id:
            event["bot_id"] = bot_id
        return event

    def app_mention(self, text: str, user_id: str = "U1", channel_id: str = "C1", ts: str | None = None,
                    thread_ts: str | None = None, bot_user_id: str = "UBOT", bot_id: str | None = None,
                    **opts: Any) -> SlackReply:
        return self.send_event(
            self.mention_event(text, user_id, channel_id, ts, thread_ts, bot_user_id, bot_id), **opts
        )

    def home_event(self, user_id: str = "U1", tab: str = "home", view: dict | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": "D" + user_id[1:],
            "tab": tab,
            "event_ts": _action_ts(),
        }
        if view is not None:
            event["view"] = view
        return event

    def app_home_opened(self, user_id: str = "U1", tab: str = "home", view: dict | None = None,
                        **opts: Any) -> SlackReply:
        return self.send_event(self.home_event(user_id, tab, view), **opts)


def new_event_id() -> str:
    """An event id shaped like Slack's (``Ev`` + 9 uppercase letters and digits)."""
    return "Ev" + secrets.token_hex(5).upper()[:9]


def socket_envelope(payload: dict[str, Any], kind: str = "events_api", retry_attempt: int = 0,
                    retry_reason: str = "") -> dict[str, Any]:
    """A Socket Mode envelope around ``payload`` as Slack sends it over the WebSocket."""
    env: dict[str, Any] = {
        "envelope_id": secrets.token_hex(8) + "-" + secrets.token_hex(4),
        "payload": payload,
        "type": kind,
        "accepts_response_payload": kind != "events_api",
    }
    if kind == "events_api":
        env["retry_attempt"] = retry_attempt
        env["retry_reason"] = retry_reason
    return env
