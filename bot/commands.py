"""Parsing the text after ``/pgsessions`` into a command. Pure: no Slack, no database.

Every error is a :class:`CommandError` whose message says which word is wrong and what would work.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from bot.config import Config
from bot.durations import DurationError, DurationTooLong, parse_duration
from bot.postgres.models import Filters

CATEGORY_WORDS = {"active", "idle", "idle-tx", "blocked"}
VALUE_FLAGS = {"--min": "min", "--older": "min", "--app": "app", "--user": "user", "--db": "db"}

USAGE = """\
*Usage*
• `/pgsessions <env>`: sessions on the primary that need attention (long-running, idle in transaction, blocked or blocking, long idle)
• `/pgsessions <env> <standby>`: the same on a hot standby
• filters, combinable: `active` `idle` `idle-tx` `blocked` `--min 10m` `--app NAME` `--user NAME` `--db NAME`
• `/pgsessions <env> idle --app NAME [--older 10m] [--user NAME]`: an application's idle sessions, with *Terminate these N*
• `/pgsessions <env> lag`: replay lag of every standby
• `/pgsessions <env> [standby] locks`: who waits for whom, root blockers first (the lock tree)
• `/pgsessions <env> [standby] pool`: PgBouncer pools worst first: clients waiting, the longest wait, the sessions holding them
• `/pgsessions <env> clear-db DBNAME`: who is connected to a database, with *Terminate all* for maintenance
• `/pgsessions pending`: open kill requests · `/pgsessions audit <env>`: the latest decisions \
(`--since 1h`, `--user U0123ABCD`, `--action terminate`, `--page 2` for older ones)
• `@pgsessions <env> …` in a channel or thread answers in the thread
• `/pgsessions help`: this text"""

# the one usage line shown with an error (the whole text is one `help` away)
USAGE_LINES = {
    "list": "`/pgsessions <env> [<standby>] [active|idle|idle-tx|blocked] [--min 10m] [--app NAME] [--user NAME] [--db NAME]`",
    "lag": "`/pgsessions <env> lag`",
    "clear-db": "`/pgsessions <env> clear-db DBNAME`",
    "pool": "`/pgsessions <env> [<standby>] pool`",
    "pending": "`/pgsessions pending`",
    "audit": "`/pgsessions audit [<env>] [--since 1h] [--user U0123ABCD] [--action terminate] [--page 2]`",
}
MAX_AUDIT_PAGE = 1000


class CommandError(Exception):
    """Bad input; ``str()`` is the whole answer for the user (it ends with the usage when useful)."""

    def __init__(self, message: str, show_usage: bool = True, usage: str = "list"):
        self.message = message
        self.show_usage = show_usage
        self.usage = usage
        super().__init__(message)

    def answer(self) -> str:
        if not self.show_usage:
            return self.message
        return f"{self.message}\nUsage: {USAGE_LINES[self.usage]} · `/pgsessions help` for the rest."


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class ListSessions:
    env: str
    host: str = "primary"
    filters: Filters = Filters()


@dataclass(frozen=True)
class ShowLag:
    env: str


@dataclass(frozen=True)
class ShowLocks:
    env: str
    host: str = "primary"


@dataclass(frozen=True)
class Audit:
    env: str | None
    limit: int = 15
    since: float | None = None  # seconds back from now
    actor: str | None = None  # a Slack user id
    page: int = 1
    action: str | None = None  # only this action kind (``--action terminate``)


@dataclass(frozen=True)
class Pending:
    pass


@dataclass(frozen=True)
class ClearDb:
    env: str
    database: str
    host: str = "primary"


@dataclass(frozen=True)
class ShowPools:
    """``/pgsessions <env> [standby] pool``: the PgBouncer pools in front of a host (issue 25)."""

    env: str
    host: str = "primary"


Command = Help | ListSessions | ShowLag | ShowLocks | Audit | Pending | ClearDb | ShowPools


def _tokens(text: str) -> list[str]:
    # Slack turns typed quotes into curly ones
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    # ... and double dashes into an em dash
    text = text.replace("\u2014", "--").replace("\u2013", "--")
    try:
        return shlex.split(text)
    except ValueError:
        raise CommandError("I could not read that: a quote is not closed.") from None


def known_envs(config: Config) -> str:
    return ", ".join(f"`{e}`" for e in config.environments) or "(none configured)"


def resolve_env(name: str, config: Config) -> str | None:
    """The configured environment ``name`` means: exact, else the one that matches ignoring case."""
    if config.env(name) is not None:
        return name
    matches = [e for e in config.environments if e.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def _unknown_env(name: str, config: Config) -> CommandError:
    return CommandError(f"Unknown environment `{name}`. Known environments: {known_envs(config)}.", False)


_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")


def _parse_audit(words: list[str], config: Config) -> Audit:
    env: str | None = None
    values: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        flag, eq, inline = w.partition("=")
        if flag.lower() in ("--since", "--user", "--page", "--action"):
            if eq:
                value = inline
                i += 1
            elif i + 1 < len(words):
                value = words[i + 1]
                i += 2
            else:
                raise CommandError(f"`{w}` needs a value.", usage="audit")
            if flag.lower() in values:
                raise CommandError(f"`{flag}` is given twice: give it once.", usage="audit")
            values[flag.lower()] = value
            continue
        if w.startswith("-") or env is not None:
            raise CommandError(f"`audit` does not know `{w}`.", usage="audit")
        env = resolve_env(w, config)
        if env is None:
            raise _unknown_env(w, config)
        i += 1
    since = None
    if "--since" in values:
        try:
            since = parse_duration(values["--since"])
        except DurationError as exc:
            raise CommandError(f"`--since {values['--since']}`: {exc}", usage="audit") from None
    actor = None
    if "--user" in values:
        raw = values["--user"]
        m = _MENTION.match(raw)
        named = {k.lower(): v for k, v in config.users.items()}.get(raw.lstrip("@").lower())
        if m:
            actor = m.group(1)
        elif _USER_ID.match(raw):
            actor = raw
        elif named:
            actor = named  # a name from the configuration's users:
        else:
            raise CommandError(
                f"`--user {raw}`: give the person's Slack member ID, like `U0123ABCD` (their profile → ⋯ → "
                "Copy member ID), or a name from the configuration's `users:`.",
                usage="audit",
            )
    page = 1
    if "--page" in values:
        raw = values["--page"]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT_PAGE:
            raise CommandError(f"`--page {raw}`: write a page number from 1 to {MAX_AUDIT_PAGE}.", usage="audit")
        page = int(raw)
    action = None
    if "--action" in values:
        action = values["--action"].lower().replace("-", "_")
        if action not in AUDIT_ACTIONS:
            raise CommandError(
                f"`--action {values['--action']}` is not an action: use one of "
                + ", ".join(f"`{a}`" for a in AUDIT_ACTIONS) + ".",
                usage="audit",
            )
    return Audit(env, since=since, actor=actor, page=page, action=action)


def parse(text: str, config: Config) -> Command:
    words = _tokens(text or "")
    if not words or words[0].lower() in ("help", "-h", "--help", "?"):
        return Help()
    first = words[0]
    if first.lower() == "pending":
        if len(words) > 1:
            raise CommandError(f"`pending` takes no arguments (got `{' '.join(words[1:])}`).", usage="pending")
        return Pending()
    if first.lower() == "audit":
        return _parse_audit(words[1:], config)
    env = resolve_env(first, config)
    if env is None:
        raise _unknown_env(first, config)
    environment = config.env(env)
    assert environment is not None
    rest = words[1:]
    host = "primary"
    if rest and rest[0] == "lag":
        if len(rest) > 1:
            raise CommandError(f"`{env} lag` takes no more words (got `{' '.join(rest[1:])}`).", usage="lag")
        return ShowLag(env)
    if rest and rest[0] == "clear-db":
        if len(rest) != 2:
            raise CommandError(
                f"Write `/pgsessions {env} clear-db DBNAME` with exactly one database name.", False
            )
        return ClearDb(env, rest[1])
    if rest and rest[0] == "locks":
        return _locks(env, host, rest)
    if rest and rest[0] == "pool" and "pool" not in environment.standbys:
        return _pools(env, host, rest)
    if rest and not rest[0].startswith("-") and rest[0] not in CATEGORY_WORDS:
        name = rest[0]
        if name in environment.standbys or name == "primary":
            host = name
            rest = rest[1:]
        else:
            standbys = ", ".join(f"`{s}`" for s in environment.standbys) or "none configured"
            raise CommandError(
                f"`{env}` has no standby or filter called `{name}`. Standbys of `{env}`: {standbys}."
            )
    if rest and rest[0] == "locks":
        return _locks(env, host, rest)
    if rest and rest[0] == "pool":
        return _pools(env, host, rest)
    return ListSessions(env, host, parse_filters(rest))


def _pools(env: str, host: str, rest: list[str]) -> ShowPools:
    where = env if host == "primary" else f"{env} {host}"
    if len(rest) > 1:
        raise CommandError(f"`{where} pool` takes no more words (got `{' '.join(rest[1:])}`).", usage="pool")
    return ShowPools(env, host)


def _locks(env: str, host: str, rest: list[str]) -> ShowLocks:
    if len(rest) > 1:
        where = env if host == "primary" else f"{env} {host}"
        raise CommandError(f"`{where} locks` takes no more words (got `{' '.join(rest[1:])}`).")
    return ShowLocks(env, host)


AUDIT_ACTIONS = ("cancel", "terminate", "clear_db", "clear_db_block", "allow_connections", "terminate_bulk")


def parse_filters(words: list[str]) -> Filters:
    cats: set[str] = set()
    values: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        lw = w.lower()
        if lw in CATEGORY_WORDS:
            cats.add(lw)
            i += 1
            continue
        if "=" in w and w.split("=", 1)[0].lower() in VALUE_FLAGS:
            flag, value = w.split("=", 1)
            words = words[:i] + [flag, value] + words[i + 1 :]
            continue
        if lw in VALUE_FLAGS:
            key = VALUE_FLAGS[lw]
            if i + 1 >= len(words) or (words[i + 1].startswith("--") and words[i + 1].lower() in VALUE_FLAGS):
                raise CommandError(f"`{w}` needs a value, e.g. `{w} {'10m' if key == 'min' else 'NAME'}`.")
            if key in values:
                raise CommandError(f"`{w}` is given twice: give it once.")
            values[key] = words[i + 1]
            i += 2
            continue
        raise CommandError(f"I don't know the filter `{w}`.")
    min_seconds = None
    if "min" in values:
        try:
            min_seconds = parse_duration(values["min"])
        except DurationError as exc:
            if isinstance(exc, DurationTooLong):
                raise CommandError(f"`--min {values['min']}`: {exc}") from None
            raise CommandError(
                f"`{values['min']}` is not a duration: write it like `90s`, `10m`, `1h` or plain seconds."
            ) from None
    return Filters(
        categories=frozenset(cats),
        min_seconds=min_seconds,
        app=values.get("app"),
        user=values.get("user"),
        database=values.get("db"),
    )
