//! The evaluation benchmark behind `bench/eval.sh`: one decision table per
//! workload, the same records, three engines in this process (the JIT, the
//! reference interpreter, SQLite in memory), all single-threaded. DuckDB is
//! timed by `bench/eval_duckdb.py` on the CSV this program writes.
//!
//! Usage (cargo passes the arguments through):
//!   cargo bench -p trackc-compiler --bench eval -- csv FILE RECORDS
//!   cargo bench -p trackc-compiler --bench eval -- run WORKLOAD RECORDS [ENGINES]
//!   cargo bench -p trackc-compiler --bench eval -- compile
//!
//! `run` prints one `RESULT workload=… engine=… records=… ns_per_record=…`
//! line per engine and a `HISTOGRAM` line (records per fired rule), which
//! must be the same for every engine: a benchmark of engines that disagree
//! measures nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use rusqlite::Connection;
use std::io::Write;
use std::time::{Duration, Instant};
use support::{sql_value, Rng};
use trackc_compiler::block::{Block, BlockBuilder, DEFAULT_BLOCK_RECORDS};
use trackc_compiler::interp::{eval_block, Env};
use trackc_compiler::ir::Track;
use trackc_compiler::jit::{Jit, NO_RULE};
use trackc_compiler::types::Type;
use trackc_compiler::value::Value;

/// The evaluation instant: 2026-06-01T12:00:00Z.
const NOW: i64 = 1_780_315_200_000_000;
const DAY: i64 = 86_400_000_000;

const FIELDS: &str = "id: int, a: int?, b: int?, x: float?, y: float?, name: text?, \
                      email: text?, country: text?, plan: text?, active: bool?, \
                      created: timestamp?, seen: timestamp?";
const COLUMNS: &str = "id, a, b, x, y, name, email, country, plan, active, created, seen";

/// A workload: its rules in the track language and the same in SQL (where
/// timestamps are microseconds and `now()` is the constant `NOW`).
struct Workload {
    name: &'static str,
    /// Percent of NULLs in every column but `id`.
    null_percent: u64,
    rules: &'static [&'static str],
    sql: &'static [&'static str],
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "numeric",
        null_percent: 0,
        rules: &[
            "a > 900 and x < 0.5",
            "a % 7 = 3 or b * 2 > 1500",
            "x * y > 0.25 and a between 100 and 300",
            "abs(b - a) < 50",
            "y + x > 1.5",
        ],
        sql: &[
            "a > 900 AND x < 0.5",
            "a % 7 = 3 OR b * 2 > 1500",
            "x * y > 0.25 AND a BETWEEN 100 AND 300",
            "abs(b - a) < 50",
            "y + x > 1.5",
        ],
    },
    Workload {
        name: "text",
        null_percent: 0,
        rules: &[
            "lower(name) like 'an%'",
            "email like '%@example.com' and country in ('PT', 'ES', 'FR', 'IT', 'DE')",
            "plan in ('pro', 'enterprise') and name like '%son'",
            "lower(country) = 'us' or email like 'z%'",
            "length(name) > 8",
        ],
        sql: &[
            "lower(name) LIKE 'an%'",
            "email LIKE '%@example.com' AND country IN ('PT', 'ES', 'FR', 'IT', 'DE')",
            "plan IN ('pro', 'enterprise') AND name LIKE '%son'",
            "lower(country) = 'us' OR email LIKE 'z%'",
            "length(name) > 8",
        ],
    },
    Workload {
        name: "mixed",
        null_percent: 20,
        rules: &[
            "seen is null and created < now() - 30d",
            "seen > now() - 7d and a > 500",
            "active and x > 0.5",
            "coalesce(plan, 'free') = 'free' and seen < created + 14d",
            "b between 100 and 200 or name is null",
        ],
        sql: &[
            "seen IS NULL AND created < 1780315200000000 - 30 * 86400000000",
            "seen > 1780315200000000 - 7 * 86400000000 AND a > 500",
            "active AND x > 0.5",
            "coalesce(plan, 'free') = 'free' AND seen < created + 14 * 86400000000",
            "b BETWEEN 100 AND 200 OR name IS NULL",
        ],
    },
];

const FIRST: &[&str] = &[
    "anna", "Andrew", "ben", "Carla", "daniel", "Eva", "frank", "Greta", "hans", "Ines", "jon",
    "Karin", "lars", "Mia", "nils", "Olga", "peter", "Rosa", "sven", "Tina",
];
const LAST: &[&str] = &["son", "sen", "berg", "ström", "ez", "ova", "dóttir", "er"];
const DOMAINS: &[&str] = &["example.com", "mail.org", "corp.io", "example.de"];
const COUNTRIES: &[&str] = &["PT", "ES", "FR", "IT", "DE", "US", "us", "BR", "JP", "SE"];
const PLANS: &[&str] = &["free", "trial", "pro", "enterprise", "team"];

