-- PostgreSQL 13 (server_version_num < 140000) version of details_session.sql: no pg_stat_activity.query_id (NULL: Details shows none).
-- Keep it in step with details_session.sql.
-- One backend, whole, for the Details view (any backend type). The caller compares backend_start
-- with the one its button token stored, so a reused pid is never shown as the session clicked.
-- Parameters: pid (int), query_chars (int).
WITH me AS (
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal,
           -- PostgreSQL 18+: may cancel autovacuum workers (NULL before 18: no such role)
           (SELECT pg_has_role(current_user, r.oid, 'USAGE')
              FROM pg_roles r WHERE r.rolname = 'pg_signal_autovacuum_worker') AS can_signal_autovacuum
)
SELECT a.pid, a.usesysid, a.backend_start, a.backend_type, a.usename, a.datname, a.application_name,
       host(a.client_addr) AS client_addr, a.client_hostname, a.client_port,
       a.state, a.wait_event_type, a.wait_event,
       left(a.query, %(query_chars)s) AS query, NULL::bigint AS query_id,
       a.xact_start, a.query_start, a.state_change,
       extract(epoch FROM now() - a.backend_start)::float8 AS backend_secs,
       extract(epoch FROM now() - a.query_start)::float8   AS query_secs,
       extract(epoch FROM now() - a.xact_start)::float8    AS xact_secs,
       extract(epoch FROM now() - a.state_change)::float8  AS state_secs,
       a.leader_pid,
       ARRAY(SELECT g.pid FROM pg_stat_activity g
              WHERE g.leader_pid = coalesce(a.leader_pid, a.pid) AND g.pid <> g.leader_pid
              ORDER BY g.pid) AS worker_pids,
       a.backend_xid::text AS backend_xid, age(a.backend_xid) AS xid_age,
       a.backend_xmin::text AS backend_xmin, age(a.backend_xmin) AS xmin_age,
       a.pid = pg_backend_pid() AS is_bot,
       coalesce(r.rolsuper, false) AS is_superuser,
       me.is_super AS bot_is_super,
       me.can_signal AS bot_can_signal,
       me.can_signal_autovacuum AS bot_can_signal_autovacuum,
       pg_has_role(current_user, a.usesysid, 'USAGE') AS bot_has_privs,
       now() AS read_at
  FROM pg_stat_activity a
  CROSS JOIN me
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.pid = %(pid)s
