# Shared by the benchmark scripts (source it): the contacts of the runtime
# workload (bench/runtime/), deterministic — scores uniform over 0–99,
# three plans, five countries — and a clock.

BENCH_CONTACTS_SCHEMA=$(dirname "${BASH_SOURCE[0]}")/runtime/schema.sql

contacts_select() { # $1 = N, $2 = sqlite|postgres, $3 = first id (postgres; default 1); columns id, email, plan, score, country
  local n=$1 first=${3:-1}
  case $2 in
    sqlite) echo "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $n)
      SELECT i, 'c' || i || '@example.com',
             CASE i % 3 WHEN 0 THEN 'trial' WHEN 1 THEN 'pro' ELSE 'free' END,
             (i * 7919) % 100,
             CASE i % 5 WHEN 0 THEN 'DE' WHEN 1 THEN 'FR' WHEN 2 THEN 'AT' WHEN 3 THEN 'US' ELSE 'CH' END
      FROM s" ;;
    postgres) echo "SELECT i, 'c' || i || '@example.com',
             CASE i % 3 WHEN 0 THEN 'trial' WHEN 1 THEN 'pro' ELSE 'free' END,
             (i::bigint * 7919) % 100,
             CASE i % 5 WHEN 0 THEN 'DE' WHEN 1 THEN 'FR' WHEN 2 THEN 'AT' WHEN 3 THEN 'US' ELSE 'CH' END
      FROM generate_series($first, $first + $n - 1) AS i" ;;
  esac
}

# $1 = admin URL (…/postgres), $2 = database name, $3 = N: the database
# dropped if it exists, created, and loaded with N contacts.
pg_contacts_db() {
  local admin=$1 db=$2 n=$3
  psql -q "$admin" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  { cat "$BENCH_CONTACTS_SCHEMA"; echo "INSERT INTO contacts $(contacts_select "$n" postgres);"
    echo "VACUUM ANALYZE contacts;"; } | psql -q -v ON_ERROR_STOP=1 "${admin%/*}/$db"
}

now() { date +%s.%N; }
