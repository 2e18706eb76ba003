"""What an approved bulk request does (registered with :func:`bot.approval.workflow.executor`).

The executor runs in the listener thread that approved the request, after Slack was answered. It
terminates the approved snapshot in batches: one statement re-checks and signals a whole batch
(``pg_terminate_backend`` without a timeout only sends the signal), then the batch is polled until its
backends are gone or :data:`EXIT_WAIT_S` has passed. Between batches and while polling, at most every
:data:`PROGRESS_EVERY` seconds, it records its progress in the request (which also refreshes
``updated_at``: the workflow ends requests 'executing' for long without an update as interrupted) and
has the approval message redrawn. Every session's outcome goes to the audit log, batch by batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from bot.approval.workflow import Workflow, executor
from bot.bulk.targets import (
    ALLOW_CONNECTIONS,
    CLEAR_DB,
    CLEAR_DB_BLOCK,
    STATE_WORDS,
    TERMINATE_BULK,
    as_datetime,
    block_refusal,
    database_refusal,
    issue_allow_token,
    state_identity,
)
from bot.durations import format_duration
from bot.postgres.bulk import (
    arrivals,
    database_info,
    database_state,
    set_allow_connections,
    still_present,
    terminate_batch,
)
from bot.postgres.pools import DatabaseUnavailable

log = logging.getLogger(__name__)

BATCH_SIZE = 100
EXIT_WAIT_S = 5.0
POLL_S = 0.05
PROGRESS_EVERY = 2.0
# never matches a real state_change: a session seen changing while it was snapshotted is skipped
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)
MAX_LISTED = 15  # per-session lines kept in the outcome (the audit log has them all)

RESULT_WORDS = {
    "ended": "ended",
    "gone": "had already gone",
    "skipped": "skipped",
    "failed": "could not be signalled",
    "not_done": "signalled but still connected",
    "not_attempted": "not attempted",
}


class Interrupted(Exception):
    """The request is no longer 'executing' (ended as interrupted): stop signalling."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _redraw_hook(wf: Workflow) -> Callable[[dict], None] | None:
    rt = wf.rt
    return rt.extensions.get("bulk_redraw") if rt is not None else None


class Progress:
    """Records progress in the request and redraws its message, at most every ``every`` seconds."""

    def __init__(self, wf: Workflow, req: dict, total: int, every: float | None = None, clock=time.monotonic):
        self.wf, self.req, self.total = wf, req, total
        self.every = PROGRESS_EVERY if every is None else every
        self.clock = clock
        self.last = clock()
        self.notes: dict = {}
        self.updates = 0

    def update(self, counts: dict[str, int], force: bool = False) -> bool:
        now = self.clock()
        if not force and now - self.last < self.every:
            return False
        handled = sum(counts.values())
        outcome = {
            "status": "running",
            "detail": f"{handled} of {self.total} sessions handled so far",
            "progress": {"total": self.total, "handled": handled, "counts": dict(counts)},
            **self.notes,
        }
        store = self.wf.store
        with store.tx() as c:
            ok = store.transition(c, self.req["id"], "executing", "executing", outcome=outcome)
        if not ok:
            raise Interrupted()
        self.last = now
        self.updates += 1
        hook = _redraw_hook(self.wf)
        if hook is not None:
            fresh = store.get_request(self.req["id"])
            if fresh is not None:
                try:
                    hook(fresh)
                except Exception:  # a Slack hiccup must not stop the clean-up
                    log.warning("could not redraw request %s with its progress", self.req["id"], exc_info=True)
        return True


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_WORDS, 0))
    problems: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None

    def add(self, s: dict, result: str, detail: str) -> dict:
        self.counts[result] += 1
        item = {"pid": s["pid"], "user": s.get("user"), "application": s.get("application"), "result": detail}
        if result == "skipped" and len(self.skipped) < MAX_LISTED:
            self.skipped.append(item)
        if result in ("failed", "not_done", "not_attempted"):
            self.reasons[detail] = self.reasons.get(detail, 0) + 1
            if len(self.problems) < MAX_LISTED:
                self.problems.append(item)
        return item

    @property
    def clean(self) -> bool:
        return not (self.counts["failed"] or self.counts["not_done"] or self.counts["not_attempted"])

    def summary(self) -> str:
        parts = [f"{n} {RESULT_WORDS[k]}" for k, n in self.counts.items() if n or k in ("ended", "gone")]
        return " · ".join(parts)


