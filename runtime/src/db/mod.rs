//! Storage: one interface over SQLite (the embedded default) and
//! PostgreSQL (the server a group shares).
//!
//! Both are synchronous: a run is a loop of "read a block, decide it, apply
//! it in one transaction", and the SQLite side (rusqlite) is fastest called
//! directly. The PostgreSQL side drives tokio-postgres on a runtime of its
//! own, which lets it pipeline the statements of a block into few round
//! trips. Each store holds two connections: one streams the source query of
//! a run, the other applies blocks while it does.

pub mod audit;
pub mod deploys;
mod history;
pub mod insight;
mod migrations;
mod mysql;
mod outbox;
mod owners;
mod postgres;
pub mod retry;
mod runs;
pub mod source;
mod sqlite;
mod timefmt;

pub use audit::{AuditAction, AuditEntry};
pub use deploys::{DeployListing, NewDeploy, ShippedBundle};
pub use outbox::{Kinds, OutboxItem, OutboxListing, Outcome, Settled};
pub use retry::{DbOptions, Health, RetryPolicy};
pub use runs::{typed_key, Listeners, EVENT_BATCH_MAX};
pub use source::SourceDb;
pub use timefmt::{format_sqlite_timestamp, parse_sqlite_timestamp};

use crate::error::{Error, Result};
use trackc_compiler::types::Type;
use trackc_compiler::value::Value;

/// Where the runtime's tables and the user's tables live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbUrl {
    /// `sqlite:PATH` or `sqlite://PATH`.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`, as libpq writes it.
    Postgres(String),
    /// `mysql://…` or `mariadb://…` (kept as `mysql://…`): a source
    /// database only.
    MySql(String),
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<DbUrl> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(Error::Config(format!(
                    "`{url}`: the SQLite URL has no path (write sqlite:PATH)"
                )));
            }
            return Ok(DbUrl::Sqlite(path.to_string()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(url.to_string()));
        }
        if url.starts_with("mysql://") {
            return Ok(DbUrl::MySql(url.to_string()));
        }
        if let Some(rest) = url.strip_prefix("mariadb://") {
            return Ok(DbUrl::MySql(format!("mysql://{rest}")));
        }
        Err(Error::Config(format!(
            "`{url}` is not a database URL: write sqlite:PATH, postgres://USER@HOST/DB \
             or (a source database) mysql://USER@HOST/DB"
        )))
    }

    /// The URL of a state database: SQLite or PostgreSQL (a MariaDB/MySQL
    /// database can only be a source).
    pub fn parse_state(url: &str) -> Result<DbUrl> {
        let parsed = DbUrl::parse(url)?;
        if let DbUrl::MySql(_) = parsed {
            return Err(parsed.not_a_state_database());
        }
        Ok(parsed)
    }

    fn not_a_state_database(&self) -> Error {
        Error::Config(format!(
            "{}: trackc keeps its own tables in PostgreSQL or SQLite; a MariaDB/MySQL \
             database can be a track's source (`source from NAME`, --source-db NAME=mysql://…)",
            self.redacted()
        ))
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            DbUrl::Sqlite(_) => Dialect::Sqlite,
            DbUrl::Postgres(_) => Dialect::Postgres,
            DbUrl::MySql(_) => Dialect::MySql,
        }
    }

    /// The URL without its password, to name it in messages and pages.
    pub fn redacted(&self) -> String {
        match self {
            DbUrl::Sqlite(path) => format!("sqlite:{path}"),
            DbUrl::Postgres(url) | DbUrl::MySql(url) => match url::Url::parse(url) {
                Ok(mut parsed) if parsed.password().is_some() => {
                    let _ = parsed.set_password(Some("***"));
                    parsed.to_string()
                }
                _ => url.clone(),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    /// MariaDB and MySQL: source databases only.
    MySql,
}

impl Dialect {
    /// Its name in trackc.toml, deploys and the deploy table.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    pub fn from_name(name: &str) -> Option<Dialect> {
        match name {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            _ => None,
        }
    }
}

/// A named source database as tracks are compiled against it (`source
/// from NAME`): its dialect and its schema (file name, text), if given.
/// Deploys ship them, so every node compiles the same bundle.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceSchema {
    pub name: String,
    pub dialect: Dialect,
    pub schema: Option<(String, String)>,
}

/// Opens the database and brings the runtime's tables to the current
/// version.
pub fn open(url: &DbUrl) -> Result<Box<dyn Store>> {
    open_with(url, &DbOptions::default())
}

