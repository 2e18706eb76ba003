"""The bot's configuration: one pydantic model, loaded from YAML with ``${VAR}`` references.

Every error names the key it is about and says how to fix it, e.g.::

    environments.prod.thresholds.idle: '5x' is not a duration: use a number of seconds or a value like 90s, 5m

Secrets (DSN passwords, anything that came from ``${VAR}``) are remembered in :data:`SECRETS` so
that the logging filter can scrub them from every line, and are never echoed in an error.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.durations import DURATION_HINT, parse_duration
from bot.secrets import SECRETS, dsn_password, safe_dsn

Duration = Annotated[float, BeforeValidator(parse_duration)]

# Words that follow ``/pgsessions`` and so cannot name an environment, and words that follow an
# environment name and so cannot name a standby.
RESERVED_ENV_NAMES = {"help", "audit", "pending", "version"}
RESERVED_HOST_NAMES = {
    "primary", "active", "idle", "idle-tx", "blocked", "lag", "clear-db", "audit", "all", "help",
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SLACK_PRINCIPAL_RE = re.compile(r"^(\*|[UWS][A-Z0-9]+)$")


class ConfigError(Exception):
    """A configuration problem a person can fix; ``str()`` is the whole message."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Model):
    long_running: Duration = 300.0
    idle_in_transaction: Duration = 60.0
    idle: Duration = 3600.0


class Timeouts(_Model):
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


def _principals(v: Any) -> Any:
    if isinstance(v, str):
        return [v]
    return v


Principals = Annotated[list[str], BeforeValidator(_principals)]


class Access(_Model):
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


class LagAlert(_Model):
    channel: str
    threshold: Duration = 30.0
    check_every: Duration = 30.0
    consecutive: int = Field(default=2, ge=1, le=100)
    remind_every: Duration = 900.0
    min_bytes: int = Field(default=0, ge=0)

    @field_validator("check_every")
    @classmethod
    def _every(cls, v: float) -> float:
        if v < 1:
            raise ValueError("check_every must be at least 1s")
        return v


def _percent(v: Any) -> Any:
    """``90%`` / ``"90%"`` / ``90`` -> 90.0 (a share of the usable connection slots)."""
    if isinstance(v, bool):
        raise ValueError("connections must be a percentage like 90%")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        text = v.strip().removesuffix("%").strip()
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError(f"{v!r} is not a percentage: write it like 90%")


Percent = Annotated[float, BeforeValidator(_percent)]


class LockPileup(_Model):
    waiters: int = Field(default=5, ge=1, le=100000)
    wait: Duration = 60.0


def _pool_waiting(v: Any) -> Any:
    """``pool_waiting: true`` is the default threshold (5 s on the longest wait); a duration sets it."""
    if v is True:
        return 5.0
    if v is False:
        return None
    return v


class Wraparound(_Model):
    """``watch.wraparound``: transaction ID wraparound; an alert when a database's ``age(datfrozenxid)`` or
    ``mxid_age(datminmxid)`` reaches ``threshold`` transactions (PostgreSQL stops at about 2.1 billion)."""

    threshold: int = Field(default=1_000_000_000, ge=1, le=2_000_000_000)


