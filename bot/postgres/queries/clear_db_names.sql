-- Every database name (to suggest the one meant when a clear-db name does not exist).
SELECT datname FROM pg_database ORDER BY datname
