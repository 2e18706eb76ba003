"""A local Slack Web API for the terminal chat: what the bot sends is kept here and shown in the terminal.

It serves, on 127.0.0.1, the methods the bot calls (auth.test, chat.postMessage, chat.update,
chat.postEphemeral, chat.delete, chat.getPermalink, views.open / push / update, usergroups.users.list,
users.info, conversations.info) and the response_url endpoints it hands out, with Slack's semantics
where they matter to the bot: Bearer token, Block Kit limits (a call Slack would reject is rejected
and the reason shown), trigger ids that expire after 3 s and work once, response_urls good for 5
uses, replace_original / delete_original.  Every change is reported to a :class:`Listener`.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from bot.shell.activity import Activity
from bot.shell.blockkit import block_problems, view_problems
from bot.shell.records import APP_ID as APP_ID  # re-exported: the local workspace's ids
from bot.shell.records import BOT_ID as BOT_ID
from bot.shell.records import BOT_USER_ID as BOT_USER_ID
from bot.shell.records import TEAM_ID as TEAM_ID
from bot.shell.records import (
    ApiError as ApiError,  # re-exported: the workspace's records are imported from here
)
from bot.shell.records import Listener, ResponseUrl, _Silent
from bot.shell.records import Message as Message
from bot.shell.records import View as View

TRIGGER_TTL = 3.0
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL = 1800.0
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata")


# --- the workspace ------------------------------------------------------------------------------------


class Workspace:
    """The local Slack: its messages, forms, response_urls and trigger ids, served over HTTP."""

    def __init__(
        self,
        token: str,
        *,
        users: dict[str, str] | None = None,
        groups: dict[str, list[str]] | None = None,
        channels: dict[str, str] | None = None,
        listener: Listener | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.token = token
        self.users = dict(users or {})  # id -> name
        self.groups = {k: list(v) for k, v in (groups or {}).items()}
        self.channels = dict(channels or {})  # id -> name
        self.listener: Listener = listener or _Silent()
        self.activity = activity or Activity()
        self._lock = threading.RLock()
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1)
        self._ts_us = 0
        self.messages: dict[int, Message] = {}
        self._by_ts: dict[tuple[str, str], int] = {}
        self.views: dict[str, View] = {}
        self._response_urls: dict[str, ResponseUrl] = {}
        self._triggers: dict[str, tuple[float, str]] = {}  # id -> (issued, user)
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # (method, params, answer): the last few hundred
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Workspace:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.workspace = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="pgs-shell-slack", daemon=True
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

    @property
    def url(self) -> str:
        assert self._server is not None, "Workspace.start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    # --- what the console hands out -----------------------------------------------------------------

    def trigger_id(self, user: str) -> str:
        tid = f"{int(time.time() * 1000)}.{next(self._ids)}.{secrets.token_hex(8)}"
        with self._lock:
            self._triggers[tid] = (time.monotonic(), user)
        return tid

    def response_url(self, channel: str | None, user: str, message_no: int | None = None) -> str:
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._response_urls[token] = ResponseUrl(token, channel, user, message_no)
        return f"{self.url}/response/{token}"

    def add_message(
        self, channel: str, text: str, blocks: list[dict[str, Any]] | None, *, ephemeral_to: str | None = None, source: str = "ack",
        attachments: list[dict[str, Any]] | None = None,
    ) -> Message:
        """A message that did not come through the Web API (e.g. an ack body Slack shows)."""
        with self._lock:
            msg = self._new_message(channel, text, blocks, attachments, None, ephemeral_to, source)
        self.listener.posted(msg)
        return msg

    def message(self, no: int) -> Message | None:
        with self._lock:
            return self.messages.get(no)

    def all_messages(self) -> list[Message]:
        """Every message so far, oldest first (a copy: safe while the bot posts)."""
        with self._lock:
            return sorted(self.messages.values(), key=lambda m: m.no)

    def view(self, view_id: str) -> View | None:
        with self._lock:
            return self.views.get(view_id)

    def close_view(self, view_id: str) -> None:
        with self._lock:
            v = self.views.get(view_id)
            if v is not None:
                v.closed = True

    def replace_view(self, view_id: str, new: dict[str, Any], push: bool = False) -> View:
        """A view_submission answered with response_action update / push."""
        with self._lock:
            old = self.views[view_id]
            if push:
                vid = self._view_id()
                v = View(vid, self._full_view(new, vid, old.root_id, old.id), old.user, old.root_id, old.id)
                self.views[vid] = v
                return v
            old.view = self._full_view(new, old.id, old.root_id, old.previous_id)
            return old

    # --- internals ----------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        now = int(time.time() * 1_000_000)
        self._ts_us = max(now, self._ts_us + 100)
        return f"{self._ts_us // 1_000_000}.{self._ts_us % 1_000_000:06d}"

    def _view_id(self) -> str:
        return f"V{next(self._ids):09d}"

    def _new_message(
        self, channel: str, text: str, blocks: list[dict[str, Any]] | None, attachments: list[dict[str, Any]] | None, thread_ts: str | None,
        ephemeral_to: str | None, source: str,
    ) -> Message:
        msg = Message(
            no=next(self._numbers), channel=channel, ts=self._next_ts(), text=text, blocks=blocks or None,
            attachments=attachments or None, thread_ts=thread_ts, ephemeral_to=ephemeral_to, source=source,
        )
        self.messages[msg.no] = msg
        if ephemeral_to is None:
            self._by_ts[(channel, msg.ts)] = msg.no
        return msg

    def _full_view(self, view: dict[str, Any], vid: str, root: str, previous: str | None) -> dict[str, Any]:
        full = copy.deepcopy(view)
        full.update(
            id=vid, team_id=TEAM_ID, state={"values": {}}, hash=f"{time.time():.6f}.{secrets.token_hex(4)}",
            previous_view_id=previous, root_view_id=root, app_id=APP_ID, bot_id=BOT_ID,
            app_installed_team_id=TEAM_ID,
        )
        for key, default in (("private_metadata", ""), ("callback_id", ""), ("external_id", "")):
            full.setdefault(key, default)
        full.setdefault("clear_on_close", False)
        full.setdefault("notify_on_close", False)
        return full

    def _channel(self, value: Any) -> str:
        channel = str(value or "")
        if not channel:
            raise ApiError("channel_not_found")
        if channel[0] in "UW":  # a user id: Slack posts into the direct message with that user
            return "D" + channel[1:]
        return channel

    def _check_message(self, method: str, params: dict[str, Any], require_content: bool = True) -> None:
        text, blocks, attachments = params.get("text"), params.get("blocks"), params.get("attachments")
        if require_content and not text and not blocks and not attachments:
            raise ApiError("no_text")
        errs = block_problems(blocks) if blocks else []
        if errs:
            self.listener.notice(f"Slack would reject this {method} (invalid_blocks): " + "; ".join(errs[:5]))
            raise ApiError("invalid_blocks", errors=errs)
        if blocks and not (isinstance(text, str) and text.strip()):
            self.listener.notice(f"{method} sent blocks without a plain text fallback (Slack warns about this)")

    # --- HTTP ---------------------------------------------------------------------------------------

    def handle(self, verb: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, str, bytes]:
        parts = urlsplit(path)
        self.activity.begin()
        try:
            if parts.path.startswith("/api/"):
                method = unquote(parts.path[5:])
                status, body = self._api(method, parts.query, headers, raw)
                return status, "application/json; charset=utf-8", json.dumps(body).encode()
            if parts.path.startswith("/response/") and verb == "POST":
                status, text = self._response(unquote(parts.path[len("/response/") :]), raw)
                return status, "text/plain", text.encode()
            return 404, "text/plain", b"not found"
        except Exception as exc:  # a bug here must show, not hang the bot
            self.listener.notice(f"the terminal's Slack stand-in failed on {parts.path}: {exc!r}")
            return 500, "text/plain", f"error: {exc!r}".encode()
        finally:
            self.activity.end()

    def _parse(self, query: str, headers: dict[str, str], raw: bytes) -> tuple[dict[str, Any], bool]:
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        is_json = False
        if raw:
            if ctype == "application/json":
                is_json = True
                try:
                    body = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise ApiError("invalid_json") from None
                if not isinstance(body, dict):
                    raise ApiError("invalid_json")
                params.update(body)
            else:
                params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        for key in _JSON_FIELDS:
            if isinstance(params.get(key), str) and params[key]:
                try:
                    params[key] = json.loads(params[key])
                except json.JSONDecodeError:
                    raise ApiError("invalid_blocks_format" if key == "blocks" else "invalid_arguments") from None
        return params, is_json

    def _api(self, method: str, query: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        params: dict[str, Any] = {}
        try:
            params, is_json = self._parse(query, headers, raw)
            auth = headers.get("authorization", "")
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else (
                None if is_json else params.get("token")
            )
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                self.listener.notice(f"the bot called {method}, which the terminal chat does not provide")
                raise ApiError("unknown_method")
            if not token:
                raise ApiError("not_authed")
            if token != self.token:
                raise ApiError("invalid_auth")
            answer: dict[str, Any] = {"ok": True, **handler(params)}
        except ApiError as exc:
            answer = exc.body
        with self._lock:
            self.calls.append((method, {k: v for k, v in params.items() if k != "token"}, answer))
            del self.calls[:-500]
        return 200, answer

    # --- methods ------------------------------------------------------------------------------------

    def _m_api_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "http://127.0.0.1/", "team": "terminal", "user": "pgsessions", "team_id": TEAM_ID,
            "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False,
        }

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel"))
        self._check_message("chat.postMessage", params)
        with self._lock:
            msg = self._new_message(
                channel, str(params.get("text") or ""), params.get("blocks"), params.get("attachments"),
                params.get("thread_ts") or None, None, "chat.postMessage",
            )
        self.listener.posted(msg)
        self.activity.event()
        return {"channel": channel, "ts": msg.ts, "message": msg.payload()}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel"))
        ts = str(params.get("ts") or "")
        with self._lock:
            no = self._by_ts.get((channel, ts))
            msg = self.messages.get(no) if no is not None else None
            if msg is None or msg.deleted:
                raise ApiError("message_not_found")
        self._check_message("chat.update", params, require_content=False)
        with self._lock:
            before = msg.content()
            if params.get("text") is not None:
                msg.text = str(params["text"])
            if "blocks" in params:
                msg.blocks = params.get("blocks") or None
            if "attachments" in params:
                msg.attachments = params.get("attachments") or None
            changed = msg.content() != before
            if changed:
                msg.version += 1
        if changed:
            self.listener.edited(msg)
            self.activity.event()
        return {"channel": channel, "ts": ts, "text": msg.text, "message": msg.payload()}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel"))
        user = str(params.get("user") or "")
        if not user:
            raise ApiError("user_not_found")
        self._check_message("chat.postEphemeral", params)
        with self._lock:
            msg = self._new_message(
                channel, str(params.get("text") or ""), params.get("blocks"), params.get("attachments"),
                params.get("thread_ts") or None, user, "chat.postEphemeral",
            )
        self.listener.posted(msg)
        self.activity.event()
        return {"message_ts": msg.ts}

    def _m_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel"))
        ts = str(params.get("ts") or "")
        with self._lock:
            no = self._by_ts.get((channel, ts))
            msg = self.messages.get(no) if no is not None else None
            if msg is None or msg.deleted:
                raise ApiError("message_not_found")
            msg.deleted = True
        self.listener.deleted(msg)
        self.activity.event()
        return {"channel": channel, "ts": ts}

    def _m_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel") or ""), str(params.get("message_ts") or "")
        with self._lock:
            no = self._by_ts.get((channel, ts))
        if no is None:
            raise ApiError("message_not_found")
        return {"channel": channel, "permalink": f"{self.url}/archives/{channel}/p{ts.replace('.', '')}"}

    def _open(self, params: dict[str, Any], method: str) -> dict[str, Any]:
        tid = str(params.get("trigger_id") or "")
        view = params.get("view")
        with self._lock:
            issued = self._triggers.get(tid)
            if issued is None:
                raise ApiError("invalid_trigger_id")
            if time.monotonic() - issued[0] > TRIGGER_TTL:
                self.listener.notice(f"{method} came {time.monotonic() - issued[0]:.1f}s after the click: "
                                     f"Slack allows {TRIGGER_TTL:g}s (expired_trigger_id)")
                raise ApiError("expired_trigger_id")
            errs = view_problems(view)
            if errs:
                self.listener.notice(f"Slack would reject this {method}: " + "; ".join(errs[:5]))
                raise ApiError("invalid_arguments", errors=errs)
            del self._triggers[tid]  # a trigger_id works once
            vid = self._view_id()
            assert isinstance(view, dict)  # view_problems refuses anything else
            v = View(vid, self._full_view(view, vid, vid, None), issued[1], vid)
            self.views[vid] = v
        self.listener.view_opened(v)
        self.activity.event()
        return {"view": copy.deepcopy(v.view)}

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._open(params, "views.open")

    def _m_views_push(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._open(params, "views.push")

    def _m_views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id, external_id = params.get("view_id"), params.get("external_id")
        with self._lock:
            v = self.views.get(str(view_id)) if view_id else None
            if v is None and external_id:
                v = next((x for x in self.views.values() if x.view.get("external_id") == external_id), None)
            if v is None or v.closed:
                raise ApiError("not_found")
            if params.get("hash") and params["hash"] != v.view.get("hash"):
                raise ApiError("hash_conflict")
            errs = view_problems(params.get("view"))
            if errs:
                self.listener.notice("Slack would reject this views.update: " + "; ".join(errs[:5]))
                raise ApiError("invalid_arguments", errors=errs)
            v.view = self._full_view(params["view"], v.id, v.root_id, v.previous_id)
        self.listener.view_updated(v)
        self.activity.event()
        return {"view": copy.deepcopy(v.view)}

    def _m_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = str(params.get("usergroup") or "")
        with self._lock:
            if group not in self.groups:
                raise ApiError("no_such_subteam")
            return {"users": list(self.groups[group])}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        uid = str(params.get("user") or "")
        if not uid:
            raise ApiError("user_not_found")
        name = self.users.get(uid, uid.lower())
        return {
            "user": {
                "id": uid, "team_id": TEAM_ID, "name": name, "real_name": name, "deleted": False,
                "tz": "Etc/UTC", "is_bot": uid == BOT_USER_ID,
                "profile": {"real_name": name, "display_name": name, "team": TEAM_ID},
            }
        }

    def _m_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        cid = str(params.get("channel") or "")
        if not cid:
            raise ApiError("channel_not_found")
        return {
            "channel": {
                "id": cid, "name": self.channels.get(cid, cid.lower()), "is_channel": cid.startswith("C"),
                "is_im": cid.startswith("D"), "is_private": False, "is_archived": False, "is_member": True,
            }
        }

    # --- response_url -------------------------------------------------------------------------------

    def _response(self, token: str, raw: bytes) -> tuple[int, str]:
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        if not isinstance(body, dict):
            return 400, "invalid_payload"
        with self._lock:
            ru = self._response_urls.get(token)
            if ru is None:
                return 404, "no_such_url"
            if ru.uses >= RESPONSE_URL_USES or time.time() - ru.created > RESPONSE_URL_TTL:
                self.listener.notice(f"the bot used a response_url more than {RESPONSE_URL_USES} times "
                                     "or after 30 minutes: Slack refuses that (expired_url)")
                return 404, "expired_url"
        delete = _truthy(body.get("delete_original"))
        replace = _truthy(body.get("replace_original"))
        text, blocks, attachments = body.get("text"), body.get("blocks"), body.get("attachments")
        if not delete:
            if not text and not blocks and not attachments:
                return 400, "no_text"
            errs = block_problems(blocks) if blocks else []
            if errs:
                self.listener.notice("Slack would reject this response_url message (invalid_blocks): "
                                     + "; ".join(errs[:5]))
                return 400, "invalid_blocks"
        with self._lock:
            ru.uses += 1
            original = self.messages.get(ru.message_no) if ru.message_no is not None else None
            event: tuple[str, Message] | None = None
            if delete:
                if original is not None and not original.deleted:
                    original.deleted = True
                    event = ("deleted", original)
            elif replace and original is not None and not original.deleted:
                original.text = str(text or "")
                original.blocks = blocks or None
                original.attachments = attachments or None
                original.version += 1
                event = ("edited", original)
            elif replace:
                pass  # nothing to replace
            else:
                in_channel = body.get("response_type") == "in_channel"
                msg = self._new_message(
                    ru.channel or "", str(text or ""), blocks, attachments, body.get("thread_ts"),
                    None if in_channel else ru.user, "response_url",
                )
                if ru.message_no is None:  # a slash command's URL binds to the first message it makes
                    ru.message_no = msg.no
                event = ("posted", msg)
        if event is not None:
            getattr(self.listener, event[0])(event[1])
            self.activity.event()
        return 200, "ok"


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)


class _Server(ThreadingHTTPServer):
    workspace: Workspace


class _Handler(BaseHTTPRequestHandler):
    server_version = "pgsessions-shell/1.0"
    protocol_version = "HTTP/1.1"

    def _serve(self, verb: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        server = self.server
        assert isinstance(server, _Server)
        status, ctype, payload = server.workspace.handle(verb, self.path, headers, raw)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def log_message(self, format: str, *args: Any) -> None:
        pass
