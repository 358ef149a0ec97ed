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
#
# CASES="sizes" (the above, the default) or "grown" (issue 19): a group
# that grew from 1 to 3 nodes against a group started with 3, same
# workload. Six tracks of the three-step kind over disjoint shares of the
# contacts (36, 24, 18, 12, 6 and 4 %), each `on change { SELECT max(id)
# FROM contacts }` (a run whenever contacts arrive, reading all of its
# share). Each case loads BEFORE contacts and lets the group decide them
# (so every track's cost is measured); "grown" starts node 1 alone, then
# nodes 2 and 3, "started" all three at once; both wait until the
# rebalancing plan has nothing to do or under way. The peer "grown-off"
# grows alike with `rebalance_threshold = 0`: node 1 keeps every track.
# Then BURST more contacts arrive in one INSERT, and the figure is the
# time until every one is decided (3 record-steps each):
#   RESULT case=<grown|started> nodes=3 burst=<n> seconds=<s> record_steps_per_s=<x> loads=<a/b/c> settle_seconds=<s>
# (loads: each node's cost, records per run, once settled, before the burst)
# and at the end each case's median and grown over started. BEFORE=50000,
# BURST=200000.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-200000}
NODES=${NODES:-"1 2 3"}
CAPACITY=${CAPACITY:-2}
CYCLE=${CYCLE:-1s}
REPEAT=${REPEAT:-3}
CASES=${CASES:-sizes}
BEFORE=${BEFORE:-50000}
BURST=${BURST:-200000}
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

# The group's wiring: a peer and an HTTP address per node.
PEERS=() HTTPS=()
wire_nodes() { # $1 = nodes
  local i
  PEERS=() HTTPS=()
  for i in $(seq 1 "$1"); do PEERS+=("127.0.0.1:$(free_port)"); HTTPS+=("127.0.0.1:$(free_port)"); done
}

# More node.toml lines for every node.
EXTRA=""

# Node i: its node.toml and process, answering.
start_node() { # $1 = i
  local i=$1 peer_list
  peer_list=$(printf '"%s", ' "${PEERS[@]}")
  cat > "$OUT/node$i.toml" <<EOF
id = $i
listen = "${PEERS[$((i - 1))]}"
http = "${HTTPS[$((i - 1))]}"
peers = [${peer_list%, }]
database = "$URL"
secret = "the group secret of the benchmark"
cycle = "$CYCLE"
capacity = $CAPACITY
$EXTRA
[[users]]
name = "bench"
role = "admin"
token_sha256 = "$TOKEN_SHA"
EOF
  "$BIN" node --config "$OUT/node$i.toml" > /dev/null 2> "$OUT/node$i.log" &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    "$BIN" status --to "http://${HTTPS[$((i - 1))]}" --token "$TOKEN" > /dev/null 2>&1 && return
    sleep 0.1
  done
  echo "node $i did not answer in 30 s; log in $OUT/node$i.log" >&2
  exit 1
}

