//! Track ownership in the group as both stores record it: a claim is a
//! compare-and-set of the track's epoch; a block commit reads the epoch
//! under a share lock (PostgreSQL), so a claim waits for the commits of
//! the epoch it ends and every later commit of that epoch is refused.
//! `$n` as in PostgreSQL; SQLite's `?n` means the same.

use crate::error::{Error, Result};

/// A block cut under `epoch` may commit only while the track is at it.
pub fn check_fence(track: &str, epoch: u64, current: u64) -> Result<()> {
    if current == epoch {
        return Ok(());
    }
    Err(Error::Fenced {
        track: track.to_string(),
        epoch,
        current,
    })
}

/// $1 track, $2 node, $3 the epoch the claimer knows: the new epoch if it
/// was still $3 (or the track had no owner), no row otherwise.
pub const CLAIM: &str = "INSERT INTO trackc_owners (track, node, epoch) VALUES ($1, $2, 1)
    ON CONFLICT (track) DO UPDATE SET node = excluded.node, epoch = trackc_owners.epoch + 1
    WHERE trackc_owners.epoch = $3
    RETURNING epoch";

/// $1 track: its epoch (no row: never owned, epoch 0).
pub const EPOCH: &str = "SELECT epoch FROM trackc_owners WHERE track = $1";

/// `EPOCH` inside a block's transaction on PostgreSQL: the share lock makes
/// a claim of the track wait for the block's commit.
pub const EPOCH_LOCKED: &str = "SELECT epoch FROM trackc_owners WHERE track = $1 FOR SHARE";

/// The deployed schema: one row, id 1.
pub const SCHEMA: &str = "SELECT file, text FROM trackc_schema WHERE id = 1";

/// $1 file, $2 text: the deployed schema.
pub const SET_SCHEMA: &str = "INSERT INTO trackc_schema (id, file, text) VALUES (1, $1, $2)
    ON CONFLICT (id) DO UPDATE SET file = excluded.file, text = excluded.text";

/// The named source databases' schemas deployed (`source from NAME`).
pub const DATABASES: &str = "SELECT name, dialect, file, text FROM trackc_databases ORDER BY name";

/// $1 name, $2 dialect, $3 file, $4 text: a deploy ships a named source
/// database's schema (others stay, as tracks do).
pub const SET_DATABASE: &str = "INSERT INTO trackc_databases (name, dialect, file, text)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (name) DO UPDATE SET dialect = excluded.dialect, file = excluded.file,
        text = excluded.text";
