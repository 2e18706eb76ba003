"""``channels_default_env``: in a configured channel, `/pgsessions` without an environment means that one.

Pure: text in, text out. ``help``, ``pending``, ``audit`` and anything that starts with an environment
name are left alone; an empty text, filters (``idle --min 10m``), ``lag``, ``clear-db DB`` or a standby
name of the default environment get the environment put in front.
"""

from __future__ import annotations

from bot.commands import CATEGORY_WORDS, VALUE_FLAGS
from bot.config import Config

_COMMAND_WORDS = {"help", "-h", "--help", "?", "pending", "audit"}


def default_env(config: Config, channel: str | None) -> str | None:
    if not channel:
        return None
    env = config.channels_default_env.get(channel)
    return env if env is not None and config.env(env) is not None else None


def apply_channel_default(text: str, config: Config, channel: str | None) -> str:
    """The command text with the channel's default environment in front, when it names none."""
    env = default_env(config, channel)
    if env is None:
        return text
    stripped = (text or "").strip()
    if not stripped:
        return env
    first = stripped.split()[0]
    low = first.lower()
    if low in _COMMAND_WORDS or config.env(first) is not None:
        return text
    flag = low.split("=", 1)[0]
    environment = config.environments[env]
    if (
        low in CATEGORY_WORDS
        or flag in VALUE_FLAGS
        or low in ("lag", "clear-db", "primary")
        or first in environment.standbys
    ):
        return f"{env} {stripped}"
    return text
