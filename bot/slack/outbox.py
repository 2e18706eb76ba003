"""A durable outbox for the watchers' Slack messages: kept in the state store, delivered in order.

When Slack's Web API fails for minutes (5xx, connection refused, 429 storms), an alert, its edits, its
thread reminders and its resolution are not lost: every call is first written to ``pgs_outbox`` and
then delivered, per key (the incident id), in the order it was queued.

* :meth:`Outbox.send` queues one call and, when nothing older waits for that key and Slack is not
  known to be failing, delivers it at once (the caller gets Slack's answer, as before the outbox).
  Otherwise the call waits for :meth:`Outbox.deliver`, a scheduler job every ``DELIVER_EVERY`` s run
  by the alerts' leader (``alerts:outbox``, :class:`bot.alerts.AlertShell`; see the claim below).
* An ``update`` or ``thread_reply`` queued before its message was posted targets that post's ts, found
  at delivery time. Consecutive pending edits of one message collapse to the newest (Slack only needs
  the latest state; :func:`plan`).
* Retry with backoff on 5xx, connection errors, timeouts and unknown errors; 429 pauses every delivery
  for ``Retry-After``. A call is given up (state ``failed``, one log line) only on errors that can never
  succeed: :data:`PERMANENT_ERRORS`.
* Used by the lag watcher and the session watch (keys are incident ids), delivered by the one alert
  shell's job (``alerts:outbox``); across a handover, or with an Acknowledge note sent at once, two
  deliverers may run at once: a row is
  *claimed* before it is sent, by one conditional UPDATE (still pending, same ``attempts`` as read, not
  claimed by someone else), and only the deliverer whose UPDATE changed the row sends it. A key whose
  oldest row is claimed or backing off waits whole, so its order holds across deliverers.
* No duplicates: a call is claimed (marked attempted) in the state store before it is sent and delivered right
  after Slack answers. ``chat.postMessage`` has no idempotency key, so a post whose answer was lost
  (a timeout after Slack took it, or the bot dying between Slack's answer and the write that follows)
  is posted again: that window is one HTTP round trip, and it is the only way a duplicate can appear.
* No Slack call is ever made inside a state-store transaction.
* :class:`IncidentOutbox` is how both watchers talk to Slack about an incident through the outbox:
  one call (an answer at once, or kept for later), adopting a post the outbox delivered later (its
  channel and ts saved on the incident), and the final edit of a resolution.

**While the state store does not answer** (issue 23 §6, :mod:`bot.state.health`) the calls are kept in
this process's memory instead, in the same order per key, and delivered from there (by :meth:`Outbox.send`
at once, then by the same ``deliver`` jobs); every alert posted or edited meanwhile carries the line
:data:`bot.render.store.OUTAGE_NOTE`. When the store answers again, the calls kept in memory are written
to ``pgs_outbox`` as they are (a delivered post with its ts, so later edits and the resolution find it;
calls still waiting as pending) before anything else reads it (a catch-up hook of the health monitor).

Every statement on ``pgs_outbox`` is in :mod:`bot.state.outbox` (:class:`~bot.state.outbox.OutboxRows`);
this module decides what is sent, when, and what Slack's answers mean.

Metrics: ``pgsessions_slack_outbox_pending`` (backlog) and ``pgsessions_slack_outbox_total`` (by op and
outcome: delivered, retried, failed, superseded).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse
from sqlalchemy.sql.elements import ColumnElement

from bot.alerts import DELIVER_EVERY as DELIVER_EVERY
from bot.alerts import IncidentMessages
from bot.metrics import SLACK_OUTBOX, SLACK_OUTBOX_PENDING
from bot.render.store import render_duplicate_note, with_outage_note
from bot.state.health import StoreHealth
from bot.state.incidents import Incident, Incidents
from bot.state.outbox import CLAIM_SECS as CLAIM_SECS
from bot.state.outbox import DELIVERED as DELIVERED
from bot.state.outbox import FAILED as FAILED
from bot.state.outbox import KEEP_DONE_FOR as KEEP_DONE_FOR
from bot.state.outbox import PENDING as PENDING
from bot.state.outbox import POST as POST
from bot.state.outbox import SUPERSEDED as SUPERSEDED
from bot.state.outbox import THREAD_REPLY as THREAD_REPLY
from bot.state.outbox import UPDATE as UPDATE
from bot.state.outbox import Item as Item
from bot.state.outbox import Kept as Kept
from bot.state.outbox import OutboxRows
from bot.state.store import StateStore

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0  # Slack back: everything waiting lands within this
ENV_CACHE = 4096  # keys (incident ids) whose environment is remembered; the least recently used go first

# Errors after which the same call can never succeed: give it up instead of retrying forever.
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "invalid_blocks_format",
    "invalid_arguments", "invalid_arg_name", "msg_too_long", "no_text", "too_many_attachments",
    "invalid_attachments", "message_not_found", "cant_update_message", "edit_window_closed",
    "restricted_action", "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
    "cannot_reply_to_message", "thread_locked", "team_access_not_granted", "duplicate_channel_not_found",
    "channel_is_archived",
})


def plan(items: Iterable[Item]) -> list[tuple[Item, list[Item]]]:
    """What to send next: per key (in the order of its oldest item) the item at its head, with the older
    pending edits of the same message it replaces. ``items`` are the pending ones in ``id`` order.

    Only consecutive ``update`` items of one target collapse: a post, a thread reply or an edit of
    another message between them keeps the order."""
    by_key: dict[str, list[Item]] = {}
    for it in sorted(items, key=lambda i: i.id):
        by_key.setdefault(it.key, []).append(it)
    out: list[tuple[Item, list[Item]]] = []
    for queue in by_key.values():
        head, replaced = queue[0], []
        for nxt in queue[1:]:
            if head.op == UPDATE and nxt.op == UPDATE and (nxt.channel, nxt.ts) == (head.channel, head.ts):
                replaced.append(head)
                head = nxt
            else:
                break
        out.append((head, replaced))
    return out


def backoff(attempts: int) -> float:
    """Seconds before the next try of a call that failed ``attempts`` times: 2, 4, 8 ... at most ``MAX_BACKOFF``."""
    return min(MAX_BACKOFF, 2.0 ** max(1, attempts))


@dataclass
class Sent:
    """What :meth:`Outbox.send` did: ``kept`` once the call is in the state store (or landed),
    ``response`` Slack's answer when it was delivered at once."""

    kept: bool
    response: dict[str, Any] | None = None


