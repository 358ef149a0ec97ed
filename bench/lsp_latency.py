#!/usr/bin/env python3
"""Time from a keystroke (textDocument/didChange, full text) to fresh
diagnostics (textDocument/publishDiagnostics) from `trackc lsp`, on a
track file of about 1,000 lines made of the example tracks (renamed copies),
checked against tracks/schema.sql through a trackc.toml. Each keystroke
alternately breaks and fixes a field name, so half the answers carry an
E004. The peer in the same run: `trackc check` of the same file as a
process (start, read, compile, exit).

Usage: bench/lsp_latency.py [path/to/trackc] (default target/release/trackc)
"""
import json, os, re, statistics, subprocess, sys, tempfile, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
trackc = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/release/trackc")
KEYSTROKES = 60

examples = [open(os.path.join(root, "tracks", f)).read()
            for f in sorted(os.listdir(os.path.join(root, "tracks"))) if f.endswith(".dt")]
parts, lines, n = [], 0, 0
while lines < 1000:
    for text in examples:
        copy = re.sub(r"\btrack (\w+)", lambda m: f"track {m.group(1)}_{n}", text)
        parts.append(copy)
        lines += copy.count("\n")
        n += 1
source = "\n".join(parts)
d = tempfile.mkdtemp(prefix="trackc-lsp-bench-")
with open(os.path.join(d, "trackc.toml"), "w") as f:
    f.write('schema = "%s"\n' % os.path.join(root, "tracks/schema.sql"))
path = os.path.join(d, "big.dt")
with open(path, "w") as f:
    f.write(source)
uri = "file://" + path

p = subprocess.Popen([trackc, "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

def send(msg):
    body = json.dumps(msg).encode()
    p.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    p.stdin.flush()

def receive():
    length = 0
    while True:
        line = p.stdout.readline().decode().strip()
        if not line:
            break
        if line.startswith("Content-Length:"):
            length = int(line.split(":")[1])
    return json.loads(p.stdout.read(length))

def diagnostics():
    while True:
        m = receive()
        if m.get("method") == "textDocument/publishDiagnostics":
            return m["params"]["diagnostics"]

send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": None, "rootUri": None, "capabilities": {}}})
receive()
send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": uri, "languageId": "trackc", "version": 1, "text": source}}})
first = diagnostics()
assert not [x for x in first if x["severity"] == 1], first[:3]
times = []
for k in range(KEYSTROKES):
    text = source.replace("score >= 50", "scor >= 50", 1) if k % 2 == 0 else source
    start = time.perf_counter()
    send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"textDocument": {"uri": uri, "version": k + 2}, "contentChanges": [{"text": text}]}})
    got = diagnostics()
    times.append((time.perf_counter() - start) * 1000)
    assert (k % 2 == 0) == any(x.get("code") == "E004" for x in got), got[:3]
send({"jsonrpc": "2.0", "id": 2, "method": "shutdown", "params": None})
receive()
send({"jsonrpc": "2.0", "method": "exit", "params": None})
p.wait()

checks = []
for _ in range(10):
    start = time.perf_counter()
    subprocess.run([trackc, "check", "--schema", os.path.join(root, "tracks/schema.sql"), path],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checks.append((time.perf_counter() - start) * 1000)

times.sort()
p95 = times[int(len(times) * 0.95) - 1]
lsp_median, check_median = statistics.median(times), statistics.median(checks)
print(f"file: {source.count(chr(10)) + 1} lines, {len(source)} bytes, {n} tracks")
print(f"| | median ms | p95 ms | max ms |")
print(f"|---|---:|---:|---:|")
print(f"| lsp: keystroke to diagnostics ({KEYSTROKES}) | {lsp_median:.1f} | {p95:.1f} | {times[-1]:.1f} |")
print(f"| `trackc check` process (10) | {check_median:.1f} | | {max(checks):.1f} |")
print(f"lsp / check: {lsp_median / check_median:.2f}")
