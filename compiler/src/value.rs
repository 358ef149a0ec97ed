//! Runtime values of the language, as the reference interpreter sees them.

use crate::syntax::literals::{format_duration, format_timestamp};
use crate::types::Type;
use std::fmt;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// Microseconds.
    Duration(i64),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type of a non-NULL value.
    pub fn ty(&self) -> Option<Type> {
        Some(match self {
            Value::Null => return None,
            Value::Int(_) => Type::Int,
            Value::Float(_) => Type::Float,
            Value::Bool(_) => Type::Bool,
            Value::Text(_) => Type::Text,
            Value::Timestamp(_) => Type::Timestamp,
            Value::Duration(_) => Type::Duration,
        })
    }

    /// A float result: NaN (from `inf - inf` and the like) is NULL, as in
    /// SQLite, so that every non-NULL float compares.
    pub fn float(x: f64) -> Value {
        if x.is_nan() {
            Value::Null
        } else {
            Value::Float(x)
        }
    }
}

/// The value as it would be written in a track (`'it''s'`, `1h30m`, …).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "'{}'", v.replace('\'', "''")),
            Value::Timestamp(v) => f.write_str(&format_timestamp(*v)),
            Value::Duration(v) => f.write_str(&format_duration(*v)),
        }
    }
}
