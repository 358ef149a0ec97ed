//! Three evaluators of the same conditions must agree: the reference
//! interpreter, the Cranelift JIT, and SQLite. Random conditions are written
//! once in the track language and once as SQL, over random records with
//! NULLs; the rule that fires (`CASE WHEN …`) and every condition's truth
//! value (TRUE/FALSE/NULL) must be the same in all three.
//!
//! Cases are seeded: a failure prints its seed, and `TRACKC_ORACLE_SEED=n`
//! replays exactly that case. `TRACKC_ORACLE_CASES=n` runs more (default
//! 1500 per test); CI runs the default, deeper runs set it to 100000 or more.
//!
//! SQLite's semantics and the language's part ways at some edges, so the
//! three-way test keeps to their common ground: integers small enough never
//! to overflow (SQLite turns overflow into a float, the language into NULL),
//! no `%` on floats (SQLite truncates to integers), ASCII text (SQLite's
//! `lower`/`upper` are ASCII-only), `coalesce` with two or more arguments.
//! A second test, JIT against interpreter only, goes to exactly those edges
//! ("wide" cases): huge integers, float `%`, non-ASCII text, one-argument
//! `coalesce`, long `in` lists.

mod support;

use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;
use support::{sql_value, Rng};
use trackc_compiler::block::BlockBuilder;
use trackc_compiler::interp::{eval, eval_step, Env};
use trackc_compiler::jit::Jit;
use trackc_compiler::syntax::literals::format_timestamp;
use trackc_compiler::types::Type;
use trackc_compiler::value::Value;

/// The evaluation instant of every case: 2026-06-01T12:00:00Z.
const NOW: i64 = 1_780_315_200_000_000;
const DAY: i64 = 86_400_000_000;

const LONGER_TEXTS: &[&str] = &[
    "abab",
    "bbab",
    "abaB",
    "abcde",
    "abcdE",
    "abcdefg",
    "abcdefgh",
    "Abcdefgh",
    "abcdefgH",
    "abcdefghi",
    "abcdeFghi",
    "abcdefghijklmno",
    "abcdefghijklmnop",
    "abcdefgHijklmnop",
    "abcdefghijklmnoP",
    "abcdefghijklmnopq",
    "ab'ab",
    "aé",
    "aéb",
    "😀abc",
];

/// An expression in both renderings: (track language, SQLite SQL).
type Both = (String, String);

fn same(s: impl Into<String>) -> Both {
    let s = s.into();
    (s.clone(), s)
}

fn binary(a: &Both, op: &str, b: &Both) -> Both {
    (
        format!("({} {op} {})", a.0, b.0),
        format!("({} {} {})", a.1, op.to_uppercase(), b.1),
    )
}

struct Gen {
    rng: Rng,
    /// Beyond SQLite's common ground (JIT against interpreter only).
    wide: bool,
}

impl Gen {
    fn int(&mut self, depth: u32) -> Both {
        if depth == 0 || self.rng.chance(30) {
            return match self.rng.below(10) {
                0..=4 => same("i"),
                5 => same("null"),
                _ if self.wide && self.rng.chance(30) => same(*self.rng.pick(&[
                    "9223372036854775807",
                    "(-9223372036854775807 - 1)",
                    "(-1)",
                    "0",
                    "4611686018427387904",
                ])),
                _ => {
                    let v = self.rng.below(201) as i64 - 100;
                    same(if v < 0 {
                        format!("({v})")
                    } else {
                        v.to_string()
                    })
                }
            };
        }
        let d = depth - 1;
        match self.rng.below(9) {
            0..=4 => {
                let op = *self.rng.pick(&["+", "-", "*", "/", "%"]);
                let (a, b) = (self.int(d), self.int(d));
                binary(&a, op, &b)
            }
            5 => {
                let a = self.int(d);
                (format!("-({})", a.0), format!("-({})", a.1))
            }
            6 => {
                let a = self.int(d);
                (format!("abs({})", a.0), format!("abs({})", a.1))
            }
            7 => {
                let a = self.text(d);
                (format!("length({})", a.0), format!("length({})", a.1))
            }
            _ if self.wide && self.rng.chance(30) => {
                let a = self.int(d);
                (format!("coalesce({})", a.0), String::new())
            }
            _ => {
                let (a, b) = (self.int(d), self.int(d));
                (
                    format!("coalesce({}, {})", a.0, b.0),
                    format!("coalesce({}, {})", a.1, b.1),
                )
            }
        }
    }

