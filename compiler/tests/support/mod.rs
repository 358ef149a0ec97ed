//! What the differential tests and the evaluation benchmark share: a
//! deterministic random generator and the mapping of values into SQLite.
//! (Included by path from `benches/eval.rs`; not every user needs every item.)
#![allow(dead_code)]

use rusqlite::types::Value as SqlValue;
use trackc_compiler::value::Value;

/// xorshift64*: small, fast, and the same on every machine and in every run.
pub struct Rng(pub u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A value as SQLite stores it: timestamps and durations as integer
/// microseconds, booleans as 0/1.
pub fn sql_value(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Int(x) | Value::Timestamp(x) | Value::Duration(x) => SqlValue::Integer(*x),
        Value::Float(x) => SqlValue::Real(*x),
        Value::Bool(x) => SqlValue::Integer(*x as i64),
        Value::Text(x) => SqlValue::Text(x.clone()),
    }
}
