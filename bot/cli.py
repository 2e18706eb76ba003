"""The ``pgsessions`` command: ``serve`` (Slack), plus the commands later features add."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from slack_bolt.error import BoltError
from slack_sdk.errors import SlackApiError

from bot.audit_export import add_parser as audit_export_parser
from bot.check import add_parser as check_parser
from bot.cli_common import common_options, load_or_exit
from bot.logs import instrument_bolt, setup_logging
from bot.runtime import Runtime, SlackSettings
from bot.secrets import SECRETS
from bot.shell.cli import add_parser as shell_parser
from bot.slack.app import build_app
from bot.slack.replays import Deliveries, OnceSocketModeHandler
from bot.slack.server import HttpServer, metrics_address, metrics_token

__all__ = ["build_parser", "load_or_exit", "main", "serve"]

log = logging.getLogger("pgsessions")

MISSING_TOKENS = """\
pgsessions needs Slack credentials to serve Slack. Set:
  SLACK_BOT_TOKEN=xoxb-...        the app's Bot User OAuth Token (OAuth & Permissions page)
and either
  SLACK_APP_TOKEN=xapp-...        an app-level token with connections:write, for Socket Mode
or
  SLACK_SIGNING_SECRET=...        the app's Signing Secret (Basic Information page), for HTTP mode
Create the app from manifest.yml first (see README.md, "Create the Slack app")."""


_common = common_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgsessions", description="Slack chat-ops for PostgreSQL sessions.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve Slack (Socket Mode with SLACK_APP_TOKEN, else HTTP)")
    _common(serve)
    serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    for extra in _extra_commands():
        extra(sub, _common)
    return parser


AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]", Callable[[argparse.ArgumentParser], None]], None]


def _extra_commands() -> list[AddParser]:
    """The subcommands other modules add (``shell``, ``check``, ``audit``), listed here explicitly."""
    return [shell_parser, check_parser, audit_export_parser]


def serve(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    settings = SlackSettings.from_env()
    if not settings.bot_token or not (settings.app_token or settings.signing_secret):
        print(MISSING_TOKENS, file=sys.stderr)
        return 2
    rt = Runtime(config, settings)
    try:
        app = build_app(rt)
    except (BoltError, SlackApiError) as exc:
        detail = getattr(getattr(exc, "response", None), "get", lambda *_: None)("error") or str(exc)
        print(f"pgsessions: Slack did not accept SLACK_BOT_TOKEN ({detail}) at {settings.api_url}", file=sys.stderr)
        rt.close()
        return 2
    instrument_bolt(app)  # request ids and ack metrics in Socket Mode too (over HTTP make_wsgi does it as well)
    try:
        metrics = metrics_address()
    except ValueError as exc:
        print(f"pgsessions: {exc}", file=sys.stderr)
        rt.close()
        return 2
    token = metrics_token()
    SECRETS.add(token)  # never in a log line
    http = HttpServer(rt, app if not settings.socket_mode else None, host=args.host, port=args.port, metrics=metrics,
                      metrics_token=token)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %s, shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    http.start()
    if metrics is None:
        log.info("metrics on the main port %s/metrics (METRICS_TOKEN required)", http.port)
    elif http.metrics_port is not None:
        log.info("metrics on %s:%s/metrics (not on the main port)", metrics[0], http.metrics_port)
    socket_handler = None
    if settings.socket_mode:
        socket_handler = OnceSocketModeHandler(app, settings.app_token, Deliveries(rt))
        socket_handler.connect()  # type: ignore[no-untyped-call]  # Bolt leaves it unannotated
        log.info("connected to Slack in Socket Mode; health%s on port %s",
                 " and metrics" if metrics is None else "", http.port)
    else:
        log.info("serving Slack over HTTP on %s:%s%s", args.host, http.port, "/slack/events")
    rt.start_background()
    rt.ready.set()
    stop.wait()
    rt.ready.clear()
    if socket_handler is not None:
        socket_handler.close()  # type: ignore[no-untyped-call]
    http.stop()
    rt.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    if args.cmd == "serve":
        return serve(args)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
