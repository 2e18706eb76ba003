"""The state store itself: migrations (from a database made by release 0.1.0, on SQLite and PostgreSQL),
replicas migrating at once, retention, the SQLite file's mode, hidden bound parameters, reads that never
wait for a writer, and the bounds on PostgreSQL state connections."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from psycopg import sql as pgsql
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from bot.approval.models import (
    TARGET,
    BulkOutcome,
    DatabaseTarget,
    NewRequest,
    SignalOutcome,
    target_kind_of,
    with_kind,
)
from bot.state import migrate
from bot.state.store import StateStore, _pg_connect_args, approvals, requests, targets

DAY = 86400.0
CLEAR_DB_BLOCK = "clear_db_block"


# --- release 0.1.0's schema, frozen: exactly the Table definitions that release ran create_all on -------


def release_010_metadata() -> MetaData:
    md = MetaData()
    Table(
        "pgs_targets", md,
        Column("token", String(32), primary_key=True),
        Column("kind", String(16), nullable=False),
        Column("env", String(64), nullable=False),
        Column("host", String(64), nullable=False),
        Column("channel", String(32)),
        Column("created_by", String(32)),
        Column("created_at", Float, nullable=False),
        Column("payload", Text, nullable=False),
    )
    Table(
        "pgs_requests", md,
        Column("id", String(32), primary_key=True),
        Column("env", String(64), nullable=False),
        Column("host", String(64), nullable=False),
        Column("action", String(32), nullable=False),
        Column("target_token", String(32)),
        Column("target", Text, nullable=False),
        Column("requester", String(32), nullable=False),
        Column("reason", Text),
        Column("channel", String(32)),
        Column("message_ts", String(32)),
        Column("state", String(16), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("expires_at", Float, nullable=False),
        Column("decided_at", Float),
        Column("decided_by", String(64)),
        Column("outcome", Text),
        Column("updated_at", Float, nullable=False),
    )
    Table(
        "pgs_approvals", md,
        Column("request_id", String(32), nullable=False),
        Column("approver", String(32), nullable=False),
        Column("at", Float, nullable=False),
        UniqueConstraint("request_id", "approver", name="pgs_approvals_once"),
    )
    Table(
        "pgs_audit", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("at", Float, nullable=False),
        Column("env", String(64)),
        Column("host", String(64)),
        Column("request_id", String(32)),
        Column("event", String(32), nullable=False),
        Column("actor", String(32)),
        Column("pid", Integer),
        Column("backend_start", String(40)),
        Column("db_user", String(128)),
        Column("application", String(256)),
        Column("query", Text),
        Column("reason", Text),
        Column("result", Text),
    )
    Table(
        "pgs_incidents", md,
        Column("id", String(32), primary_key=True),
        Column("env", String(64), nullable=False),
        Column("host", String(64), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("open", Boolean, nullable=False),
        Column("opened_at", Float, nullable=False),
        Column("resolved_at", Float),
        Column("channel", String(32)),
        Column("message_ts", String(32)),
        Column("last_update_at", Float),
        Column("last_reminder_at", Float),
        Column("payload", Text, nullable=False),
    )
    Table(
        "pgs_leases", md,
        Column("name", String(64), primary_key=True),
        Column("holder", String(128), nullable=False),
        Column("expires_at", Float, nullable=False),
    )
    return md


def _request_row(rid: str, state: str, outcome: dict | None, action: str = CLEAR_DB_BLOCK, **extra) -> dict:
    now = time.time()
    return {
        "id": rid, "env": "prod", "host": "primary", "action": action, "target_token": None,
        "target": json.dumps({"database": "app"}), "requester": "U1", "reason": "r", "channel": "C1",
        "message_ts": "1.2", "state": state, "created_at": now, "expires_at": now + 900, "decided_at": now,
        "decided_by": "U2", "outcome": json.dumps(outcome) if outcome is not None else None, "updated_at": now,
        **extra,
    }


def new_request(**kw):
    """A NewRequest from the short keyword form these tests use (target as a dict, no reason/channel)."""
    target = with_kind(dict(kw.pop("target")), target_kind_of(kw["action"]))
    if target["kind"] == "database":
        target.setdefault("database", "d")
    base = {"target_token": None, "reason": None, "channel": None, **kw}
    return NewRequest(target=TARGET.validate_python(target), **base)


LEGACY_OUTCOMES = {
    "closed": ("done", {"status": "done", "blocked": True, "detail": "closed", "allow_token": "tok"}),
    "reopened": ("done", {"status": "done", "blocked": True, "reopened": {"request": "x", "at": 1.0, "by": "U2"}}),
    "interrupted": ("failed", {"status": "interrupted", "detail": "the bot stopped"}),
    "plain": ("done", {"status": "done", "detail": "terminated"}),
    "pending": ("pending", None),
}


def make_release_010_state(sqlalchemy_url: str) -> None:
    """A state database as release 0.1.0 leaves it: its create_all, some rows, no version table."""
    engine = create_engine(sqlalchemy_url)
    md = release_010_metadata()
    md.create_all(engine)
    t = md.tables
    with engine.begin() as c:
        for rid, (state, outcome) in LEGACY_OUTCOMES.items():
            c.execute(insert(t["pgs_requests"]).values(**_request_row(rid, state, outcome)))
        c.execute(insert(t["pgs_approvals"]).values(request_id="closed", approver="U2", at=time.time()))
        c.execute(insert(t["pgs_targets"]).values(token="tok", kind="database", env="prod", host="primary",
                                                  created_at=time.time(), payload='{"database": "app"}'))
        c.execute(insert(t["pgs_audit"]).values(at=time.time(), env="prod", event="clear_db_block:blocked",
                                                request_id="closed", query="SELECT 'kept'"))
        c.execute(insert(t["pgs_incidents"]).values(id="inc1", env="prod", host="replica1", kind="lag", open=True,
                                                     opened_at=time.time(), payload="{}"))
        c.execute(insert(t["pgs_leases"]).values(name="lagwatch", holder="old", expires_at=time.time() + 30))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'state.db'}"


def fresh_pg_database(pg, prefix: str) -> tuple[str, str]:
    """A new database on the test cluster's primary: (state URL for the bot, SQLAlchemy URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    pg.primary.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    p = pg.primary
    url = f"postgresql://{p.admin_user}@{p.host}:{p.port}/{name}"
    return url, url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.unit), "postgresql"])
