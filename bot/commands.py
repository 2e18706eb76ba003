"""Parsing the text after ``/pgsessions`` into a command. Pure: no Slack, no database.

Every error is a :class:`CommandError` whose message says which word is wrong and what would work.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from bot.config import Config
from bot.durations import DurationError, parse_duration
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
• `/pgsessions <env> clear-db DBNAME`: who is connected to a database, with *Terminate all* for maintenance
• `/pgsessions pending`: open kill requests · `/pgsessions audit <env>`: the latest decisions
• `/pgsessions audit <env> --user U… --since 1d --action terminate`: the decisions of one person, period or action
• `@pgsessions <env> …` in a channel or thread answers in the thread
• `/pgsessions help`: this text"""


class CommandError(Exception):
    """Bad input; ``str()`` is the whole answer for the user (it ends with the usage when useful)."""

    def __init__(self, message: str, show_usage: bool = True):
        self.message = message
        self.show_usage = show_usage
        super().__init__(message)

    def answer(self) -> str:
        return f"{self.message}\n\n{USAGE}" if self.show_usage else self.message


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
class Audit:
    env: str | None
    limit: int = 15
    user: str | None = None  # Slack user id of the actor or requester (``--user U123``)
    since: float | None = None  # seconds back from now (``--since 1d``)
    action: str | None = None  # ``--action terminate``


@dataclass(frozen=True)
class Pending:
    pass


@dataclass(frozen=True)
class ClearDb:
    env: str
    database: str
    host: str = "primary"


Command = Help | ListSessions | ShowLag | Audit | Pending | ClearDb


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


def parse(text: str, config: Config) -> Command:
    words = _tokens(text or "")
    if not words or words[0].lower() in ("help", "-h", "--help", "?"):
        return Help()
    first = words[0]
    if first.lower() == "pending":
        if len(words) > 1:
            raise CommandError(f"`pending` takes no arguments (got `{' '.join(words[1:])}`).")
        return Pending()
    if first.lower() == "audit":
        rest = words[1:]
        env = rest[0] if rest and not rest[0].startswith("-") else None
        if env is not None and config.env(env) is None:
            raise CommandError(f"Unknown environment `{env}`. Known environments: {known_envs(config)}.", False)
        flags = rest[1:] if env is not None else rest
        if any(not w.startswith("-") for w in flags) and not any(w.startswith("--") for w in flags):
            raise CommandError(f"`audit` takes one environment name (got `{' '.join(rest)}`).")
        return parse_audit_flags(env, flags)
    env = first
    environment = config.env(env)
    if environment is None:
        raise CommandError(f"Unknown environment `{env}`. Known environments: {known_envs(config)}.", False)
    rest = words[1:]
    host = "primary"
    if rest and rest[0] == "lag":
        if len(rest) > 1:
            raise CommandError(f"`{env} lag` takes no more words (got `{' '.join(rest[1:])}`).")
        return ShowLag(env)
    if rest and rest[0] == "clear-db":
        if len(rest) != 2:
            raise CommandError(f"Write `/pgsessions {env} clear-db DBNAME` with exactly one database name.")
        return ClearDb(env, rest[1])
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
    return ListSessions(env, host, parse_filters(rest))


AUDIT_FLAGS = ("--user", "--since", "--action")
AUDIT_ACTIONS = ("cancel", "terminate", "clear_db", "clear_db_block", "allow_connections", "terminate_bulk")
SLACK_USER_RE = re.compile(r"^<?@?([UW][A-Z0-9]{1,20})(?:\|[^>]*)?>?$")


def parse_audit_flags(env: str | None, words: list[str]) -> Audit:
    """``audit [env] [--user U123] [--since 1d] [--action terminate]``."""
    values: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        flag, _, inline = w.partition("=")
        flag = flag.lower()
        if flag not in AUDIT_FLAGS:
            raise CommandError(
                f"`audit` takes one environment name and the filters `--user U…`, `--since 1d`, "
                f"`--action terminate` (`{w}` is none of them)."
            )
        if inline:
            value, i = inline, i + 1
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            value, i = words[i + 1], i + 2
        else:
            example = {"--user": "U0123ABCD", "--since": "1d", "--action": "terminate"}[flag]
            raise CommandError(f"`{flag}` needs a value, e.g. `{flag} {example}`.")
        if flag in values:
            raise CommandError(f"`{flag}` is given twice: give it once.")
        values[flag] = value
    user = None
    if "--user" in values:
        m = SLACK_USER_RE.match(values["--user"])
        if not m:
            raise CommandError(
                f"`{values['--user']}` is not a Slack user: write `--user U0123ABCD` or mention the person.",
                False,
            )
        user = m.group(1)
    since = None
    if "--since" in values:
        try:
            since = parse_duration(values["--since"])
        except DurationError:
            raise CommandError(
                f"`{values['--since']}` is not a duration: write it like `30m`, `12h`, `7d`.", False
            ) from None
    action = None
    if "--action" in values:
        action = values["--action"].lower().replace("-", "_")
        if action not in AUDIT_ACTIONS:
            raise CommandError(
                f"`{values['--action']}` is not an action: use one of "
                + ", ".join(f"`{a}`" for a in AUDIT_ACTIONS) + ".",
                False,
            )
    return Audit(env, user=user, since=since, action=action)


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
        except DurationError:
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
