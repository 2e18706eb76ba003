-- PostgreSQL 13 (server_version_num < 140000) version of watch_host.sql: no pg_locks.waitstart, so a lock wait is timed
-- from when the waiting session became active (state_change of an active session waiting on a Lock: its
-- query has waited at most that long).
-- Keep it in step with watch_host.sql.
-- One watch check of one host (issue 14): ONE statement, ONE pg_stat_activity read, every alert kind.
--
-- Returns one row: the server's facts plus JSON arrays (timestamps keep their microseconds):
--   sessions  backends (never the bot's own connections); pg_blocking_pids() and the lock waited
--             for (pg_locks; the wait timed from state_change) only for sessions waiting on a Lock: on every row it
--             stalls for seconds under a pile-up (the deadlock detector holds the lock-table locks)
--   held      the granted locks of blockers on the objects a waiter waits for (what the root holds)
--   prepared  prepared transactions (gid, owner, age); slots: replication slots holding xmin or
--             catalog_xmin, with the WAL they retain; feedback: standbys' hot_standby_feedback xmin
-- Lock waiters' blockers come whatever their backend type: an autovacuum worker that a DDL statement
-- queues behind is the root of a pile-up.
-- Only the sessions some rule may need travel to the bot (a superset: the rules in bot/watch/rules.py
-- decide, after the ignore rules): Lock waiters and their blockers, sessions idle in transaction or
-- active past the thresholds, xmin holders older than the horizon threshold, and the idle sessions only
-- while the connection share is crossed. With 1000 idle sessions a quiet check returns none of them.
-- Parameters: query_chars (int); idle_tx_secs, long_running_secs, xmin_secs (float8, NULL: that kind is
-- off); share (float8 percent, NULL: off); locks (boolean: lock pile-ups are watched).
WITH me AS (
    SELECT pg_backend_pid() AS pid,
           coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal,
           -- PostgreSQL 18+: may cancel autovacuum workers (NULL before 18: no such role)
           (SELECT pg_has_role(current_user, r.oid, 'USAGE')
              FROM pg_roles r WHERE r.rolname = 'pg_signal_autovacuum_worker') AS can_signal_autovacuum
),
act AS MATERIALIZED (
    -- raw columns for every backend; text work (left, host, age) only for the rows kept below
    SELECT a.pid, a.backend_start, a.backend_type, a.usename, a.usesysid, a.datname, a.application_name,
           a.client_addr AS client_inet, a.state, a.wait_event_type, a.wait_event, a.query AS query_full,
           a.state_change, a.query_start, a.xact_start,
           CASE WHEN %(locks)s AND a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) ELSE '{}'::int[] END
               AS blocked_by,
           extract(epoch FROM now() - a.query_start)::float8  AS query_secs,
           extract(epoch FROM now() - a.xact_start)::float8   AS xact_secs,
           extract(epoch FROM now() - a.state_change)::float8 AS state_secs,
           a.backend_xmin AS xmin_raw,
           a.backend_xid AS xid_raw,
           -- (never NULL: a server process such as an autovacuum worker has no usename, and must not vanish)
           (a.pid = pg_backend_pid()
            OR coalesce(a.usename = current_user AND a.application_name LIKE 'pgsessions%%', false)) AS mine
      FROM pg_stat_activity a
),
waits AS MATERIALIZED (
    -- the lock each Lock waiter asks for (only read when somebody waits on a lock)
    SELECT l.pid, l.locktype, l.mode, l.database, l.relation, l.page, l.tuple, l.virtualxid,
           l.transactionid, l.classid, l.objid, l.objsubid,
           (SELECT act.state_secs FROM act WHERE act.pid = l.pid AND act.state = 'active') AS wait_secs,
           CASE WHEN l.relation IS NOT NULL THEN
               coalesce((SELECT c.relname FROM pg_class c WHERE c.oid = l.relation), l.relation::text)
           END AS relname
      FROM pg_locks l
     WHERE NOT l.granted
       AND %(locks)s
       AND EXISTS (SELECT 1 FROM act WHERE act.wait_event_type = 'Lock')
),
held AS (
    SELECT DISTINCT g.pid, g.mode, g.locktype, w.relname
      FROM waits w
      JOIN pg_locks g
        ON g.granted AND g.pid <> w.pid
       AND g.locktype = w.locktype
       AND g.database IS NOT DISTINCT FROM w.database
       AND g.relation IS NOT DISTINCT FROM w.relation
       AND g.page IS NOT DISTINCT FROM w.page
       AND g.tuple IS NOT DISTINCT FROM w.tuple
       AND g.virtualxid IS NOT DISTINCT FROM w.virtualxid
       AND g.transactionid IS NOT DISTINCT FROM w.transactionid
       AND g.classid IS NOT DISTINCT FROM w.classid
       AND g.objid IS NOT DISTINCT FROM w.objid
       AND g.objsubid IS NOT DISTINCT FROM w.objsubid
),
usage AS (
    -- every client connection counts against the slots, the bot's own too
    SELECT count(*) FILTER (WHERE backend_type = 'client backend')::int AS clients,
           current_setting('max_connections')::int
               - current_setting('superuser_reserved_connections')::int AS usable
      FROM act
),
over AS (
    SELECT %(share)s::float8 IS NOT NULL AND clients * 100.0 >= %(share)s::float8 * greatest(usable, 1) AS crossed
      FROM usage
),
blockers AS (
    SELECT DISTINCT unnest(blocked_by) AS pid FROM act WHERE wait_event_type = 'Lock'
),
kept AS (
    SELECT act.*
      FROM act
     WHERE NOT act.mine
       AND ((%(locks)s AND act.wait_event_type = 'Lock')
        OR (%(locks)s AND act.pid IN (SELECT pid FROM blockers))
        OR (act.state LIKE 'idle in transaction%%' AND act.state_secs >= %(idle_tx_secs)s::float8)
        OR (act.state = 'active' AND act.backend_type = 'client backend'
            AND act.query_secs >= %(long_running_secs)s::float8)
        OR ((act.xmin_raw IS NOT NULL OR act.xid_raw IS NOT NULL)
            -- a VACUUM's own xmin holds back no other vacuum: an autovacuum worker is no horizon holder
            AND act.backend_type IS DISTINCT FROM 'autovacuum worker'
            AND coalesce(act.xact_secs, act.query_secs, 0) >= %(xmin_secs)s::float8)
        OR ((SELECT crossed FROM over) AND act.state = 'idle' AND act.backend_type = 'client backend'))
),
rows AS (
    SELECT act.pid, act.backend_start, act.backend_type, act.usename, act.datname, act.application_name,
           host(act.client_inet) AS client_addr, act.state, act.wait_event_type, act.wait_event,
           left(act.query_full, %(query_chars)s) AS query, act.state_change, act.blocked_by,
           -- what a Cancel / Terminate in the alert is bound to (bot.postgres.signals)
           act.query_start, act.xact_start,
           act.query_secs, act.xact_secs, act.state_secs,
           act.xmin_raw::text AS backend_xmin, age(act.xmin_raw) AS xmin_age, age(act.xid_raw) AS xid_age,
           w.mode AS wait_mode, w.locktype AS wait_locktype, w.relname AS wait_relation,
           w.wait_secs,
           coalesce(r.rolsuper, false) AS is_superuser,
           pg_has_role(current_user, act.usesysid, 'USAGE') AS bot_has_privs
      FROM kept act
      LEFT JOIN LATERAL (SELECT * FROM waits WHERE waits.pid = act.pid LIMIT 1) w ON true
      LEFT JOIN pg_roles r ON r.oid = act.usesysid
)
SELECT current_setting('max_connections')::int                 AS max_connections,
       current_setting('superuser_reserved_connections')::int   AS superuser_reserved,
       pg_is_in_recovery()                                      AS in_recovery,
       (SELECT status FROM pg_stat_wal_receiver)                AS receiver_status,
       (SELECT extract(epoch FROM now() - last_msg_receipt_time)::float8
          FROM pg_stat_wal_receiver)                            AS receiver_silent_secs,
       me.is_super                                              AS bot_is_super,
       me.can_signal                                            AS bot_can_signal,
       me.can_signal_autovacuum                                 AS bot_can_signal_autovacuum,
       (SELECT clients FROM usage)                              AS client_connections,
       (SELECT crossed FROM over)                               AS share_crossed,
       CASE WHEN (SELECT crossed FROM over) THEN json_build_object(
           'app', (SELECT json_agg(json_build_array(k, n)) FROM (
               SELECT application_name AS k, count(*) AS n FROM act WHERE backend_type = 'client backend'
                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5) x),
           'user', (SELECT json_agg(json_build_array(k, n)) FROM (
               SELECT usename AS k, count(*) AS n FROM act WHERE backend_type = 'client backend'
                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5) x),
           'state', (SELECT json_agg(json_build_array(k, n)) FROM (
               SELECT state AS k, count(*) AS n FROM act WHERE backend_type = 'client backend'
                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5) x))
       END                                                      AS breakdown,
       coalesce((SELECT json_agg(rows) FROM rows), '[]'::json)  AS sessions,
       coalesce((SELECT json_agg(held) FROM held), '[]'::json)  AS held,
       coalesce((SELECT json_agg(p) FROM (
           SELECT gid, owner, database, transaction::text AS xid, age(transaction) AS xid_age,
                  extract(epoch FROM now() - prepared)::float8 AS secs
             FROM pg_prepared_xacts) p), '[]'::json)             AS prepared,
       coalesce((SELECT json_agg(s) FROM (
           SELECT slot_name, slot_type, active, active_pid, database,
                  xmin::text AS xmin, catalog_xmin::text AS catalog_xmin,
                  greatest(age(xmin), age(catalog_xmin)) AS xid_age,
                  pg_wal_lsn_diff(
                      CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
                      restart_lsn)::float8 AS retained_bytes
             FROM pg_replication_slots
            WHERE xmin IS NOT NULL OR catalog_xmin IS NOT NULL) s), '[]'::json) AS slots,
       coalesce((SELECT json_agg(f) FROM (
           SELECT pid, application_name, host(client_addr) AS client_addr, backend_xmin::text AS xmin,
                  age(backend_xmin) AS xid_age
             FROM pg_stat_replication
            WHERE backend_xmin IS NOT NULL) f), '[]'::json)     AS feedback
  FROM me