def legacy_state(request, tmp_path):
    """(state URL, SQLAlchemy URL) of a state database made by release 0.1.0, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old-state.db'}"
        engine_url = url
    else:
        url, engine_url = fresh_pg_database(request.getfixturevalue("pg"), "pgs_legacy")
    make_release_010_state(engine_url)
    return url, engine_url


# --- migrations ------------------------------------------------------------------------------------


def test_release_010_database_is_stamped_and_upgraded_with_its_data(legacy_state):
    url, engine_url = legacy_state
    store = StateStore(url)
    try:
        assert store.schema_revisions == ("legacy", migrate.head())
        with store.read() as c:
            assert migrate.current_revision(c) == migrate.head()
            insp = inspect(c)
            idx = {i["name"] for t in insp.get_table_names() for i in insp.get_indexes(t)}
            cols = {col["name"] for col in insp.get_columns("pgs_requests")}
            derived = {r.id: (r.outcome_status, r.blocked, r.reopened)
                       for r in c.execute(select(requests.c.id, requests.c.outcome_status, requests.c.blocked,
                                                 requests.c.reopened))}
        assert {"ix_pgs_requests_state_expires_at", "ix_pgs_requests_state_updated_at", "ix_pgs_incidents_open",
                "ix_pgs_audit_at", "ix_pgs_targets_created_at", "ix_pgs_approvals_request_id"} <= idx
        assert {"outcome_status", "blocked", "reopened"} <= cols
        # 0003: the Slack outbox
        assert {"ix_pgs_outbox_state_id", "ix_pgs_outbox_key"} <= idx
        # backfilled from the stored outcome JSON
        assert derived == {
            "closed": ("done", True, False),
            "reopened": ("done", True, True),
            "interrupted": ("interrupted", None, False),
            "plain": ("done", None, False),
            "pending": (None, None, None),
        }
        # the data is all there, read through the store as before
        for rid, (state, outcome) in LEGACY_OUTCOMES.items():
            req = store.get_request(rid)
            assert req is not None and req.state == state
            dumped = req.outcome.model_dump(mode="json", exclude_none=True) if req.outcome else None
            assert (outcome is None and dumped is None) or {k: dumped[k] for k in outcome} == outcome
            assert req.target == DatabaseTarget(database="app")
        assert store.approvers_of("closed") == ["U2"]
        assert store.get_target("tok").target == DatabaseTarget(database="app")
        assert store.audit_entries(request_id="closed")[0]["query"] == "SELECT 'kept'"
        assert store.audit_count() == 1
        # the scans now use the real columns
        assert [r.id for r in store.closed_database_requests(CLEAR_DB_BLOCK, "prod")] == ["closed"]
        assert [r.id for r in store.interrupted_unnoted(CLEAR_DB_BLOCK)] == ["interrupted"]
    finally:
        store.close()
    # a second start finds the schema at head and changes nothing
    again = StateStore(url)
    try:
        assert again.schema_revisions == (migrate.head(), migrate.head())
        assert again.get_request("closed").outcome.blocked is True
    finally:
        again.close()


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.unit), "postgresql"])
def state_at_0002(request, tmp_path):
    """(state URL, SQLAlchemy URL) of a state database at revision 0002 with an open incident, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state-0002.db'}"
        engine_url = url
    else:
        url, engine_url = fresh_pg_database(request.getfixturevalue("pg"), "pgs_0002")
    engine = create_engine(engine_url)
    try:
        with engine.begin() as c:
            assert migrate.upgrade(c, "0002") == (None, "0002")
            c.execute(text("INSERT INTO pgs_incidents (id, env, host, kind, open, opened_at, payload) "
                           "VALUES ('inc1', 'prod', 'replica1', 'lag', true, 1.0, '{}')"))
    finally:
        engine.dispose()
    return url, engine_url