/// `open`, with how faults are retried and whom they are reported to (a
/// node shares one `Health` among all its connections).
pub fn open_with(url: &DbUrl, options: &DbOptions) -> Result<Box<dyn Store>> {
    let mut store: Box<dyn Store> = match url {
        DbUrl::Sqlite(path) => Box::new(sqlite::SqliteStore::open(path, options)?),
        DbUrl::Postgres(url) => Box::new(postgres::PgStore::open(url, options)?),
        DbUrl::MySql(_) => return Err(url.not_a_state_database()),
    };
    store.migrate()?;
    Ok(store)
}

/// The named source databases a process reads (`source from NAME`), open,
/// by name.
pub type SourceDbs = std::collections::BTreeMap<String, Box<dyn SourceDb>>;

/// Opens a source database: never migrated and never written (trackc's
/// tables stay in the state database); SQLite read-only, PostgreSQL and
/// MariaDB/MySQL read in read-only transactions.
pub fn open_source(url: &DbUrl) -> Result<Box<dyn SourceDb>> {
    let options = DbOptions::default();
    Ok(match url {
        DbUrl::Sqlite(path) => {
            if !std::path::Path::new(path).is_file() {
                return Err(Error::Config(format!(
                    "the source database sqlite:{path} does not exist"
                )));
            }
            Box::new(source::StoreSource(Box::new(
                sqlite::SqliteStore::open_read_only(path, &options)?,
            )))
        }
        DbUrl::Postgres(url) => Box::new(source::StoreSource(Box::new(postgres::PgStore::open(
            url, &options,
        )?))),
        DbUrl::MySql(url) => Box::new(mysql::MySqlSource::open(url)?),
    })
}

/// The database a track's source reads: its named database, or the state
/// database (`None`).
pub fn source_of<'s>(
    sources: &'s mut SourceDbs,
    track: &crate::bundle::LoadedTrack,
) -> Result<Option<&'s mut Box<dyn SourceDb>>> {
    let Some(name) = &track.ir.source_database else {
        return Ok(None);
    };
    match sources.get_mut(name) {
        Some(s) => Ok(Some(s)),
        None => Err(Error::Config(format!(
            "track {} reads database `{name}`, which this process was not given: \
             --source-db {name}=URL",
            track.ir.name
        ))),
    }
}

/// A statement with its `:name` parameters and their values.
#[derive(Clone, Debug)]
pub struct Statement {
    /// The SQL as the track wrote it (with `:name` parameters); each store
    /// rewrites it for its driver (see `sqltext`).
    pub sql: String,
    pub params: Vec<(String, Value)>,
}

/// A deployed track: its source and what the runtime needs to know about
/// its steps without compiling it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployedTrack {
    pub name: String,
    pub version: Option<i64>,
    /// A hash of the source (`content_hash`), to tell versions apart.
    pub hash: String,
    /// The file it came from and its text.
    pub file: String,
    pub source: String,
    pub steps: Vec<String>,
}

/// A row of `trackc_deployments` as both stores read it.
pub(crate) struct DeployedRow {
    pub name: String,
    pub version: Option<i64>,
    pub hash: String,
    pub file: String,
    pub source: String,
    /// A JSON array of step names.
    pub steps: String,
}

impl DeployedRow {
    pub fn track(self) -> Result<DeployedTrack> {
        Ok(DeployedTrack {
            steps: serde_json::from_str(&self.steps).map_err(|e| {
                Error::Data(format!(
                    "the deployment of {} lists its steps badly: {e}",
                    self.name
                ))
            })?,
            name: self.name,
            version: self.version,
            hash: self.hash,
            file: self.file,
            source: self.source,
        })
    }
}

/// Where a record is in a track.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordState {
    /// `None` once the record has ended.
    pub step: Option<String>,
    pub entered_at: i64,
    pub wake_at: Option<i64>,
    pub seq: i64,
    /// The run that last changed it.
    pub run_id: i64,
}

/// One run of a track: the instant it evaluates at, and the previous run's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub id: i64,
    pub track: String,
    pub now: i64,
    pub last_run: i64,
    /// True when an interrupted run is being finished.
    pub resumed: bool,
    /// The event that started it, if one did.
    pub event: Option<PendingEvent>,
}

/// The new state of one record and the effects that go with it, applied
/// together or not at all.
#[derive(Clone, Debug)]
pub struct Change {
    pub key: String,
    /// The sequence number the record must still have (`None`: it must not
    /// have a state yet). A change whose record moved on is skipped.
    pub expected_seq: Option<i64>,
    pub state: RecordState,
    pub effects: Vec<EffectRow>,
    /// The decisions that led to `state` (`None` when the track keeps no
    /// history), appended to `trackc_history` with it.
    pub history: Option<HistoryRow>,
}

