//! The embedded store: one SQLite file in WAL mode, so that the run's
//! reader keeps its snapshot while the writer commits block after block.

use super::history::{self, BlockHistory};
use super::migrations::{sql_for, CREATE_MIGRATIONS_TABLE, MIGRATIONS};
use super::outbox as ob;
use super::owners;
use super::retry::{once, retrying, DbOptions, Reconnect};
use super::runs;
use super::timefmt::{format_sqlite_timestamp, parse_sqlite_timestamp};
use super::*;
use super::{audit, deploys, insight};
use crate::error::Fault;
use crate::sqltext;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;

pub struct SqliteStore {
    path: String,
    reader: Connection,
    writer: SqliteWriter,
}

pub struct SqliteWriter {
    conn: Connection,
    options: DbOptions,
    /// Track SQL as SQLite runs it, by the text the track wrote.
    rewritten: HashMap<String, String>,
}

/// How long SQLite itself waits for another writer's lock before it
/// answers "database is locked"; that answer is then retried like any
/// transient fault (`db::retry`).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Adds what the store was doing to a driver error; a busy or locked
/// database is transient (another process holds the write lock).
trait LiteContext<T> {
    fn lite(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> LiteContext<T> for rusqlite::Result<T> {
    fn lite(self, what: impl FnOnce() -> String) -> Result<T> {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        self.map_err(|e| match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => Error::Transient {
                context: what(),
                message: e.to_string(),
                fault: Fault::Conflict,
            },
            _ => Error::db(what(), e),
        })
    }
}

impl Reconnect for SqliteWriter {
    fn options(&self) -> &DbOptions {
        &self.options
    }