def test_revision_0003_adds_the_slack_outbox_to_a_0002_database(state_at_0002):
    from bot.slack.outbox import Outbox

    url, _ = state_at_0002
    store = StateStore(url)
    try:
        assert store.schema_revisions == ("0002", migrate.head())
        with store.read() as c:
            assert "pgs_outbox" in inspect(c).get_table_names()
            assert c.execute(text("SELECT count(*) FROM pgs_incidents")).scalar_one() == 1
        # usable at once: a call kept while Slack is not asked (may_send False) is pending
        box = Outbox(store, None, may_send=lambda: False)
        assert box.send("post", "inc1", "C0OUTBOX", {"text": "hi"}).kept
        assert box.pending_count() == 1
        assert box.post_state("inc1") == ("pending", "C0OUTBOX", None)
    finally:
        store.close()


@pytest.mark.unit
def test_empty_sqlite_database_is_created_by_the_revisions(sqlite_url):
    store = StateStore(sqlite_url)
    try:
        assert store.schema_revisions == (None, migrate.head())
        with store.read() as c:
            names = set(inspect(c).get_table_names())
        assert set(migrate.LEGACY_TABLES) | {migrate.VERSION_TABLE} <= names
    finally:
        store.close()


@pytest.mark.unit
def test_a_partial_set_of_tables_is_refused_with_a_clear_message(sqlite_url):
    engine = create_engine(sqlite_url)
    release_010_metadata().tables["pgs_requests"].create(engine)
    engine.dispose()
    with pytest.raises(RuntimeError, match="pgs_approvals"):
        StateStore(sqlite_url)


