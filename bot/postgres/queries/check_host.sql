-- Extra facts for `pgsessions check` (server_info.sql gives version, recovery and the role's memberships).
-- Everything here is readable without superuser; managed services are recognised by their admin roles.
SELECT (SELECT setting::int FROM pg_settings WHERE name = 'track_activity_query_size') AS track_activity_query_size,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1)                    AS wal_receiver_status,
       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_superuser')      AS has_rds_roles,
       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cloudsqlsuperuser')  AS has_cloudsql_roles,
       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'azure_pg_admin')     AS has_azure_roles,
       (SELECT string_agg(r.rolname, ',' ORDER BY r.rolname)
          FROM pg_roles r
         WHERE r.rolname IN ('rds_superuser', 'cloudsqlsuperuser', 'azure_pg_admin')
           AND pg_has_role(current_user, r.oid, 'MEMBER'))                  AS admin_roles,
       current_setting('superuser_reserved_connections')::int               AS superuser_reserved_connections,
       -- PostgreSQL 16+: slots kept for members of pg_use_reserved_connections (NULL on 15)
       current_setting('reserved_connections', true)::int                   AS reserved_connections,
       (SELECT pg_has_role(current_user, r.oid, 'USAGE')
          FROM pg_roles r WHERE r.rolname = 'pg_use_reserved_connections') AS can_use_reserved
