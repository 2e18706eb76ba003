"""Logging: one line per event, plain text or JSON, secrets scrubbed from every line, request ids.

Every Slack request gets a request id (``<X-Slack-Request-Timestamp>-<random>``) held in a
contextvar for as long as it is being served; :class:`RequestIdFilter` stamps it on every record,
and both formatters print it. Bolt runs listeners in a thread pool, which does not carry
contextvars over by itself: :func:`instrument_bolt` wraps the app's executors so that the slow part
of a listener still logs under the id of the request that started it.

Conventions for callers: put the environment and host in ``extra={"env": ..., "host": ...}`` and a
short event name in ``extra={"event": ...}``; never log a DSN, a token or a full query text at INFO.
"""

from __future__ import annotations

import contextvars
import json
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, TextIO

from slack_bolt import App, BoltRequest, BoltResponse

from bot.metrics import ACK_SECONDS, SLACK_REQUESTS
from bot.secrets import ScrubFilter, scrub

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("pgsessions_request_id", default=None)

_EXTRA_KEYS = ("request_id", "env", "host", "event", "kind", "status", "duration_ms", "ref", "audit")


def new_request_id(slack_timestamp: str | None = None) -> str:
    """``<slack timestamp>-<8 hex>``: sortable by when Slack sent it, unique thanks to the random part."""
    ts = slack_timestamp if slack_timestamp and slack_timestamp.isdigit() else str(int(time.time()))
    return f"{ts}-{secrets.token_hex(4)}"


def current_request_id() -> str | None:
    return REQUEST_ID.get()


@contextmanager
def request_context(request_id: str) -> Iterator[str]:
    token = REQUEST_ID.set(request_id)
    try:
        yield request_id
    finally:
        REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` with the current request's id (unless the caller set one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


def log_value(value: object) -> str:
    """One value of a ``key=value`` text log field: a string always quoted (JSON string syntax: ``"``,
    ``\\`` and controls escaped), so a value that holds spaces, ``=`` or quotes stays one value and can
    never forge another field; numbers and booleans as they are."""
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _scrubbed(value: Any) -> Any:
    """``value`` with every string in it (nested in dicts and lists too) scrubbed of known secrets."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", " \\n ")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = _scrubbed(value)  # the audit fields (a dict) too
        if record.exc_info and record.exc_info[1] is not None:  # only when no ScrubFilter ran before us
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO pgsessions.x [req 1714-ab12cd34] message`` on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s:%(rid)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [req {rid}]" if rid else ""
        extras = [f"{k}={log_value(getattr(record, k))}" for k in ("env", "host", "event")
                  if getattr(record, k, None) is not None]
        line = super().format(record)
        if extras:
            line = f"{line} ({scrub(' '.join(extras))})"
        return _one_line(line)


def make_handler(fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(ScrubFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def setup_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    handler = make_handler(fmt, stream)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # chatty libraries: their warnings still pass, scrubbed
    for name in ("slack_bolt", "slack_sdk", "apscheduler", "waitress", "psycopg.pool", "urllib3"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # the Web API client logs request bodies (message texts, query texts) at DEBUG: never below INFO
    for name in ("pgsessions.slack_sdk", "pgsessions.bolt"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


# --- carrying the request id into Bolt's listener threads -------------------------------------------


class ContextExecutor(Executor):
    """Delegates to another executor, running each task in a copy of the submitter's context."""

    def __init__(self, inner: Executor):
        self.inner = inner

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        ctx = contextvars.copy_context()
        return self.inner.submit(ctx.run, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait=wait, cancel_futures=cancel_futures)


def instrument_bolt(app: App) -> None:
    """Make Bolt's listener threads inherit the request id, and give Socket Mode requests one too.

    Idempotent. Over HTTP the WSGI layer (bot/slack/server.py) sets the id before Bolt sees the
    request; in Socket Mode the wrapped ``app.dispatch`` does it (and times the acknowledgement).
    """
    if getattr(app, "_pgs_instrumented", False):
        return
    runner = app.listener_runner
    if not isinstance(runner.listener_executor, ContextExecutor):
        runner.listener_executor = ContextExecutor(runner.listener_executor)
    lazy = getattr(runner, "lazy_listener_runner", None)
    if lazy is not None and hasattr(lazy, "executor") and not isinstance(lazy.executor, ContextExecutor):
        lazy.executor = ContextExecutor(lazy.executor)

    # Bolt runs global middleware *before* the listener and outside it, so a middleware cannot hold the
    # context while the listener is started: wrap dispatch(), which Socket Mode calls for every request
    dispatch = app.dispatch

    def dispatch_with_request_id(req: BoltRequest) -> BoltResponse:
        if REQUEST_ID.get() is not None:  # over HTTP the WSGI layer already did all of this
            return dispatch(req)

        kind = kind_of_body(req.body)
        started = time.monotonic()
        with request_context(new_request_id()):
            try:
                return dispatch(req)
            finally:
                elapsed = time.monotonic() - started
                ACK_SECONDS.labels(kind).observe(elapsed)
                SLACK_REQUESTS.labels(kind, "socket").inc()
                logging.getLogger("bot.slack.socket").info(
                    "slack %s acknowledged over Socket Mode in %.0f ms", kind, elapsed * 1000,
                    extra={"event": "slack_request", "kind": kind, "status": "socket",
                           "duration_ms": round(elapsed * 1000, 1)},
                )

    setattr(app, "dispatch", dispatch_with_request_id)  # noqa: B010 - mypy: a method is not assignable
    setattr(app, "_pgs_instrumented", True)  # noqa: B010


def kind_of_body(body: Any) -> str:
    """command / action / view / event / other, from a parsed Bolt body (dict)."""
    if not isinstance(body, dict):
        return "other"
    if "command" in body:
        return "command"
    kind = body.get("type")
    if kind in ("block_actions", "interactive_message", "block_suggestion", "shortcut", "message_action"):
        return "action"
    if kind in ("view_submission", "view_closed"):
        return "view"
    if kind in ("event_callback", "url_verification"):
        return "event"
    return "other"
