//! Rewrites of track SQL before it runs, on its syntax tree (sqlparser),
//! never by pasting strings into it:
//! - `:name` parameters to PostgreSQL's `$n` (SQLite binds `:name` itself);
//! - `ts ± INTERVAL '…'` to SQLite's date arithmetic on SQLite, which has no
//!   intervals (tracks are written in PostgreSQL's dialect by default);
//! - a source query limited to the keys of a run's events.

use crate::db::Dialect;
use crate::error::{Error, Result};
use sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, DateTimeField, Expr, Interval, Query, SetExpr,
    Statement, TableFactor, Value,
};
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use std::ops::ControlFlow;
use trackc_compiler::types::Type;

fn parse_one(sql: &str) -> Result<Statement> {
    parse_in(sql, Dialect::Postgres)
}

/// One statement, parsed as `dialect` writes it. Track SQL for PostgreSQL
/// and SQLite is parsed as PostgreSQL's (tracks are written in it by
/// default; SQLite's differences are rewritten, see `for_sqlite`).
fn parse_in(sql: &str, dialect: Dialect) -> Result<Statement> {
    let parsed = match dialect {
        Dialect::MySql => Parser::parse_sql(&MySqlDialect {}, sql),
        Dialect::Postgres | Dialect::Sqlite => Parser::parse_sql(&PostgreSqlDialect {}, sql),
    };
    let mut statements =
        parsed.map_err(|e| Error::Data(format!("cannot parse the SQL `{}`: {e}", sql.trim())))?;
    if statements.len() != 1 {
        return Err(Error::Data(format!(
            "expected one SQL statement, found {}: `{}`",
            statements.len(),
            sql.trim()
        )));
    }
    Ok(statements.remove(0))
}

/// The parameters every SQL block has (LANGUAGE.md): the run's instants.
const INSTANT_PARAMS: [&str; 2] = ["now", "last_run"];

/// `sql` with `:name` parameters numbered `$1, $2, …` in order of first
/// use, and the names in that order (PostgreSQL's placeholders).
///
/// `:now` and `:last_run` become `CAST($n AS TIMESTAMPTZ)`: PostgreSQL
/// infers a parameter's type from where it stands, and in
/// `:last_run - INTERVAL '30 days'` (LANGUAGE.md's own example) it would
/// infer `interval`, to which an instant cannot be bound.
pub fn to_positional(sql: &str) -> Result<(String, Vec<String>)> {
    let mut statement = parse_one(sql)?;
    let mut names: Vec<String> = Vec::new();
    let _ = visit_expressions_mut(&mut statement, |expr| {
        let Expr::Value(v) = expr else {
            return ControlFlow::<()>::Continue(());
        };
        let Value::Placeholder(p) = &mut v.value else {
            return ControlFlow::Continue(());
        };
        let Some(name) = p.strip_prefix(':').map(str::to_string) else {
            return ControlFlow::Continue(());
        };
        let n = match names.iter().position(|x| *x == name) {
            Some(i) => i + 1,
            None => {
                names.push(name.clone());
                names.len()
            }
        };
        *p = format!("${n}");
        if INSTANT_PARAMS.contains(&name.as_str()) {
            let cast = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&format!("CAST(${n} AS TIMESTAMPTZ)"))
                .and_then(|mut p| p.parse_expr());
            if let Ok(cast) = cast {
                *expr = cast;
            }
        }
        ControlFlow::Continue(())
    });
    Ok((statement.to_string(), names))
}

