"""A fake Slack Web API (and response_url endpoint) on 127.0.0.1 for the tests.

    with FakeSlack(token="xoxb-test") as fake:
        client = WebClient(base_url=fake.api_url, token="xoxb-test")
        client.chat_postMessage(channel="C1", text="hi", blocks=[...])
        call = fake.wait_for("chat.postMessage")
        fake.messages[("C1", call.response["ts"])].blocks

It answers the way Slack does for the methods the bot uses: the same request encodings slack_sdk
sends (JSON for chat.* / views.*, form-encoded or query parameters for the rest), Bearer-token
checks, OAuth scope checks against ``fake.scopes``, Block Kit limits (``invalid_blocks`` with
``errors`` and ``response_metadata.messages``), 429 + Retry-After fault injection, trigger_id expiry
(3 s) and single use, and response_url semantics (5 uses, replace_original / delete_original /
response_type).  Failed calls never change the stored state.

Text that Slack would turn into a link, a mention or an emoji by itself (a bare URL, ``#channel`` or
``@here`` in a mrkdwn object without ``verbatim: true`` or in a fallback ``text``; an ``:emoji:`` outside a
code span anywhere, plain_text with ``emoji`` too) is recorded in ``fake.autolinks`` (``autolinked(...)``
filters it), and a chat.postMessage / chat.postEphemeral / response_url post that does not say
``unfurl_links: false`` and ``unfurl_media: false`` is a warning (``assert_clean`` fails on it).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = [
    "DEFAULT_SCOPES",
    "Call",
    "FakeSlack",
    "ResponsePost",
    "find_element",
    "StoredMessage",
    "StoredView",
    "Violation",
    "autolinks",
    "validate_home_view",
    "validate_message_blocks",
    "validate_view",
]

DEFAULT_SCOPES = [
    "commands", "chat:write", "chat:write.public", "users:read", "usergroups:read", "app_mentions:read",
]

# --------------------------------------------------------------------------------------------------
# Block Kit validation (limits from Slack's Block Kit reference)

MAX_BLOCKS_MESSAGE = 50
MAX_BLOCKS_MODAL = 100
MAX_BLOCKS_HOME = 100
MAX_MESSAGE_TEXT = 40000

_BLOCK_TYPES = {
    "section",
    "header",
    "divider",
    "actions",
    "context",
    "input",
    "image",
    "rich_text",
    "file",
    "video",
}
_SELECT_TYPES = {
    "static_select",
    "multi_static_select",
    "external_select",
    "multi_external_select",
    "users_select",
    "multi_users_select",
    "conversations_select",
    "multi_conversations_select",
    "channels_select",
    "multi_channels_select",
}
_INPUT_ELEMENT_TYPES = {
    "plain_text_input",
    "number_input",
    "email_text_input",
    "url_text_input",
    "datepicker",
    "timepicker",
    "datetimepicker",
    "checkboxes",
    "radio_buttons",
    "rich_text_input",
    "file_input",
} | _SELECT_TYPES
_INTERACTIVE_TYPES = {"button", "overflow", "workflow_button"} | _INPUT_ELEMENT_TYPES


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.action_ids: dict[str, str] = {}
        self.block_ids: dict[str, str] = {}

    def err(self, msg: str, ptr: str) -> None:
        self.errors.append(f"{msg} [json-pointer:{ptr}]")

    def max_len(self, value: Any, limit: int, ptr: str) -> None:
        if isinstance(value, str) and len(value) > limit:
            self.err(f"must be less than {limit + 1} characters", ptr)

    def text_obj(
        self, obj: Any, ptr: str, limit: int, *, plain_only: bool = False, required: bool = True
    ) -> None:
        if obj is None:
            if required:
                self.err("must provide an object", ptr)
            return
        if not isinstance(obj, dict):
            self.err("must provide an object", ptr)
            return
        kind = obj.get("type")
        if kind not in ("plain_text", "mrkdwn"):
            self.err("must be one of plain_text, mrkdwn", ptr + "/type")
        elif plain_only and kind != "plain_text":
            self.err("must be plain_text", ptr + "/type")
        text = obj.get("text")
        if not isinstance(text, str):
            self.err("must provide a string", ptr + "/text")
            return
        if len(text) == 0:
            self.err("must be more than 0 characters", ptr + "/text")
        self.max_len(text, limit, ptr + "/text")
        if kind == "mrkdwn" and "emoji" in obj:
            self.err("emoji is only valid for plain_text", ptr + "/emoji")
        if "verbatim" in obj and (kind != "mrkdwn" or not isinstance(obj["verbatim"], bool)):
            self.err("verbatim is only valid for mrkdwn, as a boolean", ptr + "/verbatim")

    def ident(self, obj: dict, key: str, ptr: str, seen: dict[str, str] | None) -> None:
        value = obj.get(key)
        if value is None:
            return
        if not isinstance(value, str) or not value:
            self.err("must be a non-empty string", f"{ptr}/{key}")
            return
        self.max_len(value, 255, f"{ptr}/{key}")
        if seen is not None:
            if value in seen:
                self.err(f'duplicate {key} "{value}" (also at {seen[value]})', f"{ptr}/{key}")
            else:
                seen[value] = f"{ptr}/{key}"

    def confirm(self, obj: Any, ptr: str) -> None:
        if obj is None:
            return
        if not isinstance(obj, dict):
            self.err("must provide an object", ptr)
            return
        self.text_obj(obj.get("title"), ptr + "/title", 100, plain_only=True)
        self.text_obj(obj.get("text"), ptr + "/text", 300)
        self.text_obj(obj.get("confirm"), ptr + "/confirm", 30, plain_only=True)
        self.text_obj(obj.get("deny"), ptr + "/deny", 30, plain_only=True)

    def option(self, obj: Any, ptr: str, text_limit: int = 75, value_limit: int = 150) -> None:
        if not isinstance(obj, dict):
            self.err("must provide an object", ptr)
            return
        self.text_obj(obj.get("text"), ptr + "/text", text_limit)
        self.max_len(obj.get("value"), value_limit, ptr + "/value")
        if obj.get("description") is not None:
            self.text_obj(obj.get("description"), ptr + "/description", 75)

    def element(self, el: Any, ptr: str, allowed: set[str] | None = None) -> None:
        if not isinstance(el, dict):
            self.err("must provide an object", ptr)
            return
        kind = el.get("type")
        if allowed is not None and kind not in allowed:
            self.err(f"unsupported element type {kind!r}", ptr + "/type")
            return
        if kind in _INTERACTIVE_TYPES:
            self.ident(el, "action_id", ptr, self.action_ids)
        if kind == "button":
            self.text_obj(el.get("text"), ptr + "/text", 75, plain_only=True)
            self.max_len(el.get("value"), 2000, ptr + "/value")
            self.max_len(el.get("url"), 3000, ptr + "/url")
            if el.get("style") is not None and el.get("style") not in ("primary", "danger"):
                self.err("must be one of primary, danger", ptr + "/style")
            self.confirm(el.get("confirm"), ptr + "/confirm")
        elif kind in _SELECT_TYPES:
            if el.get("placeholder") is not None:
                self.text_obj(el.get("placeholder"), ptr + "/placeholder", 150, plain_only=True)
            options = el.get("options")
            if options is not None:
                if not isinstance(options, list) or len(options) > 100:
                    self.err("no more than 100 items allowed", ptr + "/options")
                else:
                    for i, opt in enumerate(options):
                        self.option(opt, f"{ptr}/options/{i}")
            self.confirm(el.get("confirm"), ptr + "/confirm")
        elif kind == "overflow":
            options = el.get("options")
            if not isinstance(options, list) or not 2 <= len(options) <= 5:
                self.err("must provide between 2 and 5 items", ptr + "/options")
            else:
                for i, opt in enumerate(options):
                    self.option(opt, f"{ptr}/options/{i}")
            self.confirm(el.get("confirm"), ptr + "/confirm")
        elif kind in ("checkboxes", "radio_buttons"):
            options = el.get("options")
            if not isinstance(options, list) or not 1 <= len(options) <= 10:
                self.err("must provide between 1 and 10 items", ptr + "/options")
            else:
                for i, opt in enumerate(options):
                    self.option(opt, f"{ptr}/options/{i}", text_limit=150)
        elif kind == "plain_text_input":
            if el.get("placeholder") is not None:
                self.text_obj(el.get("placeholder"), ptr + "/placeholder", 150, plain_only=True)
            self.max_len(el.get("initial_value"), 3000, ptr + "/initial_value")
            ml = el.get("max_length")
            if ml is not None and (not isinstance(ml, int) or ml > 3000 or ml < 1):
                self.err("must be between 1 and 3000", ptr + "/max_length")
        elif kind == "image":
            self.max_len(el.get("image_url"), 3000, ptr + "/image_url")
            if not el.get("alt_text"):
                self.err("must provide alt_text", ptr + "/alt_text")
            self.max_len(el.get("alt_text"), 2000, ptr + "/alt_text")
        elif kind in ("plain_text", "mrkdwn"):
            self.text_obj(el, ptr, 3000)
        elif kind not in _INTERACTIVE_TYPES:
            self.err(f"unsupported element type {kind!r}", ptr + "/type")

    def block(self, block: Any, ptr: str, surface: str) -> None:
        if not isinstance(block, dict):
            self.err("must provide an object", ptr)
            return
        kind = block.get("type")
        if kind not in _BLOCK_TYPES:
            self.err(f"unsupported block type {kind!r}", ptr + "/type")
            return
        self.ident(block, "block_id", ptr, self.block_ids)
        if kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                self.err("must provide either text or fields", ptr)
            if text is not None:
                self.text_obj(text, ptr + "/text", 3000)
            if fields is not None:
                if not isinstance(fields, list):
                    self.err("must provide an array", ptr + "/fields")
                else:
                    if len(fields) > 10:
                        self.err("no more than 10 items allowed", ptr + "/fields")
                    for i, f in enumerate(fields):
                        self.text_obj(f, f"{ptr}/fields/{i}", 2000)
            if block.get("accessory") is not None:
                self.element(block["accessory"], ptr + "/accessory")
        elif kind == "header":
            self.text_obj(block.get("text"), ptr + "/text", 150, plain_only=True)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                self.err("must provide at least 1 item", ptr + "/elements")
                return
            if len(elements) > 25:
                self.err("no more than 25 items allowed", ptr + "/elements")
            for i, el in enumerate(elements):
                self.element(el, f"{ptr}/elements/{i}")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                self.err("must provide at least 1 item", ptr + "/elements")
                return
            if len(elements) > 10:
                self.err("no more than 10 items allowed", ptr + "/elements")
            for i, el in enumerate(elements):
                self.element(el, f"{ptr}/elements/{i}", allowed={"plain_text", "mrkdwn", "image"})
        elif kind == "input":
            self.text_obj(block.get("label"), ptr + "/label", 2000, plain_only=True)
            if block.get("hint") is not None:
                self.text_obj(block.get("hint"), ptr + "/hint", 2000, plain_only=True)
            if block.get("element") is None:
                self.err("must provide an object", ptr + "/element")
            else:
                self.element(block["element"], ptr + "/element", allowed=_INPUT_ELEMENT_TYPES)
        elif kind == "image":
            self.max_len(block.get("image_url"), 3000, ptr + "/image_url")
            self.max_len(block.get("alt_text"), 2000, ptr + "/alt_text")
            if block.get("title") is not None:
                self.text_obj(block.get("title"), ptr + "/title", 2000, plain_only=True)

    def blocks(self, blocks: Any, ptr: str, surface: str) -> None:
        if not isinstance(blocks, list):
            self.err("must provide an array", ptr)
            return
        limit = {"modal": MAX_BLOCKS_MODAL, "home": MAX_BLOCKS_HOME}.get(surface, MAX_BLOCKS_MESSAGE)
        if len(blocks) > limit:
            self.err(f"no more than {limit} items allowed", ptr)
        for i, b in enumerate(blocks):
            self.block(b, f"{ptr}/{i}", surface)


def validate_message_blocks(blocks: Any, pointer: str = "/blocks") -> list[str]:
    """Slack-style error strings for a message's blocks ([] when valid)."""
    c = _Checker()
    c.blocks(blocks, pointer, "message")
    return c.errors