    fn float(&mut self, depth: u32) -> Both {
        if depth == 0 || self.rng.chance(30) {
            return match self.rng.below(8) {
                0..=3 => same("f"),
                4 => self.int(0),
                _ => {
                    let v = if self.wide && self.rng.chance(30) {
                        *self.rng.pick(&[1e308, -1e308, 5e-324, -0.0])
                    } else {
                        *self.rng.pick(&[0.0, 1.5, -0.25, 2.0, 100.0, -3.75, 0.1])
                    };
                    same(if v < 0.0 {
                        format!("({v:?})")
                    } else {
                        format!("{v:?}")
                    })
                }
            };
        }
        let d = depth - 1;
        match self.rng.below(6) {
            0..=3 => {
                let ops: &[&str] = if self.wide {
                    &["+", "-", "*", "/", "%"]
                } else {
                    &["+", "-", "*", "/"]
                };
                let op = *self.rng.pick(ops);
                let a = self.float(d);
                let b = if self.rng.chance(30) {
                    self.int(d)
                } else {
                    self.float(d)
                };
                binary(&a, op, &b)
            }
            4 => {
                let a = self.float(d);
                (format!("abs({})", a.0), format!("abs({})", a.1))
            }
            _ => {
                let a = self.float(d);
                (format!("-({})", a.0), format!("-({})", a.1))
            }
        }
    }

    fn text_char(&mut self) -> char {
        if self.wide && self.rng.chance(25) {
            *self.rng.pick(&['é', 'É', 'ß', 'İ', 'ﬃ', '😀', 'Σ'])
        } else {
            *self.rng.pick(&['a', 'b', 'A', 'B', ' ', '\''])
        }
    }

    /// A short random text, or one of a few longer ones that differ only
    /// in their first, middle or last byte (lengths 4 to 17: the widths the
    /// JIT compares inline, and just past them).
    fn text_value(&mut self) -> String {
        if self.rng.chance(25) {
            return self.rng.pick(LONGER_TEXTS).to_string();
        }
        let len = self.rng.below(4);
        (0..len).map(|_| self.text_char()).collect()
    }

    fn text_literal(&mut self) -> String {
        let s = self.text_value();
        format!("'{}'", s.replace('\'', "''"))
    }

    fn text(&mut self, depth: u32) -> Both {
        if depth == 0 || self.rng.chance(40) {
            return match self.rng.below(6) {
                0..=2 => same("t"),
                3 => same("null"),
                _ => same(self.text_literal()),
            };
        }
        let d = depth - 1;
        let a = self.text(d);
        match self.rng.below(3) {
            0 => (format!("lower({})", a.0), format!("lower({})", a.1)),
            1 => (format!("upper({})", a.0), format!("upper({})", a.1)),
            _ => {
                let b = self.text(d);
                (
                    format!("coalesce({}, {})", a.0, b.0),
                    format!("coalesce({}, {})", a.1, b.1),
                )
            }
        }
    }

    fn duration(&mut self) -> Both {
        let (text, micros) = *self.rng.pick(&[
            ("1d", DAY),
            ("12h", DAY / 2),
            ("1w", 7 * DAY),
            ("90m", DAY / 16),
            ("1s", 1_000_000),
        ]);
        (text.to_string(), micros.to_string())
    }

    fn timestamp(&mut self, depth: u32) -> Both {
        if depth == 0 || self.rng.chance(40) {
            return match self.rng.below(6) {
                0..=2 => same("ts"),
                3 => ("now()".to_string(), NOW.to_string()),
                _ => {
                    let micros = NOW + (self.rng.below(21) as i64 - 10) * DAY / 2;
                    (format_timestamp(micros), micros.to_string())
                }
            };
        }
        let a = self.timestamp(depth - 1);
        let op = *self.rng.pick(&["+", "-"]);
        let b = self.duration();
        binary(&a, op, &b)
    }

