-- One database's facts for clear-db, and what the bot's role may do to it (runs on the primary).
--
-- bot_can_alter: ALTER DATABASE ... WITH ALLOW_CONNECTIONS needs the database's owner (or a role that
-- inherits the owner's privileges) or a superuser; pg_has_role(..., 'USAGE') answers exactly that and is
-- true for a superuser. postmaster_start + port identify the server (to recognise the bot's own state
-- database) without any privilege.
--
-- Parameters: database (text).
SELECT d.datname                                          AS name,
       d.oid::bigint                                      AS oid,
       d.datistemplate                                    AS is_template,
       d.datallowconn                                     AS allow_connections,
       d.datconnlimit                                     AS conn_limit,
       pg_get_userbyid(d.datdba)                          AS owner,
       current_user                                       AS bot_user,
       coalesce(me.rolsuper, false)                       AS bot_is_superuser,
       pg_has_role(current_user, d.datdba, 'USAGE')       AS bot_can_alter,
       current_database()                                 AS bot_database,
       pg_backend_pid()                                   AS bot_pid,
       extract(epoch FROM pg_postmaster_start_time())::text AS postmaster_start,
       current_setting('port')                            AS port,
       pg_is_in_recovery()                                AS in_recovery,
       (SELECT count(*) FROM pg_prepared_xacts p WHERE p.database = d.datname)::int    AS prepared_xacts,
       (SELECT count(*) FROM pg_replication_slots s WHERE s.database = d.datname)::int AS logical_slots
  FROM pg_database d
  LEFT JOIN pg_roles me ON me.rolname = current_user
 WHERE d.datname = %(database)s
