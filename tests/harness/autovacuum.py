"""An autovacuum worker that blocks a DDL queue, made deterministic (for the version suite).

    with eager_autovacuum(node):
        q = ddl_queue_behind_autovacuum(node, "appdb", "app_user")
        ...  # q.worker is the root, q.alter waits for it, q.reader waits for the ALTER
        q.drop()

The worker runs for minutes on a table of dead rows (per-table cost delay 100 ms, cost limit 1), with
``autovacuum_naptime`` lowered to 1 s so that it starts at once. The ALTER TABLE waits with
``deadlock_timeout`` raised (which takes a superuser): a waiter blocked by an ordinary autovacuum run
cancels it itself after ``deadlock_timeout`` (PostgreSQL's own rule), which would end the situation before
the bot could see it. ``tests/test_privilege.py`` builds the same situation on the machine's version.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql as pgsql

from tests.harness.pgcluster import Node
from tests.harness.waiting import wait_until


@contextmanager
def eager_autovacuum(node: Node) -> Iterator[None]:
    """``autovacuum_naptime = 1`` on ``node`` while the block runs (the launcher rebuilds its schedule on
    reload, so a worker comes within seconds)."""
    node.sql("ALTER SYSTEM SET autovacuum_naptime = 1")
    node.sql("SELECT pg_reload_conf()")
    try:
        wait_until(lambda: node.sql("SELECT setting FROM pg_settings WHERE name = 'autovacuum_naptime'")[0][0] == "1",
                   10, "autovacuum_naptime reloaded")
        yield
    finally:
        node.sql("ALTER SYSTEM RESET autovacuum_naptime")
        node.sql("SELECT pg_reload_conf()")


def _blocking(node: Node, pid: int) -> list[int]:
    return node.sql("SELECT pg_blocking_pids(%s)", (pid,))[0][0]


@dataclass
class DdlQueue:
    """The worker (root), the ALTER TABLE queued behind it, a reader queued behind the ALTER."""

    node: Node
    dbname: str
    table: str
    worker: int
    worker_query: str
    worker_started: datetime
    alter: int = 0
    reader: int = 0
    conns: list[psycopg.Connection] = field(default_factory=list)
    threads: dict[int, threading.Thread] = field(default_factory=dict)
    errors: dict[int, psycopg.Error] = field(default_factory=dict)

    def run(self, conn: psycopg.Connection, stmt: pgsql.Composable) -> None:
        pid = conn.info.backend_pid

        def go() -> None:
            try:
                conn.execute(stmt)
            except psycopg.Error as exc:
                self.errors[pid] = exc

        t = threading.Thread(target=go, daemon=True)
        t.start()
        self.threads[pid] = t

    def finished(self, pid: int) -> bool:
        """The statement of ``pid`` has returned (without an error: see ``errors``)."""
        return not self.threads[pid].is_alive()

    def drop(self) -> None:
        for c in self.conns:
            self.node.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
        for t in self.threads.values():
            t.join(10)
        for c in self.conns:
            c.close()
        # a DROP that waits for the worker cancels it itself after deadlock_timeout
        self.node.sql(pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(self.table)), dbname=self.dbname)


def ddl_queue_behind_autovacuum(node: Node, dbname: str, owner: str, superuser: str = "postgres") -> DdlQueue:
    """Build the queue on ``node`` (autovacuum made eager: :func:`eager_autovacuum`); the table is ``owner``'s,
    the ALTER is ``superuser``'s, the reader ``owner``'s."""
    table = "av_" + uuid.uuid4().hex[:8]
    t = pgsql.Identifier(table)
    node.sql(pgsql.SQL("CREATE TABLE {} (id int, pad text)").format(t), dbname=dbname)
    node.sql(pgsql.SQL("ALTER TABLE {} OWNER TO {}").format(t, pgsql.Identifier(owner)), dbname=dbname)
    # without autovacuum on the table until it is full of dead rows, then slow and eager
    node.sql(pgsql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(t), dbname=dbname)
    node.sql(pgsql.SQL("INSERT INTO {} SELECT g, repeat('x', 100) FROM generate_series(1, 60000) g").format(t),
             dbname=dbname)
    node.sql(pgsql.SQL("DELETE FROM {} WHERE id % 2 = 0").format(t), dbname=dbname)
    node.sql(pgsql.SQL(
        "ALTER TABLE {} SET (autovacuum_enabled = on, autovacuum_vacuum_cost_delay = 100, "
        "autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0, "
        "autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 0)").format(t), dbname=dbname)
    rows = wait_until(lambda: node.sql(
        "SELECT pid, query, query_start FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
        "AND query LIKE %s", (f"%{table}%",)), 60, f"an autovacuum worker on {table}")
    q = DdlQueue(node, dbname, table, *rows[0])
    try:
        alter_conn = node.connect(user=superuser, dbname=dbname, application_name="migration")
        q.conns.append(alter_conn)
        alter_conn.execute("SET deadlock_timeout = '1h'")
        q.alter = alter_conn.info.backend_pid
        q.run(alter_conn, pgsql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(t))
        wait_until(lambda: _blocking(node, q.alter) == [q.worker], 10, "the ALTER waits for the worker")
        reader = node.connect(user=owner, dbname=dbname, application_name="web")
        q.conns.append(reader)
        q.reader = reader.info.backend_pid
        q.run(reader, pgsql.SQL("SELECT count(*) FROM {}").format(t))
        wait_until(lambda: _blocking(node, q.reader) == [q.alter], 10, "the reader queues behind the ALTER")
    except BaseException:
        q.drop()
        raise
    return q
