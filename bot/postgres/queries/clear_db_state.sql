-- Whether a database accepts new connections now (NULL row: it does not exist).
-- Parameters: database (text).
SELECT d.datallowconn AS allow_connections, d.oid::bigint AS oid
  FROM pg_database d
 WHERE d.datname = %(database)s
