"""The config's building blocks: the base of every section, the field types that parse what people write
(durations, percentages, one name or a list), the rules for names, and the check of a connection string."""

from __future__ import annotations

import re
from typing import Annotated, Any

from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, BeforeValidator, ConfigDict

from bot.durations import parse_duration
from bot.secrets import SECRETS

Duration = Annotated[float, BeforeValidator(parse_duration)]

# Words that follow ``/pgsessions`` and so cannot name an environment, and words that follow an
# environment name and so cannot name a standby.
RESERVED_ENV_NAMES = {"help", "audit", "pending", "version"}
RESERVED_HOST_NAMES = {
    "primary", "active", "idle", "idle-tx", "blocked", "lag", "clear-db", "audit", "all", "help",
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SLACK_PRINCIPAL_RE = re.compile(r"^(\*|[UWS][A-Z0-9]+)$")


class Section(BaseModel):
    """One section of the config: unknown keys are refused, and nothing changes once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _principals(v: Any) -> Any:
    if isinstance(v, str):
        return [v]
    return v


Principals = Annotated[list[str], BeforeValidator(_principals)]


def _names(v: Any) -> Any:
    if isinstance(v, str):
        return [v]
    return v


Names = Annotated[list[str], BeforeValidator(_names)]


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


def check_dsn(dsn: str) -> None:
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