@pytest.mark.unit
def test_the_store_writes_the_outcome_columns_with_the_outcome(sqlite_url):
    store = StateStore(sqlite_url)
    try:
        req = store.create_request(new_request(env="prod", host="primary", action=CLEAR_DB_BLOCK, target={"database": "d"},
                                   requester="U1", expires_at=time.time() + 60))
        assert store.closed_database_requests(CLEAR_DB_BLOCK, "prod") == []
        with store.tx() as c:
            store.transition(c, req.id, "pending", "done", outcome=BulkOutcome(status="done", blocked=True))
        assert [r.id for r in store.closed_database_requests(CLEAR_DB_BLOCK, "prod")] == [req.id]
        assert store.closed_database_requests(CLEAR_DB_BLOCK, "other") == []
        with store.tx() as c:
            store.transition(c, req.id, "done", "done",
                             outcome=BulkOutcome(status="done", blocked=True, reopened={"request": "r2"}))
        assert store.closed_database_requests(CLEAR_DB_BLOCK, "prod") == []
    finally:
        store.close()


@pytest.mark.unit
def test_outcomes_written_by_an_older_replica_get_their_columns(sqlite_url):
    """While replicas are replaced, one of release 0.1.0 writes outcomes without the new columns."""
    store = StateStore(sqlite_url)
    try:
        req = store.create_request(new_request(env="prod", host="primary", action=CLEAR_DB_BLOCK, target={"database": "d"},
                                   requester="U1", expires_at=time.time() + 60))
        with store.tx() as c:  # what release 0.1.0's transition() writes
            c.execute(update(requests).where(requests.c.id == req.id).values(
                state="done", outcome=json.dumps({"status": "done", "blocked": True})))
        assert store.closed_database_requests(CLEAR_DB_BLOCK, "prod") == []
        assert store.backfill_outcome_columns() == 1
        assert [r.id for r in store.closed_database_requests(CLEAR_DB_BLOCK, "prod")] == [req.id]
        assert store.backfill_outcome_columns() == 0
    finally:
        store.close()


def test_replicas_starting_together_migrate_once(pg):
    """Six stores opening one fresh PostgreSQL state database at once: all start, the schema is at head."""
    url, _ = fresh_pg_database(pg, "pgs_race")
    barrier = threading.Barrier(6)

    def start(_):
        barrier.wait(10)
        s = StateStore(url)
        return s

    with ThreadPoolExecutor(6) as ex:
        stores = list(ex.map(start, range(6)))
    try:
        revs = sorted((s.schema_revisions for s in stores), key=str)
        assert revs.count((None, migrate.head())) == 1, revs
        assert all(r == (migrate.head(), migrate.head()) for r in revs if r[0] is not None)
        stores[0].check_writable()
    finally:
        for s in stores:
            s.close()


# --- retention -------------------------------------------------------------------------------------


def _age_everything(store: StateStore, seconds: float, ids: list[str]) -> None:
    with store.tx() as c:
        c.execute(
            update(requests).where(requests.c.id.in_(ids))
            .values(updated_at=requests.c.updated_at - seconds, created_at=requests.c.created_at - seconds)
        )


