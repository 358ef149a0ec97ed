//! The deploy history (`trackc_deploys`) as both stores keep it: every
//! deploy that changed something, with the files and schema it shipped,
//! the `--map` it used, who and when, so that `trackc versions` can list
//! them and `trackc rollback N` can ship deploy N's files again. `$n`
//! placeholders as in PostgreSQL (SQLite's are rewritten).

use super::Actor;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The most deploys `trackc versions` lists (the newest).
pub const DEPLOYS_LIST_MAX: usize = 1_000;

/// $1 request … $12 rollback_of: one deploy. `request` is made once per
/// deploy, so a transaction tried again after a lost COMMIT answer finds
/// its row and adds none.
pub const INSERT: &str = "INSERT INTO trackc_deploys (request, hash, names, files, schema, map,
    tracks, changed, deployed_by, role, deployed_at, rollback_of)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (request) DO NOTHING";

/// $1 request: the number of the deploy it wrote.
pub const NUMBER: &str = "SELECT number FROM trackc_deploys WHERE request = $1";

/// $1 limit: the newest deploys, newest first.
pub const LIST: &str = "SELECT number, hash, deployed_at, deployed_by, role, names, tracks,
    changed, map, rollback_of FROM trackc_deploys ORDER BY number DESC LIMIT $1";

/// $1 number: what a deploy shipped.
pub const BUNDLE: &str = "SELECT files, schema, map FROM trackc_deploys WHERE number = $1";

/// A deploy about to be written with the tracks it changes.
pub struct NewDeploy<'a> {
    /// Unique per deploy (`super::unique_id`).
    pub request: String,
    pub files: &'a [(String, String)],
    pub schema: Option<&'a (String, String)>,
    pub map: &'a [String],
    /// Every track of the bundle, and those this deploy changed.
    pub tracks: Vec<String>,
    pub changed: Vec<String>,
    pub by: &'a Actor,
    pub at: i64,
    /// The deploy whose files this one shipped again (`trackc rollback`).
    pub rollback_of: Option<i64>,
}

/// A deploy's row, its JSON columns encoded, in `INSERT`'s order after
/// `request`.
pub struct DeployRow {
    pub hash: String,
    pub names: String,
    pub files: String,
    pub schema: Option<String>,
    pub map: String,
    pub tracks: String,
    pub changed: String,
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("names and texts encode as JSON")
}

impl NewDeploy<'_> {
    pub fn row(&self) -> DeployRow {
        let files = json(&self.files);
        let schema = self.schema.map(json);
        let mut identity = files.clone();
        identity.push_str(schema.as_deref().unwrap_or(""));
        DeployRow {
            hash: super::content_hash(&identity),
            names: json(&self.files.iter().map(|f| &f.0).collect::<Vec<_>>()),
            files,
            schema,
            map: json(&self.map),
            tracks: json(&self.tracks),
            changed: json(&self.changed),
        }
    }
}

/// One deploy as `trackc versions` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployListing {
    pub number: i64,
    /// A hash of the files and schema shipped.
    pub hash: String,
    /// Microseconds since the epoch.
    pub at: i64,
    pub by: String,
    pub role: String,
    pub files: Vec<String>,
    pub tracks: Vec<String>,
    pub changed: Vec<String>,
    pub map: Vec<String>,
    pub rollback_of: Option<i64>,
}

/// A listing row as the stores read it: the JSON columns still text.
pub type ListingRow = (
    i64,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<i64>,
);

fn decode<T: serde::de::DeserializeOwned>(number: i64, column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        Error::Data(format!(
            "deploy {number}: its `{column}` in trackc_deploys is not what trackc wrote: {e}"
        ))
    })
}

pub fn listing(row: ListingRow) -> Result<DeployListing> {
    let (number, hash, at, by, role, files, tracks, changed, map, rollback_of) = row;
    Ok(DeployListing {
        number,
        hash,
        at,
        by,
        role,
        files: decode(number, "names", &files)?,
        tracks: decode(number, "tracks", &tracks)?,
        changed: decode(number, "changed", &changed)?,
        map: decode(number, "map", &map)?,
        rollback_of,
    })
}

/// What a deploy shipped: its files and schema (each as name and text)
/// and its `--map`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShippedBundle {
    pub number: i64,
    pub files: Vec<(String, String)>,
    pub schema: Option<(String, String)>,
    pub map: Vec<String>,
}

pub fn shipped(
    number: i64,
    (files, schema, map): (String, Option<String>, String),
) -> Result<ShippedBundle> {
    Ok(ShippedBundle {
        number,
        files: decode(number, "files", &files)?,
        schema: schema.map(|s| decode(number, "schema", &s)).transpose()?,
        map: decode(number, "map", &map)?,
    })
}
