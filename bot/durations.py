"""Durations as people type them (``90s``, ``5m``, ``1h30m``, ``45``) and as people read them."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

DURATION_HINT = "use a number of seconds or a value like 90s, 5m, 1h, 1h30m"


class DurationError(ValueError):
    pass


class DurationTooLong(DurationError):
    pass


# nothing the bot measures or waits for is longer than a year; a bigger number is a typo
MAX_DURATION_S = 366 * 86400


def parse_duration(value: object) -> float:
    """Return seconds. Accepts numbers (seconds) and strings like ``90s``, ``5m``, ``1h30m``."""
    if isinstance(value, bool):
        raise DurationError(f"{value!r} is not a duration: {DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text:
            raise DurationError(f"empty duration: {DURATION_HINT}")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            pos = 0
            seconds = 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or pos == 0:
                raise DurationError(f"{value!r} is not a duration: {DURATION_HINT}")
    else:
        raise DurationError(f"{value!r} is not a duration: {DURATION_HINT}")
    if seconds < 0:
        raise DurationError(f"{value!r} is negative: durations must be zero or more")
    if not seconds <= MAX_DURATION_S:  # also catches inf
        raise DurationTooLong(f"{value} is too long: durations are at most 366d (one year)")
    return seconds


def format_duration(seconds: float | None) -> str:
    """Compact human form: ``45s``, ``12m 05s``, ``10m``, ``3h 02m``, ``2d 4h``: no zero second part."""
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h {m:02d}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d {h}h" if h else f"{d}d"


def format_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
