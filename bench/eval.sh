#!/usr/bin/env bash
# Benchmark: evaluating decision tables, four engines on the same records
# and the same rules, single-threaded, in one run (issue 3).
#
#   jit     the step compiled with Cranelift, over columnar blocks of 1,024
#   interp  the reference interpreter, record by record
#   sqlite  the same conditions as CASE WHEN over an in-memory table
#   duckdb  the same CASE WHEN over an in-memory table, SET threads = 1
#           (the Python package, installed into bench/out/venv)
#
# Workloads: numeric (ints and floats, 5 rules), text (like, in lists,
# lower, length; 5 rules), mixed (20% NULLs, timestamps, coalesce; 5 rules).
# The records are generated once (deterministic) and written as CSV for
# DuckDB; every engine's histogram of fired rules must be identical or the
# script fails. Then a ten-rule step is compiled 200 times, cold.
#
# Prints, per workload and engine:
#   RESULT workload=<name> engine=<jit|interp|sqlite|duckdb> records=<n> ns_per_record=<x>
# and the ratios the targets are stated in:
#   RATIO workload=<name> interp_over_jit=<x> duckdb_over_jit=<y> sqlite_over_jit=<z>
#   RESULT step=ten_rules compile_us_median=<x> compile_us_p90=<y> runs=200
#
# RECORDS=10000000 by default (the issue's figure); RECORDS=1000000 for a
# quicker look. The interpreter is timed on INTERP_RECORDS (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-10000000}
INTERP_RECORDS=${INTERP_RECORDS:-$RECORDS}
OUT=bench/out/eval
mkdir -p "$OUT"

if [ ! -x bench/out/venv/bin/python ] || ! bench/out/venv/bin/python -c 'import duckdb' 2>/dev/null; then
  python3 -m venv bench/out/venv
  bench/out/venv/bin/pip install --quiet 'duckdb==2.0.0'
fi

cargo bench -p trackc-compiler --bench eval --no-run --quiet 2>/dev/null
BIN=$(cargo bench -p trackc-compiler --bench eval --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "eval" and m.get("executable"):
        print(m["executable"])')

DATA="$OUT/data$RECORDS"
if [ ! -f "$DATA.nulls20.csv" ]; then
  "$BIN" csv "$DATA" "$RECORDS"
fi

LOG="$OUT/results.txt"
: > "$LOG"
for spec in numeric:0 text:0 mixed:20; do
  workload=${spec%:*}; nulls=${spec#*:}
  "$BIN" run "$workload" "$RECORDS" jit,sqlite 2>/dev/null | tee -a "$LOG"
  "$BIN" run "$workload" "$INTERP_RECORDS" interp 2>/dev/null | tee -a "$LOG"
  bench/out/venv/bin/python bench/eval_duckdb.py "$DATA" "$workload" "$nulls" "$RECORDS" | tee -a "$LOG"
done
"$BIN" compile | tee -a "$LOG"

python3 - "$LOG" "$RECORDS" "$INTERP_RECORDS" <<'EOF'
import re, sys
log, records, interp_records = sys.argv[1], sys.argv[2], sys.argv[3]
ns, hist = {}, {}
for line in open(log):
    m = re.match(r"RESULT workload=(\w+) engine=(\w+) records=(\d+) ns_per_record=([\d.]+)", line)
    if m:
        ns[(m[1], m[2])] = float(m[4])
    m = re.match(r"HISTOGRAM workload=(\w+) engine=(\w+) (.*)", line)
    if m:
        hist.setdefault(m[1], {})[m[2]] = m[3].strip()
failed = False
for w, by_engine in hist.items():
    # The interpreter may run on fewer records; compare it only when equal.
    engines = {e: h for e, h in by_engine.items() if e != "interp" or interp_records == records}
    if len(set(engines.values())) != 1:
        print(f"MISMATCH workload={w}: {engines}")
        failed = True
for w in ("numeric", "text", "mixed"):
    jit = ns[(w, "jit")]
    print(f"RATIO workload={w} interp_over_jit={ns[(w, 'interp')] / jit:.1f} "
          f"duckdb_over_jit={ns[(w, 'duckdb')] / jit:.2f} sqlite_over_jit={ns[(w, 'sqlite')] / jit:.1f}")
sys.exit(1 if failed else 0)
EOF
