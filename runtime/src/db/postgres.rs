//! The server store: PostgreSQL through tokio-postgres, driven on a
//! single-threaded tokio runtime of its own. A block's state writes go in
//! one statement over arrays (`unnest`), its action SQL is pipelined, and
//! the source query is read through a portal, a block at a time.

use super::history::{self, BlockHistory};
use super::migrations::{sql_for, CREATE_MIGRATIONS_TABLE, MIGRATIONS};
use super::outbox as ob;
use super::retry::{once, retrying, Attempts, DbOptions, Reconnect};
use super::runs;
use super::*;
use super::{audit, deploys, insight};
use crate::error::redact_url;
use crate::error::Fault;
use crate::sqltext;
use bytes::{BufMut, BytesMut};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type as PgType};
use tokio_postgres::{Client, IsolationLevel, NoTls};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Serializes migrations of several nodes starting at once.
const MIGRATION_LOCK: i64 = 0x7472_6163_6b63;

pub struct PgStore {
    reader: PgConn,
    writer: PgWriter,
}

/// One connection to the server that comes back: when the old one has
/// closed (a restart, a failover, a terminated backend), `ensure` opens a
/// new one with the same settings.
struct PgConn {
    rt: Arc<Runtime>,
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
    client: Client,
}

pub struct PgWriter {
    conn: PgConn,
    options: DbOptions,
    /// Prepared track SQL with its parameter names, by the text the track
    /// wrote; prepared statements live with their connection, so this is
    /// emptied when the connection is new.
    prepared: HashMap<String, (tokio_postgres::Statement, Vec<String>)>,
    /// States this writer has written, and that count when it last had
    /// `trackc_state` analyzed (see `analyze_when_grown`).
    states_written: u64,
    analyzed_at: u64,
}

/// States written before the first `ANALYZE` of `trackc_state`.
const ANALYZE_AFTER: u64 = 50_000;

/// Server settings every connection gets unless the URL sets them
/// (`?options=-c%20lock_timeout%3D2s`): a lock held by someone else or a
/// statement that never returns ends in an error that is retried, instead
/// of hanging the node. The statement timeout is generous because a
/// source query's first rows may take a while on a big table. A client
/// that stops in the middle of a transaction (a paused process, a stalled
/// proxy) would hold its locks for ever, blocking the node that takes its
/// tracks over: the server ends such a session after a minute idle in a
/// transaction (trackc's transactions are busy throughout, except a
/// source query's cursor waiting for blocks to drain, which a minute
/// outlasts by far; if it does not, the run is resumed).
const SESSION_DEFAULTS: &[(&str, &str)] = &[
    ("statement_timeout", "120s"),
    ("lock_timeout", "10s"),
    ("idle_in_transaction_session_timeout", "60s"),
];
/// How long opening a connection may take before it counts as failed (a
/// server that accepts TCP but does not answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacknowledged data or silent keepalives for this long end a
/// connection whose server vanished without a reset (a partition, a
/// powered-off host), so that it is noticed and replaced.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);

/// The connection settings of `url`, with the defaults above where the
/// URL says nothing.
fn pg_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::Config(format!(
            "`{}` is not a usable PostgreSQL URL: {e}",
            redact_url(url)
        ))
    })?;
    let mut options = config.get_options().unwrap_or_default().to_string();
    for (name, value) in SESSION_DEFAULTS {
        if !options.contains(name) {
            options.push_str(&format!(" -c {name}={value}"));
        }
    }
    config.options(options.trim());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL);
    Ok(config)
}

impl PgConn {
    fn open(rt: &Arc<Runtime>, config: &tokio_postgres::Config, shown: &str) -> Result<PgConn> {
        Ok(PgConn {
            rt: rt.clone(),
            config: config.clone(),
            shown: shown.to_string(),
            client: new_client(rt, config, shown)?,
        })
    }

    /// Waits for one call on the client (`|c| c.query(…)`).
    fn call<'c, F: std::future::Future>(&'c self, op: impl FnOnce(&'c Client) -> F) -> F::Output {
        self.rt.block_on(op(&self.client))
    }

    /// Connects again if the connection closed; true if it did.
    fn ensure(&mut self) -> Result<bool> {
        if !self.client.is_closed() {
            return Ok(false);
        }
        self.client = new_client(&self.rt, &self.config, &self.shown)?;
        Ok(true)
    }
}

fn new_client(rt: &Runtime, config: &tokio_postgres::Config, shown: &str) -> Result<Client> {
    let (client, connection) = rt
        .block_on(config.connect(NoTls))
        .pg(|| format!("cannot connect to {shown}"))?;
    // The connection's end is seen by the next operation on it (a closed
    // client), which reconnects; `Health` logs the outage once.
    rt.spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Which driver errors are worth trying again, and why (see `db::retry`).
fn classify(e: &tokio_postgres::Error) -> Option<Fault> {
    if let Some(code) = e.code() {
        let code = code.code();
        return match code {
            // serialization_failure, deadlock_detected, lock_not_available
            "40001" | "40P01" | "55P03" => Some(Fault::Conflict),
            // query_canceled: the statement timeout (or an operator)
            "57014" => Some(Fault::Timeout),
            // admin_shutdown (terminated backend, fast/smart shutdown),
            // crash_shutdown, cannot_connect_now (starting up),
            // too_many_connections, connection_exception (08…)
            "57P01" | "57P02" | "57P03" | "53300" => Some(Fault::Connection),
            // idle_in_transaction_session_timeout ended the session
            "25P03" => Some(Fault::Connection),
            _ if code.starts_with("08") => Some(Fault::Connection),
            _ => None,
        };
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        return Some(Fault::Connection);
    }
    // The driver names its other connection faults only in words.
    let text = e.to_string();
    [
        "error connecting to server",
        "timeout waiting for server",
        "error communicating with the server",
        "unexpected message from server",
    ]
    .iter()
    .any(|p| text.starts_with(p))
    .then_some(Fault::Connection)
}

/// Adds what the store was doing to a driver error, classified.
trait PgContext<T> {
    fn pg(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> PgContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn pg(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| match classify(&e) {
            Some(fault) => Error::Transient {
                context: what(),
                message: pg_message(&e),
                fault,
            },
            None => Error::db(what(), pg_message(&e)),
        })
    }
}

/// What the server said (its SQLSTATE, message, detail and hint), not
/// only the driver's "db error".
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl Reconnect for PgWriter {
    fn options(&self) -> &DbOptions {
        &self.options
    }

    fn ensure_connected(&mut self) -> Result<()> {
        if self.conn.ensure()? {
            self.prepared.clear();
        }
        Ok(())
    }
}

impl Reconnect for PgStore {
    fn options(&self) -> &DbOptions {
        &self.writer.options
    }

    fn ensure_connected(&mut self) -> Result<()> {
        self.reader.ensure()?;
        self.writer.ensure_connected()
    }
}

impl PgStore {
    pub fn open(url: &str, options: &DbOptions) -> Result<PgStore> {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Io(format!("cannot start the I/O runtime: {e}")))?,
        );
        let config = pg_config(url)?;
        let shown = redact_url(url);
        // A node may start while the database restarts: connecting is
        // tried again like any operation.
        let mut attempts = Attempts::new(options);
        let (reader, conn) = loop {
            let result = PgConn::open(&rt, &config, &shown)
                .and_then(|r| Ok((r, PgConn::open(&rt, &config, &shown)?)));
            if !attempts.again(&result) {
                break result?;
            }
        };
        Ok(PgStore {
            writer: PgWriter {
                conn,
                options: options.clone(),
                prepared: HashMap::new(),
                states_written: 0,
                analyzed_at: 0,
            },
            reader,
        })
    }

    /// The rows of one statement on the writer's connection, tried again
    /// through transient faults.
    fn query<T>(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: impl Fn() -> String,
        map: impl Fn(&tokio_postgres::Row) -> T,
    ) -> Result<Vec<T>> {
        retrying(&mut self.writer, |w| {
            let rows = w.conn.call(|c| c.query(sql, params)).pg(&what)?;
            Ok(rows.iter().map(&map).collect())
        })
    }

    /// The rows of track SQL `query` (its `:name`s made positional and
    /// bound) wrapped by `wrap` (`EXPLAIN …`, `SELECT count(*) FROM (…)`).
    fn query_wrapped<T>(
        &mut self,
        query: &Statement,
        wrap: impl Fn(&str) -> String,
        doing: &str,
        map: impl Fn(&tokio_postgres::Row) -> T,
    ) -> Result<Vec<T>> {
        let (sql, names) = sqltext::to_positional(&query.sql)?;
        let values = lookup(&names, &query.params)?;
        self.query(
            &wrap(&sql),
            &refs(&values),
            || format!("{doing} `{}`", query.sql.trim()),
            map,
        )
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: impl Fn() -> String,
    ) -> Result<u64> {
        retrying(&mut self.writer, |w| {
            w.conn.call(|c| c.execute(sql, params)).pg(&what)
        })
    }

    /// Runs `body` in one transaction on the writer's connection, the whole
    /// transaction tried again through transient faults.
    fn transaction<T>(
        &mut self,
        what: impl Fn() -> String,
        mut body: impl for<'t> AsyncFnMut(&'t tokio_postgres::Transaction<'t>) -> Result<T>,
    ) -> Result<T> {
        retrying(&mut self.writer, |w| {
            let PgConn { rt, client, .. } = &mut w.conn;
            rt.block_on(async {
                let tx = client.transaction().await.pg(&what)?;
                let value = body(&tx).await?;
                tx.commit().await.pg(&what)?;
                Ok(value)
            })
        })
    }
}

