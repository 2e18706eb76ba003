"""The real bot, in-process, served over real HTTP, talking to the fake Slack Web API.

Tests drive it exactly as Slack would: signed form posts to ``/slack/events``.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.config import parse_config
from bot.fleet.assign import owner
from bot.runtime import Runtime, SlackSettings
from bot.slack.app import build_app
from bot.slack.replays import Deliveries, OnceSocketModeHandler
from bot.slack.server import HttpServer
from tests.harness.slack_requests import SlackSender
from tests.harness.waiting import wait_until

SIGNING_SECRET = "test-signing-secret-0123456789"
BOT_TOKEN = "xoxb-test"


def env_config(pair, user: str = "pgsessions_bot", **overrides: Any) -> dict:
    """One environment on the test pair (with its standby, when it has one)."""
    env: dict[str, Any] = {
        "dsn": pair.primary.dsn(user=user),
        "thresholds": {"long_running": "2s", "idle_in_transaction": "2s", "idle": "2s"},
        "access": {"requesters": ["*"], "approvers": ["U2", "S0DBAS"]},
        "timeouts": {"connect": "3s", "statement": "5s"},
    }
    if getattr(pair, "standby", None) is not None:
        env["standbys"] = {"replica1": pair.standby.dsn(user=user)}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(env.get(key), dict):
            env[key] = {**env[key], **value}
        else:
            env[key] = value
    return env


class BotUnderTest:
    def __init__(self, config: dict, fake_slack, *, state: str | None = None, scheduler: bool = False,
                 app_token: str | None = None):
        self.config_dict = copy.deepcopy(config)
        self.fake = fake_slack
        self._tmp = tempfile.TemporaryDirectory(prefix="pgs-bot-")
        if state is None and "state" not in self.config_dict:
            state = f"sqlite:///{Path(self._tmp.name) / 'state.db'}"
        if state is not None:
            self.config_dict["state"] = state
        self.scheduler = scheduler
        self.app_token = app_token  # also serve Slack over Socket Mode (fake_slack.socket_mode_url)
        self.socket = None
        self.rt: Runtime | None = None
        self.http: HttpServer | None = None

    def start(self) -> BotUnderTest:
        config = parse_config(self.config_dict, environ={})
        settings = SlackSettings(
            bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, app_token=None, api_url=self.fake.api_url
        )
        self.rt = Runtime(config, settings)
        self.app = build_app(self.rt)
        self.http = HttpServer(self.rt, self.app, host="127.0.0.1", port=0, threads=16).start()
        if self.app_token:
            self.socket = OnceSocketModeHandler(self.app, self.app_token, Deliveries(self.rt))
            self.socket.connect()
        if self.scheduler:
            self.rt.start_background()
        self.rt.ready.set()
        self.url = f"http://127.0.0.1:{self.http.port}"
        self.slack = SlackSender(self.url, SIGNING_SECRET, fake=self.fake)
        return self

    def stop(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        if self.http is not None:
            self.http.stop()
        if self.rt is not None:
            self.rt.close()
        self.http = self.rt = None

    def restart(self) -> BotUnderTest:
        """Stop and start again on the same state store (a bot restart)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> BotUnderTest:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- conveniences -------------------------------------------------------------------------------

    def command(self, text: str, **kwargs):
        """A signed slash command; returns the SlackReply (status, headers, body, response_name)."""
        return self.slack.slash(text, **kwargs)

    def listing(self, text: str, channel: str = "C1", user: str = "U1", timeout: float = 15) -> dict:
        """Run a command that posts a message and return the posted chat.postMessage params."""
        before = len(self.fake.calls_for("chat.postMessage"))
        reply = self.command(text, channel_id=channel, user_id=user)
        assert reply.status == 200, (reply.status, reply.body)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.fake.calls_for("chat.postMessage")
            if len(calls) > before:
                return calls[before].params
            time.sleep(0.02)
        raise AssertionError(f"no message posted for {text!r}; responses: {self.fake.responses[-3:]}")


def fleet_leader(bots: list[BotUnderTest], env: str = "prod") -> tuple[BotUnderTest, list[BotUnderTest]]:
    """With a PostgreSQL state store the environments are sharded across the bots (bot/fleet/): once every
    bot has joined and the shares have settled, (the bot that checks ``env``, the others)."""
    def settled():
        shards = [b.rt.shards for b in bots]
        if not all(s.alive() for s in shards):
            return None
        want = owner(env, [s.id for s in shards])
        holders = [b for b in bots if b.rt.shards.owns(env)]
        if len(holders) == 1 and holders[0].rt.shards.id == want:
            return holders[0], [b for b in bots if b is not holders[0]]
        return None

    return wait_until(settled, 10, f"one bot checks {env} once the fleet has settled")
