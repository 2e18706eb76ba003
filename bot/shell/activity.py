"""Knowing when the bot has finished answering: work in flight, and the time of the last change."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


class Activity:
    """Counts work in flight (listener tasks, Web API calls) and remembers when anything last happened."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0
        self._last = time.monotonic()
        self._events = 0  # bumped by every message / view / notice shown

    def begin(self) -> None:
        with self._cond:
            self._busy += 1
            self._last = time.monotonic()
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._busy = max(0, self._busy - 1)
            self._last = time.monotonic()
            self._cond.notify_all()

    def event(self) -> None:
        """Something was shown (a message, an edit, a form)."""
        with self._cond:
            self._events += 1
            self._last = time.monotonic()
            self._cond.notify_all()

    @property
    def events(self) -> int:
        with self._cond:
            return self._events

    @property
    def busy(self) -> int:
        with self._cond:
            return self._busy

    def settle(self, quiet: float = 0.3, limit: float = 15.0) -> bool:
        """Wait until nothing is in flight and nothing happened for ``quiet`` seconds (at most ``limit``).

        True when settled, False when the limit was reached first.
        """
        deadline = time.monotonic() + limit
        with self._cond:
            while True:
                now = time.monotonic()
                if self._busy == 0 and now - self._last >= quiet:
                    return True
                if now >= deadline:
                    return False
                wait = quiet - (now - self._last) if self._busy == 0 else quiet
                self._cond.wait(max(0.01, min(wait, deadline - now)))

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (checked after every event) holds, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.25))
            return True


class TrackedExecutor(Executor):
    """Wraps Bolt's listener executor so that a listener's slow part counts as work in flight."""

    def __init__(self, inner: Executor, activity: Activity):
        self.inner = inner
        self.activity = activity

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.activity.begin()
        try:
            future = self.inner.submit(fn, *args, **kwargs)
        except BaseException:
            self.activity.end()
            raise
        future.add_done_callback(lambda _f: self.activity.end())
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait=wait, cancel_futures=cancel_futures)
