-- Everything connected to one database (runs on the primary), oldest first:
--   * client backends: what clear-db terminates;
--   * the bot's own connections (its pid, or its role with application_name 'pgsessions...'): never;
--   * other backends (walsenders of logical replication, autovacuum and parallel/background workers):
--     listed, not terminated.
-- bot_is_super / bot_can_signal / bot_has_privs feed bot.postgres.models.cannot_signal_reason, which
-- mirrors the checks pg_terminate_backend() makes, so that a batch never raises "must be a superuser
-- to terminate superuser process".
-- Columns keep pg_stat_activity's names: each row becomes a bot.postgres.models.Session (Session.from_row).
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
       a.datname,
       a.application_name,
       host(a.client_addr)                                   AS client_addr,
       a.state,
       left(a.query, 1000)                                   AS query,  -- for the ignore rules' query patterns
       a.xact_start,                                         -- in a transaction: not NULL
       extract(epoch FROM now() - a.backend_start)::float8   AS backend_secs,
       extract(epoch FROM now() - a.state_change)::float8    AS state_secs,
       (a.pid = pg_backend_pid()
        OR (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')) AS is_bot,
       coalesce(r.rolsuper, false)                           AS is_superuser,
       -- facts for bot.postgres.models.cannot_signal_reason, the one place the rule is written
       me.is_super AS bot_is_super,
       me.can_signal AS bot_can_signal,
       pg_has_role(current_user, a.usesysid, 'USAGE') AS bot_has_privs
  FROM pg_stat_activity a
  CROSS JOIN me
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.datname = %(database)s
 ORDER BY a.backend_start, a.pid