/// The history of one change of one record, written with the other
/// changes of its block as one row of `trackc_history` (docs/runtime.md,
/// "Decision history").
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRow {
    /// The hash of the deployed source that decided (`trackc_deployments`).
    pub version: String,
    /// What the positions in `decisions` mean for this version
    /// (`bundle::history_legend`), kept once per version and track.
    pub legend: std::sync::Arc<String>,
    pub run_id: i64,
    /// The node that decided (in a group).
    pub node: Option<i64>,
    /// The run's instant.
    pub at: i64,
    /// The decisions, in order, as a JSON array of `[step, rule, values…]`.
    pub decisions: String,
}

/// One decision as `trackc why` reads it back.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionRow {
    pub version: String,
    /// The record's sequence number after the decision; with the index of
    /// an effect it names the effect's outbox or event row.
    pub seq: i64,
    pub step: String,
    /// The rule that fired, from 1; `None`: none did.
    pub rule: Option<i64>,
    /// A step name, `end` or `stay`.
    pub next: String,
    /// The fields the conditions tried read, with their values.
    pub values: Vec<(String, Value)>,
    /// Each effect's kind: `email`, `webhook`, `emit`, `sql`.
    pub effects: Vec<String>,
    pub run_id: i64,
    pub node: Option<i64>,
    pub epoch: Option<u64>,
    pub at: i64,
}

/// How long decisions are kept unless configured (`history_days`).
pub const HISTORY_DAYS_DEFAULT: i64 = 30;
/// History rows (blocks) deleted per pruning statement: small enough that
/// one statement never holds a lock a block's transaction waits for
/// noticeably, large enough that a backlog goes in few statements.
pub const HISTORY_PRUNE_BATCH: usize = 10_000;
/// Pruning runs at most this often per process (microseconds: an hour):
/// retention is counted in days.
pub const HISTORY_PRUNE_EVERY: i64 = 3_600_000_000;
/// One pruning stops after this long (it goes on an hour later), so that
/// a backlog never holds up the runs.
pub const HISTORY_PRUNE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// The most history rows (blocks) `why` reads for one record (the newest).
pub const HISTORY_READ_MAX: usize = 1_000;

/// What `trackc why` reads about one record: its state, its decisions
/// (oldest first), the state of its outbox rows, and the source of each
/// version that decided.
#[derive(Clone, Debug, Default)]
pub struct RecordHistory {
    pub state: Option<RecordState>,
    /// Oldest first.
    pub decisions: Vec<DecisionRow>,
    /// Outbox rows of the record: id, state, last error.
    pub outbox: Vec<(String, String, Option<String>)>,
    /// The deployed sources by hash.
    pub sources: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub enum EffectRow {
    /// Action SQL, run in the block's transaction.
    Sql(Statement),
    /// An e-mail or webhook, delivered after commit.
    Outbox(OutboxRow),
    /// An event raised for a record.
    Event {
        id: String,
        name: String,
        key: String,
        at: i64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    /// Unique: `track/key/seq/n`; also the webhook's `Idempotency-Key`.
    pub id: String,
    pub kind: OutboxKind,
    pub track: String,
    pub key: String,
    /// The template (e-mail) or URL (webhook).
    pub target: String,
    /// The recipient of an e-mail.
    pub recipient: Option<String>,
    /// The record's fields, as a JSON object.
    pub payload: String,
    /// The instant of the run that wrote it.
    pub at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxKind {
    Email,
    Webhook,
}

impl OutboxKind {
    pub fn name(self) -> &'static str {
        match self {
            OutboxKind::Email => "email",
            OutboxKind::Webhook => "webhook",
        }
    }
}

/// What applying a block did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changes whose state was written (the others were already applied).
    pub changes: u64,
    pub stale: u64,
    pub sql: u64,
    pub outbox: u64,
    pub events: u64,
}

/// An event waiting for the tracks declared `on event NAME` to decide it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingEvent {
    pub seq: i64,
    pub name: String,
    pub key: Option<String>,
}

