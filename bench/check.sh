#!/usr/bin/env bash
# Benchmark: `trackc check` over 1,000 generated tracks (~40,000 lines).
# Target (issue 2): under one second on the project machine (2 cores).
#
# In one run it times, with the same release binary and schema:
#   many-files  1,000 tracks in 1,000 files (the CI shape: trackc check tracks/*.dt)
#   many-files-1-thread  the same with TRACKC_THREADS=1 (the peer for the speed-up ratio)
#   one-file    the same 1,000 tracks in one file
#   examples    the 7 example tracks (start-up cost)
# and prints one line per case:
#   RESULT case=<name> lines=<n> runs=<k> best_ms=<x> median_ms=<y> lines_per_s=<z>
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-7}
OUT=bench/out/check
cargo build --release --quiet
rm -rf "$OUT" && mkdir -p "$OUT/many" "$OUT/one"
python3 bench/gen_tracks.py "$OUT/many" 1000
python3 bench/gen_tracks.py "$OUT/one" 1000 --one-file
BIN=target/release/trackc

measure() { # name, files...  (env THREADS: worker count, default all cores)
  local name=$1; shift
  local lines
  lines=$(cat "$@" | wc -l)
  # Every case must check clean, or the timing measures an early exit.
  export TRACKC_THREADS=${THREADS:-$(nproc)}
  "$BIN" check --schema tracks/schema.sql "$@" 2>"$OUT/$name.stderr" || { cat "$OUT/$name.stderr"; exit 1; }
  local times=()
  for _ in $(seq "$RUNS"); do
    local t0 t1
    t0=$(date +%s%N)
    "$BIN" check --schema tracks/schema.sql "$@" 2>/dev/null
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000 )))
  done
  local sorted best median
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  best=$(echo "$sorted" | head -1)
  median=$(echo "$sorted" | sed -n "$(( (RUNS + 1) / 2 ))p")
  echo "RESULT case=$name threads=$TRACKC_THREADS lines=$lines runs=$RUNS best_ms=$(awk "BEGIN{printf \"%.1f\", $best/1000}") median_ms=$(awk "BEGIN{printf \"%.1f\", $median/1000}") lines_per_s=$(awk "BEGIN{printf \"%.0f\", $lines/($median/1e6)}")"
}

measure many-files "$OUT"/many/*.dt
THREADS=1 measure many-files-1-thread "$OUT"/many/*.dt
measure one-file "$OUT"/one/all.dt
measure examples tracks/*.dt
