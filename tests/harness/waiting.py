"""Waiting for something to become true: the one polling helper of the tests and the bench.

``wait_until(pred, timeout, what)`` calls ``pred`` until it returns something truthy and returns that
value; after ``timeout`` seconds it raises :class:`WaitTimeout` naming ``what``. ``pred`` is always
called at least once, and once more after the deadline, so a slow poll never loses the last chance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What was waited for did not happen in time (an AssertionError, so pytest reports it as a failure)."""


def wait_until(pred: Callable[[], T], timeout: float = 10, what: str = "condition", *, every: float = 0.03) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{what}: not within {timeout:g}s")
        time.sleep(every)