/// A language value bound to whatever type PostgreSQL infers for the
/// parameter, converted where the conversion is exact.
#[derive(Debug)]
struct PgParam<'a>(&'a Value);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for PgParam<'_> {
    fn to_sql(&self, ty: &PgType, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        let wrong = || -> BoxError {
            format!(
                "cannot bind the value {} to a parameter of type {ty}",
                self.0
            )
            .into()
        };
        match (self.0, ty) {
            (Value::Null, _) => return Ok(IsNull::Yes),
            (Value::Int(i) | Value::Duration(i), &PgType::INT8) => out.put_i64(*i),
            (Value::Int(i), &PgType::INT4) => out.put_i32(i32::try_from(*i)?),
            (Value::Int(i), &PgType::INT2) => out.put_i16(i16::try_from(*i)?),
            (Value::Int(i), &PgType::FLOAT8) => out.put_f64(*i as f64),
            (Value::Int(i), &PgType::NUMERIC) => put_numeric(&i.to_string(), out)?,
            (Value::Float(f), &PgType::FLOAT8) => out.put_f64(*f),
            (Value::Float(f), &PgType::FLOAT4) => out.put_f32(*f as f32),
            (Value::Float(f), &PgType::NUMERIC) if f.is_finite() => {
                put_numeric(&f.to_string(), out)?
            }
            (Value::Bool(b), &PgType::BOOL) => out.put_u8(u8::from(*b)),
            (Value::Text(s), _) if <&str as ToSql>::accepts(ty) => {
                return s.as_str().to_sql(ty, out)
            }
            // A JSON array of integers or texts, to a `bigint[]` or `text[]`
            // parameter: how a run of events binds its keys (`sqltext::
            // event_keys`), as one array the planner sees as a constant.
            (Value::Text(s), &PgType::INT8_ARRAY) => {
                let items: Vec<i64> = serde_json::from_str(s).map_err(|_| wrong())?;
                return items.to_sql(ty, out);
            }
            (Value::Text(s), &PgType::TEXT_ARRAY) => {
                let items: Vec<String> = serde_json::from_str(s).map_err(|_| wrong())?;
                return items.to_sql(ty, out);
            }
            (Value::Timestamp(t), &PgType::TIMESTAMPTZ | &PgType::TIMESTAMP) => {
                out.put_i64(t - PG_EPOCH_MICROS)
            }
            (Value::Duration(d), &PgType::INTERVAL) => {
                out.put_i64(*d);
                out.put_i32(0);
                out.put_i32(0);
            }
            (v, t) if <&str as ToSql>::accepts(t) => return v.to_string().as_str().to_sql(ty, out),
            _ => return Err(wrong()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &PgType) -> bool {
        true
    }

    to_sql_checked!();
}

/// PostgreSQL's binary NUMERIC from a plain decimal (`-12.340`).
fn put_numeric(decimal: &str, out: &mut BytesMut) -> std::result::Result<(), BoxError> {
    let (negative, digits) = match decimal.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, decimal),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(format!("`{decimal}` is not a decimal number").into());
    }
    let int = int.trim_start_matches('0');
    let dscale = frac.len() as u16;
    // Base-10000 groups: the integer part padded on the left, the fraction
    // on the right.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let all = format!("{}{int}{frac}{}", "0".repeat(int_pad), "0".repeat(frac_pad));
    let mut groups: Vec<i16> = all
        .as_bytes()
        .chunks(4)
        .map(|c| {
            std::str::from_utf8(c)
                .expect("digits")
                .parse()
                .expect("digits")
        })
        .collect();
    let mut weight = ((int.len() + int_pad) / 4) as i16 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(dscale);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

/// A column value as PostgreSQL sent it, before it meets a field type.
#[derive(Debug)]
enum Raw {
    Null,
    Int(i64),
    Float(f64),
    Numeric(String),
    Bool(bool),
    Text(String),
    Timestamp(i64),
    Interval(i64),
    Other(String),
}

impl<'a> FromSql<'a> for Raw {
    fn from_sql(ty: &PgType, raw: &'a [u8]) -> std::result::Result<Raw, BoxError> {
        Ok(match *ty {
            PgType::INT8 => Raw::Int(i64::from_sql(ty, raw)?),
            PgType::INT4 => Raw::Int(i32::from_sql(ty, raw)?.into()),
            PgType::INT2 => Raw::Int(i16::from_sql(ty, raw)?.into()),
            PgType::FLOAT8 => Raw::Float(f64::from_sql(ty, raw)?),
            PgType::FLOAT4 => Raw::Float(f32::from_sql(ty, raw)?.into()),
            PgType::NUMERIC => Raw::Numeric(numeric_text(raw)?),
            PgType::BOOL => Raw::Bool(bool::from_sql(ty, raw)?),
            PgType::TIMESTAMPTZ | PgType::TIMESTAMP => {
                Raw::Timestamp(i64::from_sql(&PgType::INT8, raw)? + PG_EPOCH_MICROS)
            }
            PgType::DATE => {
                let days = i32::from_sql(&PgType::INT4, raw)?;
                Raw::Timestamp(i64::from(days) * 86_400_000_000 + PG_EPOCH_MICROS)
            }
            PgType::INTERVAL if raw.len() == 16 => {
                let micros = i64::from_be_bytes(raw[..8].try_into()?);
                let days = i32::from_be_bytes(raw[8..12].try_into()?);
                let months = i32::from_be_bytes(raw[12..].try_into()?);
                if months != 0 {
                    return Err("an interval of months has no fixed length".into());
                }
                Raw::Interval(micros + i64::from(days) * 86_400_000_000)
            }
            _ if <&str as FromSql>::accepts(ty) => Raw::Text(<&str>::from_sql(ty, raw)?.into()),
            _ => Raw::Other(ty.to_string()),
        })
    }

