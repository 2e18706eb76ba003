-- PostgreSQL 13 (server_version_num < 140000) version of lock_forest.sql: no pg_locks.waitstart, so a lock wait is timed
-- from when the waiting session became active (state_change of an active session waiting on a Lock: its
-- query has waited at most that long).
-- Keep it in step with lock_forest.sql.
-- Who waits for whom: every backend waiting on a heavyweight lock, the pids that block it, the lock it
-- waits for and since when, and every blocker, each as a session row (the columns of sessions.sql, so
-- the same Session model reads them), of any backend type: an autovacuum worker holding what a DDL
-- statement waits for is a root like any session. Used by `/pgsessions <env> locks` and by the Details view.
-- pg_blocking_pids() is called only for wait_event_type = 'Lock' (under a pile-up it is the costly part).
-- pg_locks is read once (MATERIALIZED); a waiter's wanted object and a blocker's granted locks are
-- matched on one text key, so the join hashes instead of comparing every pair.
-- Parameters: query_chars (int).
WITH me AS (
    SELECT pg_backend_pid() AS pid,
           coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal,
           -- PostgreSQL 18+: may cancel autovacuum workers (NULL before 18: no such role)
           (SELECT pg_has_role(current_user, r.oid, 'USAGE')
              FROM pg_roles r WHERE r.rolname = 'pg_signal_autovacuum_worker') AS can_signal_autovacuum,
           (SELECT oid FROM pg_database WHERE datname = current_database()) AS dboid
),
w AS MATERIALIZED (
    SELECT a.pid, pg_blocking_pids(a.pid) AS blocked_by
      FROM pg_stat_activity a
     WHERE a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()
),
lk AS MATERIALIZED (
    SELECT l.*, format('%%s|%%s|%%s|%%s|%%s|%%s|%%s|%%s|%%s|%%s', l.locktype, l.database, l.relation, l.page, l.tuple,
                       l.virtualxid, l.transactionid, l.classid, l.objid, l.objsubid) AS k
      FROM pg_locks l
     WHERE l.pid IS NOT NULL
),
wl AS (
    SELECT DISTINCT ON (lk.pid) lk.*
      FROM lk JOIN w ON w.pid = lk.pid
     WHERE NOT lk.granted
     ORDER BY lk.pid
),
held AS (
    -- granted locks of a blocker on an object one of its waiters wants
    SELECT DISTINCT h.pid, h.locktype, h.mode, h.database, h.relation, h.page, h.tuple, h.virtualxid,
           h.transactionid::text AS transactionid, h.classid, h.objid, h.objsubid
      FROM wl
      JOIN w ON w.pid = wl.pid
      JOIN lk h ON h.k = wl.k AND h.granted AND h.pid = ANY (w.blocked_by)
),
bc AS (
    SELECT b.pid, count(*)::int AS n FROM w, unnest(w.blocked_by) AS b(pid) GROUP BY b.pid
),
involved AS (
    SELECT pid FROM w WHERE cardinality(blocked_by) > 0
    UNION
    SELECT unnest(blocked_by) FROM w
    UNION
    -- on a standby, replay waiting for a lock: pg_blocking_pids() names nobody for it
    SELECT a.pid FROM pg_stat_activity a WHERE a.backend_type = 'startup' AND a.wait_event_type = 'Lock'
),
named AS (
    SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid IN (SELECT relation FROM wl UNION SELECT relation FROM held)
)
SELECT a.pid, a.usesysid, a.backend_start, a.backend_type, a.usename, a.datname, a.application_name,
       host(a.client_addr) AS client_addr, a.client_port, a.state, a.wait_event_type, a.wait_event,
       left(a.query, %(query_chars)s) AS query,
       coalesce(w.blocked_by, '{}'::int[]) AS blocked_by,
       coalesce(bc.n, 0) AS blocking_count,
       coalesce(cardinality(w.blocked_by) > 0, false) AS is_blocked,
       a.backend_type = 'client backend' AND a.state = 'active' AND w.pid IS NULL AS is_long_running,
       coalesce(a.state LIKE 'idle in transaction%%', false) AS is_idle_tx,
       coalesce(a.state = 'idle', false) AS is_idle,
       extract(epoch FROM now() - a.query_start)::float8  AS query_secs,
       extract(epoch FROM now() - a.xact_start)::float8   AS xact_secs,
       extract(epoch FROM now() - a.state_change)::float8 AS state_secs,
       a.backend_xmin::text AS backend_xmin,
       -- what a Cancel / Terminate from the tree is bound to (bot.postgres.signals)
       a.query_start, a.xact_start, a.state_change,
       coalesce(r.rolsuper, false) AS is_superuser,
       me.is_super AS bot_is_super,
       me.can_signal AS bot_can_signal,
       me.can_signal_autovacuum AS bot_can_signal_autovacuum,
       pg_has_role(current_user, a.usesysid, 'USAGE') AS bot_has_privs,
       -- the lock this session waits for
       wl.locktype AS want_locktype, wl.mode AS want_mode, wl.database AS want_database,
       (SELECT datname FROM pg_database d WHERE d.oid = wl.database) AS want_lock_db,
       wl.relation AS want_relation,
       CASE WHEN wl.database IN (0, me.dboid) THEN (SELECT name FROM named WHERE named.oid = wl.relation) END
           AS want_rel_name,
       wl.page AS want_page, wl.tuple AS want_tuple, wl.virtualxid AS want_virtualxid,
       wl.transactionid::text AS want_transactionid, wl.classid AS want_classid, wl.objid AS want_objid,
       wl.objsubid AS want_objsubid,
       CASE WHEN wl.pid IS NOT NULL AND a.state = 'active'
            THEN extract(epoch FROM now() - a.state_change)::float8 END AS wait_secs,
       -- what this session holds that its waiters want
       (SELECT json_agg(json_build_object(
                   'locktype', h.locktype, 'mode', h.mode, 'database', h.database,
                   'lock_db', (SELECT datname FROM pg_database d WHERE d.oid = h.database),
                   'relation', h.relation,
                   'rel_name', CASE WHEN h.database IN (0, me.dboid)
                                    THEN (SELECT name FROM named WHERE named.oid = h.relation) END,
                   'page', h.page, 'tuple', h.tuple, 'virtualxid', h.virtualxid,
                   'transactionid', h.transactionid, 'classid', h.classid, 'objid', h.objid,
                   'objsubid', h.objsubid) ORDER BY h.locktype, h.mode)
          FROM held h WHERE h.pid = a.pid) AS holds_wanted,
       now() AS read_at
  FROM involved i
  JOIN pg_stat_activity a ON a.pid = i.pid
  CROSS JOIN me
  LEFT JOIN w ON w.pid = a.pid
  LEFT JOIN bc ON bc.pid = a.pid
  LEFT JOIN wl ON wl.pid = a.pid
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.pid <> me.pid
