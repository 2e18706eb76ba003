-- Facts about the server and the bot's own role, read with every listing.
-- Role checks ask for the privileges of a role ('USAGE', as PostgreSQL's own has_privs_of_role does),
-- not bare membership: a NOINHERIT member cannot use them. A role that exists only on some versions is
-- looked up in pg_roles (NULL where it does not exist), never named to pg_has_role.
SELECT current_setting('server_version_num')::int                AS server_version_num,
       current_setting('server_version')                         AS server_version,
       current_setting('max_connections')::int                   AS max_connections,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend')::int             AS client_connections,
       pg_is_in_recovery()                                       AS in_recovery,
       pg_backend_pid()                                          AS bot_pid,
       current_user                                              AS bot_user,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS bot_is_superuser,
       pg_has_role(current_user, 'pg_signal_backend', 'USAGE')   AS bot_can_signal,
       pg_has_role(current_user, 'pg_monitor', 'USAGE')          AS bot_can_monitor,
       -- what the bot needs to see every session (pg_monitor includes it, but is not required)
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')   AS bot_can_read_stats,
       -- PostgreSQL 18+: may cancel autovacuum workers (NULL before 18: no such role)
       (SELECT pg_has_role(current_user, r.oid, 'USAGE')
          FROM pg_roles r WHERE r.rolname = 'pg_signal_autovacuum_worker') AS bot_can_signal_autovacuum