    fn from_sql_null(_: &PgType) -> std::result::Result<Raw, BoxError> {
        Ok(Raw::Null)
    }

    fn accepts(_: &PgType) -> bool {
        true
    }
}

/// The decimal text of a binary NUMERIC.
fn numeric_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let word = |i: usize| -> std::result::Result<i16, BoxError> {
        Ok(i16::from_be_bytes(
            raw.get(i..i + 2).ok_or("short numeric")?.try_into()?,
        ))
    };
    let (n, weight, sign, dscale) = (word(0)?, word(2)?, word(4)? as u16, word(6)? as usize);
    if sign == 0xC000 {
        return Ok("NaN".into());
    }
    let mut int = String::new();
    let mut frac = String::new();
    for i in 0..n as usize {
        let g = word(8 + 2 * i)?;
        let exponent = weight as i64 - i as i64;
        if exponent >= 0 {
            int.push_str(&format!("{g:04}"));
        } else {
            frac.push_str(&format!("{g:04}"));
        }
    }
    // Groups between the last given one and the decimal point are zeros.
    let given_int = int.len() / 4;
    if weight >= 0 && (weight as usize + 1) > given_int {
        int.push_str(&"0000".repeat(weight as usize + 1 - given_int));
    }
    if weight < -1 {
        frac.insert_str(0, &"0000".repeat((-weight - 1) as usize));
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    frac.truncate(dscale.min(frac.len()));
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

fn convert(raw: Raw, ty: Type) -> Result<Value> {
    let bad = |got: &str| Err(mismatch(ty, got));
    Ok(match (ty, raw) {
        (_, Raw::Null) => Value::Null,
        (Type::Int, Raw::Int(i)) => Value::Int(i),
        (Type::Int, Raw::Numeric(n)) => match n.parse() {
            Ok(i) => Value::Int(i),
            Err(_) => return bad("numeric with a fraction"),
        },
        (Type::Float, Raw::Int(i)) => Value::Float(i as f64),
        (Type::Float, Raw::Float(f)) => Value::float(f),
        (Type::Float, Raw::Numeric(n)) => Value::float(n.parse().unwrap_or(f64::NAN)),
        (Type::Bool, Raw::Bool(b)) => Value::Bool(b),
        (Type::Text, Raw::Text(s)) => Value::Text(s),
        (Type::Timestamp, Raw::Timestamp(t)) => Value::Timestamp(t),
        (Type::Duration, Raw::Interval(d)) => Value::Duration(d),
        (_, Raw::Other(t)) => return bad(&t),
        (_, other) => return bad(&format!("{other:?}")),
    })
}

/// $1 seqs, $2 track, $3 run: the run took these events.
const TAKE_EVENTS: &str = "INSERT INTO trackc_event_runs (seq, track, run_id)
    SELECT seq, $2, $3 FROM unnest($1::BIGINT[]) AS taken (seq)";

/// The events of run `run`, oldest first.
async fn run_events(tx: &tokio_postgres::Transaction<'_>, run: i64) -> Result<Vec<PendingEvent>> {
    let what = || format!("reading the events of run {run}");
    let text: Option<String> = tx
        .query_opt(runs::RUN_SEQS, &[&run])
        .await
        .pg(what)?
        .and_then(|r| r.get(0));
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let seqs = runs::parse_seqs(&text)?;
    Ok(tx
        .query(
            "SELECT seq, name, key FROM trackc_events WHERE seq = ANY($1) ORDER BY seq",
            &[&seqs],
        )
        .await
        .pg(what)?
        .iter()
        .map(pending_event)
        .collect())
}

fn pending_event(r: &tokio_postgres::Row) -> PendingEvent {
    PendingEvent {
        seq: r.get(0),
        name: r.get(1),
        key: r.get(2),
    }
}

/// Takes the track's run lock for the transaction (one opener at a time
/// per track: the owner, in a group) and finds its unfinished run.
async fn lock_and_find_unfinished(
    tx: &tokio_postgres::Transaction<'_>,
    track: &str,
) -> Result<Option<RunInfo>> {
    let what = || format!("opening a run of {track}");
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("trackc run {track}")],
    )
    .await
    .pg(what)?;
    let unfinished = tx.query_opt(runs::UNFINISHED, &[&track]).await.pg(what)?;
    Ok(unfinished
        .map(|r| RunInfo::resumed(track, r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))))
}

/// A new run of `track` at `now` (for a batch of events `seqs`, the last
/// `event`; or in `pass`).
async fn insert_run(
    tx: &tokio_postgres::Transaction<'_>,
    track: &str,
    now: i64,
    event: Option<&PendingEvent>,
    pass: Option<i64>,
    seqs: Option<&str>,
) -> Result<RunInfo> {
    let what = || format!("opening a run of {track}");
    let last_run: i64 = tx
        .query_opt(runs::LATEST_FINISHED, &[&track])
        .await
        .pg(what)?
        .map_or(0, |r| r.get(0));
    let id: i64 = tx
        .query_one(
            runs::INSERT,
            &[
                &track,
                &event.map(|e| e.seq),
                &event.and_then(|e| e.key.clone()),
                &now,
                &last_run,
                &crate::clock::now_micros(),
                &pass,
                &seqs,
            ],
        )
        .await
        .pg(what)?
        .get(0);
    Ok(RunInfo::started(track, id, now, last_run, event))
}

/// The values of `names`, in order, from `params`.
fn lookup<'a>(names: &[String], params: &'a [(String, Value)]) -> Result<Vec<PgParam<'a>>> {
    names
        .iter()
        .map(|name| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| PgParam(v))
                .ok_or_else(|| Error::Data(format!("no value for the SQL parameter :{name}")))
        })
        .collect()
}

fn refs<'a>(params: &'a [PgParam<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl PgWriter {
    /// Has `trackc_state` analyzed each time this writer's writes have
    /// doubled since the last time (from `ANALYZE_AFTER` on): a first run
    /// over a big table grows it faster than autovacuum looks, and plans
    /// made from the statistics of a small table scan it whole. A handful
    /// of samples over a million records, each a fraction of a second.
    fn analyze_when_grown(&mut self, written: u64) -> Result<()> {
        self.states_written += written;
        if self.states_written < ANALYZE_AFTER.max(2 * self.analyzed_at) {
            return Ok(());
        }
        self.analyzed_at = self.states_written;
        retrying(self, |w| {
            w.conn
                .call(|c| c.batch_execute("ANALYZE trackc_state"))
                .pg(|| "analyzing trackc_state".into())
        })
    }

    /// Prepares `sql` (with its parameters made positional) once per text;
    /// `self.prepared[sql]` holds it afterwards.
    fn ensure_prepared(&mut self, sql: &str) -> Result<()> {
        if self.prepared.contains_key(sql) {
            return Ok(());
        }
        let (text, names) = sqltext::to_positional(sql)?;
        let statement = self
            .conn
            .call(|c| c.prepare(&text))
            .pg(|| format!("SQL `{}`", sql.trim()))?;
        self.prepared.insert(sql.to_string(), (statement, names));
        Ok(())
    }
}

/// The state writes of a block as arrays, one per column (`unnest`).
struct StateColumns<'a> {
    keys: Vec<&'a str>,
    steps: Vec<Option<&'a str>>,
    entered_at: Vec<i64>,
    wake_at: Vec<Option<i64>>,
    seq: Vec<i64>,
    run_id: Vec<i64>,
    expected_seq: Vec<Option<i64>>,
}