def _verdict_detail(row, expected: str | None) -> tuple[str, str]:
    v = row.verdict
    if v == "gone":
        return "gone", "had already ended (or its pid now belongs to another backend): not touched"
    if v == "protected":
        return "skipped", "the bot's own connection: never terminated"
    if v == "moved":
        return "skipped", "is no longer on the approved database: not touched"
    if v == "skipped_state":
        now = row.state or "?"
        what = "active again" if now == "active" else f"now {now}"
        return "skipped", f"skipped: {what} (approved while {expected or 'listed'})"
    if v == "skipped_used":
        since = f" {format_duration(row.state_secs)} ago" if row.state_secs is not None else ""
        return "skipped", f"skipped: used again since the listing (last change{since}, now {row.state or '?'})"
    if v == "refused_super":
        return "failed", "superuser session (the bot's role is not a superuser)"
    if v == "refused_role":
        return "failed", "the bot's role is not a member of pg_signal_backend"
    if v == "signal" and not row.signalled:
        return "gone", "had already ended when signalled"
    return "signal", ""


def terminate_snapshot(
    wf: Workflow,
    req: dict,
    conn,
    sessions: list[dict],
    *,
    database: str | None,
    state_like: str | None,
    progress: Progress,
    tally: Tally,
) -> Tally:
    """Terminate every session of ``sessions`` that is still the one approved; fill ``tally``."""
    expected = STATE_WORDS.get(req["target"].get("category", ""), None)
    audit_base = {"env": req["env"], "host": req["host"], "request_id": req["id"], "actor": None,
                  "reason": req.get("reason"), "query": None}

    def audit_rows(rows: list[tuple[dict, str, str]]) -> None:
        # the sessions were signalled already: the entries are retried and never lost (issue 12 §3)
        entries = [
            {
                **audit_base,
                "event": f"{req['action']}:{result}"[:32],
                "pid": s["pid"],
                "backend_start": s.get("backend_start"),
                "db_user": s.get("user"),
                "application": s.get("application"),
                "result": detail,
            }
            for s, result, detail in rows
        ]
        wf.durably(f"{len(entries)} audit entries of request {req['id']}",
                    lambda: wf.store.add_audit_many(entries), request_id=req["id"])

    by_pid_start = {(s["pid"], as_datetime(s["backend_start"])): s for s in sessions}
    items = list(by_pid_start.items())

    def not_attempted(batch) -> None:
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
            sc = _NEVER if s.get("changed_after_listing") else as_datetime(s.get("state_change"))
            args.append((pid, start, sc))
        try:
            results = terminate_batch(conn, args, database, state_like)
        except psycopg.OperationalError as exc:
            tally.stopped = f"the connection to the server was lost ({_first_line(exc)})"
            not_attempted(batch)
            continue
        except psycopg.Error as exc:
            # should not happen (the statement never passes a session PostgreSQL would refuse), but one
            # bad session must not spoil its batch: retry one by one
            log.warning("bulk batch of request %s failed (%s); retrying one by one", req["id"], _first_line(exc))
            results = []
            for i, arg in enumerate(args):
                try:
                    results += terminate_batch(conn, [arg], database, state_like)
                except psycopg.OperationalError as one_exc:
                    tally.stopped = f"the connection to the server was lost ({_first_line(one_exc)})"
                    not_attempted(batch[i:])
                    break
                except psycopg.Error as one_exc:
                    s = by_pid_start[(arg[0], arg[1])]
                    detail = f"PostgreSQL refused: {_first_line(one_exc)}"
                    tally.add(s, "failed", detail)
                    audit_rows([(s, "failed", detail)])
        done_rows: list[tuple[dict, str, str]] = []
        waiting: dict[tuple, dict] = {}
        for row in results:
            key = (row.pid, row.backend_start)
            s = by_pid_start.get(key) or next((v for (p, _), v in batch if p == row.pid), {"pid": row.pid})
            result, detail = _verdict_detail(row, expected)
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
                progress.update(_counts_with(tally, done_rows))
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


