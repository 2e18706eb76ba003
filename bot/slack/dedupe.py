"""Event ids seen recently (Events API retries, replayed envelopes): a bounded in-process map with a time
to live. A leaf of the Slack edge: the runtime holds one without importing the event handlers."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

DEDUPE_TTL = 3600.0  # Slack retries within minutes; an hour is ample
DEDUPE_MAX = 10000


class EventDedupe:
    """A bounded map of recently seen event ids with a time to live."""

    def __init__(self, ttl: float = DEDUPE_TTL, max_size: int = DEDUPE_MAX):
        self.ttl = ttl
        self.max_size = max_size
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, event_id: str, now: float | None = None) -> bool:
        """True the first time ``event_id`` is seen within the TTL (and remembers it)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if at > now - self.ttl and len(self._seen) < self.max_size:
                    break
                self._seen.pop(oldest)
            if event_id in self._seen:
                return False
            self._seen[event_id] = now
            return True

    def __len__(self) -> int:
        return len(self._seen)
