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
           AND pg_has_role(current_user, r.oid, 'MEMBER'))                  AS admin_roles
