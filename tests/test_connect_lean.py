"""The connections the bot keeps carry less of psycopg's per-connection state (issue 26: a fleet keeps
4000): no notification backlog, and the queue of prepared statements to deallocate as a list. Prepared
statements must still be deallocated on the server when psycopg evicts them."""

from __future__ import annotations

from collections import deque

from bot.postgres.connect import open_configured


def test_kept_connection_evicts_and_deallocates_prepared_statements(pg):
    conn = open_configured(pg.primary.dsn(user="pgsessions_bot"), 3, 5)
    try:
        assert conn._notifies_backlog is None
        assert not isinstance(conn._prepared._to_flush, deque)
        conn.prepared_max = 2
        for n in range(5):  # each prepared at its second run; the oldest evicted past two
            for _ in range(2):
                assert conn.execute(f"SELECT {n}::int AS n").fetchone() == (n,)
        conn.execute("SELECT 1").fetchone()  # the deallocations are sent before the next statement
        names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()]
        assert len(names) <= 2, names
        assert not conn._prepared._to_flush
        assert conn.execute("SELECT %(a)s::int", {"a": 7}).fetchone() == (7,)
    finally:
        conn.close()
