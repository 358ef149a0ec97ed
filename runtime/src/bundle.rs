//! Tracks as the runtime holds them: checked by the compiler, each step
//! compiled by the JIT, and the form they are deployed in.

use crate::db::{content_hash, Actor, DeployedTrack, Dialect, NewDeploy, Store};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trackc_compiler::diagnostics::render_human;
use trackc_compiler::ir;
use trackc_compiler::jit::{CompiledStep, Jit};
use trackc_compiler::types::Type;
use trackc_compiler::{compile, Input, Options, SqlDialect};

pub struct LoadedTrack {
    pub ir: ir::Track,
    pub deployed: DeployedTrack,
    pub types: Vec<Type>,
    /// One evaluator per step, in step order.
    pub steps: Vec<Arc<CompiledStep>>,
    /// Whether its decisions go to `trackc_history` (on unless configured off).
    pub history: bool,
    /// The node that decides its records, for the history (in a group).
    pub node: Option<i64>,
    /// What the history of this version needs to be read back
    /// (`history_legend`), written once beside its rows.
    pub legend: Arc<String>,
    /// Per step, the fields the conditions tried read when rule `r` fires
    /// (`[step][r]`) or none does (`[step][rules]`), for the history.
    pub reads: Vec<Vec<Vec<usize>>>,
}

/// The legend of a track's decision history: its fields (name and type),
/// and per step its name and per rule the fields its conditions tried read
/// up to it, its next step and its effects' kinds (`none`: the fields read
/// when no rule fires). A history row stores a decision as `[step, rule,
/// values…]` by position; this says what the positions are.
pub fn history_legend(track: &ir::Track, reads: &[Vec<Vec<usize>>]) -> String {
    use trackc_compiler::ir::{Effect, Transition};
    let fields: Vec<serde_json::Value> = track
        .fields
        .iter()
        .map(|f| serde_json::json!([f.name, f.ty.name()]))
        .collect();
    let steps: Vec<serde_json::Value> = track
        .steps
        .iter()
        .zip(reads)
        .map(|(s, reads)| {
            let rules: Vec<serde_json::Value> = s
                .rules
                .iter()
                .enumerate()
                .map(|(r, rule)| {
                    let next = match rule.transition {
                        Transition::Stay => "stay",
                        Transition::End => "end",
                        Transition::Goto(to) => &track.steps[to].name,
                    };
                    let effects: Vec<&str> = rule
                        .effects
                        .iter()
                        .map(|e| match e {
                            Effect::Sql(_) => "sql",
                            Effect::Email { .. } => "email",
                            Effect::Webhook { .. } => "webhook",
                            Effect::Emit { .. } => "emit",
                        })
                        .collect();
                    serde_json::json!({"reads": reads[r], "next": next, "effects": effects})
                })
                .collect();
            serde_json::json!({"name": s.name, "rules": rules, "none": reads[s.rules.len()]})
        })
        .collect();
    serde_json::json!({"fields": fields, "steps": steps}).to_string()
}

