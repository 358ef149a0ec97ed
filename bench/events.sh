#!/usr/bin/env bash
# Benchmark: events decided in batches against the same decisions on a
# schedule (issue 14), on SQLite and on PostgreSQL, in one run.
#
# N contacts (the runtime benchmark's, bench/runtime/) through its
# three-step track, 3 record-steps each:
#   schedule: the track as written (`on every 1h`), `trackc run --once
#             --no-deliver` over all N contacts;
#   events:   the same track `on event touch` instead, N events for the N
#             distinct keys (shuffled), raised with `trackc emit touch
#             --keys-from FILE --db URL`, then `trackc run --once
#             --no-deliver`, which decides them.
# Both on a fresh database of the same kind. Also the rate at which events
# are accepted: through `--keys-from` (above) and through the HTTP API of
# a `trackc node` (POST /emit, arrays of 10,000, one request at a time).
#
# Each decision measurement is repeated (the schedule and the events in
# turn, each on a fresh database) and the medians are reported: on a
# 2-core machine one run of either moves by ±15 %.
#
# Prints per repetition, then per database:
#   RUN db=<kind> schedule_record_steps_per_s=<x> events_record_steps_per_s=<y>
#   RESULT db=<kind> contacts=<n> schedule_record_steps_per_s=<x> events_record_steps_per_s=<y> ratio=<y/x> keys_from_events_per_s=<k> api_events_per_s=<a>
# (medians; the API's rate is measured once, after the last repetition).
#
# CONTACTS=100000 by default; REPEAT=3; DBS="sqlite postgres";
# PG_ADMIN=postgres://postgres@127.0.0.1:5432/postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-100000}
REPEAT=${REPEAT:-3}
DBS=${DBS:-"sqlite postgres"}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=$PWD/bench/out/events
mkdir -p "$OUT"
source bench/lib.sh
cargo build --release --quiet
BIN=$PWD/target/release/trackc
SCHEDULED=$PWD/bench/runtime
EVENTS=$OUT/tracks
mkdir -p "$EVENTS"
cp "$SCHEDULED/schema.sql" "$EVENTS/"
sed 's/on every 1h/on event touch/' "$SCHEDULED/three_steps.dt" > "$EVENTS/three_steps.dt"
grep -q 'on event touch' "$EVENTS/three_steps.dt"
seq 1 "$CONTACTS" | shuf --random-source=<(yes) > "$OUT/keys"
TOKEN=bench-operator-token
TOKEN_SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
NODE=""
trap '[ -z "$NODE" ] || kill "$NODE" 2> /dev/null || true' EXIT

fresh() { # $1 = kind, $2 = name: a fresh database with the contacts; prints its URL
  if [ "$1" = sqlite ]; then
    local db="$OUT/$2.db"
    rm -f "$db" "$db-wal" "$db-shm"
    { cat "$SCHEDULED/schema.sql"; echo "INSERT INTO contacts $(contacts_select "$CONTACTS" sqlite);"; } | sqlite3 "$db"
    echo "sqlite:$db"
  else
    pg_contacts_db "$PG_ADMIN" "trackc_bench_$2" "$CONTACTS" > /dev/null
    echo "${PG_ADMIN%/*}/trackc_bench_$2"
  fi
}

count() { # $1 = URL, $2 = query of one number
  case $1 in
    sqlite:*) sqlite3 "${1#sqlite:}" "$2" ;;
    *) psql -qAt "$1" -c "$2" ;;
  esac
}

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" "$2"; }

# record-steps/s of `trackc run --once` over $2's tracks on $1; checks
# every contact was decided in its three steps.
run_once() {
  "$BIN" run --once --no-deliver --db "$1" "$2" > "$OUT/run.out" 2> "$OUT/run.err" \
    || { cat "$OUT/run.err"; exit 1; }
  local steps secs
  steps=$(field record_steps "$OUT/run.out") secs=$(field seconds "$OUT/run.out")
  [ "$steps" = $((3 * CONTACTS)) ] || { echo "record_steps=$steps, not $((3 * CONTACTS))" >&2; cat "$OUT/run.out" >&2; exit 1; }
  python3 -c "print(f'{$steps / $secs:.0f}')"
}

