"""What an approved bulk request does: the executors of the bulk kinds in bot/approval/actions.py.

The executor runs in the listener thread that approved the request, after Slack was answered. It
terminates the approved snapshot in batches: one statement re-checks and signals a whole batch
(``pg_terminate_backend`` without a timeout only sends the signal), then the batch is polled until its
backends are gone or :data:`EXIT_WAIT_S` has passed. Between batches and while polling, at most every
:data:`PROGRESS_EVERY` seconds, it records its progress in the request (which also refreshes
``updated_at``: the workflow ends requests 'executing' for long without an update as interrupted) and
has the approval message redrawn (through the workflow's ``RequestEvents`` port). Every session's
outcome goes to the audit log, batch by batch. The pure rules (verdicts, tally, outcome) are in
:mod:`bot.bulk.tally`; this module is the shell that talks to PostgreSQL and the state store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from bot.approval.ids import CLEAR_DB_BLOCK
from bot.approval.models import (
    BulkOutcome,
    DatabaseTarget,
    OutcomeStatus,
    Progress,
    Reopened,
    Request,
    RequestState,
    SessionRef,
    as_datetime,
)
from bot.approval.ports import Execution
from bot.bulk.tally import Tally, finish, verdict_detail
from bot.bulk.targets import (
    STATE_WORDS,
    block_refusal,
    database_refusal,
    issue_allow_token,
    state_identity,
)
from bot.postgres.bulk import (
    arrivals,
    database_info,
    database_state,
    set_allow_connections,
    still_present,
    terminate_batch,
)
from bot.postgres.pools import DatabaseUnavailable
from bot.session_rules import protection

log = logging.getLogger(__name__)

BATCH_SIZE = 100
EXIT_WAIT_S = 5.0
POLL_S = 0.05
PROGRESS_EVERY = 2.0
# never matches a real state_change: a session seen changing while it was snapshotted is skipped
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)

Row = tuple[SessionRef, str, str]  # (session, result, sentence)


class Interrupted(Exception):
    """The request is no longer 'executing' (ended as interrupted): stop signalling."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _changed(ex: Execution, request_id: str, what: str) -> None:
    """Tell the Slack edge (redraw) that a request changed; a Slack hiccup never stops the work."""
    fresh = ex.store.get_request(request_id)
    if fresh is None:
        return
    try:
        ex.events.changed(fresh)
    except Exception:
        log.warning("could not redraw request %s %s", request_id, what, exc_info=True)


