"""Query-text privacy: replace every literal in a SQL text with ``?``, using PostgreSQL's own lexer.

``redact(sql)`` tokenizes with pglast's scanner (the scanner of the PostgreSQL server, so quoted
quotes, ``E''`` escapes, dollar quoting, nested comments and typed literals are read exactly as the
server reads them) and rebuilds the text with:

* string, bit, hex, unicode-escape and numeric literals -> ``?`` (``'it''s'``, ``E'\\n'``,
  ``$tag$...$tag$``, ``B'01'``, ``X'1F'``, ``U&'...'``, ``42``, ``1e10``, ``.5``, ``0x1F``, ``1_000``);
* comments -> ``/* ? */`` or ``-- ?`` (people paste ids and e-mail addresses into comments);
* the value of a configuration setting -> ``?`` whatever it is written as, bare words too:
  ``SET app.token = secret10``, ``SET LOCAL x TO word``, ``ALTER ROLE r SET x = word``,
  ``ALTER SYSTEM SET …``, ``SET TIME ZONE word`` (a ``SET`` that is not part of an ``UPDATE``, up to the
  end of the statement; ``UPDATE t SET a = b`` shows its column names);
* everything else (keywords, identifiers -- also ``"Quoted"`` ones --, operators, ``$1`` parameters,
  whitespace) unchanged.

It is idempotent (a redacted text redacts to itself), so texts can be redacted again when shown:
:func:`redact` is applied when a request or an audit entry is shown too, for texts stored before
``redact_queries`` was turned on.

``standard_conforming_strings`` is a per-session setting that pg_stat_activity does not show. With it
``off`` a backslash escapes the next character in a plain ``'...'`` string too, so ``'pa\\'ss'`` is ONE
literal to the server while the lexer (which assumes ``on``, the default since PostgreSQL 9.1) reads
``'pa\\'``, an identifier ``ss`` and the start of another string. Every plain string that holds a
backslash is therefore read both ways; when the two readings do not end it at the same place, the text
cannot be tokenized with certainty and none of it is shown (:data:`UNREDACTABLE`).

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

from pglast.parser import ParseError, scan

log = logging.getLogger(__name__)

PLACEHOLDER = "?"
UNREDACTABLE = "query hidden: could not be redacted"

LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "ICONST", "FCONST"})
_COMMENTS = {"SQL_COMMENT": "-- ?", "C_COMMENT": "/* ? */"}
# PostgreSQL 15+ lexers reject "123abc" (older servers read it as "123 AS abc"): swallow the whole run.
_NUMERIC_JUNK = re.compile(r"(?:\d|\.\d)[0-9A-Za-z_.]*")
_MAX_ROUNDS = 1000


def _scan(text: str) -> list[Any]:
    return list(scan(text))


class Ambiguous(ValueError):
    """The text reads differently with standard_conforming_strings on and off: show none of it."""


_HORIZ = " \t\f\v"


def _continues_at(text: str, i: int) -> int | None:
    """After a closing quote at ``i - 1``: where a continuation segment's opening quote is, or None.

    PostgreSQL glues ``'a'`` and ``'b'`` into one literal when only whitespace holding a newline
    (and ``--`` comments) separates them."""
    j, newline = i, False
    while j < len(text):
        c = text[j]
        if c in _HORIZ:
            j += 1
        elif c in "\r\n":
            newline, j = True, j + 1
        elif text.startswith("--", j) and newline:
            while j < len(text) and text[j] not in "\r\n":
                j += 1
        else:
            break
    return j if newline and j < len(text) and text[j] == "'" else None


def _end_without_standard_strings(text: str, start: int, *, first_segment: bool = False) -> int | None:
    """Index of the quote that ends the plain string opening at ``start`` when backslashes escape
    (standard_conforming_strings = off), or None when it runs past the end of ``text``. With
    ``first_segment``, the quote that closes its first segment (continuations not followed)."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
        elif c == "'":
            if text.startswith("''", i):
                i += 2
                continue
            nxt = None if first_segment else _continues_at(text, i + 1)
            if nxt is None:
                return i
            i = nxt + 1
        else:
            i += 1
    return None