impl<'a> StateColumns<'a> {
    fn of(changes: &[&'a Change]) -> StateColumns<'a> {
        StateColumns {
            keys: changes.iter().map(|c| c.key.as_str()).collect(),
            steps: changes.iter().map(|c| c.state.step.as_deref()).collect(),
            entered_at: changes.iter().map(|c| c.state.entered_at).collect(),
            wake_at: changes.iter().map(|c| c.state.wake_at).collect(),
            seq: changes.iter().map(|c| c.state.seq).collect(),
            run_id: changes.iter().map(|c| c.state.run_id).collect(),
            expected_seq: changes.iter().map(|c| c.expected_seq).collect(),
        }
    }
}

#[derive(Default)]
struct OutboxColumns<'a> {
    ids: Vec<&'a str>,
    kinds: Vec<&'static str>,
    tracks: Vec<&'a str>,
    keys: Vec<&'a str>,
    targets: Vec<&'a str>,
    recipients: Vec<Option<&'a str>>,
    payloads: Vec<&'a str>,
    at: Vec<i64>,
}

impl<'a> OutboxColumns<'a> {
    fn push(&mut self, o: &'a OutboxRow) {
        self.ids.push(&o.id);
        self.kinds.push(o.kind.name());
        self.tracks.push(&o.track);
        self.keys.push(&o.key);
        self.targets.push(&o.target);
        self.recipients.push(o.recipient.as_deref());
        self.payloads.push(&o.payload);
        self.at.push(o.at);
    }
}

#[derive(Default)]
struct EventColumns<'a> {
    ids: Vec<&'a str>,
    names: Vec<&'a str>,
    keys: Vec<&'a str>,
    at: Vec<i64>,
}

impl BlockWriter for PgWriter {
    fn load_states(
        &mut self,
        track: &str,
        keys: &[String],
    ) -> Result<HashMap<String, RecordState>> {
        // One primary-key probe per key (a lateral join), whatever the
        // statistics say: `key = ANY($2)` or a plain join let the planner,
        // with statistics from when the table was small, hash the whole
        // track's states for every block, which made a first run over a
        // big table quadratic.
        const STATES: &str = "SELECT s.key, s.step, s.entered_at, s.wake_at, s.seq, s.run_id
             FROM unnest($2::text[]) AS k(key)
             CROSS JOIN LATERAL (
                 SELECT * FROM trackc_state
                 WHERE track = $1 AND key = k.key LIMIT 1) s";
        let params: [&(dyn ToSql + Sync); 2] = [&track, &keys];
        let rows = retrying(self, |w| {
            w.conn
                .call(|c| c.query(STATES, &params))
                .pg(|| "reading record states".into())
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    RecordState {
                        step: r.get(1),
                        entered_at: r.get(2),
                        wake_at: r.get(3),
                        seq: r.get(4),
                        run_id: r.get(5),
                    },
                )
            })
            .collect())
    }

    /// Tried again through transient faults, even when the COMMIT's answer
    /// was lost: the state writes are conditional on each record's
    /// sequence number and bring their effects only when written, so a
    /// block that did commit changes nothing the second time.
    fn apply(&mut self, track: &str, changes: &[Change], fence: Option<u64>) -> Result<Applied> {
        let applied = retrying(self, |w| w.apply_once(track, changes, fence))?;
        // The block is committed: statistics that could not be refreshed
        // now will be on a later block.
        if let Err(e) = self.analyze_when_grown(applied.changes) {
            eprintln!("trackc: {e}");
        }
        Ok(applied)
    }
}

impl PgWriter {
    fn apply_once(
        &mut self,
        track: &str,
        changes: &[Change],
        fence: Option<u64>,
    ) -> Result<Applied> {
        // Prepare every action statement first (outside the transaction).
        for c in changes {
            for e in &c.effects {
                if let EffectRow::Sql(s) = e {
                    self.ensure_prepared(&s.sql)?;
                }
            }
        }
        let (new, old): (Vec<&Change>, Vec<&Change>) =
            changes.iter().partition(|c| c.expected_seq.is_none());
        let (new, old) = (StateColumns::of(&new), StateColumns::of(&old));
        let prepared = &self.prepared;
        let PgConn { rt, client, .. } = &mut self.conn;
        rt.block_on(async {
            let tx = client
                .transaction()
                .await
                .pg(|| "starting a block's transaction".into())?;
            if let Some(epoch) = fence {
                let current = tx
                    .query_opt(owners::EPOCH_LOCKED, &[&track])
                    .await
                    .pg(|| format!("reading the epoch of {track}"))?
                    .map_or(0, |r| r.get::<_, i64>(0) as u64);
                owners::check_fence(track, epoch, current)?;
            }
            let mut written: HashSet<String> = HashSet::new();
            if !new.keys.is_empty() {
                let rows = tx
                    .query(
                        "INSERT INTO trackc_state (track, key, step, entered_at, wake_at, seq, run_id)
                         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[],
                                                  $6::int8[], $7::int8[])
                         ON CONFLICT (track, key) DO NOTHING RETURNING key",
                        &[
                            &track,
                            &new.keys,
                            &new.steps,
                            &new.entered_at,
                            &new.wake_at,
                            &new.seq,
                            &new.run_id,
                        ],
                    )
                    .await
                    .pg(|| format!("writing new record states of {track}"))?;
                written.extend(rows.iter().map(|r| r.get::<_, String>(0)));
            }
            if !old.keys.is_empty() {
                let rows = tx
                    .query(
                        "UPDATE trackc_state s SET step = u.step, entered_at = u.entered_at,
                             wake_at = u.wake_at, seq = u.seq, run_id = u.run_id
                         FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[],
                                     $7::int8[], $8::int8[])
                              AS u(key, step, entered_at, wake_at, seq, run_id, expected)
                         WHERE s.track = $1 AND s.key = u.key AND s.seq = u.expected
                         RETURNING s.key",
                        &[
                            &track,
                            &old.keys,
                            &old.steps,
                            &old.entered_at,
                            &old.wake_at,
                            &old.seq,
                            &old.run_id,
                            &old.expected_seq,
                        ],
                    )
                    .await
                    .pg(|| format!("writing record states of {track}"))?;
                written.extend(rows.iter().map(|r| r.get::<_, String>(0)));
            }
            let mut applied = Applied {
                changes: written.len() as u64,
                stale: (changes.len() - written.len()) as u64,
                ..Applied::default()
            };
            // Action SQL of the written records, pipelined in order.
            let mut bound: Vec<(&tokio_postgres::Statement, Vec<PgParam<'_>>, &Statement)> =
                Vec::new();
            for c in changes.iter().filter(|c| written.contains(&c.key)) {
                for e in &c.effects {
                    if let EffectRow::Sql(s) = e {
                        let (statement, names) = &prepared[&s.sql];
                        bound.push((statement, lookup(names, &s.params)?, s));
                    }
                }
            }
            let param_refs: Vec<Vec<&(dyn ToSql + Sync)>> =
                bound.iter().map(|(_, p, _)| refs(p)).collect();
            let tx_ref = &tx;
            let futures = bound
                .iter()
                .zip(&param_refs)
                .map(|((st, _, s), p)| async move {
                    tx_ref
                        .execute(*st, p)
                        .await
                        .pg(|| format!("action SQL `{}`", s.sql.trim()))
                });
            applied.sql = futures_util::future::try_join_all(futures).await?.len() as u64;
            if let Some(h) = changes.iter().find_map(|c| c.history.as_ref()) {
                tx.execute(history::ADD_LEGEND, &[&track, &h.version, &h.legend.as_str()])
                    .await
                    .pg(|| format!("writing the history legend of {track}"))?;
            }
            let kept = changes.iter().filter(|c| written.contains(&c.key));
            if let Some(h) = BlockHistory::of(kept) {
                tx.execute(
                    history::INSERT,
                    &[
                        &track,
                        &h.first.run_id,
                        &h.first.at,
                        &h.first.node,
                        &fence.map(|e| e as i64),
                        &h.first.version,
                        &h.keys,
                        &h.changes,
                    ],
                )
                .await
                .pg(|| "writing the decision history".into())?;
            }
            let mut outbox = OutboxColumns::default();
            let mut events = EventColumns::default();
            for c in changes.iter().filter(|c| written.contains(&c.key)) {
                for e in &c.effects {
                    match e {
                        EffectRow::Outbox(o) => outbox.push(o),
                        EffectRow::Event { id, name, key, at } => {
                            events.ids.push(id);
                            events.names.push(name);
                            events.keys.push(key);
                            events.at.push(*at);
                        }
                        EffectRow::Sql(_) => {}
                    }
                }
            }
            if !outbox.ids.is_empty() {
                applied.outbox = tx
                    .execute(
                        "INSERT INTO trackc_outbox
                         (id, kind, track, key, target, recipient, payload, created_at)
                         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                              $5::text[], $6::text[], $7::text[], $8::int8[])
                         ON CONFLICT (id) DO NOTHING",
                        &[
                            &outbox.ids,
                            &outbox.kinds,
                            &outbox.tracks,
                            &outbox.keys,
                            &outbox.targets,
                            &outbox.recipients,
                            &outbox.payloads,
                            &outbox.at,
                        ],
                    )
                    .await
                    .pg(|| "writing outbox rows".into())?;
            }
            if !events.ids.is_empty() {
                applied.events = tx
                    .execute(
                        "INSERT INTO trackc_events (id, name, key, created_at)
                         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[])
                         ON CONFLICT (id) DO NOTHING",
                        &[&events.ids, &events.names, &events.keys, &events.at],
                    )
                    .await
                    .pg(|| "raising events".into())?;
            }
            tx.commit()
                .await
                .pg(|| "committing a block".into())?;
            Ok::<_, Error>(applied)
        })
    }
}