/// `sql` with each `:name` parameter made MySQL's `?`, and the names in
/// order of occurrence (a name used twice is bound twice: MySQL's
/// placeholders are positional only).
pub fn to_mysql(sql: &str) -> Result<(String, Vec<String>)> {
    let mut statement = parse_in(sql, Dialect::MySql)?;
    let mut names: Vec<String> = Vec::new();
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let Expr::Value(v) = expr {
            if let Value::Placeholder(p) = &mut v.value {
                if let Some(name) = p.strip_prefix(':') {
                    names.push(name.to_string());
                    *p = "?".into();
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Ok((statement.to_string(), names))
}

/// `sql` runnable on SQLite: `x + INTERVAL '30 days'` becomes
/// `strftime('%Y-%m-%d %H:%M:%f', x, '+30 days')`. SQL without `INTERVAL`
/// is returned as written.
pub fn for_sqlite(sql: &str) -> Result<String> {
    if !sql.to_ascii_lowercase().contains("interval") {
        return Ok(sql.to_string());
    }
    let mut statement = parse_one(sql)?;
    let mut failure = None;
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let Expr::BinaryOp { left, op, right } = expr {
            let sign = match op {
                BinaryOperator::Plus => 1,
                BinaryOperator::Minus => -1,
                _ => return ControlFlow::Continue(()),
            };
            if let Expr::Interval(interval) = right.as_ref() {
                match sqlite_modifier(interval, sign) {
                    Ok(modifier) => {
                        let text = format!("strftime('%Y-%m-%d %H:%M:%f', {left}, '{modifier}')");
                        match Parser::new(&PostgreSqlDialect {})
                            .try_with_sql(&text)
                            .and_then(|mut p| p.parse_expr())
                        {
                            Ok(e) => *expr = e,
                            Err(e) => failure = Some(e.to_string()),
                        }
                    }
                    Err(e) => failure = Some(e),
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match failure {
        Some(e) => Err(Error::Data(format!(
            "cannot run `{}` on SQLite: {e}",
            sql.trim()
        ))),
        None => Ok(statement.to_string()),
    }
}

/// SQLite's date modifier for `sign * interval`: `'+30 days'`.
fn sqlite_modifier(interval: &Interval, sign: i64) -> std::result::Result<String, String> {
    let text = match interval.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            other => return Err(format!("unsupported interval value {other}")),
        },
        other => return Err(format!("unsupported interval value {other}")),
    };
    let mut words = text.split_whitespace();
    let amount: i64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("the interval '{text}' does not start with a whole number"))?;
    let unit = match (words.next(), &interval.leading_field) {
        (Some(unit), None) => unit.to_ascii_lowercase(),
        (None, Some(field)) => match field {
            DateTimeField::Second | DateTimeField::Seconds => "seconds".into(),
            DateTimeField::Minute | DateTimeField::Minutes => "minutes".into(),
            DateTimeField::Hour | DateTimeField::Hours => "hours".into(),
            DateTimeField::Day | DateTimeField::Days => "days".into(),
            DateTimeField::Week(_) | DateTimeField::Weeks => "weeks".into(),
            DateTimeField::Month | DateTimeField::Months => "months".into(),
            DateTimeField::Year | DateTimeField::Years => "years".into(),
            other => return Err(format!("unsupported interval unit {other}")),
        },
        _ => return Err(format!("unsupported interval '{text}'")),
    };
    let unit = unit.trim_end_matches('s');
    let (amount, unit) = match unit {
        "second" | "sec" => (amount, "seconds"),
        "minute" | "min" => (amount, "minutes"),
        "hour" => (amount, "hours"),
        "day" => (amount, "days"),
        "week" => (amount * 7, "days"),
        "month" | "mon" => (amount, "months"),
        "year" => (amount, "years"),
        other => return Err(format!("unsupported interval unit `{other}`")),
    };
    let amount = amount * sign;
    Ok(format!("{amount:+} {unit}"))
}

/// The parameter the keys of a run's events are bound to, as one text:
/// a JSON array on SQLite, an array literal on PostgreSQL (`event_keys`).
pub const EVENT_KEYS_PARAM: &str = "trackc_event_keys";

/// `source` limited to the records whose `key` column is one of the keys
/// bound to `:trackc_event_keys`, built as a tree:
/// `SELECT * FROM (source) AS trackc_source WHERE trackc_source.key IN …`.
/// An integer key is compared as an integer and a text key as text, so
/// that the source's primary key or index finds the records instead of a
/// scan; a key of another type is compared as text (its column is cast,
/// which scans). All the keys are one parameter, so the text of the query
/// is the same whatever their number, and a run binds ten thousand keys
/// as easily as one.
pub fn filter_by_keys(source: &str, key: &str, ty: Type, dialect: Dialect) -> Result<String> {
    let Statement::Query(inner) = parse_in(source, dialect)? else {
        return Err(Error::Data("the source is not a query".into()));
    };
    let quote = if dialect == Dialect::MySql { '`' } else { '"' };
    let column = format!(
        "trackc_source.{}",
        sqlparser::ast::Ident::with_quote(quote, key)
    );
    let keys = format!(":{EVENT_KEYS_PARAM}");
    let condition = match (dialect, ty) {
        (Dialect::Sqlite, Type::Int | Type::Text) => {
            format!("{column} IN (SELECT value FROM json_each({keys}))")
        }
        (Dialect::Sqlite, _) => {
            format!("CAST({column} AS TEXT) IN (SELECT value FROM json_each({keys}))")
        }
        // The keys bound as an array parameter (a constant to the planner:
        // an index scan, or a hashed comparison if it scans). An array cast
        // from a text parameter is an expression instead, evaluated again
        // for every row: a table without statistics took minutes for
        // 30,000 keys.
        (Dialect::Postgres, Type::Int) => format!("{column} = ANY(CAST({keys} AS BIGINT[]))"),
        (Dialect::Postgres, _) => format!("CAST({column} AS TEXT) = ANY(CAST({keys} AS TEXT[]))"),
        // MariaDB 10.6+ and MySQL 8 read a JSON array as a table.
        (Dialect::MySql, Type::Int) => format!(
            "{column} IN (SELECT trackc_key FROM JSON_TABLE({keys}, '$[*]' \
             COLUMNS (trackc_key BIGINT PATH '$')) AS trackc_keys)"
        ),
        (Dialect::MySql, _) => format!(
            "CAST({column} AS CHAR) IN (SELECT trackc_key FROM JSON_TABLE({keys}, '$[*]' \
             COLUMNS (trackc_key VARCHAR({MYSQL_TEXT_KEY_MAX}) PATH '$')) AS trackc_keys)"
        ),
    };
    let as_text = if dialect == Dialect::MySql {
        "CHAR"
    } else {
        "TEXT"
    };
    // In the order of the records' keys as text, the order of the state
    // table's primary key: a block's state reads and writes then fall on
    // neighbouring pages instead of all over it (the events of a batch
    // name keys from anywhere in the source). A sort of at most a batch.
    let template = format!(
        "SELECT * FROM (SELECT 1) AS trackc_source WHERE {condition} \
         ORDER BY CAST({column} AS {as_text})"
    );
    let Statement::Query(mut outer) = parse_in(&template, dialect)? else {
        unreachable!("the template is a query")
    };
    replace_derived(&mut outer, inner)?;
    Ok(outer.to_string())
}

/// The longest text key an event run finds in a MariaDB/MySQL source (the
/// column of the key table the keys are read into; a longer key is cut
/// there and finds no record). Keys are identifiers: 768 characters is
/// InnoDB's longest indexable prefix of a utf8mb4 column.
pub const MYSQL_TEXT_KEY_MAX: usize = 768;

/// The value of `:trackc_event_keys` for `keys` (each the key field's
/// type, `runs::typed_key`): a JSON array, read by SQLite's `json_each`
/// and bound as a `bigint[]` or `text[]` on PostgreSQL.
pub fn event_keys(keys: &[trackc_compiler::value::Value]) -> String {
    use trackc_compiler::value::Value as V;
    let items: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| match k {
            V::Int(i) => serde_json::Value::from(*i),
            other => serde_json::Value::from(key_text(other)),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn key_text(v: &trackc_compiler::value::Value) -> String {
    match v {
        trackc_compiler::value::Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

fn replace_derived(outer: &mut Query, inner: Box<Query>) -> Result<()> {
    if let SetExpr::Select(select) = outer.body.as_mut() {
        if let Some(TableFactor::Derived { subquery, .. }) =
            select.from.first_mut().map(|t| &mut t.relation)
        {
            *subquery = inner;
            return Ok(());
        }
    }
    Err(Error::Data(
        "internal: the key filter template changed".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_positional_in_order_of_first_use() {
        let (sql, names) =
            to_positional("UPDATE t SET a = :x, b = :y WHERE id = :x AND s = ':z'").unwrap();
        assert_eq!(
            sql,
            "UPDATE t SET a = $1, b = $2 WHERE id = $1 AND s = ':z'"
        );
        assert_eq!(names, ["x", "y"]);
    }

    #[test]
    fn the_run_instants_are_typed_for_postgres() {
        let (sql, names) =
            to_positional("SELECT id FROM c WHERE s > :last_run - INTERVAL '30 days' AND t < :now")
                .unwrap();
        assert_eq!(
            sql,
            "SELECT id FROM c WHERE s > CAST($1 AS TIMESTAMPTZ) - INTERVAL '30 days' AND t < \
             CAST($2 AS TIMESTAMPTZ)"
        );
        assert_eq!(names, ["last_run", "now"]);
    }

    #[test]
    fn intervals_become_sqlite_date_arithmetic() {
        let sql = for_sqlite(
            "SELECT id FROM c WHERE s > :last_run - INTERVAL '30 days' AND r < :now + INTERVAL '1 week'",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT id FROM c WHERE s > strftime('%Y-%m-%d %H:%M:%f', :last_run, '-30 days') \
             AND r < strftime('%Y-%m-%d %H:%M:%f', :now, '+7 days')"
        );
        assert_eq!(for_sqlite("SELECT 1").unwrap(), "SELECT 1");
        let e = for_sqlite("SELECT :now - INTERVAL 'soon'").unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
    }

    #[test]
    fn key_filter_wraps_the_source() {
        let source = "SELECT o.id AS order_id FROM orders o";
        let sql = filter_by_keys(source, "order_id", Type::Int, Dialect::Sqlite).unwrap();
        assert_eq!(
            sql,
            "SELECT * FROM (SELECT o.id AS order_id FROM orders o) AS trackc_source \
             WHERE trackc_source.\"order_id\" IN (SELECT value FROM json_each(:trackc_event_keys)) \
             ORDER BY CAST(trackc_source.\"order_id\" AS TEXT)"
        );
        let sql = filter_by_keys(source, "order_id", Type::Int, Dialect::Postgres).unwrap();
        assert!(
            sql.ends_with(
                "WHERE trackc_source.\"order_id\" = ANY(CAST(:trackc_event_keys AS BIGINT[])) \
                 ORDER BY CAST(trackc_source.\"order_id\" AS TEXT)"
            ),
            "{sql}"
        );
        let sql = filter_by_keys(source, "order_id", Type::Text, Dialect::Postgres).unwrap();
        assert!(
            sql.ends_with(
                "WHERE CAST(trackc_source.\"order_id\" AS TEXT) = ANY(CAST(:trackc_event_keys AS TEXT[])) \
                 ORDER BY CAST(trackc_source.\"order_id\" AS TEXT)"
            ),
            "{sql}"
        );
    }

    #[test]
    fn mysql_parameters_are_positional_per_occurrence() {
        let (sql, names) = to_mysql(
            "SELECT `id`, name FROM people WHERE seen > :last_run AND seen <= :now \
             AND touched > :last_run AND note <> ':x'",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT `id`, name FROM people WHERE seen > ? AND seen <= ? AND touched > ? \
             AND note <> ':x'"
        );
        assert_eq!(names, ["last_run", "now", "last_run"]);
    }

    #[test]
    fn mysql_key_filter_reads_the_keys_as_a_json_table() {
        let source = "SELECT p.`id` AS person FROM people p";
        let sql = filter_by_keys(source, "person", Type::Int, Dialect::MySql).unwrap();
        assert_eq!(
            sql,
            "SELECT * FROM (SELECT p.`id` AS person FROM people p) AS trackc_source \
             WHERE trackc_source.`person` IN (SELECT trackc_key FROM \
             JSON_TABLE(:trackc_event_keys, '$[*]' COLUMNS(trackc_key BIGINT PATH '$')) \
             AS trackc_keys) ORDER BY CAST(trackc_source.`person` AS CHAR)"
        );
        let sql = filter_by_keys(source, "person", Type::Text, Dialect::MySql).unwrap();
        assert!(
            sql.contains("CAST(trackc_source.`person` AS CHAR) IN"),
            "{sql}"
        );
        assert!(sql.contains("VARCHAR(768)"), "{sql}");
    }

    #[test]
    fn event_keys_are_one_json_array() {
        use trackc_compiler::value::Value as V;
        assert_eq!(event_keys(&[V::Int(1), V::Int(-20)]), "[1,-20]");
        let texts = [V::Text("a\"b".into()), V::Text("c\\d,e".into())];
        assert_eq!(event_keys(&texts), r#"["a\"b","c\\d,e"]"#);
    }
}