class Shard(Protocol):
    """The fleet's per-environment ownership (:class:`bot.fleet.shards.Shards`)."""

    @property
    def fleet(self) -> bool: ...

    def owns(self, env: str) -> bool: ...

    def held_clause(self, env: str) -> ColumnElement[bool] | None: ...


class Outbox:
    def __init__(self, store: StateStore, client: WebClient | Callable[[], WebClient], *,
                 may_send: Callable[[], bool] = lambda: True, shards: Shard | None = None):
        """``client``: a slack_sdk WebClient, or a function returning the current one. ``shards`` (fleet
        mode): this deliverer sends only the rows of the environments this replica owns, and its claim
        holds only while the environment's lease is this replica's at its generation (fenced)."""
        self.store = store
        self.rows = OutboxRows(store)
        self._client = client
        self.may_send = may_send
        self.shards = shards if shards is not None and shards.fleet else None
        # key (incident id) -> its environment (it never changes), the ``env_cache_size`` most recently used
        self._envs: OrderedDict[str, str | None] = OrderedDict()
        self._envs_lock = threading.Lock()
        self.env_cache_size = ENV_CACHE
        self._lock = threading.Lock()  # one pass at a time here; other deliverers are kept off by _claim
        self._paused_until = 0.0  # Slack asked us to wait (429) or is failing
        self._last_prune = 0.0
        self.health = StoreHealth.of(store)
        self._kept: list[Kept] = []  # calls kept in memory while the store does not answer, in order
        self._kept_lock = threading.Lock()
        self._kept_seq = 0
        self.health.on_catch_up("the Slack calls kept in memory", self.write_kept)

    @property
    def client(self) -> WebClient:
        return self._client() if callable(self._client) else self._client

    def for_incidents(self, incidents: Incidents, stopped: Callable[[], bool]) -> IncidentMessages:
        """How one watcher sends its incidents' messages through this outbox."""
        return IncidentOutbox(self, incidents, stopped)

    # --- queueing -----------------------------------------------------------------------------------

    def send(self, op: str, key: str, channel: str, msg: dict[str, Any], ts: str | None = None) -> Sent:
        """Queue one call (durably); deliver it at once when it is the first waiting for its key. While
        the state store does not answer, the call is kept in memory instead."""
        if self.health.degraded:
            return self._send_kept(op, key, channel, msg, ts)
        try:
            new_id = self.rows.add(op, key, channel, msg, ts, time.time())
        except Exception as exc:
            if self.health.note(exc):
                return self._send_kept(op, key, channel, msg, ts)
            log.warning("slack outbox: could not keep a %s for %s: %s", op, key, type(exc).__name__)
            return Sent(kept=False)
        self._set_gauge()
        if time.time() < self._paused_until or not self.may_send() or not self._lock.acquire(blocking=False):
            return Sent(kept=True)
        try:
            pending = self._pending(key)
            if not pending or pending[0].id != new_id:
                return Sent(kept=True)  # older calls of this key wait: keep the order
            return Sent(kept=True, response=self._attempt(pending[0]))
        except Exception:
            log.exception("slack outbox: delivering %s for %s failed", op, key)
            return Sent(kept=True)
        finally:
            self._lock.release()
            self._set_gauge()

    # --- kept in memory while the state store does not answer ---------------------------------------

    def _send_kept(self, op: str, key: str, channel: str, msg: dict[str, Any], ts: str | None) -> Sent:
        with self._kept_lock:
            self._kept_seq -= 1
            kept = Kept(Item(id=self._kept_seq, key=key, op=op, channel=channel, ts=ts, payload=msg, attempts=0,
                             next_at=0.0), created_at=time.time())
            first = not any(k.item.key == key and k.state == PENDING for k in self._kept)
            self._kept.append(kept)
        if not first or time.time() < self._paused_until or not self.may_send():
            return Sent(kept=True)
        if not self._lock.acquire(blocking=False):
            return Sent(kept=True)
        try:
            return Sent(kept=True, response=self._attempt_kept(kept))
        finally:
            self._lock.release()

    def _kept_post(self, key: str) -> Kept | None:
        with self._kept_lock:
            posts = [k for k in self._kept if k.item.key == key and k.item.op == POST]
        return posts[-1] if posts else None

    def kept_in_memory(self, key: str) -> bool:
        """Some call of ``key`` is kept in memory (the store did not answer when it was made)."""
        with self._kept_lock:
            return any(k.item.key == key for k in self._kept)

    def _attempt_kept(self, kept: Kept) -> dict[str, Any] | None:
        """Send one call kept in memory (the caller holds the lock)."""
        item = kept.item
        channel, ts = item.channel, item.ts
        if item.op != POST and ts is None:
            post = self._kept_post(item.key)
            if post is not None and post.state == PENDING:
                return None  # its post waits: keep the order
            if post is None or post.state != DELIVERED or not post.item.ts:
                kept.state, kept.error = FAILED, "no message to edit or reply to (its post failed)"
                SLACK_OUTBOX.labels(item.op, FAILED).inc()
                return None
            channel, ts = post.item.channel, post.item.ts
        item.attempts += 1
        try:
            if item.op == POST:
                resp = self.client.chat_postMessage(channel=channel, **item.payload)
            elif item.op == UPDATE:
                resp = self.client.chat_update(channel=channel, ts=ts or "", **item.payload)
            else:
                resp = self.client.chat_postMessage(channel=channel, thread_ts=ts, **item.payload)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or f"http_{exc.response.status_code}")
            if error in PERMANENT_ERRORS:
                kept.state, kept.error = FAILED, error
                SLACK_OUTBOX.labels(item.op, FAILED).inc()
                log.warning("slack outbox: %s for %s given up: Slack says %s", item.op, item.key, error)
                return None
            wait = backoff(item.attempts)
            if exc.response.status_code == 429:
                try:
                    wait = max(1.0, float(exc.response.headers.get("Retry-After", wait)))
                except (TypeError, ValueError):
                    pass
            self._retry_kept(kept, error, wait)
            return None
        except Exception as exc:
            self._retry_kept(kept, type(exc).__name__, backoff(item.attempts))
            return None
        data = _data(resp)
        kept.state, kept.error, kept.delivered_at = DELIVERED, None, time.time()
        if item.op == POST:
            item.ts, item.channel = data.get("ts"), data.get("channel") or channel
        SLACK_OUTBOX.labels(item.op, DELIVERED).inc()
        return data

    def _retry_kept(self, kept: Kept, error: str, wait: float) -> None:
        now = time.time()
        self._paused_until = max(self._paused_until, now + wait)
        kept.item.next_at, kept.error = now + wait, error[:200]
        SLACK_OUTBOX.labels(kept.item.op, "retried").inc()
        log.warning("slack outbox: %s for %s failed (%s, attempt %d, kept in memory): trying again in %.0fs",
                    kept.item.op, kept.item.key, error, kept.item.attempts, wait)

    def _deliver_kept(self) -> int:
        """One pass over the calls kept in memory (the caller holds the lock): per key, its oldest
        pending call, in order."""
        landed = 0
        with self._kept_lock:
            waiting = [k for k in self._kept if k.state == PENDING]
        heads: dict[str, Kept] = {}
        for k in waiting:
            heads.setdefault(k.item.key, k)
        for kept in heads.values():
            now = time.time()
            if now < self._paused_until or not self.may_send():
                break
            if kept.item.next_at > now:
                continue
            if self._attempt_kept(kept) is not None:
                landed += 1
        return landed

    def write_kept(self) -> None:
        """The store answers again (a catch-up hook): write the calls kept in memory to ``pgs_outbox`` as
        they are, in order; raises when it cannot (tried again at the next probe)."""
        with self._lock, self._kept_lock:
            kept = list(self._kept)
            if not kept:
                return
            self.rows.write_kept(kept)
            written = {id(k) for k in kept}
            self._kept = [k for k in self._kept if id(k) not in written]
        log.info("slack outbox: %d calls kept in memory while the state store was down are in the outbox now",
                 len(kept))

    # --- reads --------------------------------------------------------------------------------------

    def _pending(self, key: str | None = None) -> list[Item]:
        return self.rows.pending(key)

    def post_state(self, key: str) -> tuple[str | None, str | None, str | None]:
        """(state, channel, ts) of the newest post of ``key``; (None, None, None) when there is none."""
        post = self._kept_post(key)
        if post is not None:
            return post.state, post.item.channel, post.item.ts
        return self.rows.post_state(key)

    def pending_count(self) -> int:
        with self._kept_lock:
            kept = sum(1 for k in self._kept if k.state == PENDING)
        if self.health.degraded:
            return kept
        return self.rows.pending_count() + kept

    def _set_gauge(self) -> None:
        try:
            SLACK_OUTBOX_PENDING.set(self.pending_count())
        except Exception:
            pass

    # --- delivery -----------------------------------------------------------------------------------

    def deliver(self) -> int:
        """One delivery pass (the scheduler job): returns how many calls landed."""
        if not self.may_send():
            self._set_gauge()  # every replica shows the shared backlog, not a stale value of its own
            return 0
        if not self._lock.acquire(blocking=False):
            return 0
        landed = 0
        try:
            landed += self._deliver_kept()
            if self.health.degraded:
                return landed
            self._prune()
            for head, replaced in plan(self._pending()):
                now = time.time()
                if now < self._paused_until:
                    break
                if not self._mine(head.key):
                    continue  # another replica's environment: it delivers
                if (replaced[0] if replaced else head).next_at > now:
                    continue  # this key waits for its backoff or another deliverer; other keys may go
                if replaced:
                    done = self._supersede(replaced, now)
                    for r in done:
                        SLACK_OUTBOX.labels(r.op, SUPERSEDED).inc()
                    if len(done) != len(replaced):
                        continue  # another deliverer is sending an older edit: the newest waits for it
                if head.next_at > now:
                    continue
                if not self.may_send():
                    break
                resp = self._attempt(head)
                if resp is not None:
                    landed += 1
                elif time.time() < self._paused_until:
                    break  # Slack is failing: do not try every key now
        except Exception as exc:
            log.warning("slack outbox: delivery pass failed: %s", type(exc).__name__)
        finally:
            self._lock.release()
            self._set_gauge()
        return landed

    def _target_ts(self, item: Item) -> tuple[str, str | None]:
        if item.ts is not None or item.op == POST:
            return item.channel, item.ts
        state, channel, ts = self.post_state(item.key)
        if state == DELIVERED and ts:
            return channel or item.channel, ts
        return item.channel, None

    def _attempt(self, item: Item) -> dict[str, Any] | None:
        """Send one call (the caller holds the lock); Slack's answer when it landed, else None (also when
        another deliverer claimed it first)."""
        if not self._claim(item):
            return None
        item.attempts += 1
        channel, ts = self._target_ts(item)
        if item.op != POST and ts is None:
            self._finish([item], FAILED, "no message to edit or reply to (its post failed)")
            log.warning("slack outbox: %s for %s given up: its message was never posted", item.op, item.key)
            SLACK_OUTBOX.labels(item.op, FAILED).inc()
            return None
        msg = dict(item.payload)
        try:
            if item.op == POST:
                resp = self.client.chat_postMessage(channel=channel, **msg)
            elif item.op == UPDATE:
                resp = self.client.chat_update(channel=channel, ts=ts or "", **msg)
            else:
                resp = self.client.chat_postMessage(channel=channel, thread_ts=ts, **msg)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or f"http_{exc.response.status_code}")
            if error in PERMANENT_ERRORS:
                self._finish([item], FAILED, error)
                log.warning("slack outbox: %s for %s given up: Slack says %s", item.op, item.key, error)
                SLACK_OUTBOX.labels(item.op, FAILED).inc()
                return None
            wait = backoff(item.attempts)
            if exc.response.status_code == 429:
                try:
                    wait = max(1.0, float(exc.response.headers.get("Retry-After", wait)))
                except (TypeError, ValueError):
                    pass
            self._retry(item, error, wait)
            return None
        except Exception as exc:
            self._retry(item, type(exc).__name__, backoff(item.attempts))
            return None
        data = _data(resp)
        self.rows.delivered(item, time.time(), channel=data.get("channel") or channel, ts=data.get("ts"))
        SLACK_OUTBOX.labels(item.op, DELIVERED).inc()
        return data

    def _claim(self, item: Item) -> bool:
        """Take ``item`` for this deliverer: one conditional UPDATE (still pending, not tried since it was
        read, not claimed or backing off). The attempt is recorded before the call: a crash after it
        leaves a trace (attempts > 0) and the row is tried again after ``CLAIM_SECS``."""
        fence = self._fence(item.key)
        if fence is False:
            return False
        return self.rows.claim(item, time.time(), None if fence is True else fence)

    def _env_of(self, key: str) -> str | None:
        with self._envs_lock:
            if key in self._envs:
                self._envs.move_to_end(key)
                return self._envs[key]
        env = self.rows.env_of(key)  # outside the lock: a read of the store
        with self._envs_lock:
            self._envs[key] = env
            self._envs.move_to_end(key)
            while len(self._envs) > self.env_cache_size:
                self._envs.popitem(last=False)
        return env

    def pending_envs(self) -> set[str]:
        """The environments of the calls still waiting in ``pgs_outbox`` (fleet mode: the sweeper keeps an
        environment no replica watches any more until they are delivered)."""
        envs = {self._env_of(key) for key in {it.key for it in self._pending()}}
        return {e for e in envs if e is not None}

    def _mine(self, key: str) -> bool:
        """Fleet mode: the key's environment is this replica's (else another replica delivers it)."""
        if self.shards is None:
            return True
        env = self._env_of(key)
        return env is not None and self.shards.owns(env)

    def _fence(self, key: str) -> ColumnElement[bool] | bool:
        """True: no fence (one replica); False: not this replica's to send; else the claim's condition."""
        if self.shards is None:
            return True
        env = self._env_of(key)
        clause = self.shards.held_clause(env) if env is not None else None
        return clause if clause is not None else False

    def _supersede(self, items: list[Item], now: float) -> list[Item]:
        """Mark older edits replaced by a newer one, unless another deliverer claimed them meanwhile."""
        return self.rows.supersede(items, now)

    def _retry(self, item: Item, error: str, wait: float) -> None:
        now = time.time()
        self._paused_until = max(self._paused_until, now + wait)
        self.rows.retry_at(item, now + wait, error)
        SLACK_OUTBOX.labels(item.op, "retried").inc()
        log.warning("slack outbox: %s for %s failed (%s, attempt %d): trying again in %.0fs",
                    item.op, item.key, error, item.attempts, wait)

    def _finish(self, items: list[Item], state: str, error: str | None) -> None:
        self.rows.finish(items, state, error, time.time())

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune < 3600:
            return
        self._last_prune = now
        self.rows.prune(now)