impl PgStore {
    /// One try at `gather`: the source query in a read-only snapshot,
    /// read through a portal a block at a time.
    fn gather_once(
        &mut self,
        query: &Statement,
        types: &[Type],
        block_records: usize,
        each: &mut dyn FnMut(&mut dyn BlockWriter, Rows) -> Result<()>,
    ) -> Result<()> {
        let (sql, names) = sqltext::to_positional(&query.sql)?;
        let params = lookup(&names, &query.params)?;
        let params = refs(&params);
        let what = || format!("the source query `{}`", query.sql.trim());
        let PgStore { reader, writer } = self;
        let PgConn { rt, client, .. } = reader;
        let tx = rt
            .block_on(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start(),
            )
            .pg(what)?;
        let statement = rt.block_on(tx.prepare(&sql)).pg(what)?;
        if statement.columns().len() != types.len() {
            return Err(Error::Data(format!(
                "{} returns {} columns, the track has {} fields",
                what(),
                statement.columns().len(),
                types.len()
            )));
        }
        let portal = rt.block_on(tx.bind(&statement, &params)).pg(what)?;
        let mut number = 0u64;
        loop {
            let rows = rt
                .block_on(tx.query_portal(&portal, block_records as i32))
                .pg(what)?;
            let done = rows.len() < block_records;
            let mut block = Vec::with_capacity(rows.len());
            for row in &rows {
                number += 1;
                let mut record = Vec::with_capacity(types.len());
                for (i, &ty) in types.iter().enumerate() {
                    let name = row.columns()[i].name();
                    let value = row
                        .try_get::<_, Raw>(i)
                        .map_err(|e| Error::Data(e.to_string()))
                        .and_then(|raw| convert(raw, ty))
                        .map_err(|e| {
                            Error::Data(format!("row {number} of {}, column `{name}`: {e}", what()))
                        })?;
                    record.push(value);
                }
                block.push(record);
            }
            if !block.is_empty() {
                each(writer, block)?;
            }
            if done {
                break;
            }
        }
        rt.block_on(tx.commit()).pg(what)
    }
}

impl Store for PgStore {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn migrate(&mut self) -> Result<()> {
        self.transaction(
            || "migrating".into(),
            async |tx| {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                    .await
                    .pg(|| "locking for migrations".into())?;
                tx.batch_execute(CREATE_MIGRATIONS_TABLE)
                    .await
                    .pg(|| "creating trackc_migrations".into())?;
                for m in MIGRATIONS {
                    let done = tx
                        .query_opt(
                            "SELECT version FROM trackc_migrations WHERE version = $1",
                            &[&m.version],
                        )
                        .await
                        .pg(|| "reading migrations".into())?;
                    if done.is_none() {
                        tx.batch_execute(&sql_for(m, true))
                            .await
                            .pg(|| format!("migration {} ({})", m.version, m.name))?;
                        tx.execute(
                            "INSERT INTO trackc_migrations (version, name, applied_at)
                             VALUES ($1, $2, $3)",
                            &[&m.version, &m.name, &crate::clock::now_micros()],
                        )
                        .await
                        .pg(|| format!("recording migration {}", m.version))?;
                    }
                }
                Ok(())
            },
        )
    }

    fn options(&self) -> &DbOptions {
        &self.writer.options
    }

    fn ping(&mut self) -> Result<()> {
        once(self, |s| {
            s.writer
                .conn
                .call(|c| c.simple_query("SELECT 1"))
                .pg(|| "checking the database".into())
                .map(drop)
        })
    }

    fn migrations(&mut self) -> Result<Vec<i64>> {
        self.query(
            "SELECT version FROM trackc_migrations ORDER BY version",
            &[],
            || "reading migrations".into(),
            |r| r.get(0),
        )
    }