    /// A file does not go away like a connection.
    fn ensure_connected(&mut self) -> Result<()> {
        Ok(())
    }
}

fn connect(path: &str) -> Result<Connection> {
    let conn = Connection::open(path).lite(|| format!("cannot open the SQLite file `{path}`"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .lite(|| format!("{path}: busy timeout"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .lite(|| format!("{path}: cannot switch to WAL mode"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .lite(|| format!("{path}: synchronous"))?;
    Ok(conn)
}

/// A connection that cannot write: a source database is only read, and
/// opening it changes nothing in the file (no WAL switch).
fn connect_read_only(path: &str) -> Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .lite(|| format!("cannot open the SQLite source `{path}` to read"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .lite(|| format!("{path}: busy timeout"))?;
    Ok(conn)
}

impl SqliteStore {
    /// A source database: both connections read-only.
    pub fn open_read_only(path: &str, options: &DbOptions) -> Result<SqliteStore> {
        Ok(SqliteStore {
            path: path.to_string(),
            reader: connect_read_only(path)?,
            writer: SqliteWriter {
                conn: connect_read_only(path)?,
                options: options.clone(),
                rewritten: HashMap::new(),
            },
        })
    }

    pub fn open(path: &str, options: &DbOptions) -> Result<SqliteStore> {
        Ok(SqliteStore {
            path: path.to_string(),
            reader: connect(path)?,
            writer: SqliteWriter {
                conn: connect(path)?,
                options: options.clone(),
                rewritten: HashMap::new(),
            },
        })
    }

    fn conn(&mut self) -> &mut Connection {
        &mut self.writer.conn
    }

    /// The rows of track SQL `query` (rewritten for SQLite) wrapped by
    /// `wrap` (`EXPLAIN …`, `SELECT count(*) FROM (…)`), on the reader.
    fn read_wrapped<T>(
        &mut self,
        query: &Statement,
        wrap: impl Fn(&str) -> String,
        doing: &str,
        mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let sql = wrap(rewritten(&mut self.writer.rewritten, &query.sql)?);
        let what = || format!("{doing} `{}`", query.sql.trim());
        let mut stmt = self.reader.prepare(&sql).lite(what)?;
        bind(&mut stmt, &query.params)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().lite(what)? {
            out.push(map(row).lite(what)?);
        }
        Ok(out)
    }

    /// Runs `body` in one transaction on the writer, the whole of it tried
    /// again while the file is busy; a failed try is rolled back (a COMMIT
    /// that failed busy leaves its transaction open).
    fn transaction<T>(
        &mut self,
        what: impl Fn() -> String,
        mut body: impl FnMut(&Connection) -> Result<T>,
    ) -> Result<T> {
        retrying(&mut self.writer, |w| {
            let result = (|| {
                w.conn.execute_batch("BEGIN IMMEDIATE").lite(&what)?;
                let value = body(&w.conn)?;
                w.conn.execute_batch("COMMIT").lite(&what)?;
                Ok(value)
            })();
            if result.is_err() && !w.conn.is_autocommit() {
                let _ = w.conn.execute_batch("ROLLBACK");
            }
            result
        })
    }
}

/// A value as SQLite stores it: timestamps as text in SQLite's format,
/// booleans as 0/1, durations as microseconds.
fn to_sqlite(v: &Value) -> ToSqlOutput<'_> {
    ToSqlOutput::Owned(match v {
        Value::Null => SqlValue::Null,
        Value::Int(i) | Value::Duration(i) => SqlValue::Integer(*i),
        Value::Float(f) => SqlValue::Real(*f),
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Text(s) => return ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Timestamp(t) => SqlValue::Text(format_sqlite_timestamp(*t)),
    })
}

/// A column value converted to a field's type.
fn from_sqlite(v: ValueRef<'_>, ty: Type) -> Result<Value> {
    let bad = |got: &str| Err(mismatch(ty, got));
    Ok(match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (Type::Int, ValueRef::Integer(i)) => Value::Int(i),
        (Type::Int, ValueRef::Real(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Value::Int(f as i64)
        }
        (Type::Float, ValueRef::Integer(i)) => Value::Float(i as f64),
        (Type::Float, ValueRef::Real(f)) => Value::float(f),
        (Type::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (Type::Bool, ValueRef::Text(t)) => match t {
            b"true" | b"t" | b"TRUE" | b"1" => Value::Bool(true),
            b"false" | b"f" | b"FALSE" | b"0" => Value::Bool(false),
            _ => return bad("text"),
        },
        (Type::Text, ValueRef::Text(t)) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_string()),
            Err(_) => return bad("text that is not UTF-8"),
        },
        (Type::Text, ValueRef::Integer(i)) => Value::Text(i.to_string()),
        (Type::Text, ValueRef::Real(f)) => Value::Text(f.to_string()),
        (Type::Timestamp, ValueRef::Text(t)) => {
            match std::str::from_utf8(t).ok().and_then(parse_sqlite_timestamp) {
                Some(t) => Value::Timestamp(t),
                None => {
                    return Err(Error::Data(format!(
                        "a timestamp field got the text `{}`, which is no timestamp",
                        String::from_utf8_lossy(t)
                    )))
                }
            }
        }
        (Type::Timestamp, ValueRef::Integer(s)) => match s.checked_mul(1_000_000) {
            Some(t) => Value::Timestamp(t),
            None => return bad("integer out of range"),
        },
        (Type::Timestamp, ValueRef::Real(s)) => Value::Timestamp((s * 1e6) as i64),
        (Type::Duration, ValueRef::Integer(i)) => Value::Duration(i),
        (_, ValueRef::Real(_)) => return bad("real"),
        (_, ValueRef::Text(_)) => return bad("text"),
        (_, ValueRef::Blob(_)) => return bad("blob"),
    })
}

/// Every row of `sql`, mapped; `what` names the work in errors.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).lite(|| what.to_string())?;
    let rows = stmt.query_map(params, map).lite(|| what.to_string())?;
    rows.collect::<rusqlite::Result<_>>()
        .lite(|| what.to_string())
}

/// ?1 run: its events, oldest first.
const RUN_EVENTS: &str = "SELECT seq, name, key FROM trackc_events WHERE seq IN
    (SELECT value FROM json_each((SELECT event_seqs FROM trackc_runs WHERE id = ?1)))
    ORDER BY seq";

fn pending_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<PendingEvent> {
    Ok(PendingEvent {
        seq: r.get(0)?,
        name: r.get(1)?,
        key: r.get(2)?,
    })
}

/// The unfinished run of `track`, if any, to be resumed.
fn unfinished_run(tx: &Connection, track: &str) -> Result<Option<RunInfo>> {
    tx.query_row(&sqlite_placeholders(runs::UNFINISHED), [track], |r| {
        Ok(RunInfo::resumed(
            track,
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })
    .optional()
    .lite(|| format!("reading the unfinished run of {track}"))
}

/// A new run of `track` at `now` (for a batch of events `seqs`, the last
/// `event`; or in `pass`).
fn insert_run(
    tx: &Connection,
    track: &str,
    now: i64,
    event: Option<&PendingEvent>,
    pass: Option<i64>,
    seqs: Option<&str>,
) -> Result<RunInfo> {
    let what = || format!("opening a run of {track}");
    let last_run: i64 = tx
        .query_row(&sqlite_placeholders(runs::LATEST_FINISHED), [track], |r| {
            r.get(0)
        })
        .optional()
        .lite(what)?
        .unwrap_or(0);
    let id: i64 = tx
        .query_row(
            &sqlite_placeholders(runs::INSERT),
            params![
                track,
                event.map(|e| e.seq),
                event.and_then(|e| e.key.clone()),
                now,
                last_run,
                crate::clock::now_micros(),
                pass,
                seqs
            ],
            |r| r.get(0),
        )
        .lite(what)?;
    Ok(RunInfo::started(track, id, now, last_run, event))
}

fn epoch_of(conn: &Connection, track: &str) -> Result<u64> {
    let rows = query_all(
        conn,
        &sqlite_placeholders(owners::EPOCH),
        [track],
        "reading a track's epoch",
        |r| r.get::<_, i64>(0),
    )?;
    Ok(rows.first().map_or(0, |&e| e as u64))
}

/// Track SQL as SQLite runs it (`sqltext::for_sqlite`), rewritten once per
/// text.
fn rewritten<'c>(cache: &'c mut HashMap<String, String>, sql: &str) -> Result<&'c str> {
    if !cache.contains_key(sql) {
        cache.insert(sql.to_string(), sqltext::for_sqlite(sql)?);
    }
    Ok(&cache[sql])
}

/// Binds every `:name` of `stmt` from `params`.
fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[(String, Value)]) -> Result<()> {
    for i in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(i).unwrap_or("?").to_string();
        let plain = name.trim_start_matches([':', '@', '$']);
        let value = params
            .iter()
            .find(|(n, _)| n == plain)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Data(format!("no value for the SQL parameter {name}")))?;
        stmt.raw_bind_parameter(i, to_sqlite(value))
            .lite(|| format!("binding {name}"))?;
    }
    Ok(())
}

impl SqliteWriter {
    fn execute(&mut self, statement: &Statement) -> Result<usize> {
        let sql = rewritten(&mut self.rewritten, &statement.sql)?;
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .lite(|| format!("action SQL `{}`", statement.sql.trim()))?;
        bind(&mut stmt, &statement.params)?;
        stmt.raw_execute()
            .lite(|| format!("action SQL `{}`", statement.sql.trim()))
    }

    fn apply_one(&mut self, track: &str, c: &Change, applied: &mut Applied) -> Result<bool> {
        let s = &c.state;
        let written = match c.expected_seq {
            None => self
                .conn
                .prepare_cached(
                    "INSERT INTO trackc_state (track, key, step, entered_at, wake_at, seq, run_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (track, key) DO NOTHING",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        track,
                        c.key,
                        s.step,
                        s.entered_at,
                        s.wake_at,
                        s.seq,
                        s.run_id
                    ])
                }),
            Some(expected) => self
                .conn
                .prepare_cached(
                    "UPDATE trackc_state SET step = ?3, entered_at = ?4, wake_at = ?5, seq = ?6,
                     run_id = ?7 WHERE track = ?1 AND key = ?2 AND seq = ?8",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        track,
                        c.key,
                        s.step,
                        s.entered_at,
                        s.wake_at,
                        s.seq,
                        s.run_id,
                        expected
                    ])
                }),
        }
        .lite(|| format!("writing the state of `{}` in {track}", c.key))?;
        if written == 0 {
            applied.stale += 1;
            return Ok(false);
        }
        applied.changes += 1;
        for effect in &c.effects {
            match effect {
                EffectRow::Sql(statement) => {
                    self.execute(statement)?;
                    applied.sql += 1;
                }
                EffectRow::Outbox(o) => {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO trackc_outbox
                             (id, kind, track, key, target, recipient, payload, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                        )
                        .and_then(|mut st| {
                            st.execute(params![
                                o.id,
                                o.kind.name(),
                                o.track,
                                o.key,
                                o.target,
                                o.recipient,
                                o.payload,
                                o.at
                            ])
                        })
                        .lite(|| format!("writing outbox row {}", o.id))?;
                    applied.outbox += 1;
                }
                EffectRow::Event { id, name, key, at } => {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO trackc_events (id, name, key, created_at)
                             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
                        )
                        .and_then(|mut st| st.execute(params![id, name, key, at]))
                        .lite(|| format!("raising event {name} for `{key}`"))?;
                    applied.events += 1;
                }
            }
        }
        Ok(true)
    }
}