@pytest.mark.unit
def test_retention_purges_old_finished_items_and_never_open_ones(sqlite_url):
    store = StateStore(sqlite_url)
    try:
        now = time.time()
        old = now - 100 * DAY
        def mk(**kw):
            return store.create_request(new_request(**kw))

        common = {"env": "prod", "host": "primary", "target": {"pid": 1}, "requester": "U1",
                  "expires_at": now + 900}
        ids = {}
        for name in ("old_done", "old_denied", "old_pending", "old_executing", "old_closed_db", "new_done"):
            ids[name] = mk(action=CLEAR_DB_BLOCK if name == "old_closed_db" else "terminate", **common).id
        with store.tx() as c:
            store.transition(c, ids["old_done"], "pending", "done", outcome=SignalOutcome(status="done"))
            store.transition(c, ids["old_denied"], "pending", "denied")
            store.transition(c, ids["old_executing"], "pending", "executing")
            store.transition(c, ids["old_closed_db"], "pending", "done", outcome=BulkOutcome(status="done", blocked=True))
            store.transition(c, ids["new_done"], "pending", "done", outcome=SignalOutcome(status="done"))
            for rid in ids.values():
                store.add_approval(c, rid, "U2")
        _age_everything(store, 100 * DAY, [v for k, v in ids.items() if k != "new_done"])
        store.add_audit(at=old, event="terminated", env="prod", query="old")
        store.add_audit(event="terminated", env="prod", query="new")
        with store.tx() as c:
            from bot.state.store import incidents

            for iid, is_open, resolved in (("i_old_resolved", False, old), ("i_old_open", True, None),
                                           ("i_new_resolved", False, now)):
                c.execute(insert(incidents).values(id=iid, env="prod", host="r1", kind="lag", open=is_open,
                                                   opened_at=old, resolved_at=resolved, payload="{}"))

        from bot.approval.housekeeping import Housekeeping

        workflow = SimpleNamespace(store=store, config=SimpleNamespace(state_retention=90 * DAY))
        removed = Housekeeping(workflow).purge_state()
        assert removed == {"requests": 2, "approvals": 2, "audit": 1, "incidents": 1}

        left = {name for name, rid in ids.items() if store.get_request(rid) is not None}
        assert left == {"old_pending", "old_executing", "old_closed_db", "new_done"}
        for name in left:
            assert store.approvers_of(ids[name]) == ["U2"]
        with store.read() as c:
            assert c.execute(select(approvals.c.request_id)).all().__len__() == 4
            inc = {r[0] for r in c.execute(text("SELECT id FROM pgs_incidents"))}
        assert inc == {"i_old_open", "i_new_resolved"}
        assert [e["query"] for e in store.audit_entries()] == ["new"]
        # nothing more to do the second time
        assert Housekeeping(workflow).purge_state() == {"requests": 0, "approvals": 0, "audit": 0, "incidents": 0}
    finally:
        store.close()


@pytest.mark.unit
def test_retention_works_in_batches(sqlite_url):
    store = StateStore(sqlite_url)
    try:
        common = {"env": "prod", "host": "primary", "action": "terminate", "target": {"pid": 1},
                  "requester": "U1", "expires_at": time.time()}
        rids = [store.create_request(new_request(**common)).id for _ in range(7)]
        with store.tx() as c:
            for rid in rids:
                store.transition(c, rid, "pending", "expired")
        _age_everything(store, 10 * DAY, rids)
        store.add_audit_many([{"event": "expired", "request_id": r} for r in rids])
        with store.tx() as c:
            c.execute(text("UPDATE pgs_audit SET at = at - :s"), {"s": 10 * DAY})
        removed = store.purge_finished(time.time() - DAY, batch=3)
        assert removed["requests"] == 7 and removed["audit"] == 7
        assert store.requests_in(("expired",)) == []
    finally:
        store.close()


@pytest.mark.unit
def test_state_retention_config_key():
    from bot.config import ConfigError, parse_config

    base = {"environments": {"prod": {"dsn": "host=db1 dbname=postgres"}}}
    assert parse_config(base).state_retention == 90 * DAY
    assert parse_config({**base, "state_retention": "30d"}).state_retention == 30 * DAY
    with pytest.raises(ConfigError, match="state_retention"):
        parse_config({**base, "state_retention": "1h"})
    with pytest.raises(ConfigError, match="state_retention"):
        parse_config({**base, "state_retention": "soon"})


# --- the SQLite file, logs, locks --------------------------------------------------------------------


@pytest.mark.unit
def test_sqlite_file_is_created_readable_only_by_its_owner(tmp_path):
    path = tmp_path / "private.db"
    old = os.umask(0o022)
    try:
        store = StateStore(f"sqlite:///{path}")
    finally:
        os.umask(old)
    try:
        store.check_writable()
        for f in (path, tmp_path / "private.db-wal", tmp_path / "private.db-shm"):
            assert f.exists(), f
            assert oct(f.stat().st_mode & 0o777) == oct(0o600), f
    finally:
        store.close()