    /// Tried again through transient faults until the first block is
    /// handed on; after that a fault ends the gathering (the caller's run
    /// stays open and is resumed).
    fn gather(
        &mut self,
        query: &Statement,
        types: &[Type],
        block_records: usize,
        each: &mut dyn FnMut(&mut dyn BlockWriter, Rows) -> Result<()>,
    ) -> Result<()> {
        let mut attempts = Attempts::new(&self.writer.options);
        let mut handed_on = false;
        loop {
            let result = self.ensure_connected().and_then(|()| {
                self.gather_once(query, types, block_records, &mut |w, rows| {
                    handed_on = true;
                    each(w, rows)
                })
            });
            if handed_on || !attempts.again(&result) {
                return result;
            }
        }
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
        let what = || format!("recording a claim of {track}");
        // A paused node may hold the track's row (a block's share lock):
        // give up after a second and claim again later, rather than wait.
        // Tried once: a claim that failed (or whose answer was lost) is
        // claimed again by the protocol, and the epoch's compare-and-set
        // decides.
        let won: Vec<u64> = once(&mut self.writer, |w| {
            let PgConn { rt, client, .. } = &mut w.conn;
            rt.block_on(async {
                let tx = client.transaction().await?;
                tx.batch_execute("SET LOCAL lock_timeout = '1s'").await?;
                let rows = tx
                    .query(
                        owners::CLAIM,
                        &[&track, &(node as i64), &(known_epoch as i64)],
                    )
                    .await?;
                tx.commit().await?;
                Ok::<_, tokio_postgres::Error>(
                    rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect(),
                )
            })
            .pg(what)
        })?;
        match won.first() {
            Some(&epoch) => Ok(Ok(epoch)),
            None => Ok(Err(self.track_epoch(track)?)),
        }
    }

    fn track_epoch(&mut self, track: &str) -> Result<u64> {
        let rows = self.query(
            owners::EPOCH,
            &[&track],
            || format!("reading the epoch of {track}"),
            |r| r.get::<_, i64>(0) as u64,
        )?;
        Ok(rows.first().copied().unwrap_or(0))
    }

    fn schema(&mut self) -> Result<Option<(String, String)>> {
        let rows = self.query(
            owners::SCHEMA,
            &[],
            || "reading the deployed schema".into(),
            |r| (r.get(0), r.get(1)),
        )?;
        Ok(rows.into_iter().next())
    }

    fn deployed(&mut self) -> Result<Vec<DeployedTrack>> {
        self.query(
            "SELECT track, version, hash, file, source, steps FROM trackc_deployments
             WHERE active ORDER BY track",
            &[],
            || "reading deployments".into(),
            |r| DeployedRow {
                name: r.get(0),
                version: r.get(1),
                hash: r.get(2),
                file: r.get(3),
                source: r.get(4),
                steps: r.get(5),
            },
        )?
        .into_iter()
        .map(DeployedRow::track)
        .collect()
    }

    fn source_schemas(&mut self) -> Result<Vec<SourceSchema>> {
        self.query(
            owners::DATABASES,
            &[],
            || "reading the deployed source databases".into(),
            |r| (r.get(0), r.get(1), r.get(2), r.get(3)),
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
        let now = crate::clock::now_micros();
        let row = record.map(|d| (d, d.row()));
        self.transaction(
            || "deploying".into(),
            async |tx| {
                for t in tracks {
                    let steps = serde_json::to_string(&t.steps).expect("strings serialize");
                    tx.execute(
                        "UPDATE trackc_deployments SET active = FALSE WHERE track = $1 AND active",
                        &[&t.name],
                    )
                    .await
                    .pg(|| format!("deploying {}", t.name))?;
                    tx.execute(
                        "INSERT INTO trackc_deployments
                     (track, version, hash, file, source, steps, deployed_at, active)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE)",
                        &[
                            &t.name, &t.version, &t.hash, &t.file, &t.source, &steps, &now,
                        ],
                    )
                    .await
                    .pg(|| format!("deploying {}", t.name))?;
                }
                for (track, from, to) in moves {
                    tx.execute(
                        "UPDATE trackc_state SET step = $3 WHERE track = $1 AND step = $2",
                        &[track, from, to],
                    )
                    .await
                    .pg(|| format!("moving records of {track} from {from} to {to}"))?;
                }
                if let Some((file, text)) = schema {
                    tx.execute(owners::SET_SCHEMA, &[file, text])
                        .await
                        .pg(|| "storing the schema".into())?;
                }
                for d in databases {
                    let (file, text) = d.schema.clone().unzip();
                    tx.execute(
                        owners::SET_DATABASE,
                        &[&d.name, &d.dialect.name(), &file, &text],
                    )
                    .await
                    .pg(|| format!("storing the schema of database {}", d.name))?;
                }
                let Some((d, row)) = &row else {
                    return Ok(None);
                };
                let what = || "writing the deploy history".to_string();
                tx.execute(
                    deploys::INSERT,
                    &[
                        &d.request,
                        &row.hash,
                        &row.names,
                        &row.files,
                        &row.schema,
                        &row.map,
                        &row.tracks,
                        &row.changed,
                        &d.by.name,
                        &d.by.role,
                        &d.at,
                        &d.rollback_of,
                    ],
                )
                .await
                .pg(what)?;
                let number: i64 = tx
                    .query_one(deploys::NUMBER, &[&d.request])
                    .await
                    .pg(what)?
                    .get(0);
                Ok(Some(number))
            },
        )
    }

