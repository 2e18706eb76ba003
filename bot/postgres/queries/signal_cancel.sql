-- Cancel the running query of one backend, re-checked in the same statement: the same pid AND the
-- same backend_start (pids are reused), still a client backend (or an autovacuum worker, never in a
-- run to prevent wraparound), never the bot's own connections, AND still running the query the
-- approver saw: still 'active' with the same query_start (a pooled backend runs many queries; a later
-- one is never cancelled by an approval of an earlier one; an autovacuum worker starts a new
-- query_start for each table it vacuums).
--
-- No row: the backend is gone (or is not one the bot may touch). verdict 'moved': the backend is there
-- but doing something else now (nothing is signalled; state/query_start/xact_start say what).
-- Parameters: pid, backend_start, query_start (timestamptz or NULL: NULL never matches).
WITH checked AS (
    SELECT a.pid, a.state, a.query_start, a.xact_start, a.state_change,
           CASE
               WHEN a.state = 'active' AND a.query_start = %(query_start)s::timestamptz THEN 'signal'
               ELSE 'moved'
           END AS verdict
      FROM pg_stat_activity a
     WHERE a.pid = %(pid)s
       AND a.backend_start = %(backend_start)s
       AND (a.backend_type = 'client backend'
            OR (a.backend_type = 'autovacuum worker' AND a.query NOT LIKE '%%(to prevent wraparound)%%'))
       AND a.pid <> pg_backend_pid()
       AND NOT coalesce(a.usename = current_user AND a.application_name LIKE 'pgsessions%%', false)
)
SELECT c.pid,
       CASE WHEN c.verdict = 'signal' THEN pg_cancel_backend(c.pid) END AS signalled,
       c.verdict, c.state, c.query_start, c.xact_start, c.state_change,
       extract(epoch FROM now() - c.query_start)::float8 AS query_secs,
       extract(epoch FROM now() - c.xact_start)::float8 AS xact_secs,
       extract(epoch FROM now() - c.state_change)::float8 AS state_secs
  FROM checked c
