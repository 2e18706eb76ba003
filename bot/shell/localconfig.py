"""The configuration the terminal chat uses when it is given none: the local PostgreSQL, two people."""

from __future__ import annotations

import getpass
import os
import re

from bot.config import Config, parse_config

APPROVER_NAME = "approver"
YOU_ID = "U0LOCAL1"
APPROVER_ID = "U0LOCAL2"

NO_POSTGRES = """\
pgsessions shell: no PostgreSQL answered with the libpq defaults ({dsn}): {reason}
What to do:
  - start PostgreSQL on this machine (e.g. `sudo service postgresql start`), or
  - point libpq at a server: PGHOST=... PGPORT=... PGUSER=... (password in PGPASSWORD or ~/.pgpass), or
  - write a config file (copy pgsessions.example.yml) and run `pgsessions shell --config FILE`, or
  - run `make demo` for a throw-away primary and standby with trouble in them."""


def local_user_name() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no login name in some containers
        name = ""
    name = re.sub(r"[^a-z0-9_.-]", "", name.lower())
    return name if name and name != APPROVER_NAME else "me"


def local_dsn() -> str:
    """libpq defaults (PGHOST, PGPORT, PGUSER, ... or the local socket), on the postgres database
    unless PGDATABASE names another."""
    return "" if os.environ.get("PGDATABASE") else "dbname=postgres"


def builtin_config(dsn: str | None = None) -> Config:
    """One environment ``local`` on libpq defaults; you and a second approver (self-approval off)."""
    me = local_user_name()
    data = {
        "environments": {
            "local": {
                "dsn": local_dsn() if dsn is None else dsn,
                "thresholds": {"long_running": "10s", "idle_in_transaction": "10s", "idle": "10m"},
                "timeouts": {"connect": "3s", "statement": "5s"},
                "access": {
                    "requesters": ["*"],
                    "approvers": [YOU_ID, APPROVER_ID],
                    "self_approval": False,
                    "require_reason": True,
                },
            }
        },
        "users": {me: YOU_ID, APPROVER_NAME: APPROVER_ID},
    }
    return parse_config(data, environ={})


def channel_name(cid: str) -> str:
    """The name the terminal chat gives a channel id: ``C0ALERTS`` reads ``alerts``, others lower-cased."""
    m = re.fullmatch(r"[CG]0([A-Z][A-Z0-9_-]*)", cid)
    return (m.group(1) if m else cid).lower()


def channel_names(config: Config, default: tuple[str, str]) -> dict[str, str]:
    """Every channel id the configuration names (access channels, approval and alert channels) with the
    name the terminal chat shows for it, so that ``#alerts`` is printed rather than ``#C0ALERTS``."""
    names = {default[0]: default[1]}
    for env in config.environments.values():
        ids = list(env.access.channels or [])
        if env.access.approval_channel:
            ids.append(env.access.approval_channel)
        if env.lag_alert is not None:
            ids.append(env.lag_alert.channel)
        for cid in ids:
            if re.fullmatch(r"[CG][A-Z0-9]{2,}", cid):
                names.setdefault(cid, channel_name(cid))
    return names
