//! A database a track's source reads (`source from NAME`): only read, never
//! written, never migrated. trackc's own tables (states, outbox, events,
//! history) stay in the state database, and each block is applied there in
//! one transaction as for any track.

use super::{Dialect, Rows, Statement, Store};
use crate::error::Result;
use trackc_compiler::types::Type;

pub trait SourceDb: Send {
    fn dialect(&self) -> Dialect;

    /// One round trip, reconnecting first if the connection was lost.
    fn ping(&mut self) -> Result<()>;

    /// Streams `query` in blocks of at most `block_records` rows converted
    /// to `types`, all read in one consistent snapshot of the database
    /// (docs/runtime.md, "Sources in other databases").
    fn read(
        &mut self,
        query: &Statement,
        types: &[Type],
        block_records: usize,
        each: &mut dyn FnMut(Rows) -> Result<()>,
    ) -> Result<()>;

    /// How many rows `query` returns.
    fn count_rows(&mut self, query: &Statement) -> Result<u64>;

    /// A hash of the rows of a query (for `on change`).
    fn query_fingerprint(&mut self, query: &Statement) -> Result<String>;

    /// The database's plan for `query`, one line per node.
    fn explain(&mut self, query: &Statement) -> Result<String>;
}

/// A PostgreSQL or SQLite database read as a source, through the store
/// that reads a state database's own tracks (opened without migrating it;
/// SQLite read-only).
pub struct StoreSource(pub Box<dyn Store>);

impl SourceDb for StoreSource {
    fn dialect(&self) -> Dialect {
        self.0.dialect()
    }

    fn ping(&mut self) -> Result<()> {
        self.0.ping()
    }

    fn read(
        &mut self,
        query: &Statement,
        types: &[Type],
        block_records: usize,
        each: &mut dyn FnMut(Rows) -> Result<()>,
    ) -> Result<()> {
        self.0
            .gather(query, types, block_records, &mut |_, rows| each(rows))
    }

    fn count_rows(&mut self, query: &Statement) -> Result<u64> {
        self.0.count_rows(query)
    }

    fn query_fingerprint(&mut self, query: &Statement) -> Result<String> {
        self.0.query_fingerprint(query)
    }

    fn explain(&mut self, query: &Statement) -> Result<String> {
        self.0.explain(query)
    }
}

/// Streams a track's source query from where it lives: `source` (a named
/// database) or else the state database. Either way each block is handed
/// to `each` with the state database's writer, which reads and writes the
/// records' states.
pub fn gather_from(
    state: &mut dyn Store,
    source: Option<&mut Box<dyn SourceDb>>,
    query: &Statement,
    types: &[Type],
    block_records: usize,
    each: &mut dyn FnMut(&mut dyn super::BlockWriter, Rows) -> Result<()>,
) -> Result<()> {
    match source {
        None => state.gather(query, types, block_records, each),
        Some(db) => db.read(query, types, block_records, &mut |rows| {
            each(state.writer(), rows)
        }),
    }
}

/// The named databases `tracks` read, opened from `urls` (a node's
/// node.toml `[databases]`), for a plan asked of a node.
pub fn open_for(
    tracks: &[crate::bundle::LoadedTrack],
    urls: &std::collections::BTreeMap<String, String>,
) -> Result<super::SourceDbs> {
    let mut open = super::SourceDbs::new();
    for t in tracks {
        let Some(name) = &t.ir.source_database else {
            continue;
        };
        if open.contains_key(name) {
            continue;
        }
        let db = open_named(urls, name, None)?.ok_or_else(|| {
            crate::error::Error::Config(format!(
                "track {} reads database `{name}`, which this node's node.toml does not list \
                 under [databases]",
                t.ir.name
            ))
        })?;
        open.insert(name.clone(), db);
    }
    Ok(open)
}

/// Opens source database `name` of `urls` (`None`: not listed there).
/// With `timeout`, a MariaDB/MySQL connection waits at most that long for
/// a connection or an answer (a check that it answers; PostgreSQL and
/// SQLite stores bound their own waits); without, as `open_source`.
pub fn open_named(
    urls: &std::collections::BTreeMap<String, String>,
    name: &str,
    timeout: Option<std::time::Duration>,
) -> Result<Option<Box<dyn SourceDb>>> {
    let Some(url) = urls.get(name) else {
        return Ok(None);
    };
    let db: Box<dyn SourceDb> = match (super::DbUrl::parse(url)?, timeout) {
        (super::DbUrl::MySql(url), Some(timeout)) => Box::new(
            super::mysql::MySqlSource::open_with_timeouts(&url, timeout, timeout)?,
        ),
        (other, _) => super::open_source(&other)?,
    };
    Ok(Some(db))
}
