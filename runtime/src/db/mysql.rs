//! MariaDB and MySQL as source databases, through the `mysql` crate: a
//! synchronous driver, as the rest of the stores' loop is ("read a block,
//! decide it, apply it"), with no C library and no TLS or compression
//! features built. Only read, in read-only transactions; trackc never
//! writes to a source.
//!
//! Types (docs/runtime.md, "Sources in other databases"): integers of any
//! width to `int`, an unsigned value above `i64::MAX` an error naming the
//! column; `TINYINT(1)` (MySQL's BOOLEAN) to `bool`, non-zero true as in
//! MySQL; `DECIMAL` to the nearest `float` (about 15 significant digits);
//! `FLOAT`/`DOUBLE` to `float`; `DATETIME`, `TIMESTAMP` and `DATE` to
//! instants in UTC: the session's `time_zone` is `+00:00`, so a
//! `TIMESTAMP` is read as the instant it is, and a `DATETIME` (which has
//! no zone) is taken as UTC; text types and `ENUM` to `text` (UTF-8).

use super::{content_hash, mismatch, Dialect, Rows, Statement};
use crate::error::{Error, Fault, Result};
use crate::sqltext;
use mysql::prelude::Queryable;
use mysql::{Column, Conn, Opts, OptsBuilder};
use std::time::Duration;
use trackc_compiler::types::Type;
use trackc_compiler::value::Value;

/// How long connecting to a source database may take before the attempt
/// counts as failed (an unreachable host answers nothing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read may wait for the server: a source query that sorts
/// millions of rows takes minutes before its first row.
const READ_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the server waits for the runtime to read the next rows of a
/// result (its `net_write_timeout`, seconds): between reads a block is
/// decided and committed in the state database, which may be retrying a
/// lost connection for minutes. The server's default of 60 s would cut a
/// run short then.
const NET_WRITE_TIMEOUT_SECS: u32 = 3_600;
/// Tries of an operation whose connection was found dead before it read
/// anything: the second is on a new connection; a third would only wait
/// on a server that is down (the run fails and the next cycle tries).
const CONNECTION_TRIES: u32 = 2;

/// A MariaDB or MySQL database read as a track's source.
pub struct MySqlSource {
    opts: Opts,
    /// `None` after a connection fault: the next operation reconnects.
    conn: Option<Conn>,
    /// The URL without its password, for messages.
    shown: String,
}

impl MySqlSource {
    /// Connects (so that a wrong password or a missing database is told at
    /// once, not at the first run).
    pub fn open(url: &str) -> Result<MySqlSource> {
        MySqlSource::open_with_timeouts(url, CONNECT_TIMEOUT, READ_TIMEOUT)
    }

    /// `open`, waiting at most `connect` for a connection and `read` for
    /// an answer.
    pub fn open_with_timeouts(url: &str, connect: Duration, read: Duration) -> Result<MySqlSource> {
        let shown = super::DbUrl::MySql(url.to_string()).redacted();
        let opts = Opts::from_url(url)
            .map_err(|e| Error::Config(format!("the source database URL {shown}: {e}")))?;
        let opts: Opts = OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            .tcp_connect_timeout(Some(connect))
            .read_timeout(Some(read))
            .write_timeout(Some(read))
            .init(vec![
                "SET time_zone = '+00:00'".to_string(),
                format!("SET SESSION net_write_timeout = {NET_WRITE_TIMEOUT_SECS}"),
            ])
            .into();
        let mut source = MySqlSource {
            opts,
            conn: None,
            shown,
        };
        source.conn()?;
        Ok(source)
    }

    fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let conn = Conn::new(self.opts.clone())
                .map_err(|e| failure(&self.shown, "connecting to", e))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Runs `work` on the connection; a connection fault drops it, so the
    /// next operation connects again. A connection found dead before
    /// `work` handed anything on (`handed` still false) is connected again
    /// and `work` tried once more at once: the server closes idle
    /// connections (`wait_timeout`), restarts and fails over between runs,
    /// and a read that has not begun is safe to repeat.
    fn with_conn<T>(
        &mut self,
        doing: &str,
        handed: &std::cell::Cell<bool>,
        mut work: impl FnMut(&mut Conn) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let shown = self.shown.clone();
        let mut tries = 0;
        loop {
            tries += 1;
            let conn = self.conn()?;
            match work(conn) {
                Ok(v) => return Ok(v),
                Err(Failure::Driver(e)) => {
                    let e = failure(&shown, doing, e);
                    if e.fault() != Some(Fault::Connection) {
                        return Err(e);
                    }
                    self.conn = None;
                    if handed.get() || tries >= CONNECTION_TRIES {
                        return Err(e);
                    }
                }
                Err(Failure::Runtime(e)) => return Err(e),
            }
        }
    }