def _counts_with(tally: Tally, rows: list[tuple[dict, str, str]]) -> dict[str, int]:
    counts = dict(tally.counts)
    for _, r, _ in rows:
        counts[r] += 1
    return counts


def _audit_one(wf: Workflow, req: dict, event: str, result: str) -> None:
    wf.store.add_audit(
        None,
        env=req["env"],
        host=req["host"],
        request_id=req["id"],
        event=f"{req['action']}:{event}"[:32],
        actor=None,
        reason=req.get("reason"),
        result=result,
    )


def _finish(tally: Tally, started: float, **extra) -> dict:
    status = extra.pop("status", None) or ("done" if tally.clean else "partial")
    detail = extra.pop("detail", None) or tally.summary()
    if tally.reasons:
        worst = sorted(tally.reasons.items(), key=lambda kv: -kv[1])[:3]
        detail += " (" + "; ".join(f"{n}× {why}" for why, n in worst) + ")"
    return {
        "status": status,
        "detail": detail,
        "counts": tally.counts,
        "problems": tally.problems,
        "skipped": tally.skipped,
        "finished_at": time.time(),
        "duration_s": round(time.monotonic() - started, 3),
        **extra,
    }


@executor(TERMINATE_BULK)
def run_terminate_bulk(wf: Workflow, req: dict) -> dict:
    t = req["target"]
    sessions = list(t.get("sessions") or [])
    started = time.monotonic()
    tally = Tally()
    progress = Progress(wf, req, len(sessions))
    try:
        with wf.dbs.connection(req["env"], req["host"], op="bulk_terminate") as conn:
            terminate_snapshot(
                wf, req, conn, sessions, database=t.get("database"), state_like=t.get("state_like"),
                progress=progress, tally=tally,
            )
    except Interrupted:
        return _finish(tally, started, status="interrupted",
                       detail="stopped: the request was ended as interrupted while it ran; " + tally.summary())
    except DatabaseUnavailable as exc:
        if not sum(tally.counts.values()):
            return _finish(tally, started, status="unavailable", detail=f"nothing was signalled: {exc}")
        tally.stopped = str(exc)
    return _finish(tally, started, total=len(sessions))