/// Record `n` of the benchmark data set (NULLs at `null_percent`).
fn record(rng: &mut Rng, n: i64, null_percent: u64) -> Vec<Value> {
    let pick = |v: Value, rng: &mut Rng| {
        if rng.below(100) < null_percent {
            Value::Null
        } else {
            v
        }
    };
    let name = format!(
        "{}{}",
        FIRST[rng.below(FIRST.len() as u64) as usize],
        LAST[rng.below(LAST.len() as u64) as usize]
    );
    let email = format!(
        "{}{}@{}",
        ["z", "a", "m"][rng.below(3) as usize],
        n,
        DOMAINS[rng.below(DOMAINS.len() as u64) as usize]
    );
    let created = NOW - rng.below(90 * DAY as u64) as i64;
    let seen = created + rng.below(60 * DAY as u64) as i64;
    vec![
        Value::Int(n),
        pick(Value::Int(rng.below(1000) as i64), rng),
        pick(Value::Int(rng.below(1000) as i64), rng),
        pick(Value::Float(rng.below(1000) as f64 / 1000.0), rng),
        pick(Value::Float(rng.below(2000) as f64 / 1000.0), rng),
        pick(Value::Text(name), rng),
        pick(Value::Text(email), rng),
        pick(
            Value::Text(COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize].into()),
            rng,
        ),
        pick(
            Value::Text(PLANS[rng.below(PLANS.len() as u64) as usize].into()),
            rng,
        ),
        pick(Value::Bool(rng.below(2) == 1), rng),
        pick(Value::Timestamp(created), rng),
        pick(Value::Timestamp(seen), rng),
    ]
}

fn records(count: usize, null_percent: u64) -> impl Iterator<Item = Vec<Value>> {
    let mut rng = Rng(0x5EED_0000_0000_0001 ^ null_percent);
    (0..count as i64).map(move |n| record(&mut rng, n, null_percent))
}

fn workload(name: &str) -> &'static Workload {
    WORKLOADS
        .iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
            panic!("no workload `{name}` (workloads: {names:?})")
        })
}

fn track(w: &Workload) -> Track {
    let rules: String = w
        .rules
        .iter()
        .map(|r| format!("        when {r} then end\n"))
        .collect();
    let source = format!(
        "track bench {{\n    source key id {{ SELECT {COLUMNS} FROM r }}\n    \
         fields {{ {FIELDS} }}\n    step s {{\n{rules}    }}\n}}\n"
    );
    let compilation = trackc_compiler::compile_str("bench.dt", &source, None);
    let errors: Vec<_> = compilation.errors().map(|d| d.message.clone()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{source}");
    compilation.program.tracks.into_iter().next().unwrap()
}

fn sql_literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(x) | Value::Timestamp(x) | Value::Duration(x) => x.to_string(),
        Value::Float(x) => format!("{x:?}"),
        Value::Bool(b) => (*b as i64).to_string(),
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Text(s) => format!("\"{}\"", s.replace('"', "\"\"")),
        other => sql_literal(other),
    }
}

fn case_sql(w: &Workload) -> String {
    let whens: String = w
        .sql
        .iter()
        .enumerate()
        .map(|(i, c)| format!(" WHEN {c} THEN {i}"))
        .collect();
    format!("CASE{whens} ELSE {} END", w.sql.len())
}

/// Records per fired rule, the last slot for "none".
type Histogram = Vec<u64>;

fn report(w: &Workload, engine: &str, records: usize, elapsed: Duration, histogram: &Histogram) {
    println!(
        "RESULT workload={} engine={engine} records={records} ns_per_record={:.2}",
        w.name,
        elapsed.as_nanos() as f64 / records as f64
    );
    println!(
        "HISTOGRAM workload={} engine={engine} {:?}",
        w.name, histogram
    );
}

/// The best of `runs` timings of `f`, with its histogram.
fn best_of(runs: usize, mut f: impl FnMut() -> Histogram) -> (Duration, Histogram) {
    let mut best = Duration::MAX;
    let mut histogram = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        histogram = f();
        best = best.min(start.elapsed());
    }
    (best, histogram)
}