/// The `.dt` files of `paths` (a directory stands for its `*.dt` files,
/// and its `schema.sql` is the schema unless `schema` is given).
pub fn track_files(
    paths: &[PathBuf],
    schema: Option<&Path>,
) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let mut files = Vec::new();
    let mut found_schema = schema.map(Path::to_path_buf);
    for p in paths {
        if p.is_dir() {
            let mut here: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::Io(format!("{}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "dt"))
                .collect();
            here.sort();
            files.extend(here);
            let s = p.join("schema.sql");
            if found_schema.is_none() && s.is_file() {
                found_schema = Some(s);
            }
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err(Error::Config("no track files (*.dt) given".into()));
    }
    Ok((files, found_schema))
}

/// The most track files in one bundle. A bundle is compiled whole, in
/// memory, on every node of a group; a thousand files is far more than a
/// real group deploys and still compiles in seconds.
pub const BUNDLE_FILES_MAX: usize = 1_000;
/// The longest track file or schema: 1 MiB, a hundred times a long track
/// (the API's body limit, 8 MiB, bounds a whole deploy request anyway).
pub const SOURCE_BYTES_MAX: usize = 1 << 20;
/// The most tracks in one bundle: each is claimed, advertised in every
/// cycle's adverts and run by its owner.
pub const BUNDLE_TRACKS_MAX: usize = 10_000;

/// Refuses a bundle over the limits above, saying which and by how much.
pub(crate) fn check_limits(
    files: &[(String, String)],
    schema: Option<&(String, String)>,
) -> Result<()> {
    if files.len() > BUNDLE_FILES_MAX {
        return Err(Error::Deploy(format!(
            "the bundle has {} track files: at most {BUNDLE_FILES_MAX}; nothing was deployed",
            files.len()
        )));
    }
    for (name, text) in files.iter().chain(schema) {
        if text.len() > SOURCE_BYTES_MAX {
            return Err(Error::Deploy(format!(
                "{name} is {} bytes: a track file or schema may be at most {SOURCE_BYTES_MAX} \
                 bytes (1 MiB); nothing was deployed",
                text.len()
            )));
        }
    }
    Ok(())
}

pub use crate::db::SourceSchema;

fn sql_dialect(dialect: Dialect) -> SqlDialect {
    match dialect {
        Dialect::Sqlite => SqlDialect::Sqlite,
        Dialect::Postgres => SqlDialect::Postgres,
        Dialect::MySql => SqlDialect::MySql,
    }
}

/// Compiles track files; any error stops the load with the diagnostics.
pub fn load(
    jit: &Jit,
    files: &[(String, String)],
    schema: Option<(String, String)>,
    dialect: Dialect,
) -> Result<Vec<LoadedTrack>> {
    load_with(jit, files, schema, dialect, Vec::new())
}

/// `load`, with named source databases (`source from NAME`).
pub fn load_with(
    jit: &Jit,
    files: &[(String, String)],
    schema: Option<(String, String)>,
    dialect: Dialect,
    databases: Vec<SourceSchema>,
) -> Result<Vec<LoadedTrack>> {
    check_limits(files, schema.as_ref())?;
    let inputs = files
        .iter()
        .map(|(name, text)| Input {
            name: name.clone(),
            bytes: text.clone().into_bytes(),
        })
        .collect();
    let options = Options {
        dialect: sql_dialect(dialect),
        schema: schema.map(|(name, text)| Input {
            name,
            bytes: text.into_bytes(),
        }),
        databases: databases
            .into_iter()
            .map(|d| trackc_compiler::SourceDatabase {
                name: d.name,
                dialect: sql_dialect(d.dialect),
                schema: d.schema.map(|(name, text)| Input {
                    name,
                    bytes: text.into_bytes(),
                }),
            })
            .collect(),
    };
    let compilation = compile(inputs, options);
    if compilation.error_count() > 0 {
        let text: String = compilation
            .errors()
            .map(|d| render_human(d, &compilation.files, false))
            .collect();
        return Err(Error::Deploy(format!(
            "the tracks have {} error(s); nothing was deployed\n{text}",
            compilation.error_count()
        )));
    }
    if compilation.program.tracks.len() > BUNDLE_TRACKS_MAX {
        return Err(Error::Deploy(format!(
            "the bundle has {} tracks: at most {BUNDLE_TRACKS_MAX}; nothing was deployed",
            compilation.program.tracks.len()
        )));
    }
    let by_name: HashMap<&str, &(String, String)> = compilation
        .asts
        .iter()
        .zip(files)
        .flat_map(|(ast, f)| ast.tracks.iter().map(move |t| (t.name.name.as_str(), f)))
        .collect();
    let mut out = Vec::new();
    for track in compilation.program.tracks {
        let (file, source) = by_name[track.name.as_str()];
        let types: Vec<Type> = track.fields.iter().map(|f| f.ty).collect();
        let steps = track
            .steps
            .iter()
            .map(|s| {
                jit.compile(&types, s).map_err(|e| {
                    Error::Deploy(format!("track {}, step {}: {e}", track.name, s.name))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let reads: Vec<Vec<Vec<usize>>> = track
            .steps
            .iter()
            .map(|s| {
                (0..=s.rules.len())
                    .map(|r| s.fields_tried((r < s.rules.len()).then_some(r)))
                    .collect()
            })
            .collect();
        let legend = Arc::new(history_legend(&track, &reads));
        out.push(LoadedTrack {
            deployed: DeployedTrack {
                name: track.name.clone(),
                version: track.version,
                hash: content_hash(source),
                file: file.clone(),
                source: source.clone(),
                steps: track.steps.iter().map(|s| s.name.clone()).collect(),
            },
            types,
            steps,
            ir: track,
            history: true,
            node: None,
            legend,
            reads,
        });
    }
    Ok(out)
}

/// Reads files from disk and loads them.
pub fn load_paths(
    jit: &Jit,
    paths: &[PathBuf],
    schema: Option<&Path>,
    dialect: Dialect,
) -> Result<Vec<LoadedTrack>> {
    let (files, schema) = read_paths(paths, schema)?;
    load(jit, &files, schema, dialect)
}

/// The track files under `paths` and the schema (`schema`, or the
/// `schema.sql` beside them), each as (name, text).
pub fn read_paths(paths: &[PathBuf], schema: Option<&Path>) -> Result<Sources> {
    let (files, schema) = track_files(paths, schema)?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))
    };
    let files = files
        .iter()
        .map(|f| Ok((f.display().to_string(), read(f)?)))
        .collect::<Result<Vec<_>>>()?;
    let schema = match schema {
        Some(s) => Some((s.display().to_string(), read(&s)?)),
        None => None,
    };
    Ok((files, schema))
}

/// Track files and the schema, each as (name, text).
pub type Sources = (Vec<(String, String)>, Option<(String, String)>);

/// How a deploy was asked for: the files and schema it ships (kept in
/// the deploy history), the `--map` of records in removed steps, who asks,
/// and the deploy it ships again when it is a rollback.
pub struct DeployRequest<'a> {
    pub sources: &'a Sources,
    /// The named source databases' schemas the tracks were compiled
    /// against (kept with the deploy: nodes and later loads compile the
    /// same).
    pub databases: &'a [SourceSchema],
    pub map: &'a [String],
    pub by: &'a Actor,
    pub rollback_of: Option<i64>,
}

/// What a deploy did.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployed {
    /// The tracks that changed.
    pub changed: Vec<String>,
    /// Its number in the deploy history; `None` when nothing changed (the
    /// same tracks and schema were deployed already) and nothing was kept.
    pub number: Option<i64>,
}

impl Deployed {
    /// `deploy 3: changed a, b` (or `the schema` when no track changed),
    /// or `nothing changed`.
    pub fn summary(&self) -> String {
        match self.number {
            Some(n) if self.changed.is_empty() => format!("deploy {n}: changed the schema"),
            Some(n) => format!("deploy {n}: changed {}", self.changed.join(", ")),
            None => "nothing changed".to_string(),
        }
    }
}

/// Deploys `tracks`: a track whose steps changed keeps every record in a
/// step that still exists; records in a removed step move per `map`
/// (`track.step=new_step`), and without a mapping the deploy is refused.
/// The schema they were checked against, when there is one, is deployed
/// with them: the nodes of a group compile the tracks against it. A deploy
/// that changes a track or the schema is kept in the deploy history, in
/// the same transaction.
pub fn deploy(
    store: &mut dyn Store,
    tracks: &[LoadedTrack],
    request: &DeployRequest<'_>,
) -> Result<Deployed> {
    let mut mappings: HashMap<(String, String), String> = HashMap::new();
    for m in request.map {
        let parsed = m.split_once('=').and_then(|(from, to)| {
            let (track, step) = from.split_once('.')?;
            Some(((track.to_string(), step.to_string()), to.to_string()))
        });
        match parsed {
            Some((k, v)) => mappings.insert(k, v),
            None => {
                return Err(Error::Config(format!(
                    "`--map {m}`: write TRACK.OLD_STEP=NEW_STEP"
                )))
            }
        };
    }
    let current: HashMap<String, DeployedTrack> = store
        .deployed()?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let mut changed = Vec::new();
    let mut moves = Vec::new();
    let mut refusals = Vec::new();
    for t in tracks {
        let d = &t.deployed;
        if current.get(&d.name).is_some_and(|c| c.hash == d.hash) {
            continue;
        }
        changed.push(d.clone());
        for (step, count) in store.step_counts(&d.name)? {
            let Some(step) = step else { continue };
            if d.steps.contains(&step) || count == 0 {
                continue;
            }
            match mappings.get(&(d.name.clone(), step.clone())) {
                Some(to) if d.steps.contains(to) => moves.push((d.name.clone(), step, to.clone())),
                Some(to) => refusals.push(format!(
                    "track {}: --map {}.{step}={to} names no step of the new version (steps: {})",
                    d.name,
                    d.name,
                    d.steps.join(", ")
                )),
                None => refusals.push(format!(
                    "track {}: step `{step}` holds {count} record(s) and the new version removes it; \
                     keep the step, or move them with --map {}.{step}=STEP",
                    d.name, d.name
                )),
            }
        }
    }
    if !refusals.is_empty() {
        return Err(Error::Deploy(format!(
            "deploy refused, nothing changed:\n  {}",
            refusals.join("\n  ")
        )));
    }
    let (files, schema) = request.sources;
    let schema_changed = match schema {
        Some((_, text)) => store.schema()?.is_none_or(|(_, now)| now != *text),
        None => false,
    };
    let deployed_databases = store.source_schemas()?;
    let databases_changed = request
        .databases
        .iter()
        .any(|d| !deployed_databases.contains(d));
    let schema_changed = schema_changed || databases_changed;
    let now = crate::clock::now_micros();
    let record = (!changed.is_empty() || schema_changed).then(|| NewDeploy {
        request: crate::db::unique_id("deploy", now),
        files,
        schema: schema.as_ref(),
        map: request.map,
        tracks: tracks.iter().map(|t| t.ir.name.clone()).collect(),
        changed: changed.iter().map(|t| t.name.clone()).collect(),
        by: request.by,
        at: now,
        rollback_of: request.rollback_of,
    });
    let number = store.deploy(
        &changed,
        &moves,
        schema.as_ref(),
        request.databases,
        record.as_ref(),
    )?;
    Ok(Deployed {
        changed: changed.into_iter().map(|t| t.name).collect(),
        number,
    })
}

/// Ships deploy `number`'s files and schema again (`trackc rollback`),
/// with the same checks as any deploy: its tracks compile, and records in
/// steps it does not have move per `map` or the rollback is refused.
pub fn rollback(
    store: &mut dyn Store,
    jit: &Jit,
    number: i64,
    map: &[String],
    by: &Actor,
) -> Result<(Vec<LoadedTrack>, Deployed)> {
    let Some(shipped) = store.shipped(number)? else {
        let newest = store.deploys(1)?;
        return Err(Error::Deploy(match newest.first() {
            Some(d) => format!(
                "there is no deploy {number}: deploys are numbered 1 to {}",
                d.number
            ),
            None => format!("there is no deploy {number}: nothing was deployed here yet"),
        }));
    };
    let sources = (shipped.files, shipped.schema);
    // Named source databases as deployed now (a rollback ships tracks,
    // and the databases they read keep their newest schemas).
    let databases = store.source_schemas()?;
    let tracks = load_with(
        jit,
        &sources.0,
        sources.1.clone(),
        store.dialect(),
        databases,
    )
    .map_err(|e| Error::Deploy(format!("deploy {number} no longer compiles: {e}")))?;
    let request = DeployRequest {
        sources: &sources,
        databases: &[],
        map,
        by,
        rollback_of: Some(number),
    };
    let deployed = deploy(store, &tracks, &request)?;
    Ok((tracks, deployed))
}

/// Compiles deployed track `d` alone (its file, against the deployed
/// schema), for what reads one track: `why`, the console's track page.
pub fn load_deployed(store: &mut dyn Store, jit: &Jit, d: &DeployedTrack) -> Result<LoadedTrack> {
    let files = [(d.file.clone(), d.source.clone())];
    let databases = store.source_schemas()?;
    load_with(jit, &files, store.schema()?, store.dialect(), databases)?
        .into_iter()
        .find(|t| t.ir.name == d.name)
        .ok_or_else(|| {
            Error::Data(format!(
                "the deployed file {} no longer holds track {}",
                d.file, d.name
            ))
        })
}

/// The files and schema of what is deployed now, to compile (a group's
/// node, `trackc run` without files): each deployed track's file once.
pub fn deployed_sources(store: &mut dyn Store) -> Result<Sources> {
    let schema = store.schema()?;
    let mut files: Vec<(String, String)> = Vec::new();
    for d in store.deployed()? {
        if !files.iter().any(|(f, _)| *f == d.file) {
            files.push((d.file, d.source));
        }
    }
    Ok((files, schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: usize, bytes: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("t{i}.dt"), "x".repeat(bytes)))
            .collect()
    }

    #[test]
    fn a_bundle_over_its_limits_is_refused_saying_which() {
        let e = check_limits(&files(BUNDLE_FILES_MAX + 1, 10), None).unwrap_err();
        assert!(
            e.to_string().contains("1001 track files: at most 1000"),
            "{e}"
        );
        let e = check_limits(&files(2, SOURCE_BYTES_MAX + 1), None).unwrap_err();
        assert!(e.to_string().contains("t0.dt is 1048577 bytes"), "{e}");
        let schema = ("schema.sql".to_string(), "y".repeat(SOURCE_BYTES_MAX + 1));
        let e = check_limits(&files(1, 10), Some(&schema)).unwrap_err();
        assert!(e.to_string().contains("schema.sql is"), "{e}");
        assert!(check_limits(&files(BUNDLE_FILES_MAX, SOURCE_BYTES_MAX), None).is_ok());
    }
}
