"""Query-text privacy: replace every literal in a SQL text with ``?``, using PostgreSQL's own lexer.

``redact(sql)`` tokenizes with pglast's scanner (the scanner of the PostgreSQL server, so quoted
quotes, ``E''`` escapes, dollar quoting, nested comments and typed literals are read exactly as the
server reads them) and rebuilds the text with:

* string, bit, hex, unicode-escape and numeric literals -> ``?`` (``'it''s'``, ``E'\\n'``,
  ``$tag$...$tag$``, ``B'01'``, ``X'1F'``, ``U&'...'``, ``42``, ``1e10``, ``.5``, ``0x1F``, ``1_000``);
* comments -> ``/* ? */`` or ``-- ?`` (people paste ids and e-mail addresses into comments);
* everything else (keywords, identifiers -- also ``"Quoted"`` ones --, operators, ``$1`` parameters,
  whitespace) unchanged.

It never raises. A text the lexer rejects -- typically a query cut at ``track_activity_query_size``
in the middle of a string -- is redacted up to the token the lexer stopped at, and the rest becomes
``?`` (nothing after an unterminated quote is shown). If even that fails the whole text is replaced
by :data:`UNREDACTABLE`. The lexer's error message is never used (it quotes the offending text).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

PLACEHOLDER = "?"
UNREDACTABLE = "<query text hidden: it could not be redacted>"

LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "ICONST", "FCONST"})
_COMMENTS = {"SQL_COMMENT": "-- ?", "C_COMMENT": "/* ? */"}
# PostgreSQL 15+ lexers reject "123abc" (older servers read it as "123 AS abc"): swallow the whole run.
_NUMERIC_JUNK = re.compile(r"(?:\d|\.\d)[0-9A-Za-z_.]*")
_MAX_ROUNDS = 1000


def _scan(text: str) -> list[Any]:
    from pglast.parser import scan

    return list(scan(text))


def _rebuild(text: str, tokens: Iterable[Any]) -> str:
    out: list[str] = []
    pos = 0
    for tok in tokens:
        start, end = tok.start, tok.end + 1
        if start < pos or end > len(text):  # offsets we do not understand: refuse rather than guess
            raise ValueError("token offsets out of range")
        gap = text[pos:start]
        out.append(gap if not gap or gap.isspace() else " ")
        if tok.name in LITERAL_TOKENS:
            out.append(PLACEHOLDER)
        elif tok.name in _COMMENTS:
            out.append(_COMMENTS[tok.name])
        else:
            out.append(text[start:end])
        pos = end
    tail = text[pos:]
    out.append(tail if not tail or tail.isspace() else " ")
    return "".join(out)


def _error_index(exc: BaseException) -> int | None:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], int):
        return args[1]
    return None


def redact(sql: str | None) -> str:
    """``sql`` with every literal replaced by ``?``; never raises, never returns a literal it could not parse."""
    if not sql:
        return sql or ""
    try:
        return _redact(sql)
    except Exception as exc:  # pragma: no cover - defensive: the contract is "never raise"
        log.warning("query text could not be redacted (%s); hiding it", type(exc).__name__)
        return UNREDACTABLE


def _redact(sql: str) -> str:
    from pglast.parser import ParseError

    out: list[str] = []
    rest = sql
    for _ in range(_MAX_ROUNDS):
        try:
            tokens = _scan(rest)
        except ParseError as exc:
            at = _error_index(exc)
            if at is None or not 0 <= at < len(rest):
                return UNREDACTABLE
            head, bad = rest[:at], rest[at:]
            try:
                out.append(_rebuild(head, _scan(head)) if head.strip() else head)
            except ParseError:
                return UNREDACTABLE
            junk = _NUMERIC_JUNK.match(bad)
            if junk:
                # a number glued to letters: hide it and keep reading after it
                out.append(PLACEHOLDER)
                rest = bad[junk.end():]
                if not rest:
                    break
                continue
            # an unterminated string, dollar quote, comment or quoted identifier: it runs to the end
            # of the (truncated) text, so nothing after it may be shown
            out.append("/* ? */" if bad.startswith("/*") else PLACEHOLDER)
            break
        else:
            out.append(_rebuild(rest, tokens))
            break
    else:
        return UNREDACTABLE
    return "".join(out)


__all__ = ["PLACEHOLDER", "UNREDACTABLE", "redact"]
