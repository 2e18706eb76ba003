-- Cancel the running query of one backend, re-checked in the same statement: the same pid AND the
-- same backend_start (pids are reused), still a client backend (or an autovacuum worker, never in a run
-- to prevent wraparound), never the bot's own connections, AND
-- still running the query the approver saw: in a state where a query runs (running_states, bound from
-- bot.postgres.models.QUERY_RUNNING_STATES, the same list that decides where Cancel is offered), the
-- state it was listed in, and the same start: query_start for 'active', state_change for a fastpath
-- function call (which leaves query_start at the previous query's). Which one is bound_by, chosen by
-- bot.postgres.signals.binding_key. A pooled backend runs many queries; a later one is never cancelled
-- by an approval of an earlier one.
--
-- A request made by an earlier release has no query_start / state_change: then the query that runs now
-- is the listed one exactly when it began at or before the listing (listed_before: listed_secs_ago
-- seconds before now, on this server's clock) and still runs. A NULL never matches (fail closed).
--
-- No row: the backend is gone (or is not one the bot may touch). verdict 'moved': the backend is there
-- but doing something else now (nothing is signalled; state/query_start/xact_start say what).
-- Parameters: pid, backend_start, listed_state, bound_by, query_start, state_change, listed_secs_ago,
-- running_states (text[]).
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
               WHEN a.state = ANY(%(running_states)s::text[])
                    AND a.state = %(listed_state)s::text
                    AND CASE %(bound_by)s::text
                            WHEN 'query_start'
                                THEN a.query_start = %(query_start)s::timestamptz
                                     OR (%(query_start)s::timestamptz IS NULL AND a.query_start <= p.listed_before)
                            ELSE a.state_change = %(state_change)s::timestamptz
                                 OR (%(state_change)s::timestamptz IS NULL AND a.state_change <= p.listed_before)
                        END
                   THEN 'signal'
               ELSE 'moved'
           END AS verdict
      FROM pg_stat_activity a CROSS JOIN p
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