    fn list(&mut self, item: impl Fn(&mut Gen) -> Both) -> Both {
        let n = 1 + self.rng.below(if self.wide { 7 } else { 5 });
        let items: Vec<Both> = (0..n).map(|_| item(self)).collect();
        (
            items
                .iter()
                .map(|i| i.0.clone())
                .collect::<Vec<_>>()
                .join(", "),
            items
                .iter()
                .map(|i| i.1.clone())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    fn condition(&mut self, depth: u32) -> Both {
        let cmp = *self.rng.pick(&["=", "!=", "<", "<=", ">", ">="]);
        let sql_cmp = |op: &str| {
            if op == "!=" {
                "<>".to_string()
            } else {
                op.to_string()
            }
        };
        let compare = |a: Both, b: Both, op: &str| {
            (
                format!("({} {op} {})", a.0, b.0),
                format!("({} {} {})", a.1, sql_cmp(op), b.1),
            )
        };
        let not = |negated: bool| if negated { "not " } else { "" };
        let d = depth.saturating_sub(1);
        match self.rng.below(if depth == 0 { 8 } else { 14 }) {
            0 => {
                let (a, b) = (self.int(d), self.int(d));
                compare(a, b, cmp)
            }
            1 => {
                let (a, b) = (self.float(d), self.int(d));
                compare(a, b, cmp)
            }
            2 => {
                let (a, b) = (self.text(d), self.text(d));
                compare(a, b, cmp)
            }
            3 => {
                let (a, b) = (self.timestamp(d), self.timestamp(d));
                compare(a, b, cmp)
            }
            4 => {
                let (a, b) = (self.timestamp(d), self.timestamp(d));
                let span = (
                    format!("({} - {})", a.0, b.0),
                    format!("({} - {})", a.1, b.1),
                );
                compare(span, self.duration(), cmp)
            }
            5 => match self.rng.below(3) {
                0 => same("b"),
                1 => same(*self.rng.pick(&["true", "false"])),
                _ => compare(same("b"), same(*self.rng.pick(&["true", "false"])), cmp),
            },
            6 => {
                let negated = self.rng.chance(50);
                let pattern = {
                    let len = 1 + self.rng.below(3);
                    let s: String = (0..len)
                        .map(|_| {
                            if self.wide && self.rng.chance(20) {
                                'é'
                            } else {
                                *self.rng.pick(&['a', 'b', 'A', '%', '_', ' '])
                            }
                        })
                        .collect();
                    format!("'{s}'")
                };
                let a = self.text(d);
                let kw = if negated { "NOT LIKE" } else { "LIKE" };
                (
                    format!("({} {}like {pattern})", a.0, not(negated)),
                    format!("({} {kw} {pattern})", a.1),
                )
            }
            7 => {
                let negated = self.rng.chance(50);
                let a = match self.rng.below(4) {
                    0 => self.int(d),
                    1 => self.text(d),
                    2 => self.float(d),
                    _ => self.timestamp(d),
                };
                let kw = if negated { "IS NOT NULL" } else { "IS NULL" };
                (
                    format!("({} is {}null)", a.0, not(negated)),
                    format!("({} {kw})", a.1),
                )
            }
            8 => {
                let negated = self.rng.chance(50);
                let (x, items) = if self.rng.chance(50) {
                    (self.int(d), self.list(|g| g.int(0)))
                } else {
                    (self.text(d), self.list(|g| g.text(0)))
                };
                let kw = if negated { "NOT IN" } else { "IN" };
                (
                    format!("({} {}in ({}))", x.0, not(negated), items.0),
                    format!("({} {kw} ({}))", x.1, items.1),
                )
            }
            9 => {
                let negated = self.rng.chance(50);
                let (x, lo, hi) = (self.int(d), self.int(d), self.float(d));
                let kw = if negated { "NOT BETWEEN" } else { "BETWEEN" };
                (
                    format!("({} {}between {} and {})", x.0, not(negated), lo.0, hi.0),
                    format!("({} {kw} {} AND {})", x.1, lo.1, hi.1),
                )
            }
            10 | 11 => {
                let op = *self.rng.pick(&["and", "or"]);
                let (a, b) = (self.condition(d), self.condition(d));
                binary(&a, op, &b)
            }
            12 => {
                let a = self.condition(d);
                (format!("(not {})", a.0), format!("(NOT {})", a.1))
            }
            _ => {
                let (a, b) = (self.condition(d), self.condition(d));
                let op: &str = if self.rng.chance(50) { "=" } else { "!=" };
                compare(a, b, op)
            }
        }
    }

    /// A record: id, i, f, t, b, ts — each but id NULL one time in five.
    fn record(&mut self, id: i64) -> Vec<Value> {
        let mut r = vec![Value::Int(id)];
        let null = |g: &mut Gen| g.rng.chance(20);
        r.push(if null(self) {
            Value::Null
        } else if self.wide && self.rng.chance(10) {
            Value::Int(*self.rng.pick(&[i64::MAX, i64::MIN, -1]))
        } else {
            Value::Int(self.rng.below(201) as i64 - 100)
        });
        r.push(if null(self) {
            Value::Null
        } else {
            Value::Float(
                *self
                    .rng
                    .pick(&[0.0, 1.5, -0.25, 2.0, 99.5, -3.75, 0.1, 7.0]),
            )
        });
        r.push(if null(self) {
            Value::Null
        } else {
            Value::Text(self.text_value())
        });
        r.push(if null(self) {
            Value::Null
        } else {
            Value::Bool(self.rng.chance(50))
        });
        r.push(if null(self) {
            Value::Null
        } else {
            Value::Timestamp(NOW + (self.rng.below(41) as i64 - 20) * DAY / 4)
        });
        r
    }
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Null => None,
        other => panic!("a condition evaluated to {other:?}"),
    }
}

fn run_case(conn: Option<&Connection>, jit: &Jit, seed: u64) {
    let mut g = Gen {
        rng: Rng::new(seed),
        wide: conn.is_none(),
    };
    let conditions: Vec<Both> = (0..1 + g.rng.below(4)).map(|_| g.condition(3)).collect();
    // Past 64 records, NULL bitmaps take more than one word.
    let records: Vec<Vec<Value>> = (0..1 + g.rng.below(100) as i64)
        .map(|id| g.record(id))
        .collect();

    let rules: String = conditions
        .iter()
        .map(|c| format!("        when {} then end\n", c.0))
        .collect();
    // One more step per condition gives its truth value: rule 0 fires when
    // it is NULL, rule 1 when it is true, none when it is false.
    let truth_steps: String = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "    step c{i} {{\n        when ({}) is null then end\n        when {} then end\n    }}\n",
                c.0, c.0
            )
        })
        .collect();
    let track = format!(
        "track oracle {{\n    source key id {{ SELECT id, i, f, t, b, ts FROM r }}\n    \
         fields {{ id: int, i: int?, f: float?, t: text?, b: bool?, ts: timestamp? }}\n    \
         step s {{\n{rules}    }}\n{truth_steps}}}\n"
    );
    let compilation = trackc_compiler::compile_str("oracle.dt", &track, None);
    let errors: Vec<String> = compilation
        .errors()
        .map(|d| format!("{} {}", d.code, d.message))
        .collect();
    assert!(
        errors.is_empty(),
        "seed {seed}: the generated track does not compile: {errors:?}\n{track}"
    );
    let ir = &compilation.program.tracks[0];
    let step = &ir.steps[0];
    let env = Env { now: NOW };

    // The JIT over the records as one block.
    let types: Vec<Type> = ir.fields.iter().map(|f| f.ty).collect();
    let mut builder = BlockBuilder::new(&types);
    for r in &records {
        builder.push(&r[0].to_string(), r).unwrap();
    }
    let block = builder.finish();
    let jit_step = |s: usize| {
        jit.compile(&types, &ir.steps[s])
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{track}"))
            .eval(&block, env)
            .unwrap()
    };
    let jit_fired = jit_step(0);
    let jit_truths: Vec<Vec<Option<bool>>> = (0..conditions.len())
        .map(|i| {
            jit_step(1 + i)
                .into_iter()
                .map(|r| match r {
                    Some(0) => None,
                    Some(_) => Some(true),
                    None => Some(false),
                })
                .collect()
        })
        .collect();

    let sql_rows = conn.map(|conn| sqlite_rows(conn, seed, &conditions, &records));
    for (n, record) in records.iter().enumerate() {
        let fired = eval_step(step, record, env);
        let explain = || {
            let sql = sql_rows
                .as_ref()
                .map(|(q, rows)| format!("SQL: {q}\nrow: {:?}", rows[n]))
                .unwrap_or_default();
            format!("seed {seed}\nrecord {record:?}\ntrack:\n{track}\n{sql}")
        };
        assert_eq!(
            jit_fired[n],
            fired,
            "the JIT and the interpreter fire different rules\n{}",
            explain()
        );
        for (i, rule) in step.rules.iter().enumerate() {
            let ours = truth(&eval(rule.condition.as_ref().unwrap(), record, env));
            assert_eq!(
                jit_truths[i][n],
                ours,
                "condition {} differs between the JIT and the interpreter: {}\n{}",
                i + 1,
                conditions[i].0,
                explain()
            );
        }
        let Some((_, rows)) = &sql_rows else {
            continue;
        };
        let row = &rows[n];
        assert_eq!(
            SqlValue::Integer(fired.map_or(0, |r| r as i64 + 1)),
            row[1],
            "the fired rule differs from SQLite's\n{}",
            explain()
        );
        for (i, rule) in step.rules.iter().enumerate() {
            let ours = truth(&eval(rule.condition.as_ref().unwrap(), record, env));
            let theirs = match &row[2 + i] {
                SqlValue::Null => None,
                SqlValue::Integer(v) => Some(*v != 0),
                other => panic!("SQLite gave {other:?} for a condition\n{}", explain()),
            };
            assert_eq!(
                ours,
                theirs,
                "condition {} differs from SQLite: {}\n{}",
                i + 1,
                conditions[i].0,
                explain()
            );
        }
    }
}