group() { # $1 = nodes
  local n=$1 i b t0 t1 c0 c1 secs blocks="" done_states
  fresh_db
  wire_nodes "$n"
  for i in $(seq 1 "$n"); do start_node "$i"; done
  t0=$(now) c0=$(cpu_ticks "${PIDS[@]}")
  "$BIN" deploy "$TRACKS" --to "http://${HTTPS[0]}" --token "$TOKEN" > "$OUT/deploy.out"
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
      b=$("$BIN" status --to "http://${HTTPS[$((i - 1))]}" --token "$TOKEN" --format json \
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

# The six tracks of the "grown" cases: the three-step track over disjoint
# shares of the contacts (name:first residue:width, of id % 100).
SHARES="huge:0:36 large:36:24 big:60:18 medium:78:12 small:90:6 tiny:96:4"
share_tracks() {
  local dir=$OUT/shares name from width
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$TRACKS/schema.sql" "$dir/"
  for s in $SHARES; do
    IFS=: read -r name from width <<< "$s"
    sed -e "s/track bench_three_steps/track $name/" \
      -e "s/FROM contacts }/FROM contacts WHERE id % 100 >= $from AND id % 100 < $((from + width)) }/" \
      -e "s/on every 1h/on change { SELECT max(id) FROM contacts }/" "$TRACKS/three_steps.dt" \
      > "$dir/$name.dt"
  done
}

contacts_done() { sql "SELECT count(*) FROM trackc_state WHERE seq = 3 AND step IS NULL"; }

wait_done() { # $1 = contacts; $2 = what
  for _ in $(seq 1 6000); do
    [ "$(contacts_done)" = "$1" ] && return
    sleep 0.05
  done
  echo "$2: $(contacts_done) of $1 contacts done in 300 s; logs in $OUT" >&2
  exit 1
}

# Whether the group of 3 has settled: every node owns a track and the
# plan, as node 1 sees it, has nothing to do and nothing under way.
settled() {
  "$BIN" rebalance --dry-run --json --to "http://${HTTPS[0]}" --token "$TOKEN" 2> "$OUT/settled.err" \
    | python3 2> /dev/null -c '
import json, sys
p = json.load(sys.stdin)
ok = p["waiting"] is None and not p["moves"] and not p["under_way"] \
    and len(p["loads"]) == 3 and all(load > 0 for _, load in p["loads"])
sys.exit(0 if ok else 1)'
}

# Waits until `settled` holds three times in a row (at most 300 s).
wait_settled() {
  local streak=0
  for _ in $(seq 1 600); do
    if settled; then streak=$((streak + 1)); else streak=0; fi
    [ "$streak" -ge 3 ] && return
    sleep 0.5
  done
  echo "the group did not settle in 300 s; logs in $OUT" >&2
  exit 1
}

node_loads() {
  "$BIN" status --to "http://${HTTPS[0]}" --token "$TOKEN" --format json \
    | python3 -c 'import json, sys; print("/".join(str(n["load"]) for n in json.load(sys.stdin)["nodes"] if n["state"] == "alive"))'
}

grown_or_started() { # $1 = grown|started|grown-off
  local how=$1 t0 t1 settle loads
  pg_contacts_db "$PG_ADMIN" "$PGDB" "$BEFORE"
  wire_nodes 3
  start_node 1
  [ "$how" = started ] && { start_node 2; start_node 3; }
  "$BIN" deploy "$OUT/shares" --to "http://${HTTPS[0]}" --token "$TOKEN" > "$OUT/deploy.out"
  wait_done "$BEFORE" "the first pass"
  # The node connections' cached plans for the state lookups were made on
  # an empty table; statistics now (autovacuum may take minutes) so that
  # the burst is measured, not a stale plan (see BENCHMARKS.md).
  sql "ANALYZE trackc_state" > /dev/null
  t0=$(now)
  [ "$how" != started ] && { start_node 2; start_node 3; }
  if [ "$how" = grown-off ]; then
    # Rebalancing off: node 1 keeps every track; give the others the
    # time the grown group took to settle.
    sleep 20
  else
    wait_settled
  fi
  settle=$(python3 -c "print(f'{$(now) - $t0:.1f}')")
  loads=$(node_loads)
  sql "INSERT INTO contacts $(contacts_select "$BURST" postgres $((BEFORE + 1)))" > /dev/null
  t0=$(now)
  wait_done $((BEFORE + BURST)) "the burst"
  t1=$(now)
  python3 - "$how" "$BURST" "$t0" "$t1" "$loads" "$settle" <<'PY' | tee -a "$OUT/results"
import sys
how, burst, t0, t1, loads, settle = sys.argv[1:]
secs = float(t1) - float(t0)
print(f"RESULT case={how} nodes=3 burst={burst} seconds={secs:.2f} "
      f"record_steps_per_s={3 * int(burst) / secs:.0f} loads={loads} settle_seconds={settle}")
PY
  stop_nodes
}

: > "$OUT/results"
if [ "$CASES" = grown ]; then
  # Moves come quickly enough for a benchmark: one per node every 5
  # cycles, a moved track staying 10 s.
  EXTRA=$'rebalance_every = 5\nrebalance_cooldown = "10s"'
  share_tracks
  for _ in $(seq 1 "$REPEAT"); do
    grown_or_started grown
    grown_or_started started
    EXTRA=$'rebalance_threshold = 0' grown_or_started grown-off
  done
  psql -q "$PG_ADMIN" -c "DROP DATABASE $PGDB WITH (FORCE)"
  python3 - "$OUT/results" <<'PY'
import re, sys
from statistics import median
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1])]
rate = {c: median(float(r["record_steps_per_s"]) for r in rows if r["case"] == c)
        for c in ("grown", "started", "grown-off")}
for c in ("grown", "started", "grown-off"):
    settle = median(float(r["settle_seconds"]) for r in rows if r["case"] == c)
    print(f"MEDIAN case={c} record_steps_per_s={rate[c]:.0f} settle_seconds={settle:.1f}")
print(f"RATIO grown_over_started={rate['grown'] / rate['started']:.2f} "
      f"grown_off_over_started={rate['grown-off'] / rate['started']:.2f}")
PY
  exit 0
fi
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
