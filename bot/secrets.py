"""Keeping secrets out of messages and logs.

The config loader registers every secret it sees (passwords inside DSNs, values that came from
``${VAR}``, Slack tokens); :func:`scrub` replaces them, and any ``password=...`` or URI password that
slipped through, with ``***``. :class:`ScrubFilter` applies it to every log record.
"""

from __future__ import annotations

import logging
import re
import threading

from psycopg.conninfo import conninfo_to_dict


class _SecretSet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: set[str] = set()

    def add(self, value: str | None) -> None:
        # very short values (e.g. "1", "on") would scrub ordinary words; secrets are longer than that
        if value and len(value) >= 4:
            with self._lock:
                self._items.add(value)

    def snapshot(self) -> list[str]:
        with self._lock:
            return sorted(self._items, key=len, reverse=True)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


SECRETS = _SecretSet()

_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)([^@\s]+)(@)", re.IGNORECASE)
_TOKENS = re.compile(r"\bx(?:ox[abposr]|app)-[A-Za-z0-9-]+")


def scrub(text: str) -> str:
    if not text:
        return text
    for secret in SECRETS.snapshot():
        if secret in text:
            text = text.replace(secret, "***")
    text = _KV_PASSWORD.sub(r"\1***", text)
    text = _URI_PASSWORD.sub(r"\1***\3", text)
    text = _TOKENS.sub("xox?-***", text)
    return text


def dsn_password(dsn: str) -> str | None:
    try:
        pw = conninfo_to_dict(dsn).get("password")
    except Exception:
        return None
    return str(pw) if pw else None


def safe_dsn(dsn: str) -> str:
    """host:port/dbname user — for display; never the password."""
    try:
        p = conninfo_to_dict(dsn)
    except Exception:
        return "(unparseable dsn)"
    host = p.get("host") or p.get("hostaddr") or "local socket"
    port = p.get("port") or "5432"
    return f"{host}:{port}/{p.get('dbname') or '?'} as {p.get('user') or '(default user)'}"


class ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = scrub(message)
        if record.exc_info and record.exc_info[1] is not None:
            # render the traceback now, scrubbed, so the formatter doesn't print the raw one
            formatted = logging.Formatter().formatException(record.exc_info)
            cleaned = f"{cleaned}\n{scrub(formatted)}"
            record.exc_info = None
            record.exc_text = None
        record.msg = cleaned
        record.args = None
        return True
