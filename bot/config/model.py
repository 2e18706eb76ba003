"""The whole configuration: :class:`Config`, its environments and the settings that span them (state store,
retention, Slack workspace, fleet, top-level ``protect``, terminal-chat users, channel defaults)."""

from __future__ import annotations

import re

from pydantic import field_validator, model_validator

from bot.config.environment import Environment, Protect
from bot.config.fields import NAME_RE, RESERVED_ENV_NAMES, Duration, Section
from bot.secrets import SECRETS, dsn_password

TEAM_ID_RE = re.compile(r"^T[A-Z0-9]+$")


class SlackWorkspace(Section):
    # The workspace the bot serves: requests from any other team id are refused (optional).
    team_id: str | None = None

    @field_validator("team_id")
    @classmethod
    def _team(cls, v: str | None) -> str | None:
        if v is not None and not TEAM_ID_RE.match(v):
            raise ValueError(
                f"{v!r} is not a Slack team id (T…): copy it from the workspace's URL or from auth.test"
            )
        return v


class Fleet(Section):
    # With a PostgreSQL state store, replicas share the environments: each environment's checks run on one
    # live replica at a time, under a lease of this length (renewed every lease / 4). A replica that dies
    # has its environments taken over within 1.25 x lease; None: 0.75 x the smallest check_every, so the
    # gap in an environment's checks stays within two check intervals (bot/fleet/).
    lease: Duration | None = None

    @field_validator("lease")
    @classmethod
    def _lease(cls, v: float | None) -> float | None:
        if v is not None and not 0.5 <= v <= 3600:
            raise ValueError(
                "fleet.lease must be between 0.5s and 1h: use about 0.75 x the smallest check_every (e.g. 20s)"
            )
        return v


class Config(Section):
    state: str = "sqlite:///pgsessions-state.db"
    # Finished requests (with their approvals), audit entries and resolved incidents older than this are
    # purged hourly; open requests and incidents never are.
    state_retention: Duration = 90 * 86400.0
    slack: SlackWorkspace = SlackWorkspace()
    # how replicas on a PostgreSQL state store share the environments (bot/fleet/)
    fleet: Fleet = Fleet()
    # sessions no path may signal, unless an environment's own ``protect`` says otherwise (key by key)
    protect: Protect = Protect()
    environments: dict[str, Environment]
    # Friendly names for Slack user ids, used by the terminal chat (``as bob``).
    users: dict[str, str] = {}
    # In these channels `/pgsessions` (or `@pgsessions`) with no environment lists this one.
    channels_default_env: dict[str, str] = {}

    @field_validator("environments")
    @classmethod
    def _envs(cls, v: dict[str, Environment]) -> dict[str, Environment]:
        if not v:
            raise ValueError("no environment configured: add one under 'environments:' with at least a dsn")
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"environment name {name!r} must be letters, digits, '.', '_' or '-'")
            if name.lower() in RESERVED_ENV_NAMES:
                raise ValueError(f"environment name {name!r} is a command word: rename it (e.g. {name}1)")
        return v

    @field_validator("state")
    @classmethod
    def _state(cls, v: str) -> str:
        if not (v.startswith("sqlite://") or v.startswith(("postgresql://", "postgres://"))):
            raise ValueError(
                "state must be 'sqlite:///path/to/file.db' or 'postgresql://user@host/db'"
            )
        if v.startswith(("postgresql://", "postgres://")):
            pw = dsn_password(v)
            if pw:
                SECRETS.add(pw)
        return v

    @field_validator("state_retention")
    @classmethod
    def _retention(cls, v: float) -> float:
        if v < 86400:
            raise ValueError(
                "state_retention must be at least 1d: the audit log answers who acted on a session, keep it "
                "for days (e.g. 90d)"
            )
        return v

    @model_validator(mode="after")
    def _alerts_need_standbys(self) -> Config:
        for name, env in self.environments.items():
            if env.lag_alert is not None and not env.standbys:
                raise ValueError(
                    f"environments.{name}.lag_alert is set but the environment has no standbys: "
                    f"add environments.{name}.standbys or remove lag_alert"
                )
        return self

    @model_validator(mode="after")
    def _pooler_hosts(self) -> Config:
        for env_name, env in self.environments.items():
            for name, pooler in env.poolers.items():
                if pooler.host != "primary" and pooler.host not in env.standbys:
                    known = ", ".join(["primary", *env.standbys])
                    raise ValueError(
                        f"environments.{env_name}.poolers.{name}.host: {pooler.host!r} is not a host of this "
                        f"environment: use one of {known}"
                    )
        return self

    @model_validator(mode="after")
    def _channel_defaults_exist(self) -> Config:
        for channel, env in self.channels_default_env.items():
            if env not in self.environments:
                known = ", ".join(self.environments)
                raise ValueError(
                    f"channels_default_env.{channel}: environment {env!r} is not configured: "
                    f"use one of {known} or remove the line"
                )
        return self

    def env(self, name: str) -> Environment | None:
        return self.environments.get(name)

    def protect_for(self, name: str) -> Protect:
        """The ``protect`` rules of environment ``name``: the top-level ones, with the keys the
        environment's own ``protect`` gives replacing them."""
        environment = self.environments.get(name)
        own = environment.protect if environment is not None else None
        if own is None:
            return self.protect
        return self.protect.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})
