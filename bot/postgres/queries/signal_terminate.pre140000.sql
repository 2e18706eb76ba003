-- PostgreSQL 13 (server_version_num < 140000) version of signal_terminate.sql: no pg_terminate_backend(pid, timeout): the signal
-- is only sent, and bot.postgres.signals polls for the backend's exit within the same deadline
-- (timeout_ms is not used here).
-- Keep it in step with signal_terminate.sql.
-- Terminate one backend, re-checked in the same statement (same pid AND backend_start, client backend,
-- not the bot) AND still doing what the approver saw, by the state it was listed in:
--   'idle in transaction…'  the same transaction (xact_start);
--   'idle'                  still idle, not used since (state_change);
--   'active'                the same query (query_start);
--   anything else           the same state, unchanged since (state_change).
-- A NULL listed timestamp never matches (fail closed). pg_terminate_backend(pid) only sends the signal:
-- the caller waits for the exit.
--
-- No row: the backend is gone (or is not one the bot may touch). verdict 'moved': nothing is signalled.
-- Parameters: pid, backend_start, listed_state, query_start, xact_start, state_change, timeout_ms.
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
               WHEN %(listed_state)s::text LIKE 'idle in transaction%%'
                   THEN CASE WHEN a.xact_start = %(xact_start)s::timestamptz THEN 'signal' ELSE 'moved' END
               WHEN %(listed_state)s::text = 'idle'
                   THEN CASE WHEN a.state = 'idle' AND a.state_change = %(state_change)s::timestamptz
                             THEN 'signal' ELSE 'moved' END
               WHEN %(listed_state)s::text = 'active'
                   THEN CASE WHEN a.query_start = %(query_start)s::timestamptz THEN 'signal' ELSE 'moved' END
               ELSE CASE WHEN a.state IS NOT DISTINCT FROM %(listed_state)s::text
                              AND a.state_change = %(state_change)s::timestamptz
                         THEN 'signal' ELSE 'moved' END
           END AS verdict
      FROM pg_stat_activity a
     WHERE a.pid = %(pid)s
       AND a.backend_start = %(backend_start)s
       AND a.backend_type = 'client backend'
       AND a.pid <> pg_backend_pid()
       AND NOT (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
)
SELECT c.pid,
       CASE WHEN c.verdict = 'signal' AND g.protected IS NULL THEN pg_terminate_backend(c.pid) END AS signalled,
       c.verdict, c.state, c.query_start, c.xact_start, c.state_change,
       extract(epoch FROM now() - c.query_start)::float8 AS query_secs,
       extract(epoch FROM now() - c.xact_start)::float8 AS xact_secs,
       extract(epoch FROM now() - c.state_change)::float8 AS state_secs,
       g.protected, g.usename, g.application_name, g.datname, g.is_superuser
  FROM checked c LEFT JOIN guarded g ON g.pid = c.pid