fn run(name: &str, count: usize, engines: &[&str]) {
    let w = workload(name);
    let track = track(w);
    let step = &track.steps[0];
    let types: Vec<Type> = track.fields.iter().map(|f| f.ty).collect();
    let env = Env { now: NOW };
    let rules = step.rules.len();

    // Blocks as the runtime cuts them, built before any timing.
    let mut blocks: Vec<Block> = Vec::new();
    let mut builder = BlockBuilder::new(&types);
    for r in records(count, w.null_percent) {
        builder.push(&r[0].to_string(), &r).unwrap();
        if builder.len() == DEFAULT_BLOCK_RECORDS {
            blocks.push(std::mem::replace(&mut builder, BlockBuilder::new(&types)).finish());
        }
    }
    if !builder.is_empty() {
        blocks.push(builder.finish());
    }

    for &engine in engines {
        let (elapsed, histogram) = match engine {
            "jit" => {
                let jit = Jit::new().unwrap();
                let compiled = jit.compile(&types, step).unwrap();
                eprintln!("{}: compiled in {:?}", w.name, compiled.compile_time());
                // Timed: deciding every block and summing the rule indices,
                // the same work as the SQL engines' `sum(CASE …)`. The
                // histogram is counted afterwards, untimed.
                let mut out = Vec::with_capacity(DEFAULT_BLOCK_RECORDS);
                let (elapsed, _) = best_of(5, || {
                    let mut sum = 0u64;
                    for block in &blocks {
                        compiled.eval_into(block, env, &mut out).unwrap();
                        sum += out.iter().map(|&r| u64::from(r)).sum::<u64>();
                    }
                    vec![sum]
                });
                let mut h = vec![0u64; rules + 1];
                for block in &blocks {
                    compiled.eval_into(block, env, &mut out).unwrap();
                    for &r in &out {
                        h[if r == NO_RULE { rules } else { r as usize }] += 1;
                    }
                }
                (elapsed, h)
            }
            "interp" => best_of(1, || {
                let mut h = vec![0u64; rules + 1];
                for block in &blocks {
                    for fired in eval_block(step, block, env) {
                        h[fired.unwrap_or(rules)] += 1;
                    }
                }
                h
            }),
            "sqlite" => {
                let conn = Connection::open_in_memory().unwrap();
                conn.execute_batch(&format!(
                    "PRAGMA case_sensitive_like = ON; CREATE TABLE r ({COLUMNS});"
                ))
                .unwrap();
                let tx = conn.unchecked_transaction().unwrap();
                {
                    let mut insert = tx
                        .prepare("INSERT INTO r VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                        .unwrap();
                    for block in &blocks {
                        for i in 0..block.len() {
                            let params: Vec<rusqlite::types::Value> =
                                block.record(i).iter().map(sql_value).collect();
                            insert.execute(rusqlite::params_from_iter(params)).unwrap();
                        }
                    }
                }
                tx.commit().unwrap();
                let query = format!(
                    "SELECT {} AS rule, count(*) FROM r GROUP BY rule",
                    case_sql(w)
                );
                let timed = format!("SELECT sum({}) FROM r", case_sql(w));
                let mut histogram = vec![0u64; rules + 1];
                let mut statement = conn.prepare(&query).unwrap();
                let mut rows = statement.query([]).unwrap();
                while let Some(row) = rows.next().unwrap() {
                    histogram[row.get::<_, i64>(0).unwrap() as usize] =
                        row.get::<_, i64>(1).unwrap() as u64;
                }
                let (elapsed, _) = best_of(3, || {
                    let sum: i64 = conn.query_row(&timed, [], |r| r.get(0)).unwrap();
                    vec![sum as u64]
                });
                (elapsed, histogram)
            }
            other => panic!("unknown engine `{other}` (jit, interp, sqlite)"),
        };
        report(w, engine, count, elapsed, &histogram);
    }
}

/// Writes the records of every workload's NULL rate as CSV for DuckDB,
/// plus the `CASE` expression of each workload (`FILE.<workload>.sql`).
fn csv(path: &str, count: usize) {
    for w in WORKLOADS {
        std::fs::write(format!("{path}.{}.sql", w.name), case_sql(w)).unwrap();
    }
    for null_percent in [0, 20] {
        let file = std::fs::File::create(format!("{path}.nulls{null_percent}.csv")).unwrap();
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "{}", COLUMNS.replace(' ', "")).unwrap();
        for r in records(count, null_percent) {
            let line: Vec<String> = r.iter().map(csv_field).collect();
            writeln!(out, "{}", line.join(",")).unwrap();
        }
        out.flush().unwrap();
    }
}

/// Compile time of a ten-rule step, cold (no cache), over many runs.
fn compile() {
    let rules: Vec<&str> = WORKLOADS
        .iter()
        .flat_map(|w| w.rules.iter().copied())
        .collect();
    let w = Workload {
        name: "ten_rules",
        null_percent: 0,
        rules: Box::leak(rules[..10].to_vec().into_boxed_slice()),
        sql: &[],
    };
    let track = track(&w);
    let types: Vec<Type> = track.fields.iter().map(|f| f.ty).collect();
    let jit = Jit::new().unwrap();
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            jit.compile_uncached(&types, &track.steps[0])
                .unwrap()
                .compile_time()
        })
        .collect();
    times.sort();
    println!(
        "RESULT step=ten_rules compile_us_median={:.1} compile_us_p90={:.1} runs={}",
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 9 / 10].as_secs_f64() * 1e6,
        times.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["csv", path, count] => csv(path, count.parse().expect("a record count")),
        ["run", name, count] => run(
            name,
            count.parse().expect("a record count"),
            &["jit", "interp", "sqlite"],
        ),
        ["run", name, count, engines] => {
            let engines: Vec<&str> = engines.split(',').collect();
            run(name, count.parse().expect("a record count"), &engines)
        }
        ["compile"] => compile(),
        // `cargo bench` with no arguments: a quick smoke run.
        [] => {
            compile();
            for w in WORKLOADS {
                run(w.name, 100_000, &["jit", "interp", "sqlite"]);
            }
        }
        other => panic!("usage: csv FILE N | run WORKLOAD N [ENGINES] | compile (got {other:?})"),
    }
}