/// SQLite's answers: the query and, per record, (id, fired rule, truth of
/// each condition).
fn sqlite_rows(
    conn: &Connection,
    seed: u64,
    conditions: &[Both],
    records: &[Vec<Value>],
) -> (String, Vec<Vec<SqlValue>>) {
    conn.execute("DELETE FROM r", []).unwrap();
    for r in records {
        let params: Vec<SqlValue> = r.iter().map(sql_value).collect();
        conn.execute(
            "INSERT INTO r VALUES (?, ?, ?, ?, ?, ?)",
            rusqlite::params_from_iter(params),
        )
        .unwrap();
    }
    let case: String = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| format!(" WHEN {} THEN {}", c.1, i + 1))
        .collect();
    let columns: String = conditions.iter().map(|c| format!(", {}", c.1)).collect();
    let query = format!("SELECT id, CASE{case} ELSE 0 END{columns} FROM r ORDER BY id");
    let mut statement = conn
        .prepare(&query)
        .unwrap_or_else(|e| panic!("seed {seed}: SQLite rejects the query: {e}\n{query}"));
    let rows = statement
        .query_map([], |row| {
            (0..2 + conditions.len())
                .map(|i| row.get::<_, SqlValue>(i))
                .collect()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (query, rows)
}

fn cases() -> u64 {
    std::env::var("TRACKC_ORACLE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1500)
}

fn replay() -> Option<u64> {
    std::env::var("TRACKC_ORACLE_SEED")
        .ok()
        .map(|s| s.parse().expect("TRACKC_ORACLE_SEED is a number"))
}

#[test]
fn interpreter_jit_and_sqlite_agree() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("PRAGMA case_sensitive_like = ON; CREATE TABLE r (id, i, f, t, b, ts);")
        .unwrap();
    let jit = Jit::new().unwrap();
    match replay() {
        Some(seed) => run_case(Some(&conn), &jit, seed),
        None => (0..cases()).for_each(|seed| run_case(Some(&conn), &jit, seed)),
    }
}

#[test]
fn jit_agrees_with_interpreter_at_the_edges() {
    let jit = Jit::new().unwrap();
    match replay() {
        Some(seed) => run_case(None, &jit, seed),
        None => (0..cases()).for_each(|seed| run_case(None, &jit, seed)),
    }
}
