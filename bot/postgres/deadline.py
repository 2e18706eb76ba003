"""Client-side deadlines for every statement the bot sends to a monitored server.

``statement_timeout`` is enforced by the server, so it does nothing when the server itself stops
answering (a frozen backend, stuck I/O, a network that silently drops packets): the client would wait
for as long as TCP retransmission lasts. Here every statement on a guarded connection has a deadline
of its own (:attr:`GuardedConnection.pgs_limit` seconds). When it passes, a watchdog thread cancels the
query (``cancel_safe``, bounded) and shuts the connection's socket down, which wakes the waiting thread
at once with :class:`NotAnswering`; the connection is then useless and is discarded, never reused.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Self

import psycopg

log = logging.getLogger(__name__)

CANCEL_WAIT = 0.3  # seconds the watchdog gives the cancel request before it cuts the socket


class NotAnswering(psycopg.OperationalError):
    """A statement overran its client-side deadline; its connection has been cut."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"not answering within {seconds:g}s")


class _Armed:
    __slots__ = ("action", "state")

    def __init__(self, action: Callable[[], None]):
        self.action = action
        self.state = "armed"  # armed -> fired -> done, or armed -> disarmed (changed under the watchdog's lock)


class Watchdog:
    """One daemon thread that runs an action when a deadline passes, unless disarmed first.

    Each action runs in a thread of its own, so that one slow abort never delays another. A deadline
    costs a small object and a heap entry, no lock or event of its own (one per statement: a fleet's
    thousands of statements per second); the rare caller that must wait for a fired action waits on the
    watchdog's one condition.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Armed]] = []  # (deadline, seq, item): compared in C
        lock = threading.Lock()
        self._cv = threading.Condition(lock)  # the watchdog thread waits on it for the next deadline
        self._fired = threading.Condition(lock)  # a disarm that came too late waits on it for the action
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, action: Callable[[], None]) -> _Armed:
        item = _Armed(action)
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._seq), item))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pgs-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is item:
                # only a deadline sooner than every other one changes when the thread must wake (it
                # sleeps until the first): a statement a millisecond long wakes nobody
                self._cv.notify()
        return item

    def disarm(self, item: _Armed) -> bool:
        """True if the action will never run; False if it ran (this waits until it has finished)."""
        with self._cv:
            if item.state == "armed":
                item.state = "disarmed"
                return True
            while item.state != "done":
                self._fired.wait()
        return False

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    if self._heap and self._heap[0][2].state != "armed":
                        heapq.heappop(self._heap)
                        continue
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                item = heapq.heappop(self._heap)[2]
                if item.state != "armed":
                    continue
                item.state = "fired"
            threading.Thread(target=self._fire, args=(item,), name="pgs-deadline-abort", daemon=True).start()

    def _fire(self, item: _Armed) -> None:
        try:
            item.action()
        except Exception:  # an abort must never take the watchdog down
            log.exception("aborting an overdue statement failed")
        finally:
            with self._fired:
                item.state = "done"
                self._fired.notify_all()


WATCHDOG = Watchdog()


def _cancel(conn: psycopg.Connection) -> None:
    """Ask the server to cancel the running query, waiting at most ``CANCEL_WAIT``."""
    try:
        if psycopg.capabilities.has_cancel_safe():
            conn.cancel_safe(timeout=CANCEL_WAIT)
        else:
            # libpq < 17 has no cancel with a timeout: send it from a thread of its own, never wait for it
            request = conn.pgconn.get_cancel()
            threading.Thread(target=request.cancel, name="pgs-cancel", daemon=True).start()
    except Exception as exc:  # the server may not answer the cancel request either
        log.debug("cancel of an overdue statement failed: %s", type(exc).__name__)


def cut(conn: psycopg.Connection) -> None:
    """Cancel the running query (bounded) and shut the socket down, waking whoever waits on it."""
    _cancel(conn)
    try:
        fd = conn.pgconn.socket
    except Exception:  # already closed
        return
    try:
        dup = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()  # closes only the duplicate; the connection's own descriptor stays valid until close()


class GuardedCursor(psycopg.Cursor[Any]):
    """A cursor whose ``execute`` is bounded by its connection's ``pgs_limit`` (seconds), if set."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        conn = self.connection
        limit = getattr(conn, "pgs_limit", None)
        if not limit:
            return super().execute(query, params, **kwargs)
        armed = WATCHDOG.arm(limit, lambda: cut(conn))
        try:
            result = super().execute(query, params, **kwargs)
        except BaseException:
            if not WATCHDOG.disarm(armed):
                conn.pgs_overrun = True  # type: ignore[attr-defined]
                raise NotAnswering(limit) from None
            raise
        if not WATCHDOG.disarm(armed):
            # it answered just as the deadline passed: the result is good, the connection is not
            conn.pgs_overrun = True  # type: ignore[attr-defined]
        return result


class GuardedConnection(psycopg.Connection[Any]):
    """A connection whose statements are bounded (see :class:`GuardedCursor`)."""

    pgs_limit: float | None = None
    pgs_overrun: bool = False
    pgs_reserved: bool = False  # the connection kept for when the server has no slot left
    pgs_idle_since: float = 0.0  # when it was last handed back (bot.postgres.pools)
    pgs_expires: float = math.inf  # when it is replaced instead of handed out again (bot.postgres.pools)
