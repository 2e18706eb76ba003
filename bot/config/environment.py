"""One environment (``environments.<env>``): its primary and standbys, who may see and act (``access``),
which sessions are ignored and protected, timeouts, listing limits and its PgBouncer poolers."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from bot.config.alerts import LagAlert, Watch
from bot.config.fields import (
    NAME_RE,
    RESERVED_HOST_NAMES,
    SLACK_PRINCIPAL_RE,
    Duration,
    Names,
    Principals,
    Section,
    check_dsn,
)


class Thresholds(Section):
    long_running: Duration = 300.0
    idle_in_transaction: Duration = 60.0
    idle: Duration = 3600.0


class Timeouts(Section):
    connect: Duration = 5.0
    statement: Duration = 5.0

    @field_validator("connect")
    @classmethod
    def _connect_min(cls, v: float) -> float:
        if v < 1:
            raise ValueError("connect timeout must be at least 1s (libpq rounds smaller values up to 2s)")
        return v

    @field_validator("statement")
    @classmethod
    def _statement_min(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("statement timeout must be more than 0s: an unbounded query can hang the bot")
        return v


class Access(Section):
    # who may see sessions: listings, lag, pending, audit and every read-only view
    viewers: Principals = ["*"]
    requesters: Principals = ["*"]
    approvers: Principals = []
    self_approval: bool = False
    request_ttl: Duration = 900.0
    approvals_required: int = Field(default=1, ge=1, le=10)
    require_reason: bool = True
    allow_kill: bool = True
    approval_channel: str | None = None
    channels: list[str] | None = None
    max_bulk: int = Field(default=500, ge=1, le=10000)

    @field_validator("viewers", "requesters", "approvers")
    @classmethod
    def _check_principals(cls, v: list[str]) -> list[str]:
        for item in v:
            if not SLACK_PRINCIPAL_RE.match(item):
                raise ValueError(
                    f"{item!r} is not a Slack user id (U…/W…), user-group id (S…) or \"*\": "
                    "copy the id from the person's or group's profile in Slack"
                )
        return v

    @field_validator("request_ttl")
    @classmethod
    def _ttl(cls, v: float) -> float:
        if v < 30:
            raise ValueError("request_ttl must be at least 30s so that an approver has time to answer")
        return v


class IgnoreRule(Section):
    """One ``environments.<env>.ignore`` item: every key given must match (``query`` is a regular expression)."""

    app: str | None = None
    user: str | None = None
    db: str | None = None
    query: str | None = None

    @field_validator("query")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"query is not a valid regular expression ({exc}): fix the pattern") from None
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> IgnoreRule:
        if self.app is None and self.user is None and self.db is None and self.query is None:
            raise ValueError("an ignore item needs at least one of app, user, db, query")
        return self


class Protect(Section):
    """``protect:`` (top level, and per environment): sessions no path may signal.

    A session is protected when its role is in ``roles``, its ``application_name`` in ``applications``,
    its database in ``databases`` (exact names), or, with ``superusers: true`` (the default), its role is a
    superuser. An environment's ``protect`` overrides the top-level one key by key."""

    roles: Names = []
    applications: Names = []
    databases: Names = []
    superusers: bool = True

    @field_validator("roles", "applications", "databases")
    @classmethod
    def _not_blank(cls, v: list[str]) -> list[str]:
        for item in v:
            if not item:
                raise ValueError("an empty name matches nothing: remove it or write the exact name")
        return v


class Listing(Section):
    max_sessions: int = Field(default=20, ge=1, le=22)
    query_chars: int = Field(default=300, ge=40, le=1500)


class ClearDb(Section):
    # Databases refused by default (besides templates and the bot's own state database) unless listed here.
    allow: list[str] = []


class PoolerTimeouts(Timeouts):
    """A pooler's admin console answers at once or not at all: shorter bounds than a database's."""

    connect: Duration = 2.0
    statement: Duration = 2.0


class Pooler(Section):
    """``environments.<env>.poolers.<name>``: the admin console of a PgBouncer in front of a host (issue 25).

    ``dsn`` connects to the console (``dbname=pgbouncer``) as a user in ``stats_users`` (reading) or
    ``admin_users`` (also Disconnect client); ``host`` names which host of the environment it pools for.
    """

    dsn: str
    host: str = "primary"
    timeouts: PoolerTimeouts = PoolerTimeouts()

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str) -> str:
        check_dsn(v)
        return v


class Environment(Section):
    dsn: str
    standbys: dict[str, str] = {}
    thresholds: Thresholds = Thresholds()
    access: Access = Access()
    lag_alert: LagAlert | None = None
    watch: Watch | None = None
    ignore: list[IgnoreRule] = []
    protect: Protect | None = None
    timeouts: Timeouts = Timeouts()
    listing: Listing = Listing()
    clear_db: ClearDb = ClearDb()
    redact_queries: bool = False
    poolers: dict[str, Pooler] = {}

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str) -> str:
        check_dsn(v)
        return v

    @field_validator("standbys")
    @classmethod
    def _standbys(cls, v: dict[str, str]) -> dict[str, str]:
        for name, dsn in v.items():
            if not NAME_RE.match(name):
                raise ValueError(f"standby name {name!r} must be letters, digits, '.', '_' or '-'")
            if name.lower() in RESERVED_HOST_NAMES:
                raise ValueError(f"standby name {name!r} is a command word: rename it (e.g. {name}1)")
            try:
                check_dsn(dsn)
            except ValueError as exc:
                raise ValueError(f"standby {name!r}: {exc}") from None
        return v

    @field_validator("poolers")
    @classmethod
    def _pooler_names(cls, v: dict[str, Pooler]) -> dict[str, Pooler]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"pooler name {name!r} must be letters, digits, '.', '_' or '-'")
        return v

    def hosts(self) -> dict[str, str]:
        """``{"primary": dsn, "<standby>": dsn, ...}``."""
        return {"primary": self.dsn, **self.standbys}
