"""HTTP serving: Slack's requests on ``POST /slack/events``, ``GET /healthz`` and ``GET /metrics``
(``/metrics`` on a loopback listener of its own by default, see :func:`metrics_address`).

Served by waitress (a production WSGI server, multi-threaded) rather than Bolt's development server.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import start_http_server
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier
from waitress.server import create_server

from bot.logs import instrument_bolt, new_request_id, request_context
from bot.metrics import ACK_SECONDS, REGISTRY, SLACK_REQUESTS, wsgi_app
from bot.slack.context import Context

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


MAX_SLACK_BODY = 1024 * 1024  # Slack's payloads are far smaller; refuse anything bigger


def _kind(body: bytes) -> str:
    """command / action / view / event / other, from a raw Slack request body."""
    try:
        if body[:1] == b"{":
            kind = json.loads(body).get("type")
        else:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=64)
            if "command" in form:
                return "command"
            kind = json.loads(form["payload"][0]).get("type") if "payload" in form else None
    except (ValueError, AttributeError, KeyError, IndexError):
        return "other"
    if kind in ("block_actions", "interactive_message", "block_suggestion", "shortcut", "message_action"):
        return "action"
    if kind in ("view_submission", "view_closed"):
        return "view"
    if kind in ("event_callback", "url_verification"):
        return "event"
    return "other"


OptExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
# (body, environ) -> the request carries a valid Slack signature
Verifier = Callable[[bytes, WSGIEnvironment], bool]


def _instrumented(slack: WSGIApplication, verify: Verifier | None = None) -> WSGIApplication:
    """Around Bolt's WSGI handler: a request id for the logs, the ack latency and count for /metrics."""

    def handle(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_SLACK_BODY:
            start_response("413 Payload Too Large", [("Content-Type", "text/plain")])
            return [b"too large\n"]
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            # Slack only sends UTF-8; Bolt would fail with a 500 decoding this, so it cannot be verified
            start_response("401 Unauthorized", [("Content-Type", "text/plain")])
            return [b"invalid request\n"]
        environ["wsgi.input"] = io.BytesIO(body)
        kind = _kind(body)
        status_seen = ["000"]
        rid = new_request_id(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP"))

        def start(status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
            status_seen[0] = status.split(" ", 1)[0]
            return start_response(status, [*headers, ("X-Request-Id", rid)], exc_info)

        with request_context(rid):
            try:
                result = slack(environ, start)
            except Exception:
                # Bolt fails on some malformed payloads (e.g. "user": true) while building its context,
                # before it checks the signature: answer as Slack expects, 200 if signed, else 401
                signed = verify is not None and verify(body, environ)
                log.warning("malformed Slack %s request (signed: %s); answered without Bolt", kind, signed)
                start("200 OK" if signed else "401 Unauthorized", [("Content-Type", "text/plain")], sys.exc_info())
                result = [b""]
            finally:
                elapsed = time.monotonic() - started
                ACK_SECONDS.labels(kind).observe(elapsed)
                SLACK_REQUESTS.labels(kind, status_seen[0]).inc()
                retry = environ.get("HTTP_X_SLACK_RETRY_NUM")
                log.info(
                    "slack %s answered %s in %.0f ms%s", kind, status_seen[0], elapsed * 1000,
                    f" (Slack retry {retry}: {environ.get('HTTP_X_SLACK_RETRY_REASON', '?')})" if retry else "",
                    extra={"event": "slack_request", "kind": kind, "status": status_seen[0],
                           "duration_ms": round(elapsed * 1000, 1)},
                )
        return result

    return handle


def _verifier(rt: Context) -> Verifier:
    checker = SignatureVerifier(rt.slack.signing_secret or "")

    def verify(body: bytes, environ: WSGIEnvironment) -> bool:
        try:
            return bool(rt.slack.signing_secret) and checker.is_valid(
                body, environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", ""), environ.get("HTTP_X_SLACK_SIGNATURE", "")
            )
        except ValueError:  # a timestamp that is not a number
            return False

    return verify


def _authorized(environ: Mapping[str, object], token: str | None) -> bool:
    if token is None:
        return True
    sent = str(environ.get("HTTP_AUTHORIZATION") or "")
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


def make_wsgi(
    rt: Context, app: App | None, serve_metrics: bool = True, metrics_token: str | None = None
) -> WSGIApplication:
    """The main port's WSGI app; ``serve_metrics``: /metrics is served here too (with ``metrics_token``,
    only to requests that carry ``Authorization: Bearer <token>``)."""
    if app is not None:
        instrument_bolt(app)
    slack = _instrumented(SlackRequestHandler(app, path=EVENTS_PATH), _verifier(rt)) if app is not None else None
    metrics_app = wsgi_app() if serve_metrics else None

    def wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz" and method in ("GET", "HEAD"):
            ok = rt.ready.is_set()
            # the state store's health is said, never failed on: a liveness probe that fails restarts the
            # pod and loses what waits in memory for the store (docs/operating.md, "State store down")
            health = getattr(rt, "health", None)
            store = f"{health.status_line()}\n".encode() if health is not None else b""
            body = (b"ok\n" if ok else b"starting\n") + store
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [body]
        if path == "/metrics" and metrics_app is not None:
            if not _authorized(environ, metrics_token):
                start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                    ("WWW-Authenticate", 'Bearer realm="metrics"')])
                return [b"unauthorized\n"]
            return metrics_app(environ, start_response)
        if path == EVENTS_PATH and slack is not None:
            if method != "POST":
                start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "POST")])
                return [b"POST only\n"]
            return slack(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return wsgi


CHANNEL_TIMEOUT = 15  # seconds an idle HTTP connection is kept (Slack's requests take milliseconds)
CLEANUP_INTERVAL = 5  # seconds between waitress's sweeps of idle connections


def connection_limit() -> int:
    """Open HTTP connections waitress accepts: high enough that a flood of idle sockets leaves room for
    Slack, low enough to stay under the process's file descriptor limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 2000
    return max(100, min(2000, soft - 200))


DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9108


def _port(value: str, name: str, given: str | None = None) -> int:
    """``value`` as a port; errors name the variable as it was set (``given``, else ``value``)."""
    shown = f"{name}={given if given is not None else repr(value)}"
    example = "METRICS_ADDR=127.0.0.1:9108" if name == "METRICS_ADDR" else "METRICS_PORT=9102"
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{shown} is not a port number: use e.g. {example}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{shown} is not a port number (0-65535)")
    return number


def metrics_address(environ: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """Where ``/metrics`` is served: a listener of its own, ``(host, port)``, or None for the main port.

    Never on the main (Slack's, public) port by default: ``METRICS_ADDR`` (``host``, ``host:port`` or
    ``[v6]:port``; default ``127.0.0.1:9108``, loopback only) and ``METRICS_PORT`` (the port, overrides
    the one in ``METRICS_ADDR``). Only with ``METRICS_TOKEN`` set and neither of them is it served on the
    main port, to requests that carry ``Authorization: Bearer <METRICS_TOKEN>``."""
    env = os.environ if environ is None else environ
    addr = (env.get("METRICS_ADDR") or "").strip()
    port = (env.get("METRICS_PORT") or "").strip()
    if not addr and not port and metrics_token(env):
        return None
    host, number = DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT
    if addr:
        if addr.startswith("["):  # [::1]:9108 or [::1]
            inside, _, rest = addr[1:].partition("]")
            host = inside
            if rest.startswith(":"):
                number = _port(rest[1:], "METRICS_ADDR", repr(addr))
            elif rest:
                raise ValueError(f"METRICS_ADDR={addr!r}: write an IPv6 address as [::1]:9108")
        elif addr.count(":") == 1:
            host, _, p = addr.partition(":")
            number = _port(p, "METRICS_ADDR", repr(addr))
        else:
            host = addr
        if not host:
            raise ValueError(f"METRICS_ADDR={addr!r} names no address: use e.g. METRICS_ADDR=127.0.0.1:9108")
    if port:
        number = _port(port, "METRICS_PORT")
    return host, number


def metrics_token(environ: Mapping[str, str] | None = None) -> str | None:
    """``METRICS_TOKEN``: the bearer token ``/metrics`` requires on the main port (None: not served there)."""
    env = os.environ if environ is None else environ
    return (env.get("METRICS_TOKEN") or "").strip() or None


class HttpServer:
    """Slack's requests, /healthz and (unless ``metrics`` names a listener of its own) /metrics.

    Hardened for the open internet: request bodies over 1 MiB are refused by waitress before they are
    read whole, idle connections are closed after ``CHANNEL_TIMEOUT`` s, and the connection limit is
    high enough that a flood of idle sockets does not lock Slack or the health check out.
    """

    def __init__(self, rt: Context, app: App | None, host: str = "0.0.0.0", port: int = 3000, threads: int = 16,
                 metrics: tuple[str, int] | None = None, channel_timeout: int = CHANNEL_TIMEOUT,
                 cleanup_interval: int = CLEANUP_INTERVAL, metrics_token: str | None = None):
        self.metrics_server = None
        self.metrics_error: str | None = None
        if metrics is not None:
            try:
                self.metrics_server, _ = start_http_server(metrics[1], addr=metrics[0], registry=REGISTRY)
            except OSError as exc:  # in use, or no such address: the bot serves Slack anyway, without /metrics
                self.metrics_error = f"{exc.strerror or exc}"
                log.warning("could not serve /metrics on %s:%s (%s): set METRICS_ADDR to a free address; "
                            "/metrics is not served", metrics[0], metrics[1], self.metrics_error)
        self.server = create_server(
            make_wsgi(rt, app, serve_metrics=metrics is None, metrics_token=metrics_token), host=host, port=port, threads=threads, ident="pgsessions", clear_untrusted_proxy_headers=True,
            asyncore_use_poll=True,  # select() fails on file descriptors above 1024
            max_request_body_size=MAX_SLACK_BODY,
            channel_timeout=channel_timeout,
            cleanup_interval=cleanup_interval,
            connection_limit=connection_limit(),
        )
        self._thread: threading.Thread | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_server.server_port if self.metrics_server is not None else None

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    def serve_forever(self) -> None:
        self.server.run()

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.serve_forever, name="pgs-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
