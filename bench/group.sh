#!/usr/bin/env bash
# Benchmark: throughput of a peer group of 1, 2 and 3 `trackc node`s
# (issue 5). The workload is the runtime benchmark's (bench/runtime/): N
# contacts through the three-step track, 3 record-steps each, with its
# UPDATEs and outbox rows. For each group size, on a fresh PostgreSQL
# database: start the nodes on loopback (cycle 1s, capacity 2 each),
# deploy the track over the API, wait for its run to finish, read the run's
# own start and finish from `trackc_runs` and how many blocks each node
# committed from its status.
#
# Peer, same run, same database and workload: one process,
# `trackc run --once --no-deliver` (the single-node runtime of issue 4).
#
# Where the time goes: the CPU the trackc processes used (utime + stime
# from /proc, from the deploy to the end of the run), per second of the
# run: the cores trackc kept busy; on this machine the rest of its cores
# go to PostgreSQL.
#
# Prints per case and repetition:
#   RESULT case=<run-once|group> nodes=<n> contacts=<n> record_steps=<n> run_seconds=<s> record_steps_per_s=<x> deploy_to_done_seconds=<s> blocks_per_node=<a/b/c> trackc_cpu_s=<s>
# and at the end, per case, the median and its ratio over one node.
#
# CONTACTS=200000 by default; NODES="1 2 3"; CAPACITY=2; CYCLE=1s; REPEAT=3;
# BIN=path to compare another build of trackc (default: this checkout's).
# PG_ADMIN=postgres://postgres@127.0.0.1:5432/postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-200000}
NODES=${NODES:-"1 2 3"}
CAPACITY=${CAPACITY:-2}
CYCLE=${CYCLE:-1s}
REPEAT=${REPEAT:-3}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=$PWD/bench/out/group
TRACKS=$PWD/bench/runtime
mkdir -p "$OUT"
source bench/lib.sh
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/trackc
fi
PGDB=trackc_bench_group
BASE=${PG_ADMIN%/*}
URL=$BASE/$PGDB
TOKEN=bench-admin-token
TOKEN_SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
PIDS=()

stop_nodes() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_nodes EXIT

fresh_db() { pg_contacts_db "$PG_ADMIN" "$PGDB" "$CONTACTS"; }

sql() { psql -qAt -v ON_ERROR_STOP=1 "$URL" -c "$1"; }

run_seconds() { sql "SELECT (finished_at - started_at) / 1e6 FROM trackc_runs WHERE finished_at IS NOT NULL"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The CPU time of processes, in clock ticks (utime + stime).
cpu_ticks() {
  local t=0 pid
  for pid in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
  echo "$t"
}

result() { # case nodes run_seconds deploy_to_done blocks trackc_ticks
  python3 - "$@" "$CONTACTS" "$(getconf CLK_TCK)" <<'PY' | tee -a "$OUT/results"
import sys
case, nodes, secs, wall, blocks, cpu, contacts, hz = sys.argv[1:]
steps = 3 * int(contacts)
print(f"RESULT case={case} nodes={nodes} contacts={contacts} record_steps={steps} "
      f"run_seconds={float(secs):.2f} record_steps_per_s={steps / float(secs):.0f} "
      f"deploy_to_done_seconds={wall} blocks_per_node={blocks} "
      f"trackc_cpu_s={int(cpu) / int(hz):.2f}")
PY
}

# The peer: one process, no group.
run_once() {
  fresh_db
  local pid cpu=0
  "$BIN" run --once --no-deliver --db "$URL" "$TRACKS" > "$OUT/run-once.out" 2> "$OUT/run-once.err" &
  pid=$!
  # The last reading before the process exits is its CPU time (to 50 ms).
  while kill -0 "$pid" 2> /dev/null; do
    cpu=$(cpu_ticks "$pid" 2> /dev/null || echo "$cpu")
    sleep 0.05
  done
  wait "$pid" || { cat "$OUT/run-once.err"; exit 1; }
  result run-once 1 "$(run_seconds)" - - "$cpu"
}

group() { # $1 = nodes
  local n=$1 i b peers=() https=() peer_list t0 t1 c0 c1 secs blocks="" done_states
  fresh_db
  for i in $(seq 1 "$n"); do peers+=("127.0.0.1:$(free_port)"); https+=("127.0.0.1:$(free_port)"); done
  peer_list=$(printf '"%s", ' "${peers[@]}")
  for i in $(seq 1 "$n"); do
    cat > "$OUT/node$i.toml" <<EOF
id = $i
listen = "${peers[$((i - 1))]}"
http = "${https[$((i - 1))]}"
peers = [${peer_list%, }]
database = "$URL"
secret = "the group secret of the benchmark"
cycle = "$CYCLE"
capacity = $CAPACITY
[[users]]
name = "bench"
role = "admin"
token_sha256 = "$TOKEN_SHA"
EOF
    "$BIN" node --config "$OUT/node$i.toml" > /dev/null 2> "$OUT/node$i.log" &
    PIDS+=($!)
  done
  for i in $(seq 1 "$n"); do
    for _ in $(seq 1 300); do
      "$BIN" status --to "http://${https[$((i - 1))]}" --token "$TOKEN" > /dev/null 2>&1 && break
      sleep 0.1
    done
  done
  t0=$(now) c0=$(cpu_ticks "${PIDS[@]}")
  "$BIN" deploy "$TRACKS" --to "http://${https[0]}" --token "$TOKEN" > "$OUT/deploy.out"
  for _ in $(seq 1 3000); do
    [ "$(sql "SELECT count(*) FROM trackc_runs WHERE finished_at IS NOT NULL")" = 1 ] && break
    sleep 0.1
  done
  t1=$(now) c1=$(cpu_ticks "${PIDS[@]}")
  secs=$(run_seconds)
  [ -n "$secs" ] || { echo "the run did not finish in 300 s; logs in $OUT" >&2; exit 1; }
  done_states=$(sql "SELECT count(*) FROM trackc_state WHERE seq = 3 AND step IS NULL")
  [ "$done_states" = "$CONTACTS" ] || { echo "$done_states of $CONTACTS contacts done" >&2; exit 1; }
  # Each node publishes its status once a cycle: read until the blocks
  # done add up to the run's (every block once), at most 20 tries.
  local want=$(((CONTACTS + 1023) / 1024)) sum
  for _ in $(seq 1 20); do
    blocks="" sum=0
    for i in $(seq 1 "$n"); do
      b=$("$BIN" status --to "http://${https[$((i - 1))]}" --token "$TOKEN" --format json \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["metrics"].get("blocks_executed", {}).get("done", 0))')
      blocks="$blocks${blocks:+/}$b" sum=$((sum + b))
    done
    [ "$sum" = "$want" ] && break
    sleep 0.5
  done
  [ "$sum" = "$want" ] || echo "warning: the nodes report $blocks blocks done, the run has $want" >&2
  stop_nodes
  result group "$n" "$secs" "$(python3 -c "print(f'{$t1 - $t0:.2f}')")" "$blocks" $((c1 - c0))
}

: > "$OUT/results"
for _ in $(seq 1 "$REPEAT"); do
  run_once
  for n in $NODES; do group "$n"; done
done
psql -q "$PG_ADMIN" -c "DROP DATABASE $PGDB WITH (FORCE)"

python3 - "$OUT/results" <<'PY'
import re, sys
from statistics import median
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1])]
cases = {}
for r in rows:
    cases.setdefault((r["case"], r["nodes"]), []).append(r)
one = median(float(r["record_steps_per_s"]) for r in cases[("group", "1")])
for (case, nodes), runs in cases.items():
    rate = median(float(r["record_steps_per_s"]) for r in runs)
    cores = median(float(r["trackc_cpu_s"]) / float(r["run_seconds"]) for r in runs)
    print(f"MEDIAN case={case} nodes={nodes} runs={len(runs)} record_steps_per_s={rate:.0f} "
          f"over_one_node={rate / one:.2f} trackc_cores={cores:.2f}")
PY
