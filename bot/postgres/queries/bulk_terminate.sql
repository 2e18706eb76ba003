-- Terminate one batch of an approved snapshot: the re-check and the signal are ONE statement.
--
-- A snapshot row is signalled only if a client backend with the same pid AND the same backend_start
-- (pids are reused) still exists, is not the bot's own connection, is still on the approved database,
-- still is in the approved state (state_like, e.g. 'idle'), and has not been used since the listing
-- (state_change unchanged, when the snapshot has one). Sessions pg_terminate_backend() would refuse
-- with an ERROR (superuser sessions for a non-superuser bot, other roles' sessions without
-- pg_signal_backend) are never passed to it, so one such session cannot abort the whole batch.
-- pg_terminate_backend(pid) without a timeout only sends the signal; the caller then waits for the
-- batch to go (bulk_remaining.sql): with a timeout each call would wait in turn.
--
-- protect (issue 23 §11) is re-checked here too: a session of the bot's own state store (own_user, own_db,
-- own_app) is 'protected'; one that protect_superusers / protect_roles / protect_apps / protect_dbs names
-- now is 'protected_rule' (usename, application_name, datname, is_superuser say which rule).
--
-- verdict: gone | protected | moved | skipped_state | skipped_used | refused_super | refused_role |
-- protected_rule | signal
-- Parameters: pids (int[]), starts (timestamptz[]), state_changes (timestamptz[], NULL elements allowed),
-- database (text or NULL), state_like (text or NULL), protect_superusers (boolean), protect_roles,
-- protect_apps, protect_dbs (text[]), own_user, own_db, own_app (text or NULL).
WITH me AS (
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal
),
snap AS (
    SELECT s.pid, s.backend_start, s.state_change
      FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[], %(state_changes)s::timestamptz[])
           AS s(pid, backend_start, state_change)
),
checked AS (
    SELECT snap.pid,
           snap.backend_start,
           a.state,
           extract(epoch FROM now() - a.state_change)::float8 AS state_secs,
           a.usename, a.application_name, a.datname, coalesce(r.rolsuper, false) AS is_superuser,
           CASE
               WHEN a.pid IS NULL
                   THEN 'gone'
               WHEN a.pid = pg_backend_pid()
                    OR (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
                    OR (%(own_user)s::text IS NOT NULL AND a.usename = %(own_user)s::text
                        AND a.datname = %(own_db)s::text AND a.application_name = %(own_app)s::text)
                   THEN 'protected'
               WHEN %(database)s::text IS NOT NULL AND a.datname IS DISTINCT FROM %(database)s::text
                   THEN 'moved'
               WHEN %(state_like)s::text IS NOT NULL AND a.state NOT LIKE %(state_like)s::text
                   THEN 'skipped_state'
               WHEN snap.state_change IS NOT NULL AND a.state_change IS DISTINCT FROM snap.state_change
                   THEN 'skipped_used'
               WHEN coalesce(r.rolsuper, false) AND NOT me.is_super
                   THEN 'refused_super'
               WHEN NOT me.is_super AND NOT me.can_signal AND NOT pg_has_role(current_user, a.usesysid, 'USAGE')
                   THEN 'refused_role'
               WHEN (%(protect_superusers)s::boolean AND coalesce(r.rolsuper, false))
                    OR a.usename = ANY (%(protect_roles)s::text[])
                    OR a.application_name = ANY (%(protect_apps)s::text[])
                    OR a.datname = ANY (%(protect_dbs)s::text[])
                   THEN 'protected_rule'
               ELSE 'signal'
           END AS verdict
      FROM snap
      CROSS JOIN me
      LEFT JOIN pg_stat_activity a
             ON a.pid = snap.pid
            AND a.backend_start = snap.backend_start
            AND a.backend_type = 'client backend'
      LEFT JOIN pg_roles r ON r.oid = a.usesysid
)
SELECT c.pid,
       c.backend_start,
       c.state,
       c.state_secs,
       c.verdict,
       CASE WHEN c.verdict = 'signal' THEN pg_terminate_backend(c.pid) END AS signalled,
       c.usename, c.application_name, c.datname, c.is_superuser
  FROM checked c
