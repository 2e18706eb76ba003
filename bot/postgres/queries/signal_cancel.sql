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
--
-- protect (issue 23 §11), re-checked here so that a session that became protected after it was shown is
-- never signalled: guarded.protected is 'own_state' (the bot's own state-store connection: own_user,
-- own_db, own_app), 'superuser' (protect_superusers and the role is a superuser), 'role', 'application'
-- or 'database' (in protect_roles / protect_apps / protect_dbs), else NULL.
-- Guard parameters: protect_superusers, protect_roles, protect_apps, protect_dbs, own_user, own_db, own_app.
WITH guarded AS (
    SELECT a.pid, a.usename, a.application_name, a.datname, coalesce(r.rolsuper, false) AS is_superuser,
           CASE
               WHEN %(own_user)s::text IS NOT NULL AND a.usename = %(own_user)s::text
                    AND a.datname = %(own_db)s::text AND a.application_name = %(own_app)s::text
                   THEN 'own_state'
               -- a non-superuser bot role cannot signal a superuser anyway: PostgreSQL says so itself
               WHEN %(protect_superusers)s::boolean AND coalesce(r.rolsuper, false)
                    AND coalesce((SELECT me.rolsuper FROM pg_roles me WHERE me.rolname = current_user), false)
                   THEN 'superuser'
               WHEN a.usename = ANY (%(protect_roles)s::text[]) THEN 'role'
               WHEN a.application_name = ANY (%(protect_apps)s::text[]) THEN 'application'
               WHEN a.datname = ANY (%(protect_dbs)s::text[]) THEN 'database'
           END AS protected
      FROM pg_stat_activity a
      LEFT JOIN pg_roles r ON r.oid = a.usesysid
     WHERE a.pid = %(pid)s AND a.backend_start = %(backend_start)s
),
checked AS (
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
       CASE WHEN c.verdict = 'signal' AND g.protected IS NULL THEN pg_cancel_backend(c.pid) END AS signalled,
       c.verdict, c.state, c.query_start, c.xact_start, c.state_change,
       extract(epoch FROM now() - c.query_start)::float8 AS query_secs,
       extract(epoch FROM now() - c.xact_start)::float8 AS xact_secs,
       extract(epoch FROM now() - c.state_change)::float8 AS state_secs,
       g.protected, g.usename, g.application_name, g.datname, g.is_superuser
  FROM checked c LEFT JOIN guarded g ON g.pid = c.pid
