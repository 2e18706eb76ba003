-- Everything connected to one database (runs on the primary), oldest first:
--   * client backends: what clear-db terminates;
--   * the bot's own connections (its pid, or its role with application_name 'pgsessions...'): never;
--   * other backends (walsenders of logical replication, autovacuum and parallel/background workers):
--     listed, not terminated.
-- cannot_signal mirrors the checks pg_terminate_backend() makes (PostgreSQL 15: has_privs_of_role, so
-- 'USAGE'), so that a batch never raises "must be a superuser to terminate superuser process".
--
-- Parameters: database (text).
WITH me AS (
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal
)
SELECT a.pid,
       a.backend_start,
       a.backend_type,
       a.usename,
       a.application_name,
       host(a.client_addr)                                   AS client_addr,
       a.state,
       a.xact_start IS NOT NULL                              AS in_transaction,
       extract(epoch FROM now() - a.backend_start)::float8   AS conn_secs,
       extract(epoch FROM now() - a.state_change)::float8    AS state_secs,
       (a.pid = pg_backend_pid()
        OR (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')) AS is_bot,
       coalesce(r.rolsuper, false)                           AS is_superuser,
       CASE
           WHEN coalesce(r.rolsuper, false) AND NOT me.is_super
               THEN 'superuser session (the bot''s role is not a superuser)'
           WHEN NOT me.is_super AND NOT me.can_signal
                AND NOT pg_has_role(current_user, a.usesysid, 'USAGE')
               THEN 'the bot''s role is not a member of pg_signal_backend'
       END                                                   AS cannot_signal
  FROM pg_stat_activity a
  CROSS JOIN me
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.datname = %(database)s
 ORDER BY a.backend_start, a.pid