def validate_view(view: Any, pointer: str = "/view") -> list[str]:
    """Slack-style error strings for a modal view ([] when valid)."""
    c = _Checker()
    if not isinstance(view, dict):
        c.err("must provide an object", pointer)
        return c.errors
    if view.get("type") != "modal":
        c.err("must be modal", pointer + "/type")
    c.text_obj(view.get("title"), pointer + "/title", 24, plain_only=True)
    for key in ("submit", "close"):
        if view.get(key) is not None:
            c.text_obj(view.get(key), f"{pointer}/{key}", 24, plain_only=True)
    c.max_len(view.get("private_metadata"), 3000, pointer + "/private_metadata")
    c.max_len(view.get("callback_id"), 255, pointer + "/callback_id")
    c.max_len(view.get("external_id"), 255, pointer + "/external_id")
    blocks = view.get("blocks")
    if blocks is None:
        c.err("must provide an array", pointer + "/blocks")
    else:
        c.blocks(blocks, pointer + "/blocks", "modal")
        if isinstance(blocks, list) and view.get("submit") is None:
            if any(isinstance(b, dict) and b.get("type") == "input" for b in blocks):
                c.err("must provide submit when using input blocks", pointer + "/submit")
    return c.errors


def validate_home_view(view: Any, pointer: str = "/view") -> list[str]:
    """Slack-style error strings for an App Home view published with views.publish ([] when valid)."""
    c = _Checker()
    if not isinstance(view, dict):
        c.err("must provide an object", pointer)
        return c.errors
    if view.get("type") != "home":
        c.err("must be home", pointer + "/type")
    c.max_len(view.get("private_metadata"), 3000, pointer + "/private_metadata")
    c.max_len(view.get("callback_id"), 255, pointer + "/callback_id")
    c.max_len(view.get("external_id"), 255, pointer + "/external_id")
    blocks = view.get("blocks")
    if blocks is None:
        c.err("must provide an array", pointer + "/blocks")
    else:
        c.blocks(blocks, pointer + "/blocks", "home")
    return c.errors


