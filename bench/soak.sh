#!/usr/bin/env bash
# Soak (issue 13): three `trackc node`s on a private PostgreSQL cluster,
# for SOAK_SECONDS under random faults, while events are emitted all the
# time and new contacts keep arriving. Then the faults stop, the group is
# given time to finish, and the script checks:
#   - every contact welcomed exactly once (a scheduled track, `on every 5s`);
#   - every recorded event decided exactly once (an event track, one
#     effect per event: the keys are unique), none left pending;
#   - every node process alive at the end;
#   - node 1's RSS flat: it is never killed, so its memory spans the whole
#     soak; growth from the end of the first minute (or the first quarter
#     of a short soak) to the end must stay under RSS_GROWTH_MAX_PERCENT.
# Faults, one every 3–8 s, chosen at random:
#   kill -9 of node 2 or 3 and a restart 1–3 s later; SIGSTOP of any node
#   for 1.5–3 s (past the failure timeout of 4 cycles of 200 ms) and
#   SIGCONT; every database connection terminated; PostgreSQL restarted
#   in `fast` mode; PostgreSQL restarted in `immediate` mode (a crash).
#
# Prints the faults as they happen and one line at the end:
#   RESULT soak_seconds=… faults=… kills=… pauses=… terminations=… pg_fast=… pg_immediate=…
#          events=… contacts=… duplicates=0 missing=0 rss_start_mb=… rss_end_mb=… rss_growth_percent=…
# and exits non-zero if a check fails. Results go to bench/out/soak.
#
# EVENTS_PER_SECOND=2 (an event track decides one event per run today,
# about five a second with a cycle of 200 ms: issue 14 batches them);
# SOAK_SECONDS=600 by default; KEEP=1 leaves the nodes and the cluster
# running at the end, to look inside; ITEMS=20000 contacts at the start;
# SEED for the fault schedule (default: the time); BIN=trackc to test
# (default: a release build of this checkout); TRACKC_PG_BIN=the folder
# of initdb and pg_ctl (default: the newest under /usr/lib/postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS=${SOAK_SECONDS:-600}
ITEMS=${ITEMS:-20000}
SEED=${SEED:-$(date +%s)}
RSS_GROWTH_MAX_PERCENT=${RSS_GROWTH_MAX_PERCENT:-25}
EVENTS_PER_SECOND=${EVENTS_PER_SECOND:-2}
EVENT_PAUSE=$(python3 -c "print(1 / $EVENTS_PER_SECOND)")
OUT=$PWD/bench/out/soak
mkdir -p "$OUT"
RANDOM=$SEED
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/trackc
fi
BIN=$(realpath "$BIN")
PG_BIN=${TRACKC_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
[ -x "$PG_BIN/initdb" ] || { echo "error: no initdb in $PG_BIN (set TRACKC_PG_BIN)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/trackc-soak.XXXXXX)
chmod 777 "$WORK"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# As root, PostgreSQL runs as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGPORT=$(free_port)
pg_ctl() { as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" "$@"; }
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth=trust -E UTF8 >/dev/null
pg_ctl -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100" -w start >/dev/null
ADMIN=postgres://postgres@127.0.0.1:$PGPORT/postgres
URL=postgres://postgres@127.0.0.1:$PGPORT/soak
sql() { psql -qAt -v ON_ERROR_STOP=1 "$URL" -c "$1"; }

declare -A PID
stop_all() {
  touch "$WORK/stop"
  if [ -n "${KEEP:-}" ]; then
    echo "KEEP: nodes and PostgreSQL left running; database $URL, logs in $WORK" >&2
    return
  fi
  for i in 1 2 3; do
    [ -n "${PID[$i]:-}" ] && { kill -CONT "${PID[$i]}" 2>/dev/null; kill "${PID[$i]}" 2>/dev/null; } || true
  done
  wait 2>/dev/null || true
  pg_ctl -m immediate stop >/dev/null 2>&1 || true
  cp "$WORK"/node*.log "$OUT/" 2>/dev/null || true
  rm -rf "$WORK"
}
trap stop_all EXIT

psql -q "$ADMIN" -c "CREATE DATABASE soak"
psql -q -v ON_ERROR_STOP=1 "$URL" -f tests/fixtures/crash/schema.sql
sql "INSERT INTO items (id, n, email) SELECT i, i, 'c' || i || '@example.com' FROM generate_series(1, $ITEMS) i"
mkdir -p "$WORK/tracks"
cp tests/fixtures/crash/schema.sql "$WORK/tracks/schema.sql"
cat >"$WORK/tracks/soak.dt" <<'DT'
track welcome {
    source key id { SELECT id, n, email FROM items }
    on every 5s
    step one {
        when n >= 0 then sql { INSERT INTO effects (item, what) VALUES (:id, 'welcome') }, end
    }
}
track pinged {
    source key id { SELECT id, n, email FROM items }
    on event ping
    step one {
        when n >= 0 then sql { INSERT INTO effects (item, what) VALUES (:id, 'pinged') }, end
    }
}
DT

TOKEN=soak-admin-token
TOKEN_SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
for i in 1 2 3; do LISTEN[$i]=$(free_port); HTTP[$i]=$(free_port); done
PEERS="\"127.0.0.1:${LISTEN[1]}\", \"127.0.0.1:${LISTEN[2]}\", \"127.0.0.1:${LISTEN[3]}\""
for i in 1 2 3; do
  cat >"$WORK/node$i.toml" <<TOML
id = $i
listen = "127.0.0.1:${LISTEN[$i]}"
http = "127.0.0.1:${HTTP[$i]}"
peers = [$PEERS]
database = "$URL"
secret = "the group secret of the soak"
cycle = "200ms"
stuck_after = "5s"

[[users]]
name = "soak"
role = "admin"
token_sha256 = "$TOKEN_SHA"
TOML
done
start_node() { "$BIN" node --config "$WORK/node$1.toml" >>"$WORK/node$1.log" 2>&1 & PID[$1]=$!; }
for i in 1 2 3; do start_node "$i"; done
for _ in $(seq 100); do
  "$BIN" status --to "http://127.0.0.1:${HTTP[3]}" --token "$TOKEN" >/dev/null 2>&1 && break
  sleep 0.2
done
"$BIN" deploy "$WORK/tracks" --to "http://127.0.0.1:${HTTP[1]}" --token "$TOKEN"

# Events all the time, one key each, to whichever node answers; and new
# contacts every 2 s. Failures (a node down, the database restarting) are
# counted, not retried: the check reads which events were recorded.
emitter() {
  local key=1 node=1 ok=0 failed=0
  while [ ! -e "$WORK/stop" ]; do
    if "$BIN" emit ping --key "$key" --to "http://127.0.0.1:${HTTP[$node]}" --token "$TOKEN" >/dev/null 2>&1; then
      ok=$((ok + 1))
    else
      failed=$((failed + 1))
    fi
    key=$((key + 1)); node=$((node % 3 + 1))
    [ "$key" -gt "$ITEMS" ] && key=1 && echo "warning: keys wrapped; raise ITEMS" >&2
    sleep "$EVENT_PAUSE"
  done
  echo "$ok $failed" >"$WORK/emitted"
}
arrivals() {
  local next=$((ITEMS + 1))
  while [ ! -e "$WORK/stop" ]; do
    if sql "INSERT INTO items (id, n, email) SELECT i, i, 'x' FROM generate_series($next, $((next + 49))) i" 2>/dev/null; then
      next=$((next + 50))
    fi
    sleep 2
  done
}
# Seconds from PostgreSQL answering again to the next effect committed
# (events arrive every 1/EVENTS_PER_SECOND s, so this includes that wait).
work_flowing_after() {
  local before t0
  before=$(sql "SELECT count(*) FROM effects")
  t0=$(date +%s.%N)
  for _ in $(seq 600); do
    [ "$(sql "SELECT count(*) FROM effects" 2>/dev/null || echo "$before")" != "$before" ] && break
    sleep 0.1
  done
  python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')" | tee -a "$WORK/recovery"
}
rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
emitter & EMITTER=$!
arrivals & ARRIVALS=$!

declare -A COUNT=([kill]=0 [pause]=0 [terminate]=0 [pg_fast]=0 [pg_immediate]=0)
START=$(date +%s)
RSS_MARK=$(( SOAK_SECONDS / 4 < 60 ? SOAK_SECONDS / 4 : 60 ))
RSS_START=""
: >"$OUT/rss"
echo "soak: ${SOAK_SECONDS}s, seed $SEED, PostgreSQL on $PGPORT, work in $WORK"
while [ $(( $(date +%s) - START )) -lt "$SOAK_SECONDS" ]; do
  sleep $(( 3 + RANDOM % 6 ))
  elapsed=$(( $(date +%s) - START ))
  rss=$(rss_mb "${PID[1]}")
  echo "$elapsed $rss" >>"$OUT/rss"
  [ -z "$RSS_START" ] && [ "$elapsed" -ge "$RSS_MARK" ] && RSS_START=$rss
  case $(( RANDOM % 5 )) in
    0) n=$(( 2 + RANDOM % 2 )); kill -9 "${PID[$n]}"; wait "${PID[$n]}" 2>/dev/null || true
       echo "[$elapsed s] kill -9 node $n"; sleep $(( 1 + RANDOM % 3 )); start_node "$n"; COUNT[kill]=$(( COUNT[kill] + 1 )) ;;
    1) n=$(( 1 + RANDOM % 3 )); kill -STOP "${PID[$n]}"; echo "[$elapsed s] SIGSTOP node $n"
       sleep "1.$(( 5 + RANDOM % 5 ))"; kill -CONT "${PID[$n]}"; COUNT[pause]=$(( COUNT[pause] + 1 )) ;;
    2) psql -qAt "$ADMIN" -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'soak'" >/dev/null
       echo "[$elapsed s] every connection terminated"; COUNT[terminate]=$(( COUNT[terminate] + 1 )) ;;
    3) pg_ctl -m fast -w restart >/dev/null
       echo "[$elapsed s] PostgreSQL restarted (fast): work flowing again after $(work_flowing_after) s"; COUNT[pg_fast]=$(( COUNT[pg_fast] + 1 )) ;;
    4) pg_ctl -m immediate -w restart >/dev/null
       echo "[$elapsed s] PostgreSQL restarted (immediate): work flowing again after $(work_flowing_after) s"; COUNT[pg_immediate]=$(( COUNT[pg_immediate] + 1 )) ;;
  esac
