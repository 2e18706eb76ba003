-- Terminate one backend, re-checked in the same statement (same pid AND backend_start, client backend,
-- not the bot) AND still doing what the approver saw. What binds it (bound_by, chosen from the listed
-- state by bot.postgres.signals.binding_key) is:
--   xact_start    listed 'idle in transaction…': the same transaction, whatever it does now;
--   query_start   listed 'active': still 'active', running the same query (a session whose listed
--                 query ended and that now sits idle in transaction keeps that query_start: it is NOT
--                 the session approved);
--   state_change  anything else ('idle', 'fastpath function call', …): the same state, unchanged since
--                 (idle: not used since; a fastpath call: the same call).
-- A request made by an earlier release has no query_start / xact_start / state_change: then the query,
-- transaction or idle period going on now is the listed one exactly when it began at or before the
-- listing (listed_before: listed_secs_ago seconds before now, on this server's clock) and still goes
-- on. A NULL never matches (fail closed). The timeout form of pg_terminate_backend waits: true only once
-- the backend is gone.
--
-- No row: the backend is gone (or is not one the bot may touch). verdict 'moved': nothing is signalled.
-- Parameters: pid, backend_start, listed_state, bound_by, query_start, xact_start, state_change,
-- listed_secs_ago, timeout_ms.
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
p AS (
    -- the listing moment on this server's clock: this statement's start minus the seconds since the
    -- listing (measured by the bot just before), so the bot's and the server's clocks need not agree
    SELECT statement_timestamp() - make_interval(secs => %(listed_secs_ago)s::float8) AS listed_before
), checked AS (
    SELECT a.pid, a.state, a.query_start, a.xact_start, a.state_change,
           CASE
               WHEN CASE %(bound_by)s::text
                        WHEN 'xact_start'
                            THEN a.xact_start = %(xact_start)s::timestamptz
                                 OR (%(xact_start)s::timestamptz IS NULL AND a.xact_start <= p.listed_before)
                        WHEN 'query_start'
                            THEN a.state = %(listed_state)s::text
                                 AND (a.query_start = %(query_start)s::timestamptz
                                      OR (%(query_start)s::timestamptz IS NULL
                                          AND a.query_start <= p.listed_before))
                        ELSE a.state IS NOT DISTINCT FROM %(listed_state)s::text
                             AND (a.state_change = %(state_change)s::timestamptz
                                  OR (%(state_change)s::timestamptz IS NULL
                                      AND a.state_change <= p.listed_before))
                    END
                   THEN 'signal'
               ELSE 'moved'
           END AS verdict
      FROM pg_stat_activity a CROSS JOIN p
     WHERE a.pid = %(pid)s
       AND a.backend_start = %(backend_start)s
       AND a.backend_type = 'client backend'
       AND a.pid <> pg_backend_pid()
       AND NOT (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
)
SELECT c.pid,
       CASE WHEN c.verdict = 'signal' AND g.protected IS NULL THEN pg_terminate_backend(c.pid, %(timeout_ms)s) END AS signalled,
       c.verdict, c.state, c.query_start, c.xact_start, c.state_change,
       extract(epoch FROM now() - c.query_start)::float8 AS query_secs,
       extract(epoch FROM now() - c.xact_start)::float8 AS xact_secs,
       extract(epoch FROM now() - c.state_change)::float8 AS state_secs,
       g.protected, g.usename, g.application_name, g.datname, g.is_superuser
  FROM checked c LEFT JOIN guarded g ON g.pid = c.pid