@executor(CLEAR_DB)
@executor(CLEAR_DB_BLOCK)
def run_clear_db(wf: Workflow, req: dict) -> dict:
    t = req["target"]
    db = t["database"]
    block = req["action"] == CLEAR_DB_BLOCK
    sessions = list(t.get("sessions") or [])
    started = time.monotonic()
    tally = Tally()
    progress = Progress(wf, req, len(sessions))
    notes: dict = {"database": db, "total": len(sessions), "block": block}
    try:
        state_id = state_identity(wf.store)
    except Exception as exc:
        return _finish(tally, started, status="failed", **notes,
                       detail=f"nothing was done: the bot could not read its own state database ({type(exc).__name__})")
    try:
        with wf.dbs.connection(req["env"], req["host"], op="clear_db") as conn:
            info = database_info(conn, db)
            if info is None or (t.get("oid") is not None and info.oid != t["oid"]):
                return _finish(tally, started, status="failed", **notes,
                               detail=f"nothing was done: database {db} no longer exists, or was dropped and created again, "
                               "since the listing")
            refusal = database_refusal(wf.config, req["env"], info, state_id)
            if refusal:
                return _finish(tally, started, status="failed", **notes, detail=f"nothing was done: {refusal}")
            notes["was_closed"] = not info.allow_connections
            # read before acting, so that the message says what the database allows while it runs
            notes["allow_connections"] = info.allow_connections
            progress.notes = dict(notes)
            if block:
                why = block_refusal(info)
                if why:
                    return _finish(tally, started, status="failed", **notes,
                                   detail=f"nothing was done: {why}")
                try:
                    set_allow_connections(conn, db, False)
                except psycopg.Error as exc:
                    return _finish(tally, started, status="failed", **notes,
                                   detail=f"nothing was terminated: ALTER DATABASE failed ({_first_line(exc)})")
                notes.update(blocked=True, closed_at=time.time(), allow_connections=False,
                             allow_token=issue_allow_token(wf.store, req, info.oid))
                _audit_one(wf, req, "blocked", f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false")
                progress.notes = dict(notes)
                progress.update(tally.counts, force=True)
            terminate_snapshot(wf, req, conn, sessions, database=db, state_like=None,
                               progress=progress, tally=tally)
            try:
                notes["arrived"] = arrivals(conn, db, [(s["pid"], as_datetime(s["backend_start"])) for s in sessions])
                now = database_state(conn, db)
                if now:
                    notes["allow_connections"] = now[0]
            except psycopg.Error as exc:
                log.warning("clear-db %s: could not read the database's state afterwards: %s", req["id"], exc)
    except Interrupted:
        return _finish(tally, started, status="interrupted", **notes,
                       detail="stopped: the request was ended as interrupted while it ran; " + tally.summary())
    except DatabaseUnavailable as exc:
        if not sum(tally.counts.values()) and not notes.get("blocked"):
            return _finish(tally, started, status="unavailable", **notes, detail=f"nothing was done: {exc}")
        tally.stopped = str(exc)
    status = "done" if tally.clean else "partial"
    if tally.stopped:
        status = "partial"
    return _finish(tally, started, status=status, **notes)


@executor(ALLOW_CONNECTIONS)
def run_allow_connections(wf: Workflow, req: dict) -> dict:
    t = req["target"]
    db = t["database"]
    notes = {"database": db}
    try:
        with wf.dbs.connection(req["env"], req["host"], op="clear_db") as conn:
            now = database_state(conn, db)
            if now is None:
                return {"status": "failed", "detail": f"database {db} no longer exists", **notes}
            if t.get("oid") is not None and now[1] != t["oid"]:
                return {"status": "failed", **notes, "allow_connections": now[0],
                        "detail": f"nothing was done: database {db} was dropped and created again since the button was drawn"}
            try:
                set_allow_connections(conn, db, True)
            except psycopg.Error as exc:
                return {"status": "failed", **notes, "allow_connections": now[0],
                        "detail": f"ALTER DATABASE failed ({_first_line(exc)}); database {db} "
                        + ("still allows" if now[0] else "still does not allow") + " new connections"}
            after = database_state(conn, db)
    except DatabaseUnavailable as exc:
        return {"status": "unavailable", "detail": f"nothing was done: {exc}", **notes}
    allowed = bool(after and after[0])
    _audit_one(wf, req, "executed", f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true")
    reopen_sources(wf, req, allowed)
    was = "" if now[0] is False else " (it already did)"
    return {"status": "done" if allowed else "failed", **notes, "allow_connections": allowed,
            "finished_at": time.time(),
            "detail": f"database {db} allows new connections again{was}" if allowed
            else f"database {db} still does not allow new connections"}


def reopen_sources(wf: Workflow, req: dict, allowed: bool) -> None:
    """Mark the requests that closed this database as reopened, and redraw their messages."""
    if not allowed:
        return
    db = req["target"]["database"]
    hook = _redraw_hook(wf)
    for other in _closing_requests(wf, req["env"]):
        out = other.get("outcome") or {}
        if (
            other["action"] != CLEAR_DB_BLOCK
            or other["host"] != req["host"]
            or other["target"].get("database") != db
            or not out.get("blocked")
            or out.get("reopened")
        ):
            continue
        out = {**out, "allow_connections": True,
               "reopened": {"request": req["id"], "at": time.time(), "by": req.get("decided_by")}}
        with wf.store.tx() as c:
            wf.store.transition(c, other["id"], other["state"], other["state"], outcome=out)
        if hook is not None:
            fresh = wf.store.get_request(other["id"])
            if fresh is not None:
                try:
                    hook(fresh)
                except Exception:
                    log.warning("could not redraw request %s as reopened", other["id"], exc_info=True)


def repair_interrupted_blocks(wf: Workflow) -> list[dict]:
    """Give a blocking clear-db that ended as *interrupted* its database state and reopening button back.

    The workflow ends a request left 'executing' by a stopped bot as failed/interrupted and replaces its
    outcome, and with it the note that the database was closed. The audit log still knows
    (``clear_db_block:blocked``): such a request gets the database's current state and, while it is still
    closed, an *Allow connections again* button, so that a bot crash never leaves a database closed
    without a visible way back. Returns the requests it changed.
    """
    changed = []
    for req in _interrupted_blocks(wf):
        out = req.get("outcome") or {}
        if req["action"] != CLEAR_DB_BLOCK or out.get("status") != "interrupted" or "blocked" in out:
            continue
        events = wf.store.audit_entries(request_id=req["id"], limit=100000)
        blocked = [e for e in events if e["event"] == f"{CLEAR_DB_BLOCK}:blocked"]
        repaired = {**out, "blocked": bool(blocked), "database": req["target"].get("database")}
        if blocked:
            repaired["closed_at"] = min(e["at"] for e in blocked)
            try:
                with wf.dbs.connection(req["env"], req["host"], op="clear_db") as conn:
                    now = database_state(conn, req["target"]["database"])
            except DatabaseUnavailable:
                continue  # try again on the next round
            repaired["allow_connections"] = now[0] if now else None
            if now is not None and not now[0]:
                repaired["allow_token"] = issue_allow_token(wf.store, req, now[1])
            elif now is not None:
                repaired["reopened"] = {"request": None, "at": time.time(), "by": None}
        with wf.store.tx() as c:
            if not wf.store.transition(c, req["id"], "failed", "failed", outcome=repaired):
                continue
        fresh = wf.store.get_request(req["id"])
        changed.append(fresh)
        hook = _redraw_hook(wf)
        if hook is not None and fresh is not None and blocked:
            try:
                hook(fresh)
            except Exception:
                log.warning("could not redraw interrupted request %s", req["id"], exc_info=True)
    return changed


def refresh_closed_databases(wf: Workflow, token_max_age: float = 6 * 86400) -> list[dict]:
    """Keep every message that shows a database closed by the bot true, and its button working.

    For each blocking request whose database the bot has not reopened: if the database now allows
    connections (someone ran ALTER DATABASE by hand) or no longer exists, the message says so and loses
    its button; while it stays closed, an *Allow connections again* token about to be purged (button
    tokens live a week) is replaced by a fresh one. Returns the requests it changed.
    """
    changed = []
    now = time.time()
    for env in wf.config.environments:
        for req in _closing_requests(wf, env):
            out = req.get("outcome") or {}
            if not out.get("blocked") or out.get("reopened"):
                continue
            db = req["target"].get("database")
            try:
                with wf.dbs.connection(env, req["host"], op="clear_db") as conn:
                    state = database_state(conn, db)
            except DatabaseUnavailable:
                continue
            if state is None:
                new = {**out, "allow_connections": None, "reopened": {"request": None, "at": now, "by": None,
                                                                      "how": "dropped"}}
            elif state[0]:
                new = {**out, "allow_connections": True, "reopened": {"request": None, "at": now, "by": None,
                                                                      "how": "outside the bot"}}
            else:
                token = out.get("allow_token")
                target = wf.store.get_target(token) if token else None
                if target is not None and target["created_at"] >= now - token_max_age:
                    continue
                new = {**out, "allow_connections": False, "allow_token": issue_allow_token(wf.store, req, state[1])}
            with wf.store.tx() as c:
                if not wf.store.transition(c, req["id"], req["state"], req["state"], outcome=new):
                    continue
            fresh = wf.store.get_request(req["id"])
            if fresh is None:
                continue
            changed.append(fresh)
            hook = _redraw_hook(wf)
            if hook is not None:
                try:
                    hook(fresh)
                except Exception:
                    log.warning("could not redraw request %s", req["id"], exc_info=True)
    return changed


# Narrow reads of the requests table on real columns the store writes with every outcome (blocked,
# reopened, outcome_status); the callers check the decoded outcome exactly.


def _closing_requests(wf: Workflow, env: str) -> list[dict]:
    return wf.store.closed_database_requests(CLEAR_DB_BLOCK, env)


def _interrupted_blocks(wf: Workflow) -> list[dict]:
    return wf.store.interrupted_unnoted(CLEAR_DB_BLOCK)
