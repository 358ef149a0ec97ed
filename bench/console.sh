#!/usr/bin/env bash
# Benchmark: the web console's weight and time to first render (issue 16).
# The demo's database (CONTACTS contacts, default 100,000, its seven
# tracks run once) served by `trackc serve`; headless Chromium (Debian's,
# driven by Playwright from PYTHON, a Python with tests/console/
# requirements.txt, e.g. target/ci-venv/bin/python after .ci/run) signs
# in and loads each page REPEATS times (default 5). Prints per page:
#   RESULT page=<name> bytes=<HTML+CSS+JS transferred> requests=<n> ttfb_ms=<median> fcp_ms=<median> load_ms=<median>
# Peer in the same run: the same page's HTML alone (no CSS, no script)
# fetched by curl, its server time (`curl_ms`), the floor of any page.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-100000}
REPEATS=${REPEATS:-5}
PYTHON=${PYTHON:-target/ci-venv/bin/python}
OUT=bench/out/console
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/trackc
DB="sqlite:$OUT/demo$CONTACTS.db"
[ -f "$OUT/demo$CONTACTS.db" ] || "$BIN" demo --db "$DB" --contacts "$CONTACTS" > /dev/null
TOKEN=$("$BIN" token new --name bench --role admin 2>/dev/null | tee "$OUT/users.toml" | head -1)
sed -i 1,2d "$OUT/users.toml"
PORT=$((20000 + RANDOM % 20000))
"$BIN" serve --db "$DB" --http "127.0.0.1:$PORT" --users "$OUT/users.toml" > "$OUT/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/signin" > /dev/null && break; sleep 0.2; done
"$PYTHON" bench/console_render.py "http://127.0.0.1:$PORT" "$TOKEN" "$REPEATS"