    /// Rows of `sql` wrapped by `wrap`, each turned into a `T`.
    fn query_wrapped<T>(
        &mut self,
        query: &Statement,
        wrap: impl FnOnce(&str) -> String,
        doing: &str,
        mut each: impl FnMut(mysql::Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let (sql, names) = sqltext::to_mysql(&query.sql)?;
        let params = bind(&names, &query.params)?;
        let sql = wrap(&sql);
        let handed = std::cell::Cell::new(false);
        self.with_conn(doing, &handed, |conn| {
            let rows = conn.exec_iter(sql.as_str(), params.clone())?;
            let mut out = Vec::new();
            for row in rows {
                out.push(each(row?).map_err(Failure::Runtime)?);
            }
            Ok(out)
        })
    }
}

/// What went wrong inside an operation: the driver's error (mapped with
/// what was being done), or one of the runtime's own (a value that does
/// not fit, or a block's work that failed).
enum Failure {
    Driver(mysql::Error),
    Runtime(Error),
}

impl From<mysql::Error> for Failure {
    fn from(e: mysql::Error) -> Failure {
        Failure::Driver(e)
    }
}

impl super::SourceDb for MySqlSource {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }

    fn ping(&mut self) -> Result<()> {
        let handed = std::cell::Cell::new(false);
        self.with_conn("pinging", &handed, |conn| Ok(conn.query_drop("SELECT 1")?))
    }

    fn read(
        &mut self,
        query: &Statement,
        types: &[Type],
        block_records: usize,
        each: &mut dyn FnMut(Rows) -> Result<()>,
    ) -> Result<()> {
        let (sql, names) = sqltext::to_mysql(&query.sql)?;
        let params = bind(&names, &query.params)?;
        let block_records = block_records.max(1);
        let handed = std::cell::Cell::new(false);
        self.with_conn("reading the source of", &handed, |conn| {
            // One consistent snapshot for the whole run: what committed
            // after it started is read by the next run.
            conn.query_drop("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")?;
            let streamed = (|| {
                // Rows come off the socket as they are iterated: memory is
                // one block, not the result.
                let mut rows = conn.exec_iter(sql.as_str(), params.clone())?;
                let columns: Vec<Column> = rows.columns().as_ref().to_vec();
                if columns.len() != types.len() {
                    return Err(Failure::Runtime(Error::Data(format!(
                        "the source returned {} columns where the track has {} fields",
                        columns.len(),
                        types.len()
                    ))));
                }
                let mut block = Vec::with_capacity(block_records);
                for row in rows.by_ref() {
                    block.push(convert_row(row?, types, &columns).map_err(Failure::Runtime)?);
                    if block.len() == block_records {
                        handed.set(true);
                        each(std::mem::replace(
                            &mut block,
                            Vec::with_capacity(block_records),
                        ))
                        .map_err(Failure::Runtime)?;
                    }
                }
                drop(rows);
                if !block.is_empty() {
                    handed.set(true);
                    each(block).map_err(Failure::Runtime)?;
                }
                Ok(())
            })();
            // The snapshot ends whatever happened (a read-only transaction
            // has nothing to keep).
            let ended = conn.query_drop("COMMIT");
            streamed?;
            Ok(ended?)
        })
    }

    fn count_rows(&mut self, query: &Statement) -> Result<u64> {
        let n = self.query_wrapped(
            query,
            |sql| format!("SELECT COUNT(*) FROM ({sql}) AS trackc_count"),
            "counting the rows of",
            |row| {
                let v: Option<mysql::Value> = row.get(0);
                Ok(match v {
                    Some(mysql::Value::Int(n)) => n.max(0) as u64,
                    Some(mysql::Value::UInt(n)) => n,
                    _ => 0,
                })
            },
        )?;
        Ok(n.first().copied().unwrap_or(0))
    }

    fn query_fingerprint(&mut self, query: &Statement) -> Result<String> {
        let rows = self.query_wrapped(query, str::to_string, "the change query of", |row| {
            let mut text = String::new();
            for v in row.unwrap() {
                text.push_str(&format!("{v:?}\u{1f}"));
            }
            text.push('\u{1e}');
            Ok(text)
        })?;
        Ok(content_hash(&rows.concat()))
    }

