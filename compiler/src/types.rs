//! The types of the language (LANGUAGE.md, "Records and fields").

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Int,
    Float,
    Bool,
    Text,
    /// A UTC instant, as microseconds since the Unix epoch.
    Timestamp,
    /// Microseconds. Only a literal or `timestamp - timestamp`.
    Duration,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::Int => "int",
            Type::Float => "float",
            Type::Bool => "bool",
            Type::Text => "text",
            Type::Timestamp => "timestamp",
            Type::Duration => "duration",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<crate::syntax::ast::TypeName> for Type {
    fn from(name: crate::syntax::ast::TypeName) -> Type {
        use crate::syntax::ast::TypeName;
        match name {
            TypeName::Int => Type::Int,
            TypeName::Float => Type::Float,
            TypeName::Bool => Type::Bool,
            TypeName::Text => Type::Text,
            TypeName::Timestamp => Type::Timestamp,
        }
    }
}

/// The language type of a SQL column type, by its SQL spelling; `None` for
/// types the language has no counterpart for (arrays, bytea, …).
pub fn from_sql_type(sql_type: &str) -> Option<Type> {
    let lower = sql_type.to_ascii_lowercase();
    if lower.contains('[') {
        return None;
    }
    // Without what is in parentheses (lengths, precisions, an ENUM's
    // values) and MySQL's attributes of a numeric type (`INT(11) UNSIGNED
    // ZEROFILL`), which do not change what it is to a track: an unsigned
    // value too large for an int is an error when it is read.
    let mut bare = String::new();
    let mut depth = 0usize;
    for c in lower.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = bare.split_whitespace().collect();
    let numeric_attribute = |w: &&str| matches!(*w, "unsigned" | "signed" | "zerofill");
    if !words.is_empty() && words.iter().all(numeric_attribute) {
        // MySQL's `CAST(x AS SIGNED)`.
        return Some(Type::Int);
    }
    let base = words
        .iter()
        .filter(|w| !numeric_attribute(w))
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let base = base.as_str();
    let ty = match base {
        "int" | "integer" | "bigint" | "smallint" | "tinyint" | "mediumint" | "int2" | "int4"
        | "int8" | "serial" | "bigserial" | "smallserial" | "serial4" | "serial8" | "year" => {
            Type::Int
        }
        "real" | "float" | "double" | "double precision" | "numeric" | "decimal" | "float4"
        | "float8" | "dec" | "fixed" => Type::Float,
        "bool" | "boolean" => Type::Bool,
        "text" | "varchar" | "character varying" | "char" | "character" | "string" | "citext"
        | "uuid" | "json" | "jsonb" | "name" | "clob" | "nvarchar" | "nchar" | "tinytext"
        | "mediumtext" | "longtext" | "enum" | "set" => Type::Text,
        _ if base.starts_with("timestamp") || base == "datetime" || base == "date" => {
            Type::Timestamp
        }
        _ => return None,
    };
    Some(ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_types_map_to_language_types() {
        assert_eq!(from_sql_type("BIGINT"), Some(Type::Int));
        assert_eq!(from_sql_type("VARCHAR(255)"), Some(Type::Text));
        assert_eq!(from_sql_type("NUMERIC(10,2)"), Some(Type::Float));
        assert_eq!(
            from_sql_type("TIMESTAMP WITH TIME ZONE"),
            Some(Type::Timestamp)
        );
        assert_eq!(from_sql_type("timestamptz"), Some(Type::Timestamp));
        assert_eq!(from_sql_type("DOUBLE PRECISION"), Some(Type::Float));
        assert_eq!(from_sql_type("INTEGER[]"), None);
        assert_eq!(from_sql_type("BYTEA"), None);
        // MySQL's spellings.
        assert_eq!(from_sql_type("INT(11) UNSIGNED ZEROFILL"), Some(Type::Int));
        assert_eq!(from_sql_type("BIGINT UNSIGNED"), Some(Type::Int));
        assert_eq!(from_sql_type("UNSIGNED"), Some(Type::Int));
        assert_eq!(from_sql_type("DECIMAL(12,4)"), Some(Type::Float));
        assert_eq!(from_sql_type("DATETIME(6)"), Some(Type::Timestamp));
        assert_eq!(from_sql_type("ENUM('a b', 'c')"), Some(Type::Text));
        assert_eq!(from_sql_type("MEDIUMTEXT"), Some(Type::Text));
        assert_eq!(from_sql_type("TINYINT(1)"), Some(Type::Int));
        assert_eq!(from_sql_type("BLOB"), None);
    }
}
