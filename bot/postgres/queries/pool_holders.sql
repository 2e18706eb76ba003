-- The server sessions holding a PgBouncer pool whose clients wait (issue 25, watch kind pool_waiting):
-- the backends behind the pool's busy server connections, by pid, in the shape the watch's sessions
-- have (bot.watch.model.session_from_row), with the bot's own signalling facts.
-- Parameters: pids (int[]), query_chars (int).
WITH me AS (
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal
)
SELECT a.pid, a.backend_start, a.backend_type, a.usename, a.datname, a.application_name,
       host(a.client_addr) AS client_addr, a.client_port, a.state, a.wait_event_type, a.wait_event,
       left(a.query, %(query_chars)s) AS query,
       extract(epoch FROM now() - a.query_start)::float8  AS query_secs,
       extract(epoch FROM now() - a.xact_start)::float8   AS xact_secs,
       extract(epoch FROM now() - a.state_change)::float8 AS state_secs,
       a.query_start, a.xact_start, a.state_change,
       coalesce(r.rolsuper, false) AS is_superuser,
       me.is_super AS bot_is_super,
       me.can_signal AS bot_can_signal,
       pg_has_role(current_user, a.usesysid, 'USAGE') AS bot_has_privs
  FROM pg_stat_activity a
  CROSS JOIN me
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.pid = ANY(%(pids)s::int[])
   AND a.backend_type = 'client backend'