/// The operations of a block that a run performs while it streams the
/// source query (on the store's second connection).
pub trait BlockWriter {
    /// The states of `keys` in `track` (absent: no state yet).
    fn load_states(
        &mut self,
        track: &str,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, RecordState>>;

    /// Applies the changes of one block in one transaction: each state
    /// write is conditional on the record's sequence number, and a change
    /// whose condition fails brings none of its effects. With `fence`
    /// (in a group), the track's epoch must still be that one, or nothing
    /// is written and the answer is `Error::Fenced`.
    fn apply(&mut self, track: &str, changes: &[Change], fence: Option<u64>) -> Result<Applied>;
}

/// Rows of a source query, converted to the track's field types.
pub type Rows = Vec<Vec<Value>>;

pub trait Store: Send {
    fn dialect(&self) -> Dialect;

    /// Creates or upgrades the runtime's tables (idempotent).
    fn migrate(&mut self) -> Result<()>;

    /// How this store retries and whom it tells about outages.
    fn options(&self) -> &DbOptions;

    /// One round trip to the database, tried once (reconnecting first if
    /// the connection was lost); its outcome goes to the store's `Health`.
    fn ping(&mut self) -> Result<()>;

    /// The versions of the runtime's schema applied, oldest first.
    fn migrations(&mut self) -> Result<Vec<i64>>;

    /// Streams `query` in blocks of at most `block_records` rows, each
    /// handed to `each` with the writer, so that memory is bounded by the
    /// block, not by the result. `types` are the fields' types.
    fn gather(
        &mut self,
        query: &Statement,
        types: &[Type],
        block_records: usize,
        each: &mut dyn FnMut(&mut dyn BlockWriter, Rows) -> Result<()>,
    ) -> Result<()>;

    /// The writer, for blocks handed over by another node.
    fn writer(&mut self) -> &mut dyn BlockWriter;

    /// Records a claim of `track` by `node`: `Ok(new epoch)` if its epoch
    /// was still `known_epoch` (or it had no owner), else `Err(epoch)`.
    fn claim_track(
        &mut self,
        track: &str,
        node: u64,
        known_epoch: u64,
    ) -> Result<std::result::Result<u64, u64>>;

    /// The epoch of `track` (0: never owned).
    fn track_epoch(&mut self, track: &str) -> Result<u64>;

    /// The schema deployed with the tracks (file name, text), if any.
    fn schema(&mut self) -> Result<Option<(String, String)>>;

    /// The tracks deployed now.
    fn deployed(&mut self) -> Result<Vec<DeployedTrack>>;

    /// The named source databases' schemas deployed, by name.
    fn source_schemas(&mut self) -> Result<Vec<SourceSchema>>;

    /// Makes `tracks` the deployed versions (others stay), renames steps
    /// of records per `moves` (track, from, to), makes `schema` the
    /// deployed schema and `databases` the deployed schemas of those
    /// named databases (others stay), and writes `record` to the deploy
    /// history, in one transaction. Returns the deploy's number when one
    /// was recorded.
    fn deploy(
        &mut self,
        tracks: &[DeployedTrack],
        moves: &[(String, String, String)],
        schema: Option<&(String, String)>,
        databases: &[SourceSchema],
        record: Option<&NewDeploy<'_>>,
    ) -> Result<Option<i64>>;

    /// The newest deploys (at most `limit`), newest first.
    fn deploys(&mut self, limit: usize) -> Result<Vec<DeployListing>>;

    /// What deploy `number` shipped (`None`: no such deploy).
    fn shipped(&mut self, number: i64) -> Result<Option<ShippedBundle>>;

    /// Appends an entry to the audit log.
    fn audit(&mut self, entry: &AuditEntry) -> Result<()>;

