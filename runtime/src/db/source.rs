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
        let url = urls.get(name).ok_or_else(|| {
            crate::error::Error::Config(format!(
                "track {} reads database `{name}`, which this node's node.toml does not list \
                 under [databases]",
                t.ir.name
            ))
        })?;
        let db = super::open_source(&super::DbUrl::parse(url)?)?;
        open.insert(name.clone(), db);
    }
    Ok(open)
}

/// Opens a source database to check that it answers: as `open_source`,
/// with MariaDB/MySQL waiting at most `timeout` for a connection or an
/// answer (PostgreSQL and SQLite stores bound their own waits).
pub fn open_checking(
    url: &super::DbUrl,
    timeout: std::time::Duration,
) -> Result<Box<dyn SourceDb>> {
    match url {
        super::DbUrl::MySql(url) => Ok(Box::new(super::mysql::MySqlSource::open_with_timeouts(
            url, timeout, timeout,
        )?)),
        other => super::open_source(other),
    }
}
