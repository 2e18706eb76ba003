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
-- verdict: gone | protected | moved | skipped_state | skipped_used | refused_super | refused_role | signal
-- Parameters: pids (int[]), starts (timestamptz[]), state_changes (timestamptz[], NULL elements allowed),
-- database (text or NULL), state_like (text or NULL).
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
           CASE
               WHEN a.pid IS NULL
                   THEN 'gone'
               WHEN a.pid = pg_backend_pid()
                    OR (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
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
       CASE WHEN c.verdict = 'signal' THEN pg_terminate_backend(c.pid) END AS signalled
  FROM checked c