done
touch "$WORK/stop"
wait "$EMITTER" "$ARRIVALS" || true
read -r EMITTED EMIT_FAILED <"$WORK/emitted"
RSS_END=$(rss_mb "${PID[1]}")
echo "faults over after $(( $(date +%s) - START )) s; waiting for the group to finish"

# The group finishes: every event done, every contact welcomed.
FINISHED=no
for _ in $(seq 600); do
  pending=$(sql "SELECT count(*) FROM trackc_events WHERE done_at IS NULL" 2>/dev/null || echo x)
  unwelcomed=$(sql "SELECT count(*) FROM items i WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.item = i.id AND e.what = 'welcome')" 2>/dev/null || echo x)
  if [ "$pending" = 0 ] && [ "$unwelcomed" = 0 ]; then FINISHED=yes; break; fi
  sleep 0.5
done
sleep 2
CONTACTS=$(sql "SELECT count(*) FROM items")
EVENTS=$(sql "SELECT count(*) FROM trackc_events WHERE name = 'ping'")
DUPLICATES=$(sql "SELECT count(*) FROM (SELECT item, what FROM effects GROUP BY item, what HAVING count(*) > 1) d")
MISSING_WELCOME=$(sql "SELECT count(*) FROM items i WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.item = i.id AND e.what = 'welcome')")
# One effect per recorded event (its key is the item); none for a key
# that had no event.
EVENT_MISMATCH=$(sql "SELECT count(*) FROM (SELECT key::bigint AS item, count(*) AS n FROM trackc_events WHERE name = 'ping' GROUP BY 1) ev FULL JOIN (SELECT item, count(*) AS n FROM effects WHERE what = 'pinged' GROUP BY 1) ef USING (item) WHERE ev.n IS DISTINCT FROM ef.n")
ALIVE=0
for i in 1 2 3; do kill -0 "${PID[$i]}" 2>/dev/null && ALIVE=$(( ALIVE + 1 )); done
RSS_START=${RSS_START:-$RSS_END}
GROWTH=$(python3 -c "print(f'{100 * ($RSS_END - $RSS_START) / $RSS_START:.1f}')")
RECOVERY=$(python3 -c "
import statistics
v = [float(l) for l in open('$WORK/recovery')] if __import__('os').path.exists('$WORK/recovery') else []
print(f'db_back_to_work_s_median={statistics.median(v):.2f} db_back_to_work_s_max={max(v):.2f}' if v else 'db_back_to_work_s_median=- db_back_to_work_s_max=-')")
FAULTS=$(( COUNT[kill] + COUNT[pause] + COUNT[terminate] + COUNT[pg_fast] + COUNT[pg_immediate] ))
LINE="RESULT soak_seconds=$SOAK_SECONDS seed=$SEED faults=$FAULTS kills=${COUNT[kill]} pauses=${COUNT[pause]} terminations=${COUNT[terminate]} pg_fast=${COUNT[pg_fast]} pg_immediate=${COUNT[pg_immediate]} events=$EVENTS emits_failed=$EMIT_FAILED contacts=$CONTACTS finished=$FINISHED duplicates=$DUPLICATES missing_welcome=$MISSING_WELCOME event_mismatch=$EVENT_MISMATCH alive=$ALIVE/3 rss_start_mb=$RSS_START rss_end_mb=$RSS_END rss_growth_percent=$GROWTH $RECOVERY"
echo "$LINE" | tee -a "$OUT/results"
[ "$EMITTED" -gt 0 ] || { echo "FAIL: no event was emitted" >&2; exit 1; }
FAIL=0
[ "$FINISHED" = yes ] || { echo "FAIL: the group did not finish within 300 s of the last fault" >&2; FAIL=1; }
[ "$DUPLICATES" = 0 ] || { echo "FAIL: $DUPLICATES effects done more than once" >&2; FAIL=1; }
[ "$MISSING_WELCOME" = 0 ] || { echo "FAIL: $MISSING_WELCOME contacts never welcomed" >&2; FAIL=1; }
[ "$EVENT_MISMATCH" = 0 ] || { echo "FAIL: $EVENT_MISMATCH keys whose events and effects differ" >&2; FAIL=1; }
[ "$ALIVE" = 3 ] || { echo "FAIL: $(( 3 - ALIVE )) node processes died" >&2; FAIL=1; }
python3 -c "import sys; sys.exit(0 if $GROWTH <= $RSS_GROWTH_MAX_PERCENT else 1)" \
  || { echo "FAIL: node 1's RSS grew $GROWTH % (limit $RSS_GROWTH_MAX_PERCENT %)" >&2; FAIL=1; }
exit $FAIL