def _duplicate_with_secret(store: StateStore, secret: str) -> IntegrityError:
    # the secret is the key: PostgreSQL's DETAIL line would quote it ("Key (token)=(...) already exists")
    row = {"token": secret[:32], "kind": "session", "env": "prod", "host": "primary",
           "created_at": time.time(), "payload": json.dumps({"query": "SELECT 1"})}
    with store.tx() as c:
        c.execute(insert(targets).values(**row))
    with pytest.raises(IntegrityError) as info, store.tx() as c:
        c.execute(insert(targets).values(**row))
    return info.value


@pytest.mark.parametrize("backend", [pytest.param("sqlite", marks=pytest.mark.unit), "postgresql"])
def test_errors_never_carry_bound_parameters(backend, request, sqlite_url, caplog):
    url = sqlite_url if backend == "sqlite" else fresh_pg_database(request.getfixturevalue("pg"), "pgs_hide")[0]
    store = StateStore(url)
    secret = "s3cr3t-" + uuid.uuid4().hex[:24]
    try:
        exc = _duplicate_with_secret(store, secret)
        try:
            raise exc
        except IntegrityError:
            logging.getLogger("test.state").exception("state write failed")
        assert "hidden" in str(exc)  # the SQL is there, its parameters are not
        assert "pgs_targets" in str(exc)  # and the error still says what failed
        assert secret not in str(exc) and secret not in repr(exc) and secret not in str(exc.orig)
        assert "state write failed" in caplog.text and secret not in caplog.text
    finally:
        store.close()


@pytest.mark.unit
def test_reads_never_wait_for_a_writer(sqlite_url):
    store = StateStore(sqlite_url)
    req = store.create_request(new_request(env="prod", host="primary", action="terminate", target={"pid": 1},
                               requester="U1", expires_at=time.time() + 60))
    path = sqlite_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None, timeout=1)
    try:
        other.execute("BEGIN IMMEDIATE")  # a long write transaction in another connection
        other.execute("INSERT INTO pgs_leases (name, holder, expires_at) VALUES ('x', 'other', 0)")

        def reads():
            return (store.get_request(req.id), store.requests_in(("pending",)), store.audit_entries(),
                    store.approvers_of(req.id), store.due_for_expiry(time.time()), store.audit_count())

        def write():
            store.check_writable()

        with ThreadPoolExecutor(2) as ex:
            started = time.monotonic()
            got = ex.submit(reads).result(timeout=5)
            assert time.monotonic() - started < 2
            assert got[0].id == req.id and [r.id for r in got[1]] == [req.id]
            # the lock is real: a write waits for it ...
            pending_write = ex.submit(write)
            time.sleep(0.5)
            assert not pending_write.done()
            other.execute("COMMIT")
            # ... and goes through once it is released
            pending_write.result(timeout=10)
    finally:
        other.close()
        store.close()


# --- PostgreSQL state connections --------------------------------------------------------------------


@pytest.mark.unit
def test_pg_connect_args_bound_every_wait_and_keep_what_the_url_says():
    args = _pg_connect_args("postgresql://bot@statedb/pgs")
    assert args["connect_timeout"] == 5 and args["tcp_user_timeout"] > 0 and args["keepalives"] == 1
    assert "statement_timeout=" in args["options"]
    args = _pg_connect_args("postgresql://bot@statedb/pgs?connect_timeout=2&options=-c%20search_path%3Dbot")
    assert "connect_timeout" not in args  # the URL's own value is used
    assert args["options"].startswith("-c search_path=bot") and "statement_timeout=" in args["options"]


def test_pg_state_connections_carry_their_timeouts(pg):
    url, _ = fresh_pg_database(pg, "pgs_bounds")
    store = StateStore(url)
    try:
        with store.read() as c:
            assert c.execute(text("SHOW statement_timeout")).scalar_one() == "5s"
            params = c.connection.dbapi_connection.info.get_parameters()
        assert params["tcp_user_timeout"] == "10000"
        assert params["keepalives"] == "1" and params["connect_timeout"] == "5"
    finally:
        store.close()
