-- PostgreSQL 13 (server_version_num < 140000) version of details_locks.sql: no pg_locks.waitstart, so a wanted lock's wait is
-- timed from when the waiting session became active (state_change of an active session waiting on a
-- Lock: its query has waited at most that long).
-- Keep it in step with details_locks.sql.
-- The locks one backend holds and waits for (waits first), each object described; at most lock_limit
-- rows, with the full count. Nothing when the pid no longer belongs to the backend that started at
-- backend_start (a reused pid's locks are not the clicked session's).
-- Parameters: pid (int), backend_start (timestamptz), lock_limit (int).
WITH me AS (SELECT (SELECT oid FROM pg_database WHERE datname = current_database()) AS dboid)
SELECT l.locktype, l.mode, l.granted, l.database,
       (SELECT datname FROM pg_database d WHERE d.oid = l.database) AS lock_db,
       l.relation,
       CASE WHEN l.database IN (0, me.dboid) THEN
           (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = l.relation)
       END AS rel_name,
       l.page, l.tuple, l.virtualxid, l.transactionid::text AS transactionid, l.classid, l.objid, l.objsubid,
       CASE WHEN NOT l.granted THEN
           (SELECT extract(epoch FROM now() - a.state_change)::float8 FROM pg_stat_activity a
             WHERE a.pid = l.pid AND a.state = 'active' AND a.wait_event_type = 'Lock')
       END AS wait_secs,
       count(*) OVER ()::int AS total
  FROM pg_locks l CROSS JOIN me
 WHERE l.pid = %(pid)s
   AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = %(pid)s AND a.backend_start = %(backend_start)s)
 ORDER BY l.granted, l.locktype <> 'relation', l.relation NULLS LAST, l.mode
 LIMIT %(lock_limit)s