# Events accepted per second through POST /emit of a node on $1.
api_rate() {
  local url=$1 port peer t0 t1
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  peer=$(python3 -c 'import socket; s = socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$OUT/node.toml" <<EOF
id = 1
listen = "127.0.0.1:$peer"
http = "127.0.0.1:$port"
peers = ["127.0.0.1:$peer"]
database = "$url"
secret = "the group secret of the benchmark"
[[users]]
name = "bench"
role = "operator"
token_sha256 = "$TOKEN_SHA"
EOF
  "$BIN" node --config "$OUT/node.toml" > /dev/null 2> "$OUT/node.log" &
  NODE=$!
  for _ in $(seq 1 300); do
    "$BIN" status --to "http://127.0.0.1:$port" --token "$TOKEN" > /dev/null 2>&1 && break
    sleep 0.1
  done
  # Bodies of 10,000 events (the API's limit), made before the clock starts.
  split -l 10000 -d "$OUT/keys" "$OUT/part."
  for part in "$OUT"/part.*; do
    python3 -c 'import json, sys; print(json.dumps([{"event": "ping", "key": k.strip()} for k in open(sys.argv[1])]))' \
      "$part" > "$part.json"
  done
  t0=$(now)
  for part in "$OUT"/part.*.json; do
    curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      --data-binary "@$part" "http://127.0.0.1:$port/emit" > /dev/null \
      || { echo "POST /emit failed; log in $OUT/node.log" >&2; exit 1; }
  done
  t1=$(now)
  kill "$NODE"; wait "$NODE" 2> /dev/null || true; NODE=""
  rm -f "$OUT"/part.*
  python3 -c "print(f'{$CONTACTS / ($t1 - $t0):.0f}')"
}

median() { python3 -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.0f}")' "$@"; }

for kind in $DBS; do
  schedules=() eventss=() keys_froms=()
  for _ in $(seq 1 "$REPEAT"); do
    url=$(fresh "$kind" events_schedule)
    schedules+=("$(run_once "$url" "$SCHEDULED")")

    url=$(fresh "$kind" events_events)
    t0=$(now)
    "$BIN" emit touch --keys-from "$OUT/keys" --db "$url" > "$OUT/emit.out" 2>&1 \
      || { cat "$OUT/emit.out"; exit 1; }
    t1=$(now)
    keys_froms+=("$(python3 -c "print(f'{$CONTACTS / ($t1 - $t0):.0f}')")")
    eventss+=("$(run_once "$url" "$EVENTS")")
    echo "RUN db=$kind schedule_record_steps_per_s=${schedules[-1]} events_record_steps_per_s=${eventss[-1]}"
  done
  schedule=$(median "${schedules[@]}") events=$(median "${eventss[@]}") keys_from=$(median "${keys_froms[@]}")
  left=$(count "$url" "SELECT count(*) FROM trackc_events WHERE done_at IS NULL")
  [ "$left" = 0 ] || { echo "$left events left undecided" >&2; exit 1; }
  api=$(api_rate "$url")
  [ "$kind" = postgres ] && psql -q "$PG_ADMIN" \
    -c "DROP DATABASE trackc_bench_events_schedule WITH (FORCE)" \
    -c "DROP DATABASE trackc_bench_events_events WITH (FORCE)"
  python3 -c "print(f'RESULT db=$kind contacts=$CONTACTS schedule_record_steps_per_s=$schedule events_record_steps_per_s=$events ratio={$events / $schedule:.2f} keys_from_events_per_s=$keys_from api_events_per_s=$api')"
done
