#!/usr/bin/env bash
# Benchmark: the runtime on one node (issue 4). N contacts through the
# three-step track of bench/runtime/ (no waits, so every contact is decided
# in all three steps in one run: 3 record-steps each; e-mails for 10 %,
# webhooks for 5 %, an UPDATE for 1 %), with `trackc run --once
# --no-deliver`, on SQLite and on PostgreSQL, in one run.
#
# Peer, same run, same database: the same outcome written by hand as
# set-based SQL (one INSERT … SELECT of every final state, one per outbox
# kind, the UPDATE), the floor of what any engine writing these rows costs.
#
# Prints per database, size and history setting (HISTORY="on off"):
#   RESULT db=<sqlite|postgres> history=<on|off> contacts=<n> record_steps=<n> seconds=<s> record_steps_per_s=<x> peak_rss_mb=<m> setsql_seconds=<s> ratio_over_setsql=<r>
#
# SIZES="1000000 100000" by default (the second shows memory does not grow
# with the table); DBS="sqlite postgres";
# PG_ADMIN=postgres://postgres@127.0.0.1:5432/postgres. With history on, a
# HISTORY line gives its rows and bytes per row (table and indexes).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"1000000 100000"}
DBS=${DBS:-"sqlite postgres"}
# The decision history's cost: each size and database with it on, then off.
HISTORY=${HISTORY:-"on off"}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=bench/out/runtime
mkdir -p "$OUT"
source bench/lib.sh
cargo build --release --quiet
BIN=target/release/trackc
TRACKS=bench/runtime

setsql() { # $1 = dialect: the same final rows as the track, set-based
  local text key json
  if [ "$1" = sqlite ]; then
    key="CAST(id AS TEXT)"; json="json_object('id', id, 'email', email, 'plan', plan, 'score', score, 'country', country)"
  else
    key="id::text"; json="json_build_object('id', id, 'email', email, 'plan', plan, 'score', score, 'country', country)::text"
  fi
  cat <<EOF
CREATE TABLE set_state (track TEXT, key TEXT, step TEXT, entered_at BIGINT, wake_at BIGINT,
  seq BIGINT, run_id BIGINT, PRIMARY KEY (track, key));
CREATE TABLE set_outbox (id TEXT PRIMARY KEY, kind TEXT, track TEXT, key TEXT, target TEXT,
  recipient TEXT, payload TEXT, created_at BIGINT);
BEGIN;
INSERT INTO set_state SELECT 'b', $key, NULL, 0, NULL, 3, 1 FROM contacts;
INSERT INTO set_outbox SELECT 'b/' || id || '/3/0', 'email', 'b', $key, 'vip', email, $json, 0
  FROM contacts WHERE score >= 90;
INSERT INTO set_outbox SELECT 'b/' || id || '/3/0', 'webhook', 'b', $key, 'http://127.0.0.1:9/bench',
  NULL, $json, 0 FROM contacts WHERE score BETWEEN 10 AND 14;
UPDATE contacts SET plan = 'cold' WHERE score = 0;
COMMIT;
EOF
}

measure() { # $1 = db kind, $2 = N, $3 = URL, $4 = command running SQL from stdin, $5 = history on|off
  local kind=$1 n=$2 url=$3 sqlcmd=$4 history=$5
  local t0 t1 setsecs flags=()
  [ "$history" = off ] && flags=(--no-history)
  t0=$(now); setsql "$kind" | $sqlcmd > /dev/null; t1=$(now)
  setsecs=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  /usr/bin/time -f '%M' -o "$OUT/rss" "$BIN" run --once --no-deliver "${flags[@]}" --db "$url" "$TRACKS" \
    > "$OUT/stdout" 2> "$OUT/stderr" || { cat "$OUT/stderr"; exit 1; }
  python3 - "$kind" "$n" "$setsecs" "$OUT/stdout" "$OUT/rss" "$history" <<'PY'
import re, sys
kind, n, setsecs, out, rss, history = sys.argv[1:]
line = open(out).read()
steps = int(re.search(r"record_steps=(\d+)", line).group(1))
secs = float(re.search(r"seconds=([\d.]+)", line).group(1))
errors = int(re.search(r"errors=(\d+)", line).group(1))
assert steps == 3 * int(n) and errors == 0, line
rss_mb = int(open(rss).read().split()[-1]) / 1024
print(f"RESULT db={kind} history={history} contacts={n} record_steps={steps} seconds={secs:.2f} "
      f"record_steps_per_s={steps / secs:.0f} peak_rss_mb={rss_mb:.0f} "
      f"setsql_seconds={setsecs} ratio_over_setsql={secs / float(setsecs):.2f}")
PY
}

for n in $SIZES; do
  for history in $HISTORY; do
  if [[ " $DBS " == *" sqlite "* ]]; then
  db="$OUT/bench$n.db"
  rm -f "$db" "$db-wal" "$db-shm"
  { cat "$TRACKS/schema.sql"; echo "INSERT INTO contacts $(contacts_select "$n" sqlite);"; } | sqlite3 "$db"
  measure sqlite "$n" "sqlite:$db" "sqlite3 $db" "$history"
  if [ "$history" = on ]; then
    echo "HISTORY db=sqlite contacts=$n rows=$(sqlite3 "$db" 'SELECT count(*) FROM trackc_history') bytes_per_change=$(sqlite3 "$db" "SELECT (SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'trackc_history%') / $n" 2>/dev/null || echo '?')"
  fi
  fi
  [[ " $DBS " == *" postgres "* ]] || continue

  pgdb="trackc_bench_$n"
  base=${PG_ADMIN%/*}
  pg_contacts_db "$PG_ADMIN" "$pgdb" "$n"
  measure postgres "$n" "$base/$pgdb" "psql -q -v ON_ERROR_STOP=1 $base/$pgdb" "$history"
  if [ "$history" = on ]; then
    echo "HISTORY db=postgres contacts=$n rows=$(psql -qtA "$base/$pgdb" -c 'SELECT count(*) FROM trackc_history') bytes_per_change=$(psql -qtA "$base/$pgdb" -c "SELECT pg_total_relation_size('trackc_history') / $n")"
  fi
  psql -q "$PG_ADMIN" -c "DROP DATABASE $pgdb WITH (FORCE)"
  done
done
