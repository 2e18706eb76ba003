"""The bot's configuration: one pydantic model, loaded from YAML with ``${VAR}`` references.

Every error names the key it is about and says how to fix it, e.g.::

    environments.prod.thresholds.idle: '5x' is not a duration: use a number of seconds or a value like 90s, 5m

Secrets (DSN passwords, anything that came from ``${VAR}``) are remembered in :data:`bot.secrets.SECRETS`
so that the logging filter can scrub them from every line, and are never echoed in an error.

The parts, each importable from here:

- :mod:`bot.config.fields`: the base of every section, the field types (durations, percentages, names),
  the rules for names, the check of a connection string;
- :mod:`bot.config.alerts`: ``lag_alert`` and ``watch``;
- :mod:`bot.config.environment`: one environment and its sections (access, ignore, protect, poolers, ...);
- :mod:`bot.config.model`: :class:`Config`, the whole file;
- :mod:`bot.config.load`: YAML loading, ``${VAR}`` expansion, errors that name the key and the fix.
"""

from __future__ import annotations

from bot.config.alerts import LagAlert, LockPileup, Watch, Wraparound
from bot.config.environment import (
    Access,
    ClearDb,
    Environment,
    IgnoreRule,
    Listing,
    Pooler,
    PoolerTimeouts,
    Protect,
    Thresholds,
    Timeouts,
)
from bot.config.fields import RESERVED_ENV_NAMES, RESERVED_HOST_NAMES, Duration
from bot.config.load import ConfigError, format_validation_error, load_config, parse_config
from bot.config.model import Config, Fleet, SlackWorkspace
from bot.secrets import safe_dsn

__all__ = [
    "RESERVED_ENV_NAMES", "RESERVED_HOST_NAMES", "Access", "ClearDb", "Config", "ConfigError", "Duration",
    "Environment", "Fleet", "IgnoreRule", "LagAlert", "Listing", "LockPileup", "Pooler", "PoolerTimeouts",
    "Protect", "SlackWorkspace", "Thresholds", "Timeouts", "Watch", "Wraparound", "format_validation_error",
    "load_config", "parse_config", "safe_dsn",
]
