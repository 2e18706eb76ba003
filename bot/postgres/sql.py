"""SQL lives in ``queries/*.sql`` beside this module and is loaded by name.

Values are always bound as parameters (``%(name)s``); nothing is ever formatted into SQL text.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, TypeAlias

import psycopg

# a connection to a monitored server (rows as tuples unless a cursor asks for dicts)
Conn: TypeAlias = psycopg.Connection[Any]
# one row read with psycopg.rows.dict_row
Row: TypeAlias = dict[str, Any]


@cache
def query(name: str) -> str:
    """The text of ``queries/<name>.sql``."""
    path = resources.files(__package__).joinpath("queries", f"{name}.sql")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no SQL file named {name}.sql in bot/postgres/queries") from None
