-- Standby sessions that may hold replay back (runs on the standby), each with why.
--
-- pg_blocking_pids() of the startup process is empty for recovery conflicts, so:
--   * lock conflicts: the startup process's ungranted lock against granted locks on the same object
--     in pg_locks (this also finds idle-in-transaction holders, whose backend_xmin is NULL);
--   * snapshot conflicts: sessions whose backend_xmin is older than the xmin of a fresh snapshot
--     (replay wants to remove rows such a snapshot may still see);
--   * suspects when neither applies: transactions or queries open for at least suspect_secs.
-- The bot's own connections never appear.
--
-- Parameters: startup_pid (int or NULL), suspect_secs (float), query_chars (int).
WITH me AS (
    SELECT pg_backend_pid() AS pid,
           coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal
),
waiting AS (
    SELECT l.*
      FROM pg_locks l
     WHERE l.pid = %(startup_pid)s::int AND NOT l.granted
),
lock_holders AS (
    SELECT h.pid,
           string_agg(DISTINCT h.mode, ', ') AS lock_modes,
           string_agg(DISTINCT
               CASE
                   WHEN w.locktype = 'relation' AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       THEN w.relation::regclass::text
                   WHEN w.locktype = 'relation'
                       THEN 'relation ' || w.relation::text || coalesce(' in database ' || d.datname, '')
                   ELSE w.locktype
               END, ', ') AS lock_objects,
           string_agg(DISTINCT w.mode, ', ') AS wanted_modes,
           -- relations of other databases: named by bot.postgres.relnames through their own database
           jsonb_agg(DISTINCT jsonb_build_object('database', d.datname, 'oid', w.relation::bigint))
               FILTER (WHERE w.locktype = 'relation' AND d.datname IS NOT NULL
                       AND w.database <> (SELECT oid FROM pg_database WHERE datname = current_database()))
               AS foreign_relations
      FROM waiting w
      JOIN pg_locks h
        ON h.granted
       AND h.pid IS DISTINCT FROM w.pid
       AND h.locktype = w.locktype
       AND h.database IS NOT DISTINCT FROM w.database
       AND h.relation IS NOT DISTINCT FROM w.relation
       AND h.page IS NOT DISTINCT FROM w.page
       AND h.tuple IS NOT DISTINCT FROM w.tuple
       AND h.virtualxid IS NOT DISTINCT FROM w.virtualxid
       AND h.transactionid IS NOT DISTINCT FROM w.transactionid
       AND h.classid IS NOT DISTINCT FROM w.classid
       AND h.objid IS NOT DISTINCT FROM w.objid
       AND h.objsubid IS NOT DISTINCT FROM w.objsubid
      LEFT JOIN pg_database d ON d.oid = w.database
     GROUP BY h.pid
),
snap AS (
    SELECT xid(pg_snapshot_xmin(pg_current_snapshot())) AS xmin
),
act AS (
    SELECT a.pid, a.backend_start, a.backend_type, a.usename, a.usesysid, a.datname, a.application_name,
           host(a.client_addr) AS client_addr, a.state, a.wait_event_type, a.wait_event,
           a.backend_xmin,
           left(a.query, %(query_chars)s) AS query,
           extract(epoch FROM now() - a.query_start)::float8  AS query_secs,
           extract(epoch FROM now() - a.xact_start)::float8   AS xact_secs,
           extract(epoch FROM now() - a.state_change)::float8 AS state_secs,
           -- exact timestamps (microseconds): what an approval binds a signal to (issue 12)
           a.query_start, a.xact_start, a.state_change
      FROM pg_stat_activity a
     WHERE a.backend_type = 'client backend'
       AND a.pid <> pg_backend_pid()
       AND NOT (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
),
flagged AS (
    SELECT act.*,
           lh.pid IS NOT NULL AS holds_lock,
           lh.lock_modes,
           lh.lock_objects,
           lh.wanted_modes,
           lh.foreign_relations,
           act.backend_xmin IS NOT NULL AND age(act.backend_xmin) > age(snap.xmin) AS old_snapshot,
           CASE WHEN act.backend_xmin IS NOT NULL THEN age(act.backend_xmin) END AS xmin_age,
           CASE WHEN act.backend_xmin IS NOT NULL THEN age(act.backend_xmin) - age(snap.xmin) END AS xmin_behind,
           act.state IS DISTINCT FROM 'idle'
               AND coalesce(act.xact_secs, act.query_secs, 0) >= %(suspect_secs)s AS is_suspect
      FROM act
      CROSS JOIN snap
      LEFT JOIN lock_holders lh ON lh.pid = act.pid
)
SELECT f.pid, f.backend_start, f.backend_type, f.usename, f.datname, f.application_name, f.client_addr,
       f.state, f.wait_event_type, f.wait_event, f.query,
       f.query_secs, f.xact_secs, f.state_secs, f.backend_xmin::text AS backend_xmin,
       f.query_start, f.xact_start, f.state_change,
       f.holds_lock, f.lock_modes, f.lock_objects, f.wanted_modes, f.foreign_relations, f.old_snapshot, f.xmin_age, f.xmin_behind, f.is_suspect,
       coalesce(r.rolsuper, false) AS is_superuser,
       -- facts for bot.postgres.models.cannot_signal_reason, the one place the rule is written
       me.is_super AS bot_is_super,
       me.can_signal AS bot_can_signal,
       pg_has_role(current_user, f.usesysid, 'USAGE') AS bot_has_privs
  FROM flagged f
  CROSS JOIN me
  LEFT JOIN pg_roles r ON r.oid = f.usesysid
 WHERE f.holds_lock OR f.old_snapshot OR f.is_suspect
 ORDER BY f.holds_lock DESC, f.old_snapshot DESC, f.xmin_age DESC NULLS LAST, f.xact_secs DESC NULLS LAST
 LIMIT 50