# --------------------------------------------------------------------------------------------------
# recorded things


# --------------------------------------------------------------------------------------------------
# What Slack would turn into a link, a mention or an emoji on its own (no <...> markup needed)

_CODE_SPAN = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
_MARKUP = re.compile(r"<[^<>]*>")  # the sender's explicit links and mentions: what it asked for
_AUTO = {
    "url": re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>`|]+"),
    "channel": re.compile(r"(?<![\w&#/])#[\w-]+"),
    "mention": re.compile(r"(?i)(?<![\w])@(?:here|channel|everyone)\b"),
    "emoji": re.compile(r"(?i):[a-z0-9_+'-]+:"),
}


def autolinks(text: str, *, verbatim: bool = False, mrkdwn: bool = True) -> list[tuple[str, str]]:
    """``(kind, token)`` for everything in ``text`` that Slack would draw as a link, a mention or an emoji
    by itself: outside code spans and the sender's own ``<…>`` markup, an ``:emoji:`` always (plain_text
    with ``emoji`` too), a bare URL, ``#channel`` or ``@here`` unless the mrkdwn object is ``verbatim``."""
    rest = _MARKUP.sub(" ", _CODE_SPAN.sub(" ", text)) if mrkdwn else text
    kinds = ("emoji",) if verbatim else ("url", "channel", "mention", "emoji")
    return [(kind, m.group(0)) for kind in kinds for m in _AUTO[kind].finditer(rest)]


def _payload_autolinks(payload: Any, ptr: str = "") -> list[tuple[str, str, str]]:
    """``(json pointer, kind, token)`` for every text object of a payload and its fallback ``text``."""
    out: list[tuple[str, str, str]] = []

    def walk(obj: Any, at: str) -> None:
        if isinstance(obj, dict):
            kind, text = obj.get("type"), obj.get("text")
            if kind == "mrkdwn" and isinstance(text, str):
                out.extend((at, k, t) for k, t in autolinks(text, verbatim=obj.get("verbatim") is True))
            elif kind == "plain_text" and isinstance(text, str) and obj.get("emoji", True) is not False:
                out.extend((at, k, t) for k, t in autolinks(text, verbatim=True, mrkdwn=False))
            for key, value in obj.items():
                if isinstance(value, dict | list):
                    walk(value, f"{at}/{key}")
        elif isinstance(obj, list):
            for i, value in enumerate(obj):
                walk(value, f"{at}/{i}")

    if isinstance(payload, dict):
        if isinstance(payload.get("text"), str):  # the fallback text: Slack links URLs in it, draws emoji
            out.extend((f"{ptr}/text", k, t) for k, t in autolinks(payload["text"]))
        for key in ("blocks", "view", "attachments"):
            if key in payload:
                walk(payload[key], f"{ptr}/{key}")
    return out


@dataclass
class Autolink:
    """Something in a payload Slack would draw as a link, a mention or an emoji by itself."""

    where: str  # API method or "response_url:<name>"
    pointer: str
    kind: str  # url / channel / mention / emoji
    token: str


def _lower_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers}


@dataclass
class Call:
    """One Web API request as received, with the answer given."""

    method: str
    params: dict[str, Any]  # query + body; JSON-in-form fields (blocks, view, ...) decoded
    headers: dict[str, str]  # lower-case names
    time: float  # time.time() when received
    http_method: str = "POST"
    content_type: str = ""
    raw_body: bytes = b""
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    injected: bool = False  # answered by fail_next()

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.response.get("error") or f"http_{self.status}")

    def __repr__(self) -> str:
        short = {
            k: (v if len(repr(v)) < 60 else repr(v)[:57] + "...")
            for k, v in self.params.items()
            if k != "token"
        }
        return f"Call({self.method} {short} -> {self.status} {'ok' if self.ok else self.error})"


@dataclass
class StoredMessage:
    """A message as it currently stands in a channel, with its previous versions."""

    channel: str
    ts: str
    text: str
    blocks: list[dict] | None
    attachments: list[dict] | None = None
    thread_ts: str | None = None
    user: str = "UBOT"
    bot_id: str = "BBOT"
    team: str = "T1"
    deleted: bool = False
    ephemeral: bool = False
    ephemeral_user: str | None = None  # ephemeral: who can see it
    metadata: dict | None = None
    source: str = "chat.postMessage"  # or "response_url:<name>"
    history: list[dict] = field(default_factory=list)  # earlier versions (to_dict() snapshots), oldest first
    edited_ts: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The message as Slack shows it in payloads (e.g. a block_actions ``message``)."""
        d: dict[str, Any] = {
            "type": "message",
            "user": self.user,
            "bot_id": self.bot_id,
            "text": self.text,
            "ts": self.ts,
            "team": self.team,
        }
        if self.blocks is not None:
            d["blocks"] = copy.deepcopy(self.blocks)
        if self.attachments is not None:
            d["attachments"] = copy.deepcopy(self.attachments)
        if self.thread_ts:
            d["thread_ts"] = self.thread_ts
        if self.metadata is not None:
            d["metadata"] = copy.deepcopy(self.metadata)
        if self.edited_ts:
            d["edited"] = {"user": self.user, "ts": self.edited_ts}
        return d

    @property
    def versions(self) -> list[dict]:
        """Every version, oldest first, the current one last."""
        return [*self.history, self.to_dict()]

    def find_element(self, action_id: str) -> tuple[str | None, dict | None]:
        """(block_id, element) of the interactive element with this action_id, or (None, None)."""
        return find_element(self.blocks or [], action_id)


def find_element(blocks: list, action_id: str) -> tuple[str | None, dict | None]:
    """(block_id, element) of the interactive element with ``action_id`` in ``blocks``."""
    for block in blocks:
        if not isinstance(block, dict):
            continue
        candidates = list(block.get("elements") or []) if block.get("type") == "actions" else []
        for key in ("accessory", "element"):
            if isinstance(block.get(key), dict):
                candidates.append(block[key])
        for el in candidates:
            if isinstance(el, dict) and el.get("action_id") == action_id:
                return block.get("block_id"), el
    return None, None


@dataclass
class StoredView:
    """An open modal: the view Slack returned, and the earlier versions."""

    id: str
    view: dict[str, Any]
    trigger_id: str | None
    history: list[dict] = field(default_factory=list)
    pushed: bool = False

    @property
    def callback_id(self) -> str | None:
        return self.view.get("callback_id")

    @property
    def private_metadata(self) -> str:
        return self.view.get("private_metadata", "")


@dataclass
class ResponsePost:
    """One POST to a response_url."""

    name: str
    body: dict[str, Any]
    headers: dict[str, str]
    time: float
    status: int
    answer: str
    raw_body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def replace_original(self) -> bool:
        return _truthy(self.body.get("replace_original"))

    @property
    def delete_original(self) -> bool:
        return _truthy(self.body.get("delete_original"))

    @property
    def response_type(self) -> str:
        return str(self.body.get("response_type") or "ephemeral")

    @property
    def text(self) -> str | None:
        return self.body.get("text")

    @property
    def blocks(self) -> list | None:
        return self.body.get("blocks")


@dataclass
class Violation:
    """A Block Kit / payload rule broken by the bot (the call was rejected, except for warnings)."""

    where: str  # API method or "response_url:<name>"
    errors: list[str]
    payload: dict[str, Any]
    time: float = field(default_factory=time.time)


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    error: str | None
    times: int


@dataclass
class _ResponseUrl:
    name: str
    channel: str | None
    message_ts: str | None
    created: float
    uses: int = 0
    ephemeral: StoredMessage | None = None  # the ephemeral message it belongs to / last created


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)


class _ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.body = {"ok": False, "error": error, **extra}


# Slack methods that take no token
_NO_AUTH = {"api.test", "oauth.v2.access", "oauth.access", "oauth.v2.exchange", "openid.connect.token"}
# bot-token scopes each method needs (any one of them)
_SCOPES: dict[str, tuple[str, ...]] = {
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.delete": ("chat:write",),
    "usergroups.users.list": ("usergroups:read",),
    "users.info": ("users:read",),
    "conversations.info": ("channels:read", "groups:read", "im:read", "mpim:read"),
}
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata")


# --------------------------------------------------------------------------------------------------
# the server


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeSlack/1.0"
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        self.server.fake._dispatch(self, "POST")  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self.server.fake._dispatch(self, "GET")  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeSlack:
    """Fake Slack Web API.  Configuration attributes may be changed at any time (under test control):

    - ``token``: the bot token accepted (``xoxb-...``); ``app_token`` (``xapp-...``) for
      apps.connections.open together with ``socket_mode_url``.
    - ``scopes``: bot scopes (reported in ``x-oauth-scopes``; missing ones give ``missing_scope``).
    - ``usergroups``: {"S0DBAS": ["U1", "U2"]}; ``users``: {"U1": "Alice Admin"} (or a dict of
      user fields that users.info returns over its defaults, e.g. {"U9": {"is_restricted": True}} for a
      guest, {"U10": {"team_id": "T999"}} for another organisation's user); ``channels``: {"C1": "ops"} or {"C1": {"name": "ops", "is_private": True,
      "is_member": False, "is_archived": False}} (unknown channels are public and joined).
    - ``trigger_ttl``: seconds a trigger_id made by SlackSender stays valid (3.0; None = forever).
    - ``response_url_max_uses``: 5.

    ``home_views`` holds the Home tab published (views.publish, at most 100 blocks) for each user id;
    chat.postMessage to a user id (U…) posts into that person's DM with the app (channel D…).
    """

    def __init__(
        self,
        token: str = "xoxb-test",
        *,
        scopes: Iterable[str] | None = None,
        app_token: str | None = None,
        socket_mode_url: str | None = None,
        team_id: str = "T1",
        team_domain: str = "testteam",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_id: str = "A0PGSESS",
    ) -> None:
        self.token = token
        self.scopes: list[str] = list(DEFAULT_SCOPES if scopes is None else scopes)
        self.app_token = app_token
        self.socket_mode_url = socket_mode_url
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.usergroups: dict[str, list[str]] = {}
        self.users: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.trigger_ttl: float | None = 3.0
        self.response_url_max_uses = 5

        self._cond = threading.Condition(threading.RLock())
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ts_us = 0
        self._ids = itertools.count(1)
        self._init_state()

    def _init_state(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], StoredMessage] = {}
        self.ephemerals: list[StoredMessage] = []
        self.views: dict[str, StoredView] = {}
        self.home_views: dict[str, StoredView] = {}  # user id -> the Home tab published for that person
        self.responses: list[ResponsePost] = []
        self.violations: list[Violation] = []
        self.warnings: list[Violation] = []
        self.autolinks: list[Autolink] = []  # every auto-formatted token in what the bot posted
        self._faults: dict[str, list[_Fault]] = {}
        self._delays: dict[str, float] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._used_triggers: set[str] = set()
        self._expired_triggers: set[str] = set()

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeSlack:
        """Serve on ``port`` (0: a free one). ``stop()`` then ``start(port)`` of the old port is Slack
        refusing connections for a while and coming back at the same address, its state kept."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """Web API base for ``WebClient(base_url=...)``; ends with /api/."""
        return f"{self.url}/api/"

    # ---- control ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every call, message, view, response, violation, fault and delay (config stays)."""
        with self._cond:
            self._init_state()
            self._cond.notify_all()

    def fail_next(
        self,
        method: str,
        status: int = 429,
        retry_after: int | None = 1,
        times: int = 1,
        error: str | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail without effect.

        status=429: HTTP 429, ``Retry-After: retry_after``, {"ok": false, "error": "ratelimited"};
        status=500 (or any 5xx): that HTTP status with an HTML body; ``error="..."``: HTTP 200 with
        {"ok": false, "error": error}.  ``method`` may also be "response_url" (any response_url POST)
        or "response_url:<name>".
        """
        with self._cond:
            fault = _Fault(status=200 if error else status, retry_after=retry_after, error=error, times=times)
            self._faults.setdefault(method, []).append(fault)

    def clear_faults(self, method: str | None = None) -> None:
        """Forget the faults still waiting for ``method`` (every method when None): Slack answers again."""
        with self._cond:
            if method is None:
                self._faults.clear()
            else:
                self._faults.pop(method, None)

    def delay(self, method: str, seconds: float) -> None:
        """Sleep ``seconds`` before answering every call of ``method`` (0 removes the delay)."""
        with self._cond:
            if seconds:
                self._delays[method] = seconds
            else:
                self._delays.pop(method, None)

    def response_url(
        self,
        name: str,
        channel: str | None = None,
        message_ts: str | None = None,
        ephemeral_message: StoredMessage | None = None,
    ) -> str:
        """A response_url the bot can POST to (5 uses within 30 minutes, like Slack's).

        Bound to ``channel``/``message_ts`` (the message a button was on) or to an
        ``ephemeral_message``, replace_original/delete_original edit that message.  An unbound URL
        (slash command) gets bound to the first message it creates, so later replace_original
        replaces that one, as Slack does."""
        with self._cond:
            if name not in self._response_urls or channel or message_ts or ephemeral_message:
                self._response_urls[name] = _ResponseUrl(
                    name, channel, message_ts, time.time(), 0, ephemeral_message
                )
        return f"{self.url}/response/{quote(name, safe='')}"

    def expire_trigger(self, trigger_id: str) -> None:
        """Make views.open/push with this trigger_id fail with expired_trigger_id."""
        with self._cond:
            self._expired_triggers.add(trigger_id)

    # ---- queries ---------------------------------------------------------------------------------

    def calls_for(self, method: str, ok: bool | None = None) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def messages_in(self, channel: str, include_deleted: bool = False) -> list[StoredMessage]:
        """Messages of a channel, oldest first."""
        with self._cond:
            msgs = [
                m
                for (ch, _), m in self.messages.items()
                if ch == channel and (include_deleted or not m.deleted)
            ]
        return sorted(msgs, key=lambda m: m.ts)

    def last_message(self, channel: str | None = None) -> StoredMessage | None:
        with self._cond:
            msgs = [
                m
                for m in self.messages.values()
                if not m.deleted and (channel is None or m.channel == channel)
            ]
        return max(msgs, key=lambda m: m.ts) if msgs else None

    def responses_for(self, name: str) -> list[ResponsePost]:
        with self._cond:
            return [r for r in self.responses if r.name == name]

    def summary(self, last: int = 15) -> str:
        with self._cond:
            lines = [repr(c) for c in self.calls[-last:]]
            lines += [
                f"response {r.name}: {r.status} {json.dumps(r.body)[:120]}" for r in self.responses[-last:]
            ]
            lines += [f"violation {v.where}: {v.errors}" for v in self.violations[-5:]]
        return "\n".join(lines) or "(no calls)"

    def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 10,
        ok: bool | None = None,
        since: int = 0,
    ) -> Call:
        """First recorded call of ``method`` (from index ``since`` of ``calls``) matching ``predicate``
        (and ``ok`` if given), waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for c in self.calls[since:]:
                    if (
                        c.method == method
                        and (ok is None or c.ok == ok)
                        and (predicate is None or predicate(c))
                    ):
                        return c
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {method} call{' matching the predicate' if predicate else ''} within {timeout}s; "
                        f"recent traffic:\n{self.summary()}"
                    )
                self._cond.wait(remaining)

    def wait_for_response(
        self,
        name: str | None = None,
        predicate: Callable[[ResponsePost], bool] | None = None,
        timeout: float = 10,
        since: int = 0,
    ) -> ResponsePost:
        """First response_url POST (to ``name`` if given) matching ``predicate``, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.responses[since:]:
                    if (name is None or r.name == name) and (predicate is None or predicate(r)):
                        return r
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no response_url post{f' to {name!r}' if name else ''} within {timeout}s; "
                        f"recent traffic:\n{self.summary()}"
                    )
                self._cond.wait(remaining)

    def autolinked(self, *needles: str) -> list[Autolink]:
        """The recorded auto-links, mentions and emoji whose token contains one of ``needles``."""
        with self._cond:
            return [a for a in self.autolinks if any(n.lower() in a.token.lower() for n in needles)]

    def assert_clean(self) -> None:
        """Fail if the bot broke a Block Kit rule or left out a text fallback."""
        with self._cond:
            problems = [*self.violations, *self.warnings]
        assert not problems, "Slack payload problems:\n" + "\n".join(
            f"{p.where}: {p.errors}" for p in problems
        )

    # ---- helpers ---------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        now = int(time.time() * 1_000_000)
        self._ts_us = max(now, self._ts_us + 100)
        return f"{self._ts_us // 1_000_000}.{self._ts_us % 1_000_000:06d}"

    def _take_fault(self, key: str) -> _Fault | None:
        faults = self._faults.get(key)
        if not faults:
            return None
        fault = faults[0]
        fault.times -= 1
        if fault.times <= 0:
            faults.pop(0)
        return fault

    def _violation(self, where: str, errors: list[str], payload: dict, *, warning: bool = False) -> None:
        (self.warnings if warning else self.violations).append(
            Violation(where, errors, copy.deepcopy(payload))
        )

    # ---- HTTP ------------------------------------------------------------------------------------

    def _dispatch(self, h: BaseHTTPRequestHandler, verb: str) -> None:
        received = time.time()
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length > 0 else b""
        headers = _lower_headers(h.headers.items())
        try:
            if parts.path.startswith("/api/"):
                status, body, extra = self._api(
                    unquote(parts.path[5:]), verb, parts.query, raw, headers, received
                )
                payload = json.dumps(body).encode()
                ctype = "application/json; charset=utf-8"
                if status >= 500:
                    payload = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
                    ctype = "text/html"
            elif parts.path.startswith("/response/") and verb == "POST":
                status, text = self._response(
                    unquote(parts.path[len("/response/") :]), raw, headers, received
                )
                payload, ctype, extra = text.encode(), "text/html", {}
            else:
                status, payload, ctype, extra = 404, b"not found", "text/plain", {}
        except Exception as exc:  # a bug in the fake must be visible, not a hang
            status, payload, ctype, extra = 500, f"fake slack crashed: {exc!r}".encode(), "text/plain", {}
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(payload)))
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)

    def _parse(
        self, query: str, raw: bytes, headers: dict[str, str]
    ) -> tuple[dict[str, Any], str | None, bool]:
        """(params, parse error, body was JSON)."""
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        is_json = False
        if raw:
            if ctype == "application/json":
                is_json = True
                try:
                    body = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return params, "invalid_json", True
                if not isinstance(body, dict):
                    return params, "invalid_json", True
                params.update(body)
            elif ctype in ("application/x-www-form-urlencoded", ""):
                params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            else:
                return params, "invalid_form_data", False
        for key in _JSON_FIELDS:
            if isinstance(params.get(key), str) and params[key] != "":
                try:
                    params[key] = json.loads(params[key])
                except json.JSONDecodeError:
                    return (
                        params,
                        "invalid_blocks_format" if key == "blocks" else "invalid_arguments",
                        is_json,
                    )
        return params, None, is_json

    def _api(
        self, method: str, verb: str, query: str, raw: bytes, headers: dict[str, str], received: float
    ) -> tuple[int, dict, dict[str, str]]:
        params, parse_error, is_json = self._parse(query, raw, headers)
        call = Call(
            method=method,
            params=params,
            headers=headers,
            time=received,
            http_method=verb,
            content_type=headers.get("content-type", ""),
            raw_body=raw,
        )
        with self._cond:
            delay = self._delays.get(method, 0)
        if delay:
            time.sleep(delay)
        extra: dict[str, str] = {}
        with self._cond:
            try:
                fault = self._take_fault(method)
                if fault is not None:
                    call.injected = True
                    if fault.error:
                        raise _ApiError(fault.error)
                    if fault.status == 429:
                        call.status = 429
                        if fault.retry_after is not None:
                            extra["Retry-After"] = str(fault.retry_after)
                        raise _ApiError("ratelimited")
                    call.status = fault.status
                    raise _ApiError("fatal_error" if fault.status >= 500 else f"http_{fault.status}")
                handler = getattr(self, "_m_" + method.replace(".", "_"), None)
                if handler is None:
                    raise _ApiError("unknown_method")
                token = self._token(headers, params, is_json)
                if method not in _NO_AUTH:
                    self._check_auth(method, token)
                    extra["x-oauth-scopes"] = ",".join(self.scopes)
                    if method in _SCOPES:
                        extra["x-accepted-oauth-scopes"] = ",".join(_SCOPES[method])
                if parse_error:
                    raise _ApiError(parse_error)
                call.response = {"ok": True, **handler(params, call)}
            except _ApiError as exc:
                call.response = exc.body
            self.calls.append(call)
            self._cond.notify_all()
            return call.status, call.response, extra

    @staticmethod
    def _token(headers: dict[str, str], params: dict[str, Any], is_json: bool) -> str | None:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if not is_json and params.get("token"):  # Slack accepts token as a form/query parameter
            return str(params["token"])
        return None

    def _check_auth(self, method: str, token: str | None) -> None:
        if not token:
            raise _ApiError("not_authed")
        if method == "apps.connections.open":
            if self.app_token and token == self.app_token:
                return
            if token == self.token:
                raise _ApiError("not_allowed_token_type")
            raise _ApiError("invalid_auth")
        if self.app_token and token == self.app_token:
            raise _ApiError("not_allowed_token_type")
        if token != self.token:
            raise _ApiError("invalid_auth")
        needed = _SCOPES.get(method)
        if needed and not any(s in self.scopes for s in needed):
            raise _ApiError("missing_scope", needed=needed[0], provided=",".join(self.scopes))

    # ---- message helpers -------------------------------------------------------------------------

    def _channel(self, value: Any) -> str:
        channel = str(value or "")
        if not channel:
            raise _ApiError("channel_not_found")
        if channel[0] in "UW":  # a user id: Slack posts into the DM with that user
            return "D" + channel[1:]
        info = self._channel_info(channel)
        if info is not None:
            if info.get("is_archived"):
                raise _ApiError("is_archived")
            if not info.get("is_member", True):
                if info.get("is_private"):
                    raise _ApiError("channel_not_found")
                if "chat:write.public" not in self.scopes:
                    raise _ApiError("not_in_channel")
        return channel

    def _channel_info(self, channel: str) -> dict | None:
        if channel not in self.channels:
            return None
        info = self.channels[channel]
        return {"name": info} if isinstance(info, str) else dict(info)

    def _record_autolinks(self, where: str, payload: dict) -> None:
        self.autolinks.extend(Autolink(where, p, k, t) for p, k, t in _payload_autolinks(payload))

    def _check_unfurl(self, where: str, payload: dict) -> None:
        """A post must say ``unfurl_links: false`` and ``unfurl_media: false`` (a URL from data must never
        become a preview card); a warning, so :meth:`assert_clean` fails on it."""
        missing = [k for k in ("unfurl_links", "unfurl_media") if k not in payload or _truthy(payload[k])]
        if missing:
            self._violation(where, [f"unfurl_not_disabled: {', '.join(missing)} not false"], payload, warning=True)

    def _check_message_payload(self, method: str, params: dict, *, require_content: bool = True) -> None:
        self._record_autolinks(method, params)
        if method in ("chat.postMessage", "chat.postEphemeral"):
            self._check_unfurl(method, params)
        text, blocks, attachments = params.get("text"), params.get("blocks"), params.get("attachments")
        if require_content and not text and not blocks and not attachments:
            raise _ApiError("no_text")
        if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
            raise _ApiError("msg_too_long")
        if blocks is not None and blocks != "":
            errors = validate_message_blocks(blocks)
            if errors:
                self._violation(method, errors, params)
                raise _ApiError(
                    "invalid_blocks",
                    errors=errors,
                    response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
                )

    def _warn_missing_text(self, where: str, text: Any, blocks: Any, payload: dict) -> None:
        if blocks and not (isinstance(text, str) and text.strip()):
            self._violation(
                where, ["missing_text_fallback: blocks sent without a top-level text"], payload, warning=True
            )

    # ---- methods ---------------------------------------------------------------------------------

    def _m_api_test(self, params: dict, call: Call) -> dict:
        return {"args": {k: v for k, v in params.items() if k != "token"}}

    def _m_auth_test(self, params: dict, call: Call) -> dict:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": "Test Team",
            "user": "pgsessions",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _m_chat_postMessage(self, params: dict, call: Call) -> dict:
        channel = self._channel(params.get("channel"))
        self._check_message_payload(call.method, params)
        self._warn_missing_text(call.method, params.get("text"), params.get("blocks"), params)
        msg = StoredMessage(
            channel=channel,
            ts=self._next_ts(),
            text=str(params.get("text") or ""),
            blocks=params.get("blocks") or None,
            attachments=params.get("attachments") or None,
            thread_ts=params.get("thread_ts") or None,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            team=self.team_id,
            metadata=params.get("metadata") or None,
        )
        self.messages[(channel, msg.ts)] = msg
        return {"channel": channel, "ts": msg.ts, "message": msg.to_dict()}

    def _m_chat_update(self, params: dict, call: Call) -> dict:
        channel = str(params.get("channel") or "")
        if not channel:
            raise _ApiError("channel_not_found")
        if channel[0] in "UW":
            channel = "D" + channel[1:]
        ts = str(params.get("ts") or "")
        msg = self.messages.get((channel, ts))
        if msg is None or msg.deleted:
            raise _ApiError("message_not_found")
        self._check_message_payload(call.method, params)
        new_text = str(params["text"]) if "text" in params and params["text"] is not None else msg.text
        new_blocks = (params.get("blocks") or None) if "blocks" in params else msg.blocks
        self._warn_missing_text(call.method, new_text, new_blocks, params)
        msg.history.append(msg.to_dict())
        msg.text = new_text
        msg.blocks = new_blocks
        if "attachments" in params:
            msg.attachments = params.get("attachments") or None
        if "metadata" in params:
            msg.metadata = params.get("metadata") or None
        msg.edited_ts = self._next_ts()
        return {"channel": channel, "ts": ts, "text": msg.text, "message": msg.to_dict()}

    def _m_chat_postEphemeral(self, params: dict, call: Call) -> dict:
        channel = self._channel(params.get("channel"))
        user = str(params.get("user") or "")
        if not user:
            raise _ApiError("user_not_found")
        self._check_message_payload(call.method, params)
        self._warn_missing_text(call.method, params.get("text"), params.get("blocks"), params)
        msg = StoredMessage(
            channel=channel,
            ts=self._next_ts(),
            text=str(params.get("text") or ""),
            blocks=params.get("blocks") or None,
            attachments=params.get("attachments") or None,
            thread_ts=params.get("thread_ts") or None,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            team=self.team_id,
            ephemeral=True,
            ephemeral_user=user,
            source=call.method,
        )
        self.ephemerals.append(msg)
        return {"message_ts": msg.ts}

    def _m_chat_delete(self, params: dict, call: Call) -> dict:
        channel = str(params.get("channel") or "")
        if not channel:
            raise _ApiError("channel_not_found")
        ts = str(params.get("ts") or "")
        msg = self.messages.get((channel, ts))
        if msg is None or msg.deleted:
            raise _ApiError("message_not_found")
        msg.history.append(msg.to_dict())
        msg.deleted = True
        return {"channel": channel, "ts": ts}

    def _check_trigger(self, trigger_id: Any) -> str:
        tid = str(trigger_id or "")
        if not tid:
            raise _ApiError("invalid_trigger_id")
        if tid in self._expired_triggers:
            raise _ApiError("expired_trigger_id")
        if tid in self._used_triggers:
            raise _ApiError("exchanged_trigger_id")
        m = re.fullmatch(r"(\d{13})\.\d+\.[0-9a-f]+", tid)  # SlackSender's trigger ids carry their birth (ms)
        if m and self.trigger_ttl is not None and time.time() - int(m.group(1)) / 1000 > self.trigger_ttl:
            raise _ApiError("expired_trigger_id")
        return tid

    def _check_view(self, method: str, params: dict) -> dict:
        view = params.get("view")
        if view is None or view == "":
            raise _ApiError(
                "invalid_arguments", response_metadata={"messages": ["[ERROR] missing required field: view"]}
            )
        errors = validate_view(view)
        self._record_autolinks(method, {"view": view})
        if errors:
            self._violation(method, errors, params)
            raise _ApiError(
                "invalid_arguments",
                errors=errors,
                response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
            )
        return view

    def _new_view(
        self, view: dict, view_id: str, previous: str | None = None, root: str | None = None
    ) -> dict:
        full = copy.deepcopy(view)
        full.update(
            id=view_id,
            team_id=self.team_id,
            state={"values": {}},
            hash=f"{time.time():.6f}.{next(self._ids):08x}",
            previous_view_id=previous,
            root_view_id=root or view_id,
            app_id=self.app_id,
            bot_id=self.bot_id,
            app_installed_team_id=self.team_id,
        )
        full.setdefault("private_metadata", "")
        full.setdefault("callback_id", "")
        full.setdefault("external_id", "")
        full.setdefault("clear_on_close", False)
        full.setdefault("notify_on_close", False)
        return full

    def _open_view(self, params: dict, call: Call, pushed: bool) -> dict:
        tid = self._check_trigger(params.get("trigger_id"))
        view = self._check_view(call.method, params)
        view_id = f"V{next(self._ids):010d}"
        full = self._new_view(view, view_id)
        self._used_triggers.add(tid)
        self.views[view_id] = StoredView(id=view_id, view=full, trigger_id=tid, pushed=pushed)
        return {"view": copy.deepcopy(full)}

    def _m_views_open(self, params: dict, call: Call) -> dict:
        return self._open_view(params, call, pushed=False)

    def _m_views_push(self, params: dict, call: Call) -> dict:
        return self._open_view(params, call, pushed=True)

    def _m_views_update(self, params: dict, call: Call) -> dict:
        view_id, external_id = params.get("view_id"), params.get("external_id")
        if not view_id and not external_id:
            raise _ApiError(
                "invalid_arguments", response_metadata={"messages": ["[ERROR] view_id or external_id"]}
            )
        stored = self.views.get(str(view_id)) if view_id else None
        if stored is None and external_id:
            stored = next((v for v in self.views.values() if v.view.get("external_id") == external_id), None)
        if stored is None:
            raise _ApiError("not_found")
        if params.get("hash") and params["hash"] != stored.view.get("hash"):
            raise _ApiError("hash_conflict")
        view = self._check_view(call.method, params)
        stored.history.append(stored.view)
        stored.view = self._new_view(
            view, stored.id, stored.view.get("previous_view_id"), stored.view.get("root_view_id")
        )
        return {"view": copy.deepcopy(stored.view)}

    def _m_views_publish(self, params: dict, call: Call) -> dict:
        user = str(params.get("user_id") or "")
        if not re.fullmatch(r"[UW][A-Z0-9]+", user):
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["[ERROR] user_id"]})
        view = params.get("view")
        if view is None or view == "":
            raise _ApiError(
                "invalid_arguments", response_metadata={"messages": ["[ERROR] missing required field: view"]}
            )
        errors = validate_home_view(view)
        if errors:
            self._violation(call.method, errors, params)
            raise _ApiError(
                "invalid_arguments", errors=errors, response_metadata={"messages": [f"[ERROR] {e}" for e in errors]}
            )
        stored = self.home_views.get(user)
        if stored is not None and params.get("hash") and params["hash"] != stored.view.get("hash"):
            raise _ApiError("hash_conflict")
        if stored is None:
            stored = self.home_views[user] = StoredView(id=f"V{next(self._ids):010d}", view={}, trigger_id=None)
        else:
            stored.history.append(stored.view)
        full = self._new_view(view, stored.id)
        full["type"] = "home"
        stored.view = full
        return {"view": copy.deepcopy(full)}

    def _m_chat_getPermalink(self, params: dict, call: Call) -> dict:
        channel = str(params.get("channel") or "")
        ts = str(params.get("message_ts") or "")
        msg = self.messages.get((channel, ts))
        if msg is None or msg.deleted:
            raise _ApiError("message_not_found")
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        if msg.thread_ts and msg.thread_ts != ts:
            link += f"?thread_ts={msg.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}

    def _m_usergroups_users_list(self, params: dict, call: Call) -> dict:
        group = str(params.get("usergroup") or "")
        if group not in self.usergroups:
            raise _ApiError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _m_users_info(self, params: dict, call: Call) -> dict:
        uid = str(params.get("user") or "")
        if not uid:
            raise _ApiError("user_not_found")
        info = self.users.get(uid, uid)
        fields = dict(info) if isinstance(info, dict) else {"real_name": str(info)}
        real = fields.pop("real_name", uid)
        user = {
            "id": uid,
            "team_id": self.team_id,
            "name": fields.pop("name", uid.lower()),
            "deleted": False,
            "real_name": real,
            "tz": "Etc/UTC",
            "is_bot": False,
            "is_admin": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "profile": {
                "real_name": real,
                "display_name": fields.pop("display_name", real),
                "team": self.team_id,
            },
        }
        user.update(fields)
        return {"user": user}

    def _m_conversations_info(self, params: dict, call: Call) -> dict:
        cid = str(params.get("channel") or "")
        if not cid:
            raise _ApiError("channel_not_found")
        info = self._channel_info(cid) or {}
        private = bool(info.get("is_private"))
        needed = "groups:read" if private else ("im:read" if cid.startswith("D") else "channels:read")
        if needed not in self.scopes:
            raise _ApiError("missing_scope", needed=needed, provided=",".join(self.scopes))
        if private and not info.get("is_member", True):
            raise _ApiError("channel_not_found")
        channel = {
            "id": cid,
            "name": info.pop("name", f"channel-{cid.lower()}"),
            "is_channel": not private,
            "is_group": private,
            "is_im": cid.startswith("D"),
            "is_private": private,
            "is_archived": bool(info.pop("is_archived", False)),
            "is_member": bool(info.pop("is_member", True)),
            "created": 1700000000,
        }
        info.pop("is_private", None)
        channel.update(info)
        return {"channel": channel}

    def _m_apps_connections_open(self, params: dict, call: Call) -> dict:
        if not self.socket_mode_url:
            raise _ApiError("socket_mode_not_enabled")
        return {"url": self.socket_mode_url}

    # ---- response_url ----------------------------------------------------------------------------

    def _response(self, name: str, raw: bytes, headers: dict[str, str], received: float) -> tuple[int, str]:
        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            body = None
        with self._cond:
            delay = self._delays.get("response_url:" + name) or self._delays.get("response_url", 0)
        if delay:
            time.sleep(delay)
        with self._cond:
            status, answer = self._response_locked(name, body, raw)
            self.responses.append(
                ResponsePost(
                    name=name,
                    body=body if body is not None else {},
                    headers=headers,
                    time=received,
                    status=status,
                    answer=answer,
                    raw_body=raw,
                )
            )
            self._cond.notify_all()
        return status, answer

    def _response_locked(self, name: str, body: dict | None, raw: bytes) -> tuple[int, str]:
        fault = self._take_fault("response_url:" + name) or self._take_fault("response_url")
        if fault is not None:
            if fault.error:
                return 400, fault.error
            return fault.status, "rate_limited" if fault.status == 429 else "internal_error"
        if body is None:
            return 400, "invalid_payload"
        ru = self._response_urls.get(name)
        if ru is None:
            ru = self._response_urls[name] = _ResponseUrl(name, None, None, time.time())
        if ru.uses >= self.response_url_max_uses or time.time() - ru.created > 1800:
            return 404, "expired_url"
        delete = _truthy(body.get("delete_original"))
        replace = _truthy(body.get("replace_original"))
        text, blocks = body.get("text"), body.get("blocks")
        where = f"response_url:{name}"
        if not delete:
            self._record_autolinks(where, body)
            self._check_unfurl(where, body)
            if not text and not blocks and not body.get("attachments"):
                return 400, "no_text"
            if blocks:
                errors = validate_message_blocks(blocks)
                if errors:
                    self._violation(where, errors, body)
                    return 400, "invalid_blocks"
            self._warn_missing_text(where, text, blocks, body)
        ru.uses += 1
        original = self.messages.get((ru.channel, ru.message_ts)) if ru.channel and ru.message_ts else None
        if original is None:
            original = ru.ephemeral
        if delete:
            if original is not None and not original.deleted:
                original.history.append(original.to_dict())
                original.deleted = True
        elif replace and original is not None:
            if not original.deleted:
                original.history.append(original.to_dict())
                original.text = str(text or "")
                original.blocks = blocks or None
                original.edited_ts = self._next_ts()
        elif replace:
            pass  # nothing to replace (e.g. the original is unknown to the fake): recorded only
        else:
            in_channel = body.get("response_type") == "in_channel"
            msg = StoredMessage(
                channel=ru.channel or "",
                ts=self._next_ts(),
                text=str(text or ""),
                blocks=blocks or None,
                thread_ts=body.get("thread_ts") or None,
                user=self.bot_user_id,
                bot_id=self.bot_id,
                team=self.team_id,
                ephemeral=not in_channel,
                source=where,
            )
            if in_channel and ru.channel:
                self.messages[(msg.channel, msg.ts)] = msg
                if ru.message_ts is None and ru.ephemeral is None:
                    ru.message_ts = msg.ts
            else:
                self.ephemerals.append(msg)
                if ru.message_ts is None and ru.ephemeral is None:
                    ru.ephemeral = msg
        return 200, "ok"
