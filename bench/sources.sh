#!/usr/bin/env bash
# Benchmark: a track's source in MariaDB against the same source in the
# state database (issue 20). N contacts (bench/lib.sh, the runtime
# workload's) through the three steps of bench/runtime/ (without its
# UPDATE, which would need the contacts in the state database), with
# `trackc run --once --no-deliver`: record-steps per second, state in
# SQLite and in PostgreSQL, each run on a fresh state database; the
# median of REPEAT runs.
#
# Prints per state database and source:
#   RESULT state=<sqlite|postgres> source=<state|mariadb> contacts=<n> record_steps=<n> seconds=<s> record_steps_per_s=<x>
#   RATIO state=<…> mariadb_over_state=<r>   (record-steps/s with MariaDB ÷ in the state database)
#
# N=100000, REPEAT=3, STATES="sqlite postgres",
# PG_ADMIN=postgres://postgres@127.0.0.1:5432/postgres,
# MARIADB=mysql://root@127.0.0.1:3306 (the `mariadb` client reads the same
# server as root).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
REPEAT=${REPEAT:-3}
STATES=${STATES:-"sqlite postgres"}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
MARIADB=${MARIADB:-mysql://root@127.0.0.1:3306}
OUT=bench/out/sources
mkdir -p "$OUT"
source bench/lib.sh
cargo build --release --quiet --bin trackc
BIN=target/release/trackc

# The track, twice: reading the state database, and `from crm`.
sed -e "s/when score = 0 then sql { UPDATE contacts SET plan = 'cold' WHERE id = :id }, goto notify/when score = 0 then goto notify/" \
  bench/runtime/three_steps.dt > "$OUT/state.dt"
grep -q "sql {" "$OUT/state.dt" && { echo "the UPDATE was not taken out" >&2; exit 1; }
sed -e 's/source key id/source from crm key id/' "$OUT/state.dt" > "$OUT/mariadb.dt"
cp "$BENCH_CONTACTS_SCHEMA" "$OUT/schema.sql"
cat > "$OUT/crm.sql" <<'EOF'
CREATE TABLE contacts (
    id      BIGINT PRIMARY KEY,
    email   VARCHAR(200),
    plan    VARCHAR(20) NOT NULL,
    score   BIGINT NOT NULL,
    country CHAR(2) NOT NULL
);
EOF

# The MariaDB source, loaded once (MariaDB's sequence engine makes the rows).
CRM_DB=trackc_bench_crm
mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $CRM_DB; CREATE DATABASE $CRM_DB"
{ cat "$OUT/crm.sql"
  echo "INSERT INTO contacts SELECT seq, CONCAT('c', seq, '@example.com'),
    CASE seq % 3 WHEN 0 THEN 'trial' WHEN 1 THEN 'pro' ELSE 'free' END,
    (seq * 7919) % 100,
    CASE seq % 5 WHEN 0 THEN 'DE' WHEN 1 THEN 'FR' WHEN 2 THEN 'AT' WHEN 3 THEN 'US' ELSE 'CH' END
    FROM seq_1_to_$N;"
  echo "ANALYZE TABLE contacts;"; } | mariadb -uroot -h127.0.0.1 "$CRM_DB" > /dev/null

fresh_state() { # $1 = sqlite|postgres, $2 = load the contacts too (yes|no): prints the URL
  case $1 in
    sqlite)
      local f="$OUT/state.db"
      rm -f "$f" "$f-wal" "$f-shm"
      if [ "$2" = yes ]; then
        { cat "$OUT/schema.sql"; echo "INSERT INTO contacts $(contacts_select "$N" sqlite);"; } | sqlite3 "$f"
      fi
      echo "sqlite:$f" ;;
    postgres)
      if [ "$2" = yes ]; then
        pg_contacts_db "$PG_ADMIN" trackc_bench_sources "$N" > /dev/null
      else
        psql -q "$PG_ADMIN" -c "SET client_min_messages = warning" \
          -c "DROP DATABASE IF EXISTS trackc_bench_sources WITH (FORCE)" \
          -c "CREATE DATABASE trackc_bench_sources" > /dev/null
      fi
      echo "${PG_ADMIN%/*}/trackc_bench_sources" ;;
  esac
}

median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

declare -A RATE
for state in $STATES; do
  for source in state mariadb; do
    rates=(); secs=(); steps=0
    for _ in $(seq "$REPEAT"); do
      if [ "$source" = state ]; then
        url=$(fresh_state "$state" yes)
        line=$("$BIN" run --once --no-deliver --db "$url" --schema "$OUT/schema.sql" "$OUT/state.dt" 2>/dev/null | grep '^runs=')
      else
        url=$(fresh_state "$state" no)
        line=$("$BIN" run --once --no-deliver --db "$url" --schema "crm=$OUT/crm.sql" \
          --source-db "crm=$MARIADB/$CRM_DB" "$OUT/mariadb.dt" 2>/dev/null | grep '^runs=')
      fi
      steps=$(sed -E 's/.*record_steps=([0-9]+).*/\1/' <<< "$line")
      s=$(sed -E 's/.* seconds=([0-9.]+).*/\1/' <<< "$line")
      secs+=("$s")
      rates+=("$(awk -v n="$steps" -v s="$s" 'BEGIN {printf "%.0f", n / s}')")
    done
    rate=$(printf '%s\n' "${rates[@]}" | median)
    sec=$(printf '%s\n' "${secs[@]}" | median)
    RATE[$state.$source]=$rate
    echo "RESULT state=$state source=$source contacts=$N record_steps=$steps seconds=$sec record_steps_per_s=$rate"
  done
  awk -v m="${RATE[$state.mariadb]}" -v s="${RATE[$state.state]}" -v st="$state" \
    'BEGIN {printf "RATIO state=%s mariadb_over_state=%.2f\n", st, m / s}'
done
mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $CRM_DB"
psql -q "$PG_ADMIN" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS trackc_bench_sources WITH (FORCE)" > /dev/null 2>&1 || true