class ProgressRecorder:
    """Records progress in the request and redraws its message, at most every ``every`` seconds."""

    def __init__(
        self,
        ex: Execution,
        req: Request,
        total: int,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ex, self.req, self.total = ex, req, total
        self.every = PROGRESS_EVERY if every is None else every
        self.clock = clock
        self.last = clock()
        self.notes: dict[str, Any] = {}
        self.updates = 0

    def update(self, counts: dict[str, int], force: bool = False) -> bool:
        now = self.clock()
        if not force and now - self.last < self.every:
            return False
        handled = sum(counts.values())
        outcome = BulkOutcome(
            status=OutcomeStatus.RUNNING,
            detail=f"{handled} of {self.total} sessions handled so far",
            progress=Progress(total=self.total, handled=handled, counts=dict(counts)),
            **self.notes,
        )
        store = self.ex.store
        with store.tx() as c:
            ok = store.transition(c, self.req.id, RequestState.EXECUTING, RequestState.EXECUTING, outcome=outcome)
        if not ok:
            raise Interrupted()
        self.last = now
        self.updates += 1
        _changed(self.ex, self.req.id, "with its progress")
        return True


def terminate_snapshot(
    ex: Execution,
    req: Request,
    conn: psycopg.Connection[Any],
    sessions: list[SessionRef],
    *,
    database: str | None,
    state_like: str | None,
    progress: ProgressRecorder,
    tally: Tally,
) -> Tally:
    """Terminate every session of ``sessions`` that is still the one approved; fill ``tally``."""
    category = getattr(req.target, "category", None)
    expected = STATE_WORDS.get(category or "", None)
    audit_base = {"env": req.env, "host": req.host, "request_id": req.id, "actor": None,
                  "reason": req.reason, "query": None}

    def audit_rows(rows: list[Row]) -> None:
        # the sessions were signalled already: the entries are retried and never lost (issue 12 §3)
        entries = [
            {
                **audit_base,
                "event": f"{req.action}:{result}"[:32],
                "pid": s.pid,
                "backend_start": s.backend_start,
                "db_user": s.user,
                "application": s.application,
                "result": detail,
            }
            for s, result, detail in rows
        ]
        ex.durably(f"{len(entries)} audit entries of request {req.id}",
                   lambda: ex.store.add_audit_many(entries), req.id)

    # protect is re-checked in the statement that signals: a session that became protected is skipped
    guard = ex.guard_for(req.env)  # the access policy's
    by_pid_start = {s.key: s for s in sessions}
    items = list(by_pid_start.items())

    def not_attempted(batch: list[tuple[tuple[int, datetime], SessionRef]]) -> None:
        rows = [(s, "not_attempted", f"not attempted: {tally.stopped}") for _, s in batch]
        for s, r, d in rows:
            tally.add(s, r, d)
        audit_rows(rows)

    for first in range(0, len(items), BATCH_SIZE):
        batch = items[first : first + BATCH_SIZE]
        if tally.stopped:
            not_attempted(batch)
            continue
        args = []
        for (pid, start), s in batch:
            sc = _NEVER if s.changed_after_listing else as_datetime(s.state_change)
            args.append((pid, start, sc))
        try:
            results = terminate_batch(conn, args, database, state_like, guard)
        except psycopg.OperationalError as exc:
            tally.stopped = f"the connection to the server was lost ({_first_line(exc)})"
            not_attempted(batch)
            continue
        except psycopg.Error as exc:
            # should not happen (the statement never passes a session PostgreSQL would refuse), but one
            # bad session must not spoil its batch: retry one by one
            log.warning("bulk batch of request %s failed (%s); retrying one by one", req.id, _first_line(exc))
            results = []
            for i, arg in enumerate(args):
                try:
                    results += terminate_batch(conn, [arg], database, state_like, guard)
                except psycopg.OperationalError as one_exc:
                    tally.stopped = f"the connection to the server was lost ({_first_line(one_exc)})"
                    not_attempted(batch[i:])
                    break
                except psycopg.Error as one_exc:
                    s = by_pid_start[(arg[0], arg[1])]
                    detail = f"PostgreSQL refused: {_first_line(one_exc)}"
                    tally.add(s, "failed", detail)
                    audit_rows([(s, "failed", detail)])
        done_rows: list[Row] = []
        waiting: dict[tuple[int, datetime], SessionRef] = {}
        for row in results:
            key = (row.pid, row.backend_start)
            s = by_pid_start.get(key) or next((v for (p, _), v in batch if p == row.pid), SessionRef(pid=row.pid))
            result, detail = verdict_detail(row, expected, protection(
                guard.protect, user=row.user, application=row.application, database=row.database,
                is_superuser=row.is_superuser))
            if result == "signal":
                waiting[key] = s
            else:
                done_rows.append((s, result, detail))
        why_waiting = f"terminate signal sent, but still connected after {EXIT_WAIT_S:g}s"
        try:
            deadline = time.monotonic() + EXIT_WAIT_S
            while waiting:
                try:
                    present = still_present(conn, list(waiting))
                except psycopg.Error as exc:
                    tally.stopped = f"the connection to the server was lost ({_first_line(exc)})"
                    why_waiting = "terminate signal sent; the bot lost its connection before it saw the session end"
                    break
                for key in list(waiting):
                    if key[0] not in present:
                        done_rows.append((waiting.pop(key), "ended", "terminated: the connection is gone"))
                if not waiting or time.monotonic() >= deadline:
                    break
                progress.update(tally.counts_with(done_rows))
                time.sleep(POLL_S)
        except Interrupted:
            why_waiting = "terminate signal sent; the request was interrupted before the bot saw the session end"
            raise
        finally:
            done_rows += [(s, "not_done", why_waiting) for s in waiting.values()]
            for s, r, d in done_rows:
                tally.add(s, r, d)
            audit_rows(done_rows)
        progress.update(tally.counts)
    return tally


def _audit_one(ex: Execution, req: Request, event: str, result: str) -> None:
    ex.store.add_audit(
        None,
        env=req.env,
        host=req.host,
        request_id=req.id,
        event=f"{req.action}:{event}"[:32],
        actor=None,
        reason=req.reason,
        result=result,
    )


INTERRUPTED_DETAIL = "stopped: the request was ended as interrupted while it ran; "


def run_terminate_bulk(ex: Execution, req: Request) -> BulkOutcome:
    t = req.target
    sessions = list(req.sessions)
    started = time.monotonic()
    tally = Tally()
    progress = ProgressRecorder(ex, req, len(sessions))
    try:
        with ex.dbs.connection(req.env, req.host, op="bulk_terminate") as conn:
            terminate_snapshot(
                ex, req, conn, sessions, database=t.database, state_like=getattr(t, "state_like", None),
                progress=progress, tally=tally,
            )
    except Interrupted:
        return finish(tally, started, OutcomeStatus.INTERRUPTED, INTERRUPTED_DETAIL + tally.summary())
    except DatabaseUnavailable as exc:
        if not sum(tally.counts.values()):
            return finish(tally, started, OutcomeStatus.UNAVAILABLE, f"nothing was signalled: {exc.plain}")
        tally.stopped = exc.plain
    return finish(tally, started, total=len(sessions))


def run_clear_db(ex: Execution, req: Request) -> BulkOutcome:
    t = req.target
    assert isinstance(t, DatabaseTarget)
    db = t.database
    block = req.action == CLEAR_DB_BLOCK
    sessions = list(t.sessions)
    started = time.monotonic()
    tally = Tally()
    progress = ProgressRecorder(ex, req, len(sessions))
    notes: dict[str, Any] = {"database": db, "total": len(sessions), "block": block}
    failed = OutcomeStatus.FAILED
    try:
        state_id = state_identity(ex.store)
    except Exception as exc:
        return finish(tally, started, failed,
                      f"nothing was done: the bot could not read its own state database ({type(exc).__name__})",
                      **notes)
    try:
        with ex.dbs.connection(req.env, req.host, op="clear_db") as conn:
            info = database_info(conn, db)
            if info is None or (t.oid is not None and info.oid != t.oid):
                return finish(tally, started, failed,
                              f"nothing was done: database {db} no longer exists, or was dropped and created again, "
                              "since the listing", **notes)
            refusal = database_refusal(ex.config, req.env, info, state_id)
            if refusal:
                return finish(tally, started, failed, f"nothing was done: {refusal.plain}", **notes)
            notes["was_closed"] = not info.allow_connections
            # read before acting, so that the message says what the database allows while it runs
            notes["allow_connections"] = info.allow_connections
            progress.notes = dict(notes)
            if block:
                why = block_refusal(info)
                if why:
                    return finish(tally, started, failed, f"nothing was done: {why.plain}", **notes)
                try:
                    set_allow_connections(conn, db, False)
                except psycopg.Error as exc:
                    return finish(tally, started, failed,
                                  f"nothing was terminated: ALTER DATABASE failed ({_first_line(exc)})", **notes)
                notes.update(blocked=True, closed_at=time.time(), allow_connections=False,
                             allow_token=issue_allow_token(ex.store, req, info.oid))
                _audit_one(ex, req, "blocked", f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false")
                progress.notes = dict(notes)
                progress.update(tally.counts, force=True)
            terminate_snapshot(ex, req, conn, sessions, database=db, state_like=None,
                               progress=progress, tally=tally)
            try:
                notes["arrived"] = arrivals(conn, db, [s.key for s in sessions])
                now = database_state(conn, db)
                if now:
                    notes["allow_connections"] = now[0]
            except psycopg.Error as exc:
                log.warning("clear-db %s: could not read the database's state afterwards: %s", req.id, exc)
    except Interrupted:
        return finish(tally, started, OutcomeStatus.INTERRUPTED, INTERRUPTED_DETAIL + tally.summary(), **notes)
    except DatabaseUnavailable as exc:
        if not sum(tally.counts.values()) and not notes.get("blocked"):
            return finish(tally, started, OutcomeStatus.UNAVAILABLE, f"nothing was done: {exc.plain}", **notes)
        tally.stopped = exc.plain
    status = OutcomeStatus.DONE if tally.clean else OutcomeStatus.PARTIAL
    if tally.stopped:
        status = OutcomeStatus.PARTIAL
    return finish(tally, started, status, **notes)


def run_allow_connections(ex: Execution, req: Request) -> BulkOutcome:
    t = req.target
    assert isinstance(t, DatabaseTarget)
    db = t.database
    failed = OutcomeStatus.FAILED
    try:
        with ex.dbs.connection(req.env, req.host, op="clear_db") as conn:
            now = database_state(conn, db)
            if now is None:
                return BulkOutcome(status=failed, detail=f"database {db} no longer exists", database=db)
            if t.oid is not None and now[1] != t.oid:
                return BulkOutcome(status=failed, database=db, allow_connections=now[0],
                                   detail=f"nothing was done: database {db} was dropped and created again since the "
                                   "button was drawn")
            try:
                set_allow_connections(conn, db, True)
            except psycopg.Error as exc:
                return BulkOutcome(status=failed, database=db, allow_connections=now[0],
                                   detail=f"ALTER DATABASE failed ({_first_line(exc)}); database {db} "
                                   + ("still allows" if now[0] else "still does not allow") + " new connections")
            after = database_state(conn, db)
    except DatabaseUnavailable as exc:
        return BulkOutcome(status=OutcomeStatus.UNAVAILABLE, detail=f"nothing was done: {exc.plain}", database=db)
    allowed = bool(after and after[0])
    _audit_one(ex, req, "executed", f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true")
    reopen_sources(ex, req, allowed)
    was = "" if now[0] is False else " (it already did)"
    return BulkOutcome(status=OutcomeStatus.DONE if allowed else failed, database=db, allow_connections=allowed,
                       finished_at=time.time(),
                       detail=f"database {db} allows new connections again{was}" if allowed
                       else f"database {db} still does not allow new connections")


# --- keeping the messages of closed databases true (housekeeping) ---------------------------------


def _database_of(req: Request) -> str:
    t = req.target
    assert isinstance(t, DatabaseTarget), f"request {req.id} is not about a database"
    return t.database


def _rewrite_outcome(ex: Execution, req: Request, outcome: BulkOutcome) -> Request | None:
    """Replace a finished request's outcome (its state unchanged); the fresh request, or None."""
    with ex.store.tx() as c:
        if not ex.store.transition(c, req.id, req.state, req.state, outcome=outcome):
            return None
    return ex.store.get_request(req.id)


def reopen_sources(ex: Execution, req: Request, allowed: bool) -> None:
    """Mark the requests that closed this database as reopened, and redraw their messages."""
    if not allowed:
        return
    db = req.database
    for other in ex.store.closed_database_requests(CLEAR_DB_BLOCK, req.env):
        out = other.bulk_outcome
        if out is None or other.host != req.host or other.database != db or not out.blocked or out.reopened:
            continue
        out = out.model_copy(update={
            "allow_connections": True,
            "reopened": Reopened(request=req.id, at=time.time(), by=req.decided_by),
        })
        if _rewrite_outcome(ex, other, out) is not None:
            _changed(ex, other.id, "as reopened")


def repair_interrupted_blocks(ex: Execution) -> list[Request]:
    """Give a blocking clear-db that ended as *interrupted* its database state and reopening button back.

    The workflow ends a request left 'executing' by a stopped bot as failed/interrupted and replaces its
    outcome, and with it the note that the database was closed. The audit log still knows
    (``clear_db_block:blocked``): such a request gets the database's current state and, while it is still
    closed, an *Allow connections again* button, so that a bot crash never leaves a database closed
    without a visible way back. Returns the requests it changed.
    """
    changed = []
    for req in ex.store.interrupted_unnoted(CLEAR_DB_BLOCK):
        out = req.bulk_outcome
        if out is None or out.status != OutcomeStatus.INTERRUPTED or out.blocked is not None:
            continue
        events = ex.store.audit_entries(request_id=req.id, limit=100000)
        blocked = [e for e in events if e["event"] == f"{CLEAR_DB_BLOCK}:blocked"]
        update: dict[str, Any] = {"blocked": bool(blocked), "database": req.database}
        if blocked:
            update["closed_at"] = min(e["at"] for e in blocked)
            try:
                with ex.dbs.connection(req.env, req.host, op="clear_db") as conn:
                    now = database_state(conn, _database_of(req))
            except DatabaseUnavailable:
                continue  # try again on the next round
            update["allow_connections"] = now[0] if now else None
            if now is not None and not now[0]:
                update["allow_token"] = issue_allow_token(ex.store, req, now[1])
            elif now is not None:
                update["reopened"] = Reopened(at=time.time())
        fresh = _rewrite_outcome(ex, req, out.model_copy(update=update))
        if fresh is None:
            continue
        changed.append(fresh)
        if blocked:
            _changed(ex, req.id, "after an interruption")
    return changed


def refresh_closed_databases(ex: Execution, token_max_age: float = 6 * 86400) -> list[Request]:
    """Keep every message that shows a database closed by the bot true, and its button working.

    For each blocking request whose database the bot has not reopened: if the database now allows
    connections (someone ran ALTER DATABASE by hand) or no longer exists, the message says so and loses
    its button; while it stays closed, an *Allow connections again* token about to be purged (button
    tokens live a week) is replaced by a fresh one. Returns the requests it changed.
    """
    changed = []
    now = time.time()
    for env in ex.config.environments:
        for req in ex.store.closed_database_requests(CLEAR_DB_BLOCK, env):
            out = req.bulk_outcome
            if out is None or not out.blocked or out.reopened:
                continue
            try:
                with ex.dbs.connection(env, req.host, op="clear_db") as conn:
                    state = database_state(conn, _database_of(req))
            except DatabaseUnavailable:
                continue
            update: dict[str, Any]
            if state is None:
                update = {"allow_connections": None, "reopened": Reopened(at=now, how="dropped")}
            elif state[0]:
                update = {"allow_connections": True, "reopened": Reopened(at=now, how="outside the bot")}
            else:
                token = out.allow_token
                target = ex.store.get_target(token) if token else None
                if target is not None and target.created_at >= now - token_max_age:
                    continue
                update = {"allow_connections": False, "allow_token": issue_allow_token(ex.store, req, state[1])}
            fresh = _rewrite_outcome(ex, req, out.model_copy(update=update))
            if fresh is None:
                continue
            changed.append(fresh)
            _changed(ex, req.id, "")
    return changed


def bulk_housekeeping(ex: Execution) -> None:
    """Every 30 s: repair interrupted blocking requests, keep closed databases' messages true."""
    repair_interrupted_blocks(ex)
    refresh_closed_databases(ex)