def outbox_for(store: StateStore, client: WebClient | Callable[[], WebClient],
               ) -> Callable[[Callable[[], bool], Shard], Outbox]:
    """The alerts' outbox factory (:data:`bot.alerts.OutboxFactory`), given by the composition root."""
    return lambda may_send, shards: Outbox(store, client, may_send=may_send, shards=shards)


def _data(resp: SlackResponse | dict[str, Any]) -> dict[str, Any]:
    """Slack's answer as a dict (a WebClient's SlackResponse, or a plain dict)."""
    if isinstance(resp, SlackResponse):
        data = resp.data
        return dict(data) if isinstance(data, dict) else {}
    return dict(resp)


class IncidentOutbox:
    """One watcher's incident messages through the outbox (the lag watcher's and the session watch's).

    ``incidents`` is the watcher's incidents gateway (its writes fenced by the watcher's lease), keys are
    incident ids; nothing is sent once ``stopped()`` (the bot is shutting down)."""

    def __init__(self, outbox: Outbox, incidents: Incidents, stopped: Callable[[], bool]):
        self.outbox = outbox
        self.incidents = incidents
        self.stopped = stopped
        incidents.memory.on_duplicate.append(self._tell_duplicate)

    def _tell_duplicate(self, inc: Incident) -> None:
        """An alert this process posted while the store was down turned out to duplicate another
        replica's (:meth:`bot.state.incidents.OutageMemory.reconcile`): its message says so."""
        if self.stopped() or not self.outbox.kept_in_memory(inc.id):
            return
        state, channel, ts = self.outbox.post_state(inc.id)
        if state in (DELIVERED, PENDING):
            self.outbox.send(UPDATE, inc.id, channel or inc.channel or "", render_duplicate_note(), ts=ts)

    def call(self, method: str, inc: Incident, **kwargs: Any) -> dict[str, Any] | None:
        """One Web API call (``chat_postMessage``, ``chat_update``; a post with ``thread_ts`` is a thread
        reply): Slack's answer when it landed at once; ``{}`` for an edit or thread reply kept for later
        (it is delivered in order when Slack answers again, so it is not queued twice); None for a post
        not delivered yet (its ts is adopted from the outbox later) or a call that could not even be kept."""
        if self.stopped():
            return None
        channel = kwargs.pop("channel")
        if method == "chat_update":
            op, ts = UPDATE, kwargs.pop("ts")
        elif "thread_ts" in kwargs:
            op, ts = THREAD_REPLY, kwargs.pop("thread_ts")
        else:
            op, ts = POST, None
        if op != THREAD_REPLY and self.outbox.health.degraded:
            kwargs = with_outage_note(kwargs)  # another replica may alert on the same thing meanwhile
        sent = self.outbox.send(op, inc.id, channel or "", kwargs, ts=ts)
        if sent.response is None and sent.kept and op != POST:
            return {}  # an edit or a reminder kept in the outbox is done for the watcher: it lands in order
        return sent.response

    def adopt_post(self, inc: Incident) -> bool:
        """True when the incident's first post was delivered by the outbox (its channel and ts are now
        saved on ``inc``)."""
        try:
            state, channel, ts = self.outbox.post_state(inc.id)
        except Exception:
            return False
        if state != DELIVERED or not ts:
            return False
        return bool(self.incidents.save(inc, channel=channel, message_ts=ts, last_reminder_at=time.time()))

    def post_waiting(self, inc: Incident) -> bool:
        """The incident's first post is still waiting in the outbox (Slack down)."""
        try:
            return self.outbox.post_state(inc.id)[0] == PENDING
        except Exception:
            return True  # cannot tell: do not post twice

    def edit_landed(self, inc: Incident, msg: dict[str, Any]) -> bool:
        """Queue the final edit of the incident's message (delivered in order, after a post still
        waiting); True once it is kept, or when there is no message to edit."""
        if self.stopped():
            return False
        if not (inc.message_ts or self.adopt_post(inc) or self.post_waiting(inc)):
            return True  # never posted, or its post failed for good: nothing to edit
        if self.outbox.health.degraded:
            msg = with_outage_note(msg)
        return self.outbox.send(UPDATE, inc.id, inc.channel or "", msg, ts=inc.message_ts).kept
