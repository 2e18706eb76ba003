"""The baseline: a minimal Bolt app (App + waitress) whose /pgsessions only acks."""

from __future__ import annotations

import logging
import threading

from slack_bolt import App
from slack_sdk import WebClient
from waitress.server import create_server

from tests.harness.bot import BOT_TOKEN, SIGNING_SECRET


class MinimalApp:
    def __init__(self, api_url: str):
        # the client carries the token: giving both makes Bolt warn "token will be unused"
        app = App(
            signing_secret=SIGNING_SECRET,
            client=WebClient(token=BOT_TOKEN, base_url=api_url),
            logger=logging.getLogger("bench.minimal"),
        )

        @app.command("/pgsessions")
        def on_command(ack):
            ack()

        from slack_bolt.adapter.wsgi import SlackRequestHandler

        handler = SlackRequestHandler(app, path="/slack/events")
        self.server = create_server(handler, host="127.0.0.1", port=0, threads=16, asyncore_use_poll=True)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="bench-minimal")

    def start(self) -> MinimalApp:
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.effective_port}"

    def stop(self) -> None:
        self.server.close()