    fn explain(&mut self, query: &Statement) -> Result<String> {
        let lines = self.query_wrapped(
            query,
            |sql| format!("EXPLAIN {sql}"),
            "explaining",
            |row| {
                let columns = row.columns();
                let values = row.unwrap();
                Ok(columns
                    .iter()
                    .zip(values)
                    .filter(|(_, v)| *v != mysql::Value::NULL)
                    .map(|(c, v)| format!("{}={}", c.name_str(), shown_value(&v)))
                    .collect::<Vec<_>>()
                    .join(" "))
            },
        )?;
        Ok(lines.join("\n"))
    }
}

fn shown_value(v: &mysql::Value) -> String {
    match v {
        mysql::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        mysql::Value::Int(i) => i.to_string(),
        mysql::Value::UInt(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

/// The driver's error as the runtime's: a lost or refused connection is
/// transient (the next operation reconnects); a wrong password or a
/// missing database is said in those words.
fn failure(shown: &str, doing: &str, e: mysql::Error) -> Error {
    use mysql::Error as E;
    let context = format!("{doing} the source database {shown}");
    match e {
        E::MySqlError(server) => match server.code {
            1044 | 1045 => Error::Config(format!(
                "{context}: access denied ({}): check the user and password of the URL",
                server.message
            )),
            1049 => Error::Config(format!(
                "{context}: no such database ({}): check the database name of the URL",
                server.message
            )),
            // Deadlock, lock wait timeout: another try may pass.
            1205 | 1213 => Error::Transient {
                context,
                message: server.message,
                fault: Fault::Conflict,
            },
            // Statement time-outs (max_statement_time, max_execution_time).
            1969 | 3024 => Error::Transient {
                context,
                message: server.message,
                fault: Fault::Timeout,
            },
            // Server shutdown, connection killed, too many connections.
            1040 | 1053 | 1077 | 1152 | 1927 => Error::Transient {
                context,
                message: server.message,
                fault: Fault::Connection,
            },
            _ => Error::db(
                context,
                format!("{} (error {})", server.message, server.code),
            ),
        },
        E::DriverError(driver) => Error::Transient {
            context,
            // The driver's own words (its Display of the whole error is
            // its Debug form).
            message: driver.to_string(),
            fault: Fault::Connection,
        },
        E::IoError(io) => Error::Transient {
            context,
            message: io.to_string(),
            fault: Fault::Connection,
        },
        E::CodecError(codec) => Error::Transient {
            context,
            message: codec.to_string(),
            fault: Fault::Connection,
        },
        other => Error::db(context, other),
    }
}

/// The values of `names` (in order, repeats included), as the driver binds
/// them.
fn bind(names: &[String], params: &[(String, Value)]) -> Result<mysql::Params> {
    if names.is_empty() {
        return Ok(mysql::Params::Empty);
    }
    let values = names
        .iter()
        .map(|name| {
            let value = params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| Error::Data(format!("no value for the parameter :{name}")))?;
            to_mysql_value(value)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(mysql::Params::Positional(values))
}

fn to_mysql_value(v: &Value) -> Result<mysql::Value> {
    Ok(match v {
        Value::Null => mysql::Value::NULL,
        Value::Int(i) => mysql::Value::Int(*i),
        Value::Float(f) => mysql::Value::Double(*f),
        Value::Bool(b) => mysql::Value::Int(i64::from(*b)),
        Value::Text(s) => mysql::Value::Bytes(s.clone().into_bytes()),
        Value::Timestamp(t) => {
            use chrono::{Datelike, Timelike};
            let at = chrono::DateTime::from_timestamp_micros(*t)
                .ok_or_else(|| Error::Data(format!("the instant {t} µs is out of range")))?
                .naive_utc();
            let year = u16::try_from(at.year())
                .map_err(|_| Error::Data(format!("the instant {at} is outside MySQL's years")))?;
            mysql::Value::Date(
                year,
                at.month() as u8,
                at.day() as u8,
                at.hour() as u8,
                at.minute() as u8,
                at.second() as u8,
                at.nanosecond() / 1_000,
            )
        }
        Value::Duration(d) => {
            let negative = *d < 0;
            let us = d.unsigned_abs();
            let secs = us / 1_000_000;
            mysql::Value::Time(
                negative,
                u32::try_from(secs / 86_400)
                    .map_err(|_| Error::Data(format!("the duration {d} µs is out of range")))?,
                (secs / 3_600 % 24) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (us % 1_000_000) as u32,
            )
        }
    })
}

fn convert_row(row: mysql::Row, types: &[Type], columns: &[Column]) -> Result<Vec<Value>> {
    row.unwrap()
        .into_iter()
        .zip(types)
        .zip(columns)
        .map(|((v, ty), column)| convert(v, *ty, column))
        .collect()
}

/// The column's type as MySQL names it (`LONGLONG`, `NEWDECIMAL`, …).
fn type_name(column: &Column) -> String {
    let name = format!("{:?}", column.column_type());
    name.trim_start_matches("MYSQL_TYPE_").to_string()
}

/// One value of `column` as the field's type `ty`.
fn convert(v: mysql::Value, ty: Type, column: &Column) -> Result<Value> {
    use mysql::Value as M;
    let name = || column.name_str().into_owned();
    let bad = || {
        let e = mismatch(ty, &type_name(column));
        Err(Error::Data(format!("column `{}`: {e}", name())))
    };
    let text = |b: Vec<u8>| {
        String::from_utf8(b).map_err(|_| {
            Error::Data(format!(
                "column `{}`: the value is not UTF-8 text (a binary column?)",
                name()
            ))
        })
    };
    Ok(match (ty, v) {
        (_, M::NULL) => Value::Null,
        (Type::Int, M::Int(i)) => Value::Int(i),
        (Type::Int, M::UInt(u)) => Value::Int(i64::try_from(u).map_err(|_| {
            Error::Data(format!(
                "column `{}`: the unsigned value {u} does not fit a track's int \
                 (at most {}); cast it in the source query (CAST(… AS DOUBLE) for a float)",
                name(),
                i64::MAX
            ))
        })?),
        // The text protocol, or a DECIMAL with no fraction.
        (Type::Int, M::Bytes(b)) => {
            let s = text(b)?;
            match s.parse() {
                Ok(i) => Value::Int(i),
                Err(_) => {
                    return Err(Error::Data(format!(
                        "column `{}`: `{s}` is not a whole number that fits a track's int",
                        name()
                    )))
                }
            }
        }
        (Type::Float, M::Int(i)) => Value::Float(i as f64),
        (Type::Float, M::UInt(u)) => Value::Float(u as f64),
        (Type::Float, M::Float(f)) => Value::float(f64::from(f)),
        (Type::Float, M::Double(f)) => Value::float(f),
        // DECIMAL comes as its digits: the nearest float.
        (Type::Float, M::Bytes(b)) => {
            let s = text(b)?;
            match s.parse::<f64>() {
                Ok(f) => Value::float(f),
                Err(_) => {
                    return Err(Error::Data(format!(
                        "column `{}`: `{s}` is not a number",
                        name()
                    )))
                }
            }
        }
        (Type::Bool, M::Int(i)) => Value::Bool(i != 0),
        (Type::Bool, M::UInt(u)) => Value::Bool(u != 0),
        (Type::Bool, M::Bytes(b)) => match text(b)?.as_str() {
            "0" => Value::Bool(false),
            "1" => Value::Bool(true),
            other => {
                return Err(Error::Data(format!(
                    "column `{}`: `{other}` is not a boolean (0 or 1)",
                    name()
                )))
            }
        },
        (Type::Text, M::Bytes(b)) => Value::Text(text(b)?),
        (Type::Timestamp, M::Date(y, mo, d, h, mi, s, us)) => {
            let at = chrono::NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d))
                .and_then(|date| {
                    date.and_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)
                });
            match at {
                Some(at) => Value::Timestamp(at.and_utc().timestamp_micros()),
                None => {
                    return Err(Error::Data(format!(
                        "column `{}`: {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} is not a \
                         date (MariaDB's zero date?); write NULLIF(col, '0000-00-00') in \
                         the source query to read it as NULL",
                        name()
                    )))
                }
            }
        }
        (Type::Duration, M::Time(negative, days, h, mi, s, us)) => {
            let secs =
                ((i64::from(days) * 24 + i64::from(h)) * 60 + i64::from(mi)) * 60 + i64::from(s);
            let micros = secs * 1_000_000 + i64::from(us);
            Value::Duration(if negative { -micros } else { micros })
        }
        _ => return bad(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_bind_as_utc_datetimes() {
        // 2026-03-01T12:34:56.789012Z
        let v = to_mysql_value(&Value::Timestamp(1_772_368_496_789_012)).unwrap();
        assert_eq!(v, mysql::Value::Date(2026, 3, 1, 12, 34, 56, 789_012));
        let v = to_mysql_value(&Value::Duration(-90_061_000_001)).unwrap();
        assert_eq!(v, mysql::Value::Time(true, 1, 1, 1, 1, 1));
        let names = ["now".to_string(), "now".to_string()];
        let params = bind(&names, &[("now".into(), Value::Int(3))]).unwrap();
        assert_eq!(
            params,
            mysql::Params::Positional(vec![mysql::Value::Int(3), mysql::Value::Int(3)])
        );
        let e = bind(&["x".into()], &[]).unwrap_err().to_string();
        assert!(e.contains(":x"), "{e}");
    }
}