def _check_both_readings(text: str, tok: Any) -> None:
    """A plain string with a backslash must end at the same place whatever standard_conforming_strings.

    An ``E''`` string glued to a continuation segment (``E'a'`` newline ``'b\\' c'``) reads backslashes
    in the continuation as escapes too, which a reader of the separate ``'b\\'`` would not: one reading
    ends the literal where the other sees an identifier, so none of it is shown."""
    body = text[tok.start : tok.end + 1]
    if tok.name == "SCONST" and body[:1] in "eE" and "\\" in body:
        first_end = _end_without_standard_strings(body, 1, first_segment=True)
        if first_end is not None and "\\" in body[first_end + 1 :]:
            raise Ambiguous("an escape string continues with a segment that holds a backslash")
    if tok.name != "SCONST" or text[tok.start] != "'" or "\\" not in body:
        return
    if _end_without_standard_strings(text, tok.start) != tok.end:
        raise Ambiguous("the text reads differently with standard_conforming_strings off")


_SEMICOLON = "ASCII_59"
_SETTING_NAME = frozenset({"IDENT", "ASCII_46"})  # a (dotted) name: app.token
_ASSIGN = frozenset({"ASCII_61", "TO"})  # = or TO
_KEEP_IN_VALUE = frozenset({"ASCII_44"})  # the commas of a list value


def _setting_values(tokens: list[Any]) -> set[int]:
    """Indices of the tokens that write the value of a configuration setting (``SET name = value``,
    ``SET name TO value``, ``SET TIME ZONE value``, also after ``ALTER ROLE|DATABASE|SYSTEM|FUNCTION …``),
    to the end of the statement: a bare word (``secret10``) is a value as much as ``'secret10'``."""
    hide: set[int] = set()
    in_update = False
    i = 0
    while i < len(tokens):
        name = tokens[i].name
        if name == _SEMICOLON:
            in_update = False
        elif name == "UPDATE":  # UPDATE … SET, ON CONFLICT DO UPDATE SET, MERGE … UPDATE SET: columns
            in_update = True
        elif name == "SET" and not in_update:
            j = i + 1
            if j < len(tokens) and tokens[j].name in ("SESSION", "LOCAL"):
                j += 1
            start = None
            if j + 1 < len(tokens) and tokens[j].name == "TIME" and tokens[j + 1].name == "ZONE":
                start = j + 2
            else:
                k = j
                while k < len(tokens) and (tokens[k].name in _SETTING_NAME or (
                        tokens[k].kind != "NO_KEYWORD" and tokens[k].name not in _ASSIGN)):
                    k += 1
                if k > j and k < len(tokens) and tokens[k].name in _ASSIGN:
                    start = k + 1
            if start is not None:
                k = start
                while k < len(tokens) and tokens[k].name != _SEMICOLON:
                    if tokens[k].name not in _KEEP_IN_VALUE:
                        hide.add(k)
                    k += 1
                i = k
                continue
        i += 1
    return hide


def _rebuild(text: str, tokens: Iterable[Any]) -> str:
    out: list[str] = []
    pos = 0
    tokens = list(tokens)
    values = _setting_values(tokens)
    for n, tok in enumerate(tokens):
        start, end = tok.start, tok.end + 1
        if start < pos or end > len(text):  # offsets we do not understand: refuse rather than guess
            raise ValueError("token offsets out of range")
        _check_both_readings(text, tok)
        gap = text[pos:start]
        out.append(gap if not gap or gap.isspace() else " ")
        if tok.name in LITERAL_TOKENS or (n in values and tok.name not in _COMMENTS):
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
    except Ambiguous:
        return UNREDACTABLE
    except Exception as exc:  # defensive: the contract is "never raise", and never show what we could not read
        log.warning("query text could not be redacted (%s); hiding it", type(exc).__name__)
        return UNREDACTABLE


def _redact(sql: str) -> str:
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
