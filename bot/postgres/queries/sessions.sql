-- Client sessions that need attention (long-running, idle in transaction, idle, blocked, blocking).
-- pg_blocking_pids() is called only for sessions waiting on a lock: on every row it stalls for
-- seconds under a lock pile-up (the deadlock detector holds the lock-table locks).
-- The bot's own connections (its role with application_name 'pgsessions...') never appear.
-- An autovacuum worker appears only while it blocks others (the classic: a DDL statement queued behind
-- it, and everything else behind the DDL); it is never long-running, idle or blocked here.
--
-- Parameters: long_running, idle_in_transaction, idle (seconds), want_long_running, want_idle_tx,
-- want_idle, want_blocked (booleans), blocked_min (seconds a lock waiter has waited), app, usr, db (text or NULL), query_chars (int).
WITH RECURSIVE me AS (
    SELECT pg_backend_pid() AS pid,
           coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal,
           -- PostgreSQL 18+: may cancel autovacuum workers (NULL before 18: no such role)
           (SELECT pg_has_role(current_user, r.oid, 'USAGE')
              FROM pg_roles r WHERE r.rolname = 'pg_signal_autovacuum_worker') AS can_signal_autovacuum
),
act AS (
    SELECT a.pid, a.backend_start, a.backend_type, a.usename, a.usesysid, a.datname, a.application_name,
           host(a.client_addr) AS client_addr, a.client_port, a.state, a.wait_event_type, a.wait_event,
           a.backend_xmin::text AS backend_xmin,
           left(a.query, %(query_chars)s) AS query,
           CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) ELSE '{}'::int[] END AS blocked_by,
           extract(epoch FROM now() - a.query_start)::float8  AS query_secs,
           extract(epoch FROM now() - a.xact_start)::float8   AS xact_secs,
           extract(epoch FROM now() - a.state_change)::float8 AS state_secs,
           -- exact timestamps (microseconds): what an approval binds a signal to (issue 12)
           a.query_start, a.xact_start, a.state_change
      FROM pg_stat_activity a
     WHERE a.backend_type IN ('client backend', 'autovacuum worker')
       AND a.pid <> pg_backend_pid()
       AND NOT coalesce(a.usename = current_user AND a.application_name LIKE 'pgsessions%%', false)
       AND (%(app)s::text IS NULL OR a.application_name = %(app)s::text)
       AND (%(usr)s::text IS NULL OR a.usename = %(usr)s::text)
       AND (%(db)s::text IS NULL OR a.datname = %(db)s::text)
),
edges AS (
    SELECT b.pid AS blocker, act.pid AS waiter FROM act, unnest(act.blocked_by) AS b(pid)
),
lw AS (
    SELECT l.pid, extract(epoch FROM now() - min(l.waitstart))::float8 AS wait_secs
      FROM pg_locks l
     WHERE NOT l.granted AND l.pid IN (SELECT waiter FROM edges)
     GROUP BY l.pid
),
reach(blocker, waiter) AS (
    -- everyone waiting behind a root blocker (one that waits for no one), directly or through other
    -- waiters; UNION stops at cycles. Only from roots: in a row-lock pile-up each waiter is blocked by
    -- every earlier one (n^2 edges), and following every blocker's edges cost 10x the whole listing.
    SELECT e.blocker, e.waiter FROM edges e WHERE e.blocker NOT IN (SELECT waiter FROM edges)
    UNION
    SELECT r.blocker, e.waiter FROM reach r JOIN edges e ON e.blocker = r.waiter
),
behind AS (
    SELECT r.blocker AS pid, count(DISTINCT r.waiter)::int AS n, max(lw.wait_secs) AS longest
      FROM reach r LEFT JOIN lw ON lw.pid = r.waiter
     WHERE r.waiter <> r.blocker
     GROUP BY r.blocker
),
direct_wait AS (
    SELECT e.blocker AS pid, max(lw.wait_secs) AS longest
      FROM edges e JOIN lw ON lw.pid = e.waiter
     GROUP BY e.blocker
),
blocks AS (
    -- a blocker counts the waiters that have waited at least blocked_min
    SELECT b.pid, count(*)::int AS n
      FROM act, unnest(act.blocked_by) AS b(pid)
     WHERE coalesce(act.query_secs, 0) >= %(blocked_min)s
     GROUP BY b.pid
),
flagged AS (
    SELECT act.*,
           coalesce(blocks.n, 0) AS blocking_count,
           behind.n AS blocking_total,  -- NULL unless a root blocker
           coalesce(behind.longest, direct_wait.longest) AS longest_wait_secs,
           cardinality(act.blocked_by) > 0 AND coalesce(act.query_secs, 0) >= %(blocked_min)s AS is_blocked,
           -- a query runs: running_states, bound from bot.postgres.models.QUERY_RUNNING_STATES
           act.backend_type = 'client backend' AND act.state = ANY(%(running_states)s::text[])
               AND act.query_secs >= %(long_running)s AS is_long_running,
           act.backend_type = 'client backend' AND act.state LIKE 'idle in transaction%%'
               AND act.state_secs >= %(idle_in_transaction)s AS is_idle_tx,
           act.backend_type = 'client backend' AND act.state = 'idle' AND act.state_secs >= %(idle)s AS is_idle
      FROM act LEFT JOIN blocks ON blocks.pid = act.pid LEFT JOIN behind ON behind.pid = act.pid
      LEFT JOIN direct_wait ON direct_wait.pid = act.pid
)
SELECT f.pid, f.usesysid, f.backend_start, f.backend_type, f.usename, f.datname, f.application_name, f.client_addr, f.client_port,
       f.state, f.wait_event_type, f.wait_event, f.query, f.blocked_by, f.blocking_count,
       f.is_blocked, f.is_long_running, f.is_idle_tx, f.is_idle,
       f.query_secs, f.xact_secs, f.state_secs, f.backend_xmin, f.blocking_total, f.longest_wait_secs,
       f.query_start, f.xact_start, f.state_change,
       coalesce(r.rolsuper, false) AS is_superuser,
       -- facts for bot.postgres.models.cannot_signal_reason, the one place the rule is written
       me.is_super AS bot_is_super,
       me.can_signal AS bot_can_signal,
       me.can_signal_autovacuum AS bot_can_signal_autovacuum,
       pg_has_role(current_user, f.usesysid, 'USAGE') AS bot_has_privs
  FROM flagged f
  CROSS JOIN me
  LEFT JOIN pg_roles r ON r.oid = f.usesysid
 WHERE (%(want_blocked)s AND (f.is_blocked OR f.blocking_count > 0))
    OR (%(want_long_running)s AND f.is_long_running)
    OR (%(want_idle_tx)s AND f.is_idle_tx)
    OR (%(want_idle)s AND f.is_idle)