impl BlockWriter for SqliteWriter {
    fn load_states(
        &mut self,
        track: &str,
        keys: &[String],
    ) -> Result<HashMap<String, RecordState>> {
        let keys_json = serde_json::to_string(keys).expect("strings serialize");
        let rows = retrying(self, |w| {
            query_all(
                &w.conn,
                "SELECT key, step, entered_at, wake_at, seq, run_id FROM trackc_state
             WHERE track = ?1 AND key IN (SELECT value FROM json_each(?2))",
                params![track, keys_json],
                "reading record states",
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        RecordState {
                            step: r.get(1)?,
                            entered_at: r.get(2)?,
                            wake_at: r.get(3)?,
                            seq: r.get(4)?,
                            run_id: r.get(5)?,
                        },
                    ))
                },
            )
        })?;
        Ok(rows.into_iter().collect())
    }

    /// Tried again while the file is busy; a failed try is rolled back
    /// whole (a COMMIT that failed busy leaves its transaction open).
    fn apply(&mut self, track: &str, changes: &[Change], fence: Option<u64>) -> Result<Applied> {
        retrying(self, |w| {
            let result = w.apply_once(track, changes, fence);
            if result.is_err() && !w.conn.is_autocommit() {
                let _ = w.conn.execute_batch("ROLLBACK");
            }
            result
        })
    }
}

impl SqliteWriter {
    fn apply_once(
        &mut self,
        track: &str,
        changes: &[Change],
        fence: Option<u64>,
    ) -> Result<Applied> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .lite(|| "starting a block's transaction".into())?;
        if let Some(epoch) = fence {
            let current = epoch_of(&self.conn, track)?;
            owners::check_fence(track, epoch, current)?;
        }
        let mut applied = Applied::default();
        // The legend of the block's history, once per version.
        if let Some(h) = changes.iter().find_map(|c| c.history.as_ref()) {
            self.conn
                .prepare_cached(&sqlite_placeholders(history::ADD_LEGEND))
                .and_then(|mut st| st.execute(params![track, h.version, h.legend.as_str()]))
                .lite(|| format!("writing the history legend of {track}"))?;
        }
        let mut written = Vec::with_capacity(changes.len());
        for c in changes {
            if self.apply_one(track, c, &mut applied)? {
                written.push(c);
            }
        }
        if let Some(h) = BlockHistory::of(written.into_iter()) {
            self.conn
                .prepare_cached(&sqlite_placeholders(history::INSERT))
                .and_then(|mut st| {
                    st.execute(params![
                        track,
                        h.first.run_id,
                        h.first.at,
                        h.first.node,
                        fence.map(|e| e as i64),
                        h.first.version,
                        h.keys,
                        h.changes
                    ])
                })
                .lite(|| format!("writing the decision history of {track}"))?;
        }
        self.conn
            .execute_batch("COMMIT")
            .lite(|| "committing a block".into())?;
        Ok(applied)
    }
}

