#!/usr/bin/env bash
# Runs every fuzz target with libFuzzer (cargo-fuzz) for SECONDS each
# (default 60), growing fuzz/corpus/<target>/; a crash stops the run with
# the input saved under fuzz/artifacts/<target>/. Copy such an input into
# fuzz/corpus/<target>/ and fix the bug: `cargo test --test fuzz_corpus`
# then replays it on stable in every CI run.
#
# cargo-fuzz passes nightly-only flags to rustc; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain installed here take them. `-s none`: no sanitizer (the
# targets are safe Rust and the sanitizer runtime would slow every run);
# libFuzzer's coverage instrumentation stays.
#
# Needs: cargo install cargo-fuzz. Usage: bench/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(dt_check dt_test peer_frame block_payload api_body node_toml)
fi
command -v cargo-fuzz >/dev/null || { echo "cargo install cargo-fuzz first" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1
cargo run -q -p trackc-runtime --example fuzz_seeds
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s"
    log="/tmp/trackc-fuzz-$t.log"
    status=0
    cargo fuzz run -s none "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+== ERROR|SUMMARY|thread .* panicked)" "$log" || true
    if [ "$status" -ne 0 ]; then
        echo "$t: libFuzzer stopped with $status (log: $log); the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
# Keep the corpus small: only inputs that add coverage.
for t in "${targets[@]}"; do
    cargo fuzz cmin -s none "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
done
echo "corpus: $(find fuzz/corpus -type f | wc -l) inputs"
