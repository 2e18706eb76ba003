"""Durations as people type them and as people read them. Pure."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.durations import DURATION_HINT, DurationError, format_bytes, format_duration, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0), ("250ms", 0.25),
        ("1h30m", 5400.0), ("1h 30m", 5400.0), ("1d2h3m4s", 93784.0), ("1.5h", 5400.0), ("0.5s", 0.5),
        ("45", 45.0), ("2.5", 2.5), (" 10M ", 600.0), ("0", 0.0), ("0s", 0.0),
        (45, 45.0), (2.5, 2.5), (0, 0.0), (timedelta(minutes=2), 120.0),
    ],
)
def test_parse(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5x", "m", "ten minutes", "1h-", "h1", "5m30", "--5m", "1e3", "5 minutes", "1,5h"])
def test_parse_rejects_with_the_hint(value):
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert str(info.value) == f"{value!r} is not a duration: {DURATION_HINT}"


@pytest.mark.parametrize("value", [True, False, None, [5], {"m": 5}])
def test_parse_rejects_other_types(value):
    with pytest.raises(DurationError, match="is not a duration: use a number of seconds"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["", "   "])
def test_parse_empty(value):
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert str(info.value) == f"empty duration: {DURATION_HINT}"


@pytest.mark.parametrize("value", [-1, -0.5, timedelta(seconds=-3)])
def test_parse_negative(value):
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert str(info.value) == f"{value!r} is negative: durations must be zero or more"


def test_duration_error_is_a_value_error():
    # pydantic turns a ValueError raised in a validator into a validation error naming the key
    assert issubclass(DurationError, ValueError)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "–"), (0, "0s"), (0.9, "0s"), (45, "45s"), (59.99, "59s"), (60, "1m"), (725, "12m 05s"),
        (3599, "59m 59s"), (3600, "1h"), (10920, "3h 02m"), (47 * 3600 + 59 * 60, "47h 59m"),
        (48 * 3600, "2d"), (2 * 86400 + 4 * 3600 + 59, "2d 4h"), (400 * 86400, "400d"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "n, text",
    [
        (None, "–"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 kB"), (1536, "1.5 kB"),
        (5 * 1024**2, "5.0 MB"), (3 * 1024**3, "3.0 GB"), (2 * 1024**4, "2.0 TB"), (4096 * 1024**4, "4096.0 TB"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize("text", ["90s", "12m", "3h", "1h30m", "45"])
def test_typed_and_shown_agree(text):
    """What format_duration shows for a parsed duration reads back as the same number of seconds."""
    shown = format_duration(parse_duration(text)).replace(" ", "")
    assert parse_duration(shown) == parse_duration(text)
