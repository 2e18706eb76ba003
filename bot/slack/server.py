"""HTTP serving: Slack's requests on ``POST /slack/events``, ``GET /healthz`` and ``GET /metrics``.

Served by waitress (a production WSGI server, multi-threaded) rather than Bolt's development server.
"""

from __future__ import annotations

import logging
import threading

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from waitress.server import create_server

from bot.runtime import Runtime

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def make_wsgi(rt: Runtime, app: App | None):
    slack = SlackRequestHandler(app, path=EVENTS_PATH) if app is not None else None
    metrics_app = rt.extensions.get("metrics_wsgi")

    def wsgi(environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz" and method in ("GET", "HEAD"):
            ok = rt.ready.is_set()
            body = b"ok\n" if ok else b"starting\n"
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [body]
        if path == "/metrics" and metrics_app is not None:
            return metrics_app(environ, start_response)
        if path == EVENTS_PATH and slack is not None:
            if method != "POST":
                start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "POST")])
                return [b"POST only\n"]
            return slack(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return wsgi


class HttpServer:
    def __init__(self, rt: Runtime, app: App | None, host: str = "0.0.0.0", port: int = 3000, threads: int = 16):
        self.server = create_server(
            make_wsgi(rt, app), host=host, port=port, threads=threads, ident="pgsessions", clear_untrusted_proxy_headers=True
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.effective_port  # type: ignore[attr-defined]

    def serve_forever(self) -> None:
        self.server.run()

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.serve_forever, name="pgs-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