    fn deploys(&mut self, limit: usize) -> Result<Vec<DeployListing>> {
        self.query(
            deploys::LIST,
            &[&(limit as i64)],
            || "reading the deploy history".into(),
            |r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                    r.get(8),
                    r.get(9),
                )
            },
        )?
        .into_iter()
        .map(deploys::listing)
        .collect()
    }

    fn shipped(&mut self, number: i64) -> Result<Option<ShippedBundle>> {
        self.query(
            deploys::BUNDLE,
            &[&number],
            || "reading a deploy's files".into(),
            |r| (r.get(0), r.get(1), r.get(2)),
        )?
        .pop()
        .map(|row| deploys::shipped(number, row))
        .transpose()
    }

    fn blocks_by_node(&mut self, since: i64) -> Result<Vec<(Option<i64>, i64)>> {
        self.query(
            insight::BLOCKS_BY_NODE,
            &[&since],
            || "counting blocks per node".into(),
            |r| (r.get(0), r.get(1)),
        )
    }

    fn set_failed_blocks(&mut self, run: i64, failed: u32) -> Result<()> {
        self.execute(
            insight::SET_FAILED_BLOCKS,
            &[&run, &i64::from(failed)],
            || "recording a run's failed blocks".into(),
        )?;
        Ok(())
    }

    fn recent_runs(&mut self, track: &str, limit: usize) -> Result<Vec<insight::RunRow>> {
        self.query(
            insight::RUNS,
            &[&track, &(limit as i64)],
            || "reading a track's runs".into(),
            |r| insight::RunRow {
                id: r.get(0),
                run_at: r.get(1),
                started_at: r.get(2),
                finished_at: r.get(3),
                records: r.get(4),
                changes: r.get(5),
                failed_blocks: r.get(6),
            },
        )
    }

    fn history_since(
        &mut self,
        track: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<insight::BlockRow>> {
        self.query(
            insight::HISTORY_SINCE,
            &[&track, &since, &(limit as i64)],
            || "reading a track's history".into(),
            |r| insight::BlockRow {
                at: r.get(0),
                node: r.get(1),
                run_id: r.get(2),
                changes: r.get(3),
            },
        )
    }

    fn audit(&mut self, entry: &AuditEntry) -> Result<()> {
        let id = unique_id("audit", entry.at);
        self.execute(
            audit::INSERT,
            &[
                &id,
                &entry.at,
                &entry.who,
                &entry.role,
                &entry.action,
                &entry.target,
                &entry.result,
                &entry.address,
            ],
            || "writing the audit log".into(),
        )?;
        Ok(())
    }

    fn audit_log(&mut self, since: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.query(
            audit::LIST,
            &[&since, &(limit as i64)],
            || "reading the audit log".into(),
            |r| AuditEntry {
                at: r.get(0),
                who: r.get(1),
                role: r.get(2),
                action: r.get(3),
                target: r.get(4),
                result: r.get(5),
                address: r.get(6),
            },
        )
    }

    fn prune_audit(&mut self, before: i64, limit: usize) -> Result<u64> {
        self.execute(audit::PRUNE, &[&before, &(limit as i64)], || {
            "pruning the audit log".into()
        })
    }

    fn step_counts(&mut self, track: &str) -> Result<Vec<(Option<String>, i64)>> {
        self.query(
            "SELECT step, count(*) FROM trackc_state WHERE track = $1 GROUP BY step ORDER BY step",
            &[&track],
            || "counting records per step".into(),
            |r| (r.get(0), r.get(1)),
        )
    }

    fn open_run(&mut self, track: &str, now: i64, pass: Option<i64>) -> Result<Option<RunInfo>> {
        let what = || format!("opening a run of {track}");
        self.transaction(what, async |tx| {
            if let Some(unfinished) = lock_and_find_unfinished(tx, track).await? {
                return Ok(Some(unfinished));
            }
            let ran: i64 = tx
                .query_one(runs::RAN_IN_PASS, &[&track, &pass])
                .await
                .pg(what)?
                .get(0);
            if ran > 0 {
                return Ok(None);
            }
            insert_run(tx, track, now, None, pass, None).await.map(Some)
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
        let waiting_sql = runs::waiting_events(&listens, &sole);
        self.transaction(what, async |tx| {
            if let Some(unfinished) = lock_and_find_unfinished(tx, track).await? {
                return Ok(Some(unfinished));
            }
            if listens.is_empty() {
                return Ok(None);
            }
            let mut values: Vec<&(dyn ToSql + Sync)> =
                listens.iter().map(|n| n as &(dyn ToSql + Sync)).collect();
            if runs::waiting_uses_track(&sole) {
                values.push(&track);
            }
            let mut waiting: Vec<PendingEvent> = tx
                .query(&waiting_sql, &values)
                .await
                .pg(what)?
                .iter()
                .map(pending_event)
                .collect();
            let Some((event, seqs)) = runs::cut_batch(&mut waiting, key) else {
                return Ok(None);
            };
            let run = insert_run(tx, track, now, Some(&event), None, Some(&seqs)).await?;
            let shared: Vec<i64> = waiting
                .iter()
                .filter(|e| !listeners.sole(&e.name, track))
                .map(|e| e.seq)
                .collect();
            if !shared.is_empty() {
                tx.execute(TAKE_EVENTS, &[&shared, &track, &run.id])
                    .await
                    .pg(what)?;
            }
            Ok(Some(run))
        })
    }

    fn run_events(&mut self, run: i64) -> Result<Vec<PendingEvent>> {
        let what = || format!("reading the events of run {run}");
        self.transaction(what, async |tx| run_events(tx, run).await)
    }

    fn open_pass(&mut self, now: i64) -> Result<(i64, i64)> {
        let what = || "opening a pass".to_string();
        self.transaction(what, async |tx| {
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('trackc pass'))", &[])
                .await
                .pg(what)?;
            let open = tx
                .query_opt(
                    "SELECT id, run_at FROM trackc_passes WHERE finished_at IS NULL
                     ORDER BY id LIMIT 1",
                    &[],
                )
                .await
                .pg(what)?;
            let pass = match open {
                Some(r) => (r.get(0), r.get(1)),
                None => {
                    let r = tx
                        .query_one(
                            "INSERT INTO trackc_passes (run_at) VALUES ($1) RETURNING id",
                            &[&now],
                        )
                        .await
                        .pg(what)?;
                    (r.get(0), now)
                }
            };
            Ok(pass)
        })
    }

    fn finish_pass(&mut self, id: i64) -> Result<()> {
        self.execute(
            "UPDATE trackc_passes SET finished_at = $2 WHERE id = $1",
            &[&id, &crate::clock::now_micros()],
            || format!("finishing pass {id}"),
        )?;
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
        self.transaction(what, async |tx| {
            // Once: a retry after a lost COMMIT answer adds nothing.
            tx.execute(
                "UPDATE trackc_runs SET finished_at = $2, records = records + $3,
                 changes = changes + $4 WHERE id = $1 AND finished_at IS NULL",
                &[
                    &run.id,
                    &crate::clock::now_micros(),
                    &(records as i64),
                    &(changes as i64),
                ],
            )
            .await
            .pg(what)?;
            if run.event.is_none() {
                return Ok(());
            }
            let events = run_events(tx, run.id).await?;
            let shared: Vec<i64> = events
                .iter()
                .filter(|e| !listeners.sole(&e.name, &run.track))
                .map(|e| e.seq)
                .collect();
            let mut finished: HashMap<i64, Vec<String>> = HashMap::new();
            if !shared.is_empty() {
                for r in tx
                    .query(
                        "SELECT o.seq, o.track FROM trackc_event_runs o
                         JOIN trackc_runs f ON f.id = o.run_id
                         WHERE o.seq = ANY($1) AND f.finished_at IS NOT NULL",
                        &[&shared],
                    )
                    .await
                    .pg(what)?
                {
                    finished.entry(r.get(0)).or_default().push(r.get(1));
                }
            }
            let (done, _) = runs::done_events(&events, &run.track, listeners, |seq| {
                Ok(finished.remove(&seq).unwrap_or_default())
            })?;
            let now = crate::clock::now_micros();
            tx.execute(
                "UPDATE trackc_events SET done_at = $2 WHERE seq = ANY($1)",
                &[&done, &now],
            )
            .await
            .pg(what)?;
            let forget: Vec<i64> = shared
                .into_iter()
                .filter(|s| done.binary_search(s).is_ok())
                .collect();
            if !forget.is_empty() {
                tx.execute(
                    "DELETE FROM trackc_event_runs WHERE seq = ANY($1)",
                    &[&forget],
                )
                .await
                .pg(what)?;
            }
            tx.execute(runs::FORGET_RUN_SEQS, &[&run.id])
                .await
                .pg(what)?;
            Ok(())
        })
    }

    fn retire_unheard_events(&mut self, heard: &[String], now: i64) -> Result<u64> {
        let sql = runs::retire_unheard(heard);
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&now];
        values.extend(heard.iter().map(|n| n as &(dyn ToSql + Sync)));
        self.execute(&sql, &values, || {
            "retiring events no track listens for".into()
        })
    }

    fn count_rows(&mut self, query: &Statement) -> Result<u64> {
        let n = self.query_wrapped(
            query,
            |sql| format!("SELECT count(*) FROM ({sql}) AS trackc_count"),
            "counting the rows of",
            |r| r.get::<_, i64>(0),
        )?;
        Ok(n.first().copied().unwrap_or(0) as u64)
    }

    fn explain(&mut self, query: &Statement) -> Result<String> {
        let lines = self.query_wrapped(
            query,
            |sql| format!("EXPLAIN {sql}"),
            "explaining",
            |r| r.get::<_, String>(0),
        )?;
        Ok(lines.join("\n"))
    }

    fn last_run(&mut self, track: &str) -> Result<Option<i64>> {
        let rows = self.query(
            runs::LATEST_SCHEDULED,
            &[&track],
            || format!("reading the last run of {track}"),
            |r| r.get::<_, Option<i64>>(0),
        )?;
        Ok(rows.into_iter().next().flatten())
    }

    fn query_fingerprint(&mut self, query: &Statement) -> Result<String> {
        let rows = retrying(&mut self.writer, |w| {
            w.ensure_prepared(&query.sql)?;
            let (statement, names) = &w.prepared[&query.sql];
            let params = lookup(names, &query.params)?;
            let params = refs(&params);
            w.conn
                .call(|c| c.query(statement, &params))
                .pg(|| format!("the change query `{}`", query.sql.trim()))
        })?;
        let mut text = String::new();
        for row in &rows {
            for i in 0..row.len() {
                let raw: Raw = row
                    .try_get(i)
                    .map_err(|e| Error::Data(format!("the change query: {e}")))?;
                text.push_str(&format!("{raw:?}\u{1f}"));
            }
            text.push('\u{1e}');
        }
        Ok(content_hash(&text))
    }

    fn get_mark(&mut self, track: &str) -> Result<Option<String>> {
        let rows = self.query(
            "SELECT mark FROM trackc_marks WHERE track = $1",
            &[&track],
            || format!("reading the change mark of {track}"),
            |r| r.get::<_, String>(0),
        )?;
        Ok(rows.into_iter().next())
    }

    fn set_mark(&mut self, track: &str, mark: &str) -> Result<()> {
        self.execute(
            "INSERT INTO trackc_marks (track, mark) VALUES ($1, $2)
             ON CONFLICT (track) DO UPDATE SET mark = excluded.mark",
            &[&track, &mark],
            || format!("writing the change mark of {track}"),
        )?;
        Ok(())
    }

    fn insert_events(&mut self, events: &[NewEvent], now: i64) -> Result<()> {
        let ids: Vec<String> = events.iter().map(|_| unique_id("emit", now)).collect();
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        let keys: Vec<Option<&str>> = events.iter().map(|e| e.key.as_deref()).collect();
        let what = || match events {
            [one] => format!("raising event {}", one.name),
            _ => format!("raising {} events", events.len()),
        };
        // One statement for the lot; `WITH ORDINALITY` keeps their order.
        self.execute(
            "INSERT INTO trackc_events (id, name, key, created_at)
             SELECT id, name, key, $4 FROM unnest($1::text[], $2::text[], $3::text[])
                 WITH ORDINALITY AS e(id, name, key, n)
             ORDER BY n
             ON CONFLICT (id) DO NOTHING",
            &[&ids, &names, &keys, &now],
            what,
        )?;
        Ok(())
    }

    fn outbox_counts(&mut self) -> Result<Vec<(String, String, i64)>> {
        self.query(
            "SELECT kind, state, count(*) FROM trackc_outbox GROUP BY kind, state
             ORDER BY kind, state",
            &[],
            || "counting the outbox".into(),
            |r| (r.get(0), r.get(1), r.get(2)),
        )
    }

    fn claim_outbox(
        &mut self,
        kinds: Kinds,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>> {
        let sql = ob::CLAIM.replace("/*lock*/", "FOR UPDATE SKIP LOCKED");
        let rows = self.query(
            &sql,
            &[
                &(limit as i64),
                &now,
                &lease_until,
                &kinds.email,
                &kinds.webhook,
            ],
            || "claiming outbox rows".into(),
            |r| ob::Claimed {
                id: r.get(0),
                kind: r.get(1),
                track: r.get(2),
                key: r.get(3),
                target: r.get(4),
                recipient: r.get(5),
                payload: r.get(6),
                at: r.get(7),
                attempt: r.get(8),
            },
        )?;
        rows.into_iter().map(ob::Claimed::item).collect()
    }

    fn settle_outbox(&mut self, settled: &[Settled], now: i64) -> Result<()> {
        let what = || "settling outbox rows".to_string();
        self.transaction(what, async |tx| {
            let stmt = tx.prepare(ob::SETTLE).await.pg(what)?;
            for s in settled {
                let (state, next, error) = ob::settle_columns(&s.outcome);
                tx.execute(&stmt, &[&s.id, &s.attempt, &now, &state, &next, &error])
                    .await
                    .pg(what)?;
            }
            Ok(())
        })
    }

    fn list_outbox(&mut self, state: Option<&str>, limit: usize) -> Result<Vec<OutboxListing>> {
        self.query(
            ob::LIST,
            &[&state.unwrap_or(""), &(limit as i64)],
            || "listing the outbox".into(),
            |r| OutboxListing {
                id: r.get(0),
                kind: r.get(1),
                target: r.get(2),
                recipient: r.get(3),
                state: r.get(4),
                attempts: r.get(5),
                next_attempt_at: r.get(6),
                last_error: r.get(7),
            },
        )
    }

    fn retry_parked(&mut self, id: Option<&str>, now: i64) -> Result<u64> {
        self.execute(ob::RETRY_PARKED, &[&now, &id.unwrap_or("")], || {
            "re-queueing parked outbox rows".into()
        })
    }

    fn prune_history(&mut self, before: i64, limit: usize) -> Result<u64> {
        self.execute(history::PRUNE, &[&before, &(limit as i64)], || {
            "pruning the decision history".into()
        })
    }

    fn record_history(&mut self, track: &str, key: &str) -> Result<RecordHistory> {
        let what = || "reading a record's history".to_string();
        let state = self
            .query(history::STATE, &[&track, &key], what, |r| RecordState {
                step: r.get(0),
                entered_at: r.get(1),
                wake_at: r.get(2),
                seq: r.get(3),
                run_id: r.get(4),
            })?
            .pop();
        let limit = HISTORY_READ_MAX as i64;
        let pattern = history::like_key(key);
        let blocks = self.query(history::DECISIONS, &[&track, &pattern, &limit], what, |r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })?;
        let legends: HashMap<String, String> = self
            .query(history::LEGENDS, &[&track], what, |r| (r.get(0), r.get(1)))?
            .into_iter()
            .collect();
        let decisions = history::decisions_of(key, blocks, &legends);
        let outbox = self.query(history::OUTBOX, &[&track, &key, &limit], what, |r| {
            (r.get(0), r.get(1), r.get(2))
        })?;
        let sources = self.query(history::SOURCES, &[&track], what, |r| (r.get(0), r.get(1)))?;
        Ok(RecordHistory {
            state,
            decisions,
            outbox,
            sources,
        })
    }

    fn execute_batch(&mut self, sql: &str) -> Result<()> {
        retrying(&mut self.writer, |w| {
            w.conn
                .call(|c| c.batch_execute(sql))
                .pg(|| "running SQL".into())
        })
    }

    fn execute_script(&mut self, parts: &[String]) -> Result<()> {
        let what = || "running SQL".to_string();
        self.transaction(what, async |tx| {
            for part in parts {
                tx.batch_execute(part).await.pg(what)?;
            }
            Ok(())
        })
    }

    fn query_i64(&mut self, sql: &str) -> Result<i64> {
        let rows = self.query(
            sql,
            &[],
            || format!("`{sql}`"),
            |r| {
                r.try_get::<_, i64>(0)
                    .or_else(|_| r.try_get::<_, i32>(0).map(i64::from))
            },
        )?;
        match rows.into_iter().next() {
            Some(v) => v.map_err(|e| Error::Data(format!("`{sql}`: {e}"))),
            None => Err(Error::Data(format!("`{sql}` returned no row"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_round_trips_through_binary() {
        for text in [
            "0",
            "1",
            "-1",
            "12.5",
            "1234.5678",
            "10000",
            "0.0001",
            "-0.25",
            "99999999.99",
            "100000000",
            "0.00001234",
        ] {
            let mut out = BytesMut::new();
            put_numeric(text, &mut out).unwrap();
            assert_eq!(numeric_text(&out).unwrap(), text, "{text}");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