    /// The newest entries (at most `limit`) at or after `since`, oldest first.
    fn audit_log(&mut self, since: i64, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Deletes at most `limit` audit entries older than `before`; how many.
    fn prune_audit(&mut self, before: i64, limit: usize) -> Result<u64>;

    /// Records per step of `track` (`None`: ended).
    fn step_counts(&mut self, track: &str) -> Result<Vec<(Option<String>, i64)>>;

    /// The unfinished run of `track` if there is one (`resumed`; it may be
    /// a run of events, see `run_events`); else `None` if `pass` already
    /// ran this track; else a new run over all its records at `now`.
    fn open_run(&mut self, track: &str, now: i64, pass: Option<i64>) -> Result<Option<RunInfo>>;

    /// The unfinished run of `track` if there is one, as `open_run`; else a
    /// new run at `now` for the events the track listens for (`listeners`)
    /// and has not taken yet: the oldest, up to `runs::EVENT_BATCH_MAX` and
    /// up to the first that repeats a key (`runs::batch_len`, keys compared
    /// as the key field's type `key`), taken in the same transaction.
    /// `None` when there are none.
    fn open_event_run(
        &mut self,
        track: &str,
        listeners: &Listeners,
        key: Type,
        now: i64,
    ) -> Result<Option<RunInfo>>;

    /// The events a run decides, oldest first (none: a run over all
    /// records).
    fn run_events(&mut self, run: i64) -> Result<Vec<PendingEvent>>;

    /// The unfinished pass (`trackc run --once`) and its instant, or a new
    /// one at `now`: a pass runs every track once, even across restarts.
    fn open_pass(&mut self, now: i64) -> Result<(i64, i64)>;
    fn finish_pass(&mut self, id: i64) -> Result<()>;

    /// Marks a run finished with its counts and, in the same transaction,
    /// its events done that every track in `listeners` has now decided.
    fn finish_run(
        &mut self,
        run: &RunInfo,
        records: u64,
        changes: u64,
        listeners: &Listeners,
    ) -> Result<()>;

    /// Marks done up to `runs::EVENT_BATCH_MAX` waiting events whose name
    /// is not in `heard` (no deployed track listens for them); returns how
    /// many.
    fn retire_unheard_events(&mut self, heard: &[String], now: i64) -> Result<u64>;

    /// The database's plan for `query` (`EXPLAIN QUERY PLAN` on SQLite,
    /// `EXPLAIN` on PostgreSQL), one line per node.
    fn explain(&mut self, query: &Statement) -> Result<String>;

    /// The instant of the last finished run of `track`, if any.
    fn last_run(&mut self, track: &str) -> Result<Option<i64>>;

    /// How many rows `query` returns (`SELECT count(*) FROM (query)`).
    fn count_rows(&mut self, query: &Statement) -> Result<u64>;

    /// Runs a query and returns its rows as text (for `on change`).
    fn query_fingerprint(&mut self, query: &Statement) -> Result<String>;

    /// Per track, a value remembered between runs (the `on change` result).
    fn get_mark(&mut self, track: &str) -> Result<Option<String>>;
    fn set_mark(&mut self, track: &str, mark: &str) -> Result<()>;

    /// Raises `events` (name, key) at `now`, all in one transaction: all
    /// of them or none. Each gets its id before the first try, so a try
    /// again after a lost answer raises none twice.
    fn insert_events(&mut self, events: &[NewEvent], now: i64) -> Result<()>;

    /// Raises one event (see `insert_events`).
    fn insert_event(&mut self, name: &str, key: Option<&str>, now: i64) -> Result<()> {
        let event = NewEvent {
            name: name.to_string(),
            key: key.map(str::to_string),
        };
        self.insert_events(std::slice::from_ref(&event), now)
    }

    /// Outbox rows per (kind, state).
    fn outbox_counts(&mut self) -> Result<Vec<(String, String, i64)>>;

    /// Claims up to `limit` rows of `kinds` due at `now` (pending, or
    /// sending with an expired lease) for one attempt each, leased until
    /// `lease_until`; oldest due first.
    fn claim_outbox(
        &mut self,
        kinds: Kinds,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>>;

    /// Records the outcomes of attempts, in one transaction; an outcome
    /// whose lease was taken over (another attempt since) is ignored.
    fn settle_outbox(&mut self, settled: &[Settled], now: i64) -> Result<()>;

    /// Outbox rows in `state` (all with `None`), oldest first.
    fn list_outbox(&mut self, state: Option<&str>, limit: usize) -> Result<Vec<OutboxListing>>;

    /// Puts parked rows (`id`, or all with `None`) back in the queue, due
    /// at `now`; returns how many.
    fn retry_parked(&mut self, id: Option<&str>, now: i64) -> Result<u64>;

    /// Deletes at most `limit` history rows written before `before`; how many.
    fn prune_history(&mut self, before: i64, limit: usize) -> Result<u64>;

    /// Everything `trackc why` shows of record `key` of `track`.
    fn record_history(&mut self, track: &str, key: &str) -> Result<RecordHistory>;

    /// Blocks decided since `since` per node (`None`: one node without a
    /// group), from the decision history.
    fn blocks_by_node(&mut self, since: i64) -> Result<Vec<(Option<i64>, i64)>>;

    /// Records how many tries of a run's blocks failed.
    fn set_failed_blocks(&mut self, run: i64, failed: u32) -> Result<()>;

    /// The newest runs of `track` (at most `limit`), newest first.
    fn recent_runs(&mut self, track: &str, limit: usize) -> Result<Vec<insight::RunRow>>;

    /// The newest history rows of `track` at or after `since` (at most
    /// `limit`), newest first.
    fn history_since(
        &mut self,
        track: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<insight::BlockRow>>;

    /// Runs plain SQL (set-up scripts, tests).
    fn execute_batch(&mut self, sql: &str) -> Result<()>;

    /// Runs `parts` of plain SQL in one transaction: all of it or nothing,
    /// tried again whole after a transient fault. Each part is handed to
    /// the driver alone, so a long script costs time in proportion to its
    /// length (SQLite copies the rest of a text at each of its statements).
    fn execute_script(&mut self, parts: &[String]) -> Result<()>;

    /// One integer from a query without parameters (tests, summaries).
    fn query_i64(&mut self, sql: &str) -> Result<i64>;
}

/// Converts one driver value to the field's type, or says why it cannot.
pub(crate) fn mismatch(field_ty: Type, got: &str) -> Error {
    Error::Data(format!(
        "a {} field got a value of database type {got}",
        field_ty.name()
    ))
}

/// A statement both stores run, written with PostgreSQL's `$n`
/// placeholders, for SQLite, whose `?n` means the same.
pub(crate) fn sqlite_placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

/// An event to raise from outside (`trackc emit`, the API).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewEvent {
    pub name: String,
    pub key: Option<String>,
}

/// The most events raised in one transaction (`insert_events`): one
/// request of the API, one part of `trackc emit --keys-from`. Ten thousand
/// rows commit in well under a second on either store, and a request of
/// them is about half a megabyte of JSON.
pub const EMIT_BATCH_MAX: usize = 10_000;

/// $1 id, $2 name, $3 key, $4 instant: an event raised from outside. The
/// id is made once per emit (`unique_id`), so a try after a lost answer
/// finds the row and adds nothing.
pub(crate) const INSERT_EMITTED_EVENT: &str =
    "INSERT INTO trackc_events (id, name, key, created_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (id) DO NOTHING";

/// A new id for a row written once through retries (an event raised from
/// outside, a deploy, an audit entry): this process, a counter and random
/// bits, so that no two nodes or processes ever make the same.
pub(crate) fn unique_id(kind: &str, now: i64) -> String {
    use std::hash::BuildHasher;
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // RandomState is seeded from the OS's randomness.
    let salt = std::collections::hash_map::RandomState::new().hash_one(n);
    format!("{kind}/{now}/{}/{n}/{salt:016x}", std::process::id())
}

/// Who does something to the group: a token's user with its role, or
/// `local` for a command given the database itself (whoever can reach the
/// database can do anything).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    pub name: String,
    pub role: String,
}

impl Actor {
    pub fn local() -> Actor {
        Actor {
            name: "local".into(),
            role: "local".into(),
        }
    }
}

/// FNV-1a over `text`, as 16 hex digits.
pub fn content_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A row of `trackc_databases` as both stores read it.
pub(crate) fn source_schema_of(
    name: String,
    dialect: String,
    file: Option<String>,
    text: Option<String>,
) -> Result<SourceSchema> {
    let dialect = Dialect::from_name(&dialect).ok_or_else(|| {
        Error::Data(format!(
            "the deployed database `{name}` has an unknown dialect `{dialect}`"
        ))
    })?;
    Ok(SourceSchema {
        name,
        dialect,
        schema: file.zip(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            DbUrl::parse("sqlite:a.db").unwrap(),
            DbUrl::Sqlite("a.db".into())
        );
        assert_eq!(
            DbUrl::parse("sqlite:///tmp/a.db").unwrap(),
            DbUrl::Sqlite("/tmp/a.db".into())
        );
        assert!(matches!(
            DbUrl::parse("postgres://postgres@127.0.0.1/x").unwrap(),
            DbUrl::Postgres(_)
        ));
        let e = DbUrl::parse("oracle://x").unwrap_err().to_string();
        assert!(e.contains("not a database URL"), "{e}");
        assert_eq!(
            DbUrl::parse("mariadb://root@127.0.0.1/crm").unwrap(),
            DbUrl::MySql("mysql://root@127.0.0.1/crm".into())
        );
        assert_eq!(
            DbUrl::parse("mysql://u:secret@h/db").unwrap().redacted(),
            "mysql://u:***@h/db"
        );
        let e = open(&DbUrl::parse("mysql://root@127.0.0.1/x").unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("can be a track's source"), "{e}");
        assert!(DbUrl::parse("sqlite:").is_err());
    }
}
