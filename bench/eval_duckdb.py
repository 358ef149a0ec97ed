"""DuckDB's side of bench/eval.sh: the same records (the CSV the Rust bench
wrote) and the same CASE WHEN, in an in-memory table, one thread.

Usage: eval_duckdb.py DATA_PREFIX WORKLOAD NULL_PERCENT RECORDS
Prints the RESULT and HISTOGRAM lines in the Rust bench's format.
"""
import sys
import time

import duckdb

prefix, workload, null_percent, records = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
case = open(f"{prefix}.{workload}.sql").read()
con = duckdb.connect(":memory:")
con.execute("SET threads = 1")
# Loaded (and typed) before any timing; timestamps are microseconds, as in
# the other engines' SQL.
con.execute(
    f"""CREATE TABLE r AS SELECT * FROM read_csv('{prefix}.nulls{null_percent}.csv',
        header = true,
        columns = {{'id': 'BIGINT', 'a': 'BIGINT', 'b': 'BIGINT', 'x': 'DOUBLE',
                   'y': 'DOUBLE', 'name': 'VARCHAR', 'email': 'VARCHAR',
                   'country': 'VARCHAR', 'plan': 'VARCHAR', 'active': 'BOOLEAN',
                   'created': 'BIGINT', 'seen': 'BIGINT'}})"""
)
count = con.execute("SELECT count(*) FROM r").fetchone()[0]
assert count == records, f"{count} rows loaded, expected {records}"

rules = case.count(" WHEN ")
histogram = [0] * (rules + 1)
for rule, n in con.execute(f"SELECT {case} AS rule, count(*) FROM r GROUP BY rule").fetchall():
    histogram[rule] = n

best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    con.execute(f"SELECT sum({case}) FROM r").fetchone()
    best = min(best, time.perf_counter() - start)

print(f"RESULT workload={workload} engine=duckdb records={records} ns_per_record={best * 1e9 / records:.2f}")
print(f"HISTOGRAM workload={workload} engine=duckdb {histogram}")