impl Store for SqliteStore {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let conn = self.conn();
        conn.execute_batch(CREATE_MIGRATIONS_TABLE)
            .lite(|| format!("{path}: creating trackc_migrations"))?;
        for m in MIGRATIONS {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .lite(|| format!("{path}: migration {}", m.version))?;
            let done: Option<i64> = tx
                .query_row(
                    "SELECT version FROM trackc_migrations WHERE version = ?1",
                    [m.version],
                    |r| r.get(0),
                )
                .optional()
                .lite(|| format!("{path}: reading migrations"))?;
            if done.is_none() {
                tx.execute_batch(&sql_for(m, false))
                    .lite(|| format!("{path}: migration {} ({})", m.version, m.name))?;
                tx.execute(
                    "INSERT INTO trackc_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![m.version, m.name, crate::clock::now_micros()],
                )
                .lite(|| format!("{path}: recording migration {}", m.version))?;
            }
            tx.commit()
                .lite(|| format!("{path}: migration {}", m.version))?;
        }
        Ok(())
    }

    fn options(&self) -> &DbOptions {
        &self.writer.options
    }

    fn ping(&mut self) -> Result<()> {
        once(&mut self.writer, |w| {
            w.conn
                .execute_batch("SELECT 1")
                .lite(|| "checking the database".into())
        })
    }

    fn migrations(&mut self) -> Result<Vec<i64>> {
        query_all(
            self.conn(),
            "SELECT version FROM trackc_migrations ORDER BY version",
            [],
            "reading migrations",
            |r| r.get(0),
        )
    }

    fn gather(
        &mut self,
        query: &Statement,
        types: &[Type],
        block_records: usize,
        each: &mut dyn FnMut(&mut dyn BlockWriter, Rows) -> Result<()>,
    ) -> Result<()> {
        let sql = rewritten(&mut self.writer.rewritten, &query.sql)?;
        let what = || format!("the source query `{}`", query.sql.trim());
        let mut stmt = self.reader.prepare(sql).lite(what)?;
        if stmt.column_count() != types.len() {
            return Err(Error::Data(format!(
                "{} returns {} columns, the track has {} fields",
                what(),
                stmt.column_count(),
                types.len()
            )));
        }
        bind(&mut stmt, &query.params)?;
        let mut rows = stmt.raw_query();
        let mut block = Vec::with_capacity(block_records);
        let mut number = 0u64;
        while let Some(row) = rows.next().lite(what)? {
            number += 1;
            let mut record = Vec::with_capacity(types.len());
            for (i, &ty) in types.iter().enumerate() {
                let v = row.get_ref(i).lite(what)?;
                record.push(from_sqlite(v, ty).map_err(|e| {
                    let name = row.as_ref().column_name(i).unwrap_or("?");
                    Error::Data(format!("row {number} of {}, column `{name}`: {e}", what()))
                })?);
            }
            block.push(record);
            if block.len() == block_records {
                each(&mut self.writer, std::mem::take(&mut block))?;
            }
        }
        if !block.is_empty() {
            each(&mut self.writer, block)?;
        }
        Ok(())
    }

    fn writer(&mut self) -> &mut dyn BlockWriter {
        &mut self.writer
    }

    fn claim_track(
        &mut self,
        track: &str,
        node: u64,
        known_epoch: u64,
    ) -> Result<std::result::Result<u64, u64>> {
        let won = query_all(
            self.conn(),
            &sqlite_placeholders(owners::CLAIM),
            params![track, node as i64, known_epoch as i64],
            "recording a claim",
            |r| r.get::<_, i64>(0),
        )?;
        match won.first() {
            Some(&epoch) => Ok(Ok(epoch as u64)),
            None => Ok(Err(epoch_of(self.conn(), track)?)),
        }
    }

    fn track_epoch(&mut self, track: &str) -> Result<u64> {
        epoch_of(self.conn(), track)
    }

    fn schema(&mut self) -> Result<Option<(String, String)>> {
        let rows = query_all(
            self.conn(),
            owners::SCHEMA,
            [],
            "reading the deployed schema",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.into_iter().next())
    }

    fn deployed(&mut self) -> Result<Vec<DeployedTrack>> {
        query_all(
            self.conn(),
            "SELECT track, version, hash, file, source, steps FROM trackc_deployments
             WHERE active ORDER BY track",
            [],
            "reading deployments",
            |r| {
                Ok(DeployedRow {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    hash: r.get(2)?,
                    file: r.get(3)?,
                    source: r.get(4)?,
                    steps: r.get(5)?,
                })
            },
        )?
        .into_iter()
        .map(DeployedRow::track)
        .collect()
    }

    fn source_schemas(&mut self) -> Result<Vec<SourceSchema>> {
        query_all(
            self.conn(),
            owners::DATABASES,
            [],
            "reading the deployed source databases",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?
        .into_iter()
        .map(|(name, dialect, file, text)| super::source_schema_of(name, dialect, file, text))
        .collect()
    }

    fn deploy(
        &mut self,
        tracks: &[DeployedTrack],
        moves: &[(String, String, String)],
        schema: Option<&(String, String)>,
        databases: &[SourceSchema],
        record: Option<&NewDeploy<'_>>,
    ) -> Result<Option<i64>> {
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .lite(|| "starting the deploy".into())?;
        let now = crate::clock::now_micros();
        for t in tracks {
            tx.execute(
                "UPDATE trackc_deployments SET active = FALSE WHERE track = ?1 AND active",
                [&t.name],
            )
            .lite(|| format!("deploying {}", t.name))?;
            tx.execute(
                "INSERT INTO trackc_deployments
                 (track, version, hash, file, source, steps, deployed_at, active)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, TRUE)",
                params![
                    t.name,
                    t.version,
                    t.hash,
                    t.file,
                    t.source,
                    serde_json::to_string(&t.steps).expect("strings serialize"),
                    now
                ],
            )
            .lite(|| format!("deploying {}", t.name))?;
        }
        for (track, from, to) in moves {
            tx.execute(
                "UPDATE trackc_state SET step = ?3 WHERE track = ?1 AND step = ?2",
                params![track, from, to],
            )
            .lite(|| format!("moving records of {track} from {from} to {to}"))?;
        }
        if let Some((file, text)) = schema {
            tx.execute(
                &sqlite_placeholders(owners::SET_SCHEMA),
                params![file, text],
            )
            .lite(|| "storing the schema".into())?;
        }
        for d in databases {
            let (file, text) = d.schema.clone().unzip();
            tx.execute(
                &sqlite_placeholders(owners::SET_DATABASE),
                params![d.name, d.dialect.name(), file, text],
            )
            .lite(|| format!("storing the schema of database {}", d.name))?;
        }
        let mut number = None;
        if let Some(d) = record {
            let row = d.row();
            let what = || "writing the deploy history".to_string();
            tx.execute(
                &sqlite_placeholders(deploys::INSERT),
                params![
                    d.request,
                    row.hash,
                    row.names,
                    row.files,
                    row.schema,
                    row.map,
                    row.tracks,
                    row.changed,
                    d.by.name,
                    d.by.role,
                    d.at,
                    d.rollback_of
                ],
            )
            .lite(what)?;
            number = Some(
                tx.query_row(&sqlite_placeholders(deploys::NUMBER), [&d.request], |r| {
                    r.get(0)
                })
                .lite(what)?,
            );
        }
        tx.commit().lite(|| "committing the deploy".into())?;
        Ok(number)
    }

    fn deploys(&mut self, limit: usize) -> Result<Vec<DeployListing>> {
        query_all(
            self.conn(),
            &sqlite_placeholders(deploys::LIST),
            [limit as i64],
            "reading the deploy history",
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )?
        .into_iter()
        .map(deploys::listing)
        .collect()
    }

    fn shipped(&mut self, number: i64) -> Result<Option<ShippedBundle>> {
        query_all(
            self.conn(),
            &sqlite_placeholders(deploys::BUNDLE),
            [number],
            "reading a deploy's files",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?
        .pop()
        .map(|row| deploys::shipped(number, row))
        .transpose()
    }

    fn blocks_by_node(&mut self, since: i64) -> Result<Vec<(Option<i64>, i64)>> {
        query_all(
            self.conn(),
            &sqlite_placeholders(insight::BLOCKS_BY_NODE),
            [since],
            "counting blocks per node",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn set_failed_blocks(&mut self, run: i64, failed: u32) -> Result<()> {
        self.conn()
            .execute(
                &sqlite_placeholders(insight::SET_FAILED_BLOCKS),
                params![run, i64::from(failed)],
            )
            .lite(|| "recording a run's failed blocks".into())?;
        Ok(())
    }

    fn recent_runs(&mut self, track: &str, limit: usize) -> Result<Vec<insight::RunRow>> {
        query_all(
            self.conn(),
            &sqlite_placeholders(insight::RUNS),
            params![track, limit as i64],
            "reading a track's runs",
            |r| {
                Ok(insight::RunRow {
                    id: r.get(0)?,
                    run_at: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    records: r.get(4)?,
                    changes: r.get(5)?,
                    failed_blocks: r.get(6)?,
                })
            },
        )
    }

    fn history_since(
        &mut self,
        track: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<insight::BlockRow>> {
        query_all(
            self.conn(),
            &sqlite_placeholders(insight::HISTORY_SINCE),
            params![track, since, limit as i64],
            "reading a track's history",
            |r| {
                Ok(insight::BlockRow {
                    at: r.get(0)?,
                    node: r.get(1)?,
                    run_id: r.get(2)?,
                    changes: r.get(3)?,
                })
            },
        )
    }

    fn audit(&mut self, entry: &AuditEntry) -> Result<()> {
        self.conn()
            .execute(
                &sqlite_placeholders(audit::INSERT),
                params![
                    unique_id("audit", entry.at),
                    entry.at,
                    entry.who,
                    entry.role,
                    entry.action,
                    entry.target,
                    entry.result,
                    entry.address
                ],
            )
            .lite(|| "writing the audit log".into())?;
        Ok(())
    }

    fn audit_log(&mut self, since: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        query_all(
            self.conn(),
            &sqlite_placeholders(audit::LIST),
            params![since, limit as i64],
            "reading the audit log",
            |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    who: r.get(1)?,
                    role: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    result: r.get(5)?,
                    address: r.get(6)?,
                })
            },
        )
    }

    fn prune_audit(&mut self, before: i64, limit: usize) -> Result<u64> {
        let n = self
            .conn()
            .execute(
                &sqlite_placeholders(audit::PRUNE),
                params![before, limit as i64],
            )
            .lite(|| "pruning the audit log".into())?;
        Ok(n as u64)
    }

    fn step_counts(&mut self, track: &str) -> Result<Vec<(Option<String>, i64)>> {
        query_all(
            self.conn(),
            "SELECT step, count(*) FROM trackc_state WHERE track = ?1 GROUP BY step ORDER BY step",
            [track],
            "counting records per step",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn open_run(&mut self, track: &str, now: i64, pass: Option<i64>) -> Result<Option<RunInfo>> {
        let what = || format!("opening a run of {track}");
        self.transaction(what, |tx| {
            if let Some(unfinished) = unfinished_run(tx, track)? {
                return Ok(Some(unfinished));
            }
            let ran: i64 = tx
                .query_row(
                    &sqlite_placeholders(runs::RAN_IN_PASS),
                    params![track, pass],
                    |r| r.get(0),
                )
                .lite(what)?;
            if ran > 0 {
                return Ok(None);
            }
            insert_run(tx, track, now, None, pass, None).map(Some)
        })
    }

    fn open_event_run(
        &mut self,
        track: &str,
        listeners: &Listeners,
        key: Type,
        now: i64,
    ) -> Result<Option<RunInfo>> {
        let what = || format!("opening a run of {track} for its events");
        let (listens, sole) = listeners.of(track);
        self.transaction(what, |tx| {
            if let Some(unfinished) = unfinished_run(tx, track)? {
                return Ok(Some(unfinished));
            }
            if listens.is_empty() {
                return Ok(None);
            }
            let mut values: Vec<&dyn rusqlite::ToSql> =
                listens.iter().map(|n| n as &dyn rusqlite::ToSql).collect();
            if runs::waiting_uses_track(&sole) {
                values.push(&track);
            }
            let mut waiting = query_all(
                tx,
                &sqlite_placeholders(&runs::waiting_events(&listens, &sole)),
                values.as_slice(),
                "reading waiting events",
                pending_event,
            )?;
            let Some((event, seqs)) = runs::cut_batch(&mut waiting, key) else {
                return Ok(None);
            };
            let run = insert_run(tx, track, now, Some(&event), None, Some(&seqs))?;
            let mut take = tx
                .prepare_cached(&sqlite_placeholders(runs::TAKE_EVENT))
                .lite(what)?;
            for e in waiting.iter().filter(|e| !listeners.sole(&e.name, track)) {
                take.execute(params![e.seq, track, run.id]).lite(what)?;
            }
            Ok(Some(run))
        })
    }

    fn run_events(&mut self, run: i64) -> Result<Vec<PendingEvent>> {
        query_all(
            self.conn(),
            RUN_EVENTS,
            [run],
            "reading the events of a run",
            pending_event,
        )
    }

    fn open_pass(&mut self, now: i64) -> Result<(i64, i64)> {
        let what = || "opening a pass".to_string();
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .lite(what)?;
        let open = tx
            .query_row(
                "SELECT id, run_at FROM trackc_passes WHERE finished_at IS NULL ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .lite(what)?;
        let pass = match open {
            Some(p) => p,
            None => {
                tx.execute("INSERT INTO trackc_passes (run_at) VALUES (?1)", [now])
                    .lite(what)?;
                (tx.last_insert_rowid(), now)
            }
        };
        tx.commit().lite(what)?;
        Ok(pass)
    }

    fn finish_pass(&mut self, id: i64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE trackc_passes SET finished_at = ?2 WHERE id = ?1",
                params![id, crate::clock::now_micros()],
            )
            .lite(|| format!("finishing pass {id}"))?;
        Ok(())
    }

    fn finish_run(
        &mut self,
        run: &RunInfo,
        records: u64,
        changes: u64,
        listeners: &Listeners,
    ) -> Result<()> {
        let what = || format!("finishing run {} of {}", run.id, run.track);
        self.transaction(what, |tx| {
            tx.execute(
                "UPDATE trackc_runs SET finished_at = ?2, records = records + ?3,
                 changes = changes + ?4 WHERE id = ?1 AND finished_at IS NULL",
                params![
                    run.id,
                    crate::clock::now_micros(),
                    records as i64,
                    changes as i64
                ],
            )
            .lite(what)?;
            if run.event.is_none() {
                return Ok(());
            }
            let events = query_all(
                tx,
                RUN_EVENTS,
                [run.id],
                "reading the events of a run",
                pending_event,
            )?;
            let mut finished = tx
                .prepare_cached(&sqlite_placeholders(runs::EVENT_FINISHED_BY))
                .lite(what)?;
            let (done, all) = runs::done_events(&events, &run.track, listeners, |seq| {
                finished
                    .query_map([seq], |r| r.get(0))
                    .and_then(|rows| rows.collect())
                    .lite(what)
            })?;
            let now = crate::clock::now_micros();
            if all {
                tx.execute(
                    "UPDATE trackc_events SET done_at = ?2 WHERE seq IN
                     (SELECT value FROM json_each((SELECT event_seqs FROM trackc_runs WHERE id = ?1)))",
                    params![run.id, now],
                )
                .lite(what)?;
            } else {
                let mut mark = tx
                    .prepare_cached(&sqlite_placeholders(runs::EVENT_DONE))
                    .lite(what)?;
                for &seq in &done {
                    mark.execute(params![seq, now]).lite(what)?;
                }
            }
            let mut forget = tx
                .prepare_cached(&sqlite_placeholders(runs::FORGET_EVENT))
                .lite(what)?;
            for e in &events {
                if !listeners.sole(&e.name, &run.track) && done.binary_search(&e.seq).is_ok() {
                    forget.execute([e.seq]).lite(what)?;
                }
            }
            tx.execute(&sqlite_placeholders(runs::FORGET_RUN_SEQS), [run.id])
                .lite(what)?;
            Ok(())
        })
    }

    fn retire_unheard_events(&mut self, heard: &[String], now: i64) -> Result<u64> {
        let sql = sqlite_placeholders(&runs::retire_unheard(heard));
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&now];
        values.extend(heard.iter().map(|n| n as &dyn rusqlite::ToSql));
        let n = self
            .conn()
            .execute(&sql, values.as_slice())
            .lite(|| "retiring events no track listens for".into())?;
        Ok(n as u64)
    }

    fn explain(&mut self, query: &Statement) -> Result<String> {
        let lines = self.read_wrapped(
            query,
            |sql| format!("EXPLAIN QUERY PLAN {sql}"),
            "explaining",
            |row| row.get::<_, String>(3),
        )?;
        Ok(lines.join("\n"))
    }

    fn last_run(&mut self, track: &str) -> Result<Option<i64>> {
        self.conn()
            .query_row(&sqlite_placeholders(runs::LATEST_SCHEDULED), [track], |r| {
                r.get(0)
            })
            .optional()
            .lite(|| format!("reading the last run of {track}"))
    }

    fn count_rows(&mut self, query: &Statement) -> Result<u64> {
        let n = self.read_wrapped(
            query,
            |sql| format!("SELECT count(*) FROM ({sql}) AS trackc_count"),
            "counting the rows of",
            |row| row.get::<_, i64>(0),
        )?;
        Ok(n.first().copied().unwrap_or(0) as u64)
    }

    fn query_fingerprint(&mut self, query: &Statement) -> Result<String> {
        let sql = rewritten(&mut self.writer.rewritten, &query.sql)?;
        let what = || format!("the change query `{}`", query.sql.trim());
        let mut stmt = self.reader.prepare(sql).lite(what)?;
        bind(&mut stmt, &query.params)?;
        let columns = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut text = String::new();
        while let Some(row) = rows.next().lite(what)? {
            for i in 0..columns {
                text.push_str(&format!("{:?}\u{1f}", row.get_ref(i).lite(what)?));
            }
            text.push('\u{1e}');
        }
        Ok(content_hash(&text))
    }

    fn get_mark(&mut self, track: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT mark FROM trackc_marks WHERE track = ?1",
                [track],
                |r| r.get(0),
            )
            .optional()
            .lite(|| format!("reading the change mark of {track}"))
    }

    fn set_mark(&mut self, track: &str, mark: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO trackc_marks (track, mark) VALUES (?1, ?2)
                 ON CONFLICT (track) DO UPDATE SET mark = excluded.mark",
                [track, mark],
            )
            .lite(|| format!("writing the change mark of {track}"))?;
        Ok(())
    }

    fn insert_events(&mut self, events: &[NewEvent], now: i64) -> Result<()> {
        let ids: Vec<String> = events.iter().map(|_| unique_id("emit", now)).collect();
        let what = || format!("raising {} events", events.len());
        self.transaction(what, |conn| {
            let mut insert = conn
                .prepare_cached(&sqlite_placeholders(INSERT_EMITTED_EVENT))
                .lite(what)?;
            for (e, id) in events.iter().zip(&ids) {
                insert.execute(params![id, e.name, e.key, now]).lite(what)?;
            }
            Ok(())
        })
    }

    fn outbox_counts(&mut self) -> Result<Vec<(String, String, i64)>> {
        query_all(
            self.conn(),
            "SELECT kind, state, count(*) FROM trackc_outbox GROUP BY kind, state
             ORDER BY kind, state",
            [],
            "counting the outbox",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    fn claim_outbox(
        &mut self,
        kinds: Kinds,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>> {
        let sql = sqlite_placeholders(&ob::CLAIM.replace("/*lock*/", ""));
        let rows = query_all(
            self.conn(),
            &sql,
            params![limit as i64, now, lease_until, kinds.email, kinds.webhook],
            "claiming outbox rows",
            |r| {
                Ok(ob::Claimed {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    track: r.get(2)?,
                    key: r.get(3)?,
                    target: r.get(4)?,
                    recipient: r.get(5)?,
                    payload: r.get(6)?,
                    at: r.get(7)?,
                    attempt: r.get(8)?,
                })
            },
        )?;
        rows.into_iter().map(ob::Claimed::item).collect()
    }

    fn settle_outbox(&mut self, settled: &[Settled], now: i64) -> Result<()> {
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .lite(|| "settling outbox rows".into())?;
        {
            let mut stmt = tx
                .prepare_cached(&sqlite_placeholders(ob::SETTLE))
                .lite(|| "settling outbox rows".into())?;
            for s in settled {
                let (state, next, error) = ob::settle_columns(&s.outcome);
                stmt.execute(params![s.id, s.attempt, now, state, next, error])
                    .lite(|| format!("settling outbox row {}", s.id))?;
            }
        }
        tx.commit().lite(|| "settling outbox rows".into())
    }

    fn list_outbox(&mut self, state: Option<&str>, limit: usize) -> Result<Vec<OutboxListing>> {
        query_all(
            self.conn(),
            &sqlite_placeholders(ob::LIST),
            params![state.unwrap_or(""), limit as i64],
            "listing the outbox",
            |r| {
                Ok(OutboxListing {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    target: r.get(2)?,
                    recipient: r.get(3)?,
                    state: r.get(4)?,
                    attempts: r.get(5)?,
                    next_attempt_at: r.get(6)?,
                    last_error: r.get(7)?,
                })
            },
        )
    }

    fn retry_parked(&mut self, id: Option<&str>, now: i64) -> Result<u64> {
        let n = self
            .conn()
            .execute(
                &sqlite_placeholders(ob::RETRY_PARKED),
                params![now, id.unwrap_or("")],
            )
            .lite(|| "re-queueing parked outbox rows".into())?;
        Ok(n as u64)
    }

    fn prune_history(&mut self, before: i64, limit: usize) -> Result<u64> {
        let n = self
            .conn()
            .execute(
                &sqlite_placeholders(history::PRUNE),
                params![before, limit as i64],
            )
            .lite(|| "pruning the decision history".into())?;
        Ok(n as u64)
    }

    fn record_history(&mut self, track: &str, key: &str) -> Result<RecordHistory> {
        let conn = self.conn();
        let what = "reading a record's history";
        let state = query_all(
            conn,
            &sqlite_placeholders(history::STATE),
            params![track, key],
            what,
            |r| {
                Ok(RecordState {
                    step: r.get(0)?,
                    entered_at: r.get(1)?,
                    wake_at: r.get(2)?,
                    seq: r.get(3)?,
                    run_id: r.get(4)?,
                })
            },
        )?
        .pop();
        let blocks = query_all(
            conn,
            &sqlite_placeholders(history::DECISIONS),
            params![track, history::like_key(key), HISTORY_READ_MAX as i64],
            what,
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )?;
        let legends: HashMap<String, String> = query_all(
            conn,
            &sqlite_placeholders(history::LEGENDS),
            params![track],
            what,
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .into_iter()
        .collect();
        let decisions = history::decisions_of(key, blocks, &legends);
        let outbox = query_all(
            conn,
            &sqlite_placeholders(history::OUTBOX),
            params![track, key, HISTORY_READ_MAX as i64],
            what,
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let sources = query_all(
            conn,
            &sqlite_placeholders(history::SOURCES),
            params![track],
            what,
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(RecordHistory {
            state,
            decisions,
            outbox,
            sources,
        })
    }

    fn execute_batch(&mut self, sql: &str) -> Result<()> {
        self.conn().execute_batch(sql).lite(|| "running SQL".into())
    }

    fn execute_script(&mut self, parts: &[String]) -> Result<()> {
        let what = || "running SQL".to_string();
        self.transaction(what, |conn| {
            for part in parts {
                conn.execute_batch(part).lite(what)?;
            }
            Ok(())
        })
    }

    fn query_i64(&mut self, sql: &str) -> Result<i64> {
        self.conn()
            .query_row(sql, [], |r| r.get(0))
            .lite(|| format!("`{sql}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of the version before batched events, with an event
    /// whose run was cut short: after the upgrade the run is resumed with
    /// that event, and once finished the event is done and not taken
    /// again.
    #[test]
    fn an_event_run_cut_short_before_the_upgrade_is_resumed_after_it() {
        let dir = std::env::temp_dir().join(format!("trackc-upgrade-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db").display().to_string();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(CREATE_MIGRATIONS_TABLE).unwrap();
            for m in MIGRATIONS.iter().filter(|m| m.version <= 3) {
                conn.execute_batch(&sql_for(m, false)).unwrap();
                conn.execute(
                    "INSERT INTO trackc_migrations (version, name, applied_at) VALUES (?1, ?2, 0)",
                    params![m.version, m.name],
                )
                .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO trackc_events (seq, name, key, created_at) VALUES (7, 'ping', '42', 1), (8, 'ping', '43', 1);
                 INSERT INTO trackc_runs (id, track, event_seq, event_key, run_at, last_run, started_at)
                 VALUES (3, 't', 7, '42', 5, 0, 5);",
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(&path, &DbOptions::default()).unwrap();
        store.migrate().unwrap();
        let listeners = Listeners([("ping".to_string(), vec!["t".to_string()])].into());
        let run = store
            .open_event_run("t", &listeners, Type::Int, 9)
            .unwrap()
            .unwrap();
        assert!(run.resumed && run.id == 3 && run.now == 5, "{run:?}");
        let events = store.run_events(run.id).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].seq, events[0].key.as_deref()), (7, Some("42")));
        store.finish_run(&run, 1, 1, &listeners).unwrap();
        // The next batch is the other event only.
        let next = store
            .open_event_run("t", &listeners, Type::Int, 10)
            .unwrap()
            .unwrap();
        assert!(!next.resumed);
        let events = store.run_events(next.id).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [8]);
        store.finish_run(&next, 1, 1, &listeners).unwrap();
        assert!(store
            .open_event_run("t", &listeners, Type::Int, 11)
            .unwrap()
            .is_none());
        assert_eq!(
            store
                .query_i64("SELECT count(*) FROM trackc_events WHERE done_at IS NULL")
                .unwrap(),
            0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