class Watch(_Model):
    """``environments.<env>.watch``: session alerts (issue 14); each kind is off when absent."""

    channel: str
    check_every: Duration = 30.0
    consecutive: int = Field(default=2, ge=1, le=100)
    remind_every: Duration = 900.0
    lock_pileup: LockPileup | None = None
    idle_in_transaction: Duration | None = None
    long_running: Duration | None = None
    connections: Percent | None = None
    xmin_horizon: Duration | None = None
    # clients waiting in a PgBouncer pool (issue 25): the longest wait that alerts (``true``: 5s)
    pool_waiting: Annotated[Duration | None, BeforeValidator(_pool_waiting)] = None
    wraparound: Wraparound | None = None

    @field_validator("check_every")
    @classmethod
    def _every(cls, v: float) -> float:
        if v < 1:
            raise ValueError("check_every must be at least 1s")
        return v

    @field_validator("connections")
    @classmethod
    def _share(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 100:
            raise ValueError("connections must be a percentage between 1% and 100%, e.g. 90%")
        return v


class IgnoreRule(_Model):
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


def _names(v: Any) -> Any:
    if isinstance(v, str):
        return [v]
    return v


Names = Annotated[list[str], BeforeValidator(_names)]


class Protect(_Model):
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


class Listing(_Model):
    max_sessions: int = Field(default=20, ge=1, le=22)
    query_chars: int = Field(default=300, ge=40, le=1500)


class ClearDb(_Model):
    # Databases refused by default (besides templates and the bot's own state database) unless listed here.
    allow: list[str] = []


class PoolerTimeouts(Timeouts):
    """A pooler's admin console answers at once or not at all: shorter bounds than a database's."""

    connect: Duration = 2.0
    statement: Duration = 2.0


class Pooler(_Model):
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
        _check_dsn(v)
        return v


class Environment(_Model):
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
        _check_dsn(v)
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
                _check_dsn(dsn)
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


TEAM_ID_RE = re.compile(r"^T[A-Z0-9]+$")


class SlackWorkspace(_Model):
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


class Fleet(_Model):
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


class Config(_Model):
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


def _check_dsn(dsn: str) -> None:
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        raise ValueError(
            "not a valid connection string: write it as 'host=db1 dbname=postgres user=pgsessions_bot' "
            "or 'postgresql://pgsessions_bot@db1/postgres'"
        ) from None
    pw = params.get("password")
    if pw:
        SECRETS.add(str(pw))


# --- loading ---------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, path: str, environ: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", environ) for i, v in enumerate(value)]
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in environ:
                val = environ[var]
                if val:
                    SECRETS.add(val)
                return val
            if default is not None:
                return default
            raise ConfigError(
                f"{path}: environment variable {var} is not set: export {var}=... before starting "
                f"the bot, or write ${{{var}:-default}} to give a default"
            )

        return _VAR.sub(repl, value)
    return value


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model a location points into (for 'did you mean')."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                # dict key (environment or standby name): descend into the value type
                continue
            ann = field.annotation
            args = getattr(ann, "__args__", ())
            if ann is not None and isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
            elif args:
                cand = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
                model = cand[0] if cand else None
            else:
                model = None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


# pydantic's words for a value of the wrong type, and how to write it instead
_TYPE_HINTS = {
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "int_from_float": "write a whole number",
    "float_parsing": "write a number",
    "float_type": "write a number",
    "string_type": "write it as text (in quotes if YAML reads it as a number or true/false)",
    "list_type": "write a YAML list, e.g. [a, b] or one '- item' per line",
    "dict_type": "write a YAML mapping, one 'name: value' per line",
    "model_type": "write a YAML mapping, one 'key: value' per line",
    "model_attributes_type": "write a YAML mapping, one 'key: value' per line",
}


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after[_dsn(), str]",))
        key = _loc(loc) or "(top level)"
        kind = err["type"]
        msg = err["msg"]
        if kind == "extra_forbidden":
            known = _known_fields(loc)
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else f"known keys here: {', '.join(known)}"
            lines.append(f"{key}: unknown key: {hint}")
            continue
        if kind == "missing":
            lines.append(f"{key}: required but missing: add it to the file")
            continue
        msg = msg.removeprefix("Value error, ")
        if "duration" in msg and DURATION_HINT not in msg:
            msg += f" ({DURATION_HINT})"
        if kind in _TYPE_HINTS:
            msg = f"{msg}: {_TYPE_HINTS[kind]}"
        # never echo the input: it may be a DSN with a password
        lines.append(f"{key}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, environ: dict[str, str] | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping with at least 'environments:'")
    expanded = _expand(data, "", dict(os.environ if environ is None else environ))
    try:
        return Config.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> Config:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist: pass --config with the path of your YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise ConfigError(f"{p} is empty: it needs at least 'environments:' with one environment and its dsn")
    return parse_config(data, environ)


__all__ = ["Config", "ConfigError", "Environment", "load_config", "parse_config", "safe_dsn"]
