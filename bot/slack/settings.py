"""The Slack credentials and API address, read once from the environment (``SLACK_BOT_TOKEN``,
``SLACK_SIGNING_SECRET``, ``SLACK_APP_TOKEN``, ``SLACK_API_URL``); every secret in them is scrubbed from logs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from bot.secrets import SECRETS
from bot.slack.web import normalize_api_url


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str | None
    signing_secret: str | None
    app_token: str | None
    api_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SlackSettings:
        env = os.environ if environ is None else environ
        s = cls(
            bot_token=env.get("SLACK_BOT_TOKEN") or None,
            signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            app_token=env.get("SLACK_APP_TOKEN") or None,
            api_url=normalize_api_url(env.get("SLACK_API_URL")),
        )
        for secret in (s.bot_token, s.signing_secret, s.app_token):
            SECRETS.add(secret)
        return s

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)
