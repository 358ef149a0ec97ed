//! The database work of a node, off the protocol thread: the owner thread
//! (claims, runs of owned tracks cut into blocks, finishing runs, loading
//! bundles) and the block workers (deciding and committing blocks under
//! their epoch). Each thread has its own connection and its own compiled
//! bundle; they answer the protocol through its input channel.

use super::config::HistorySettings;
use super::metrics::NodeMetrics;
use super::{Input, Shared};
use crate::bundle::{self, LoadedTrack};
use crate::clock::now_micros;
use crate::db::{content_hash, Rows, RunInfo, Store};
use crate::engine::{due, Due};
use crate::error::{Error, Result};
use crate::group::protocol::{Block, Command, NodeId, Outcome, RunMeasure};
use crate::run::{execute_block, listeners, listens, RunSource, BLOCK_RECORDS};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trackc_compiler::ir::Trigger;
use trackc_compiler::jit::Jit;

/// How often an owner marks done the events no track listens for: the
/// query walks the waiting events, and an event nobody hears can wait a
/// few seconds to be marked.
const RETIRE_EVERY: Duration = Duration::from_secs(10);
/// Blocks queued or in flight on this node before its gathering waits.
const OUTSTANDING_BLOCKS_MAX: usize = 64;
/// How often a node checks that it reaches the source databases of its
/// bundle (a ping each): a node that lost one stops owning its tracks
/// within this and a cycle or two.
const SOURCE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a ping or a connection of the source watcher may take before
/// the database counts as unreachable (its own connections: a hung
/// server holds the watcher, never the runs).
const SOURCE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// An owner tries to open a source database it could not open at most
/// this often: a server that does not answer costs a connect timeout.
const SOURCE_REOPEN_EVERY: Duration = Duration::from_secs(30);

/// The source watcher: every `SOURCE_CHECK_EVERY`, opens or pings each
/// source database the bundle reads (connections of its own, with
/// `SOURCE_CHECK_TIMEOUT`), and tells the protocol which tracks this node
/// cannot read, so that it does not own them while a peer can
/// (docs/group.md, "Source databases in a group").
pub fn watch_sources(
    databases: std::collections::BTreeMap<String, String>,
    inputs: Sender<Input>,
    shared: Arc<Shared>,
) {
    let mut open = crate::db::SourceDbs::new();
    let mut told: std::collections::BTreeMap<String, String> = Default::default();
    let mut told_tracks: Option<Vec<String>> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let needed = shared.source_tracks.lock().expect("source tracks").clone();
        open.retain(|name, _| needed.contains_key(name));
        let mut bad = std::collections::BTreeMap::new();
        for name in needed.keys() {
            let result = match open.get_mut(name) {
                Some(db) => db.ping(),
                None => open_named(&databases, name, Some(SOURCE_CHECK_TIMEOUT)).map(|db| {
                    open.insert(name.clone(), db);
                }),
            };
            if let Err(e) = result {
                // Opened again at the next check.
                open.remove(name);
                bad.insert(name.clone(), e.to_string());
            }
        }
        if bad != told {
            for (name, why) in &bad {
                eprintln!(
                    "cannot read source database `{name}`: {why}; its tracks are left to \
                     nodes that can"
                );
            }
            for name in told.keys().filter(|n| !bad.contains_key(*n)) {
                eprintln!("source database `{name}` is readable again");
            }
            told = bad;
        }
        let tracks: Vec<String> = told
            .keys()
            .filter_map(|name| needed.get(name))
            .flatten()
            .cloned()
            .collect();
        if told_tracks.as_ref() != Some(&tracks) {
            let _ = inputs.send(Input::Unreadable(tracks.clone()));
            told_tracks = Some(tracks);
        }
        std::thread::sleep(SOURCE_CHECK_EVERY);
    }
}

/// Opens source database `name` of node.toml's `[databases]` (`timeout`:
/// the watcher's short waits, see `db::source::open_named`).
fn open_named(
    databases: &std::collections::BTreeMap<String, String>,
    name: &str,
    timeout: Option<Duration>,
) -> Result<Box<dyn crate::db::SourceDb>> {
    crate::db::source::open_named(databases, name, timeout)?
        .ok_or_else(|| Error::Config(format!("node.toml has no `{name}` under [databases]")))
}

/// The deployed tracks, compiled, and a hash that tells bundles apart.
pub struct Bundle {
    pub hash: u64,
    pub tracks: Vec<LoadedTrack>,
}

impl Bundle {
    /// Compiles what the database has deployed (no deployment: no tracks).
    pub fn load(store: &mut dyn Store, jit: &Jit) -> Result<Bundle> {
        let (files, schema) = bundle::deployed_sources(store)?;
        let mut identity = schema.as_ref().map(|s| s.1.clone()).unwrap_or_default();
        for (name, text) in &files {
            identity.push_str(name);
            identity.push_str(&content_hash(text));
        }
        if files.is_empty() {
            return Ok(Bundle {
                hash: 0,
                tracks: Vec::new(),
            });
        }
        let databases = store.source_schemas()?;
        for d in &databases {
            identity.push_str(&d.name);
            identity.push_str(d.dialect.name());
            if let Some((_, text)) = &d.schema {
                identity.push_str(&content_hash(text));
            }
        }
        let tracks = bundle::load_with(jit, &files, schema, store.dialect(), databases)?;
        let hash = u64::from_str_radix(&content_hash(&identity), 16).expect("16 hex digits");
        Ok(Bundle { hash, tracks })
    }

    pub fn names(&self) -> Vec<String> {
        self.tracks.iter().map(|t| t.ir.name.clone()).collect()
    }

    fn track(&self, name: &str) -> Option<&LoadedTrack> {
        self.tracks.iter().find(|t| t.ir.name == name)
    }
}

/// What a block carries between nodes: its run and its records.
#[derive(Serialize, Deserialize)]
pub struct BlockPayload {
    pub run: RunInfo,
    pub rows: Rows,
}

/// A run opened in the database, finished when its blocks are all done.
struct OpenRun {
    run: RunInfo,
    /// When this node opened it (or took it over), for its duration.
    opened: std::time::Instant,
    /// The `on change` result to remember after the run.
    mark: Option<String>,
    records: u64,
}

pub struct OwnerThread {
    pub id: NodeId,
    pub store: Box<dyn Store>,
    /// node.toml's `[databases]`: name → URL.
    pub databases: std::collections::BTreeMap<String, String>,
    /// The source databases open now, by name (opened when a run of an
    /// owned track needs one).
    sources: crate::db::SourceDbs,
    /// When opening each source database was last tried.
    source_tried: HashMap<String, std::time::Instant>,
    pub jit: Jit,
    pub bundle: Bundle,
    pub inputs: Sender<Input>,
    pub shared: Arc<Shared>,
    pub started: i64,
    runs: HashMap<String, Vec<OpenRun>>,
    /// Decisions older than this many days are pruned after each run.
    pub history_days: i64,
    /// When events no track listens for were last marked done.
    retired_at: Option<i64>,
}

impl OwnerThread {
    pub fn new(
        id: NodeId,
        store: Box<dyn Store>,
        jit: Jit,
        bundle: Bundle,
        inputs: Sender<Input>,
        shared: Arc<Shared>,
    ) -> OwnerThread {
        OwnerThread {
            id,
            store,
            databases: Default::default(),
            sources: Default::default(),
            source_tried: HashMap::new(),
            jit,
            bundle,
            inputs,
            shared,
            started: now_micros(),
            runs: HashMap::new(),
            retired_at: None,
            history_days: crate::db::HISTORY_DAYS_DEFAULT,
        }
    }

    /// Does the protocol's database commands (all but `Execute`, which the
    /// block workers do, and `Leave`) one at a time.
    pub fn serve(mut self, jobs: Receiver<Command>) {
        while let Ok(job) = jobs.recv() {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if let Err(e) = self.job(job) {
                eprintln!("node {}: {e}", self.id);
            }
        }
    }

    /// Tells the source watcher which databases the bundle reads, and for
    /// which tracks.
    pub fn share_source_tracks(&self) {
        let mut by_database: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for t in &self.bundle.tracks {
            if let Some(name) = &t.ir.source_database {
                by_database
                    .entry(name.clone())
                    .or_default()
                    .push(t.ir.name.clone());
            }
        }
        *self.shared.source_tracks.lock().expect("source tracks") = by_database;
    }

    /// Opens the source database track `t` reads if it is not open (at
    /// most every `SOURCE_REOPEN_EVERY`, so that an unreachable server
    /// does not hold the owner's other work at each cycle).
    fn open_source_of(&mut self, t: usize) -> Result<()> {
        let Some(name) = self.bundle.tracks[t].ir.source_database.clone() else {
            return Ok(());
        };
        if self.sources.contains_key(&name) {
            return Ok(());
        }
        if self
            .source_tried
            .get(&name)
            .is_some_and(|at| at.elapsed() < SOURCE_REOPEN_EVERY)
        {
            return Err(Error::Config(format!(
                "source database `{name}` could not be opened a moment ago"
            )));
        }
        self.source_tried
            .insert(name.clone(), std::time::Instant::now());
        let db = open_named(&self.databases, &name, None)?;
        self.sources.insert(name, db);
        Ok(())
    }

    fn send(&self, input: Input) {
        let _ = self.inputs.send(input);
    }

    fn job(&mut self, job: Command) -> Result<()> {
        match job {
            Command::RecordClaim { track, known_epoch } => {
                let result = self.store.claim_track(&track, self.id, known_epoch);
                // A failed claim is lost: the database keeps its epoch.
                let result = result.unwrap_or(Err(known_epoch));
                if let Ok(epoch) = result {
                    // Ownership changes are what an operator looks for
                    // after a failure: kept with the people's actions.
                    let by = crate::db::Actor {
                        name: format!("node {}", self.id),
                        role: "node".into(),
                    };
                    let what = if epoch > 1 { "took over" } else { "claimed" };
                    let entry = crate::db::AuditEntry::new(
                        now_micros(),
                        &by,
                        crate::db::AuditAction::Claim,
                        &format!("track {track}"),
                        &format!("ok: {what} at epoch {epoch}"),
                    );
                    crate::db::audit::write(self.store.as_mut(), &entry);
                }
                self.send(Input::Claim { track, result });
            }
            Command::Run { track, epoch } => {
                let result = self.run(&track, epoch);
                let last = Input::Gathered {
                    track: track.clone(),
                    epoch,
                    payloads: Vec::new(),
                    last: true,
                };
                match result {
                    Ok(true) => self.send(last),
                    Ok(false) => {}
                    Err(e) => {
                        self.send(last);
                        return Err(Error::Data(format!("track {track}: {e}")));
                    }
                }
            }
            Command::FinishRun {
                track,
                epoch,
                failed_blocks,
            } => {
                let runs = self.runs.remove(&track).unwrap_or_default();
                if self.store.track_epoch(&track)? != epoch {
                    self.send(Input::Lost { track, epoch });
                    return Ok(());
                }
                // What the run cost, for rebalancing (none when the track
                // was not due).
                let measure = (!runs.is_empty()).then(|| RunMeasure {
                    records: runs.iter().map(|r| r.records).sum(),
                    millis: (runs.iter())
                        .map(|r| r.opened.elapsed().as_millis() as u64)
                        .max()
                        .unwrap_or(0),
                });
                for r in runs {
                    if failed_blocks > 0 {
                        self.store.set_failed_blocks(r.run.id, failed_blocks)?;
                    }
                    self.finish(&track, r)?;
                }
                self.send(Input::RunFinished {
                    track,
                    epoch,
                    measure,
                });
            }
            Command::Release { track } => {
                self.runs.remove(&track);
            }
            Command::Execute(_) | Command::Leave => {}
            Command::CheckBundle => {
                let bundle = Bundle::load(self.store.as_mut(), &self.jit)?;
                if bundle.hash != self.bundle.hash {
                    self.shared.bundle_hash.store(bundle.hash, Ordering::SeqCst);
                    self.send(Input::Bundle {
                        hash: bundle.hash,
                        tracks: bundle.names(),
                    });
                    self.bundle = bundle;
                    self.runs.clear();
                    self.share_source_tracks();
                }
            }
        }
        Ok(())
    }

    /// Opens the run `track` is due for (its schedule, else a batch of its
    /// events) and hands its records to the protocol in blocks. False when
    /// the epoch moved on (`Lost` sent).
    fn run(&mut self, track: &str, epoch: u64) -> Result<bool> {
        if self.store.track_epoch(track)? != epoch {
            self.send(Input::Lost {
                track: track.to_string(),
                epoch,
            });
            return Ok(false);
        }
        let Some(t) = self.bundle.tracks.iter().position(|l| l.ir.name == track) else {
            return Ok(true);
        };
        let now = now_micros();
        self.retire_unheard_events(now)?;
        let ir = &self.bundle.tracks[t].ir;
        let scheduled = ir
            .triggers
            .iter()
            .any(|tr| !matches!(tr, Trigger::Event(_)));
        let mut opened = None;
        // A source that cannot be opened fails this run (the watcher has
        // the track handed to a node that reads it).
        self.open_source_of(t)?;
        if scheduled {
            if let Due::Yes { mark } = due(
                self.store.as_mut(),
                &mut self.sources,
                &self.bundle.tracks,
                t,
                now,
                self.started,
            )? {
                if let Some(run) = self.store.open_run(track, now, None)? {
                    // An event's run resumed here is not this period's
                    // run: the mark waits until one is.
                    let mark = if run.event.is_none() { mark } else { None };
                    opened = Some((run, mark));
                }
            }
        }
        let ir = &self.bundle.tracks[t].ir;
        if opened.is_none() && !listens(ir).is_empty() {
            let key = ir.fields[ir.key].ty;
            // One batch per run; the next waits for the track's next run
            // (a track has one unfinished run at a time).
            let listeners = listeners(&self.bundle.tracks);
            opened = self
                .store
                .open_event_run(track, &listeners, key, now)?
                .map(|run| (run, None));
        }
        if let Some((run, mark)) = opened {
            let records = self.gather(t, &run, epoch)?;
            self.runs
                .entry(track.to_string())
                .or_default()
                .push(OpenRun {
                    run,
                    opened: std::time::Instant::now(),
                    mark,
                    records,
                });
        }
        Ok(true)
    }

    /// Marks done the waiting events no track of this node's bundle
    /// listens for, at most every `RETIRE_EVERY`.
    fn retire_unheard_events(&mut self, now: i64) -> Result<()> {
        if self
            .retired_at
            .is_some_and(|at| now.saturating_sub(at) < RETIRE_EVERY.as_micros() as i64)
        {
            return Ok(());
        }
        self.retired_at = Some(now);
        let heard = listeners(&self.bundle.tracks).names();
        self.store.retire_unheard_events(&heard, now)?;
        Ok(())
    }

    /// Streams a run's records to the protocol, a block at a time, waiting
    /// while this node has many blocks outstanding.
    fn gather(&mut self, t: usize, run: &RunInfo, epoch: u64) -> Result<u64> {
        let track = &self.bundle.tracks[t];
        // Opened by `run` (`open_source_of`) before the run was.
        let mut source_db = crate::db::source_of(&mut self.sources, track)?;
        let source = RunSource::of_in(track, run, self.store.as_mut(), &source_db)?;
        let Some(query) = &source.statement else {
            self.note_unknown_keys(&track.ir.name, source.unknown(0));
            return Ok(0);
        };
        let mut records = 0u64;
        let mut found = 0u64;
        let (inputs, shared) = (&self.inputs, &self.shared);
        crate::db::source::gather_from(
            self.store.as_mut(),
            source_db.take(),
            query,
            &track.types,
            BLOCK_RECORDS,
            &mut |_, rows| {
                while shared.outstanding.load(Ordering::SeqCst) >= OUTSTANDING_BLOCKS_MAX {
                    if shared.stop.load(Ordering::SeqCst) {
                        return Err(Error::Stopped);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                records += rows.len() as u64;
                found += source.found(&rows, track.ir.key);
                shared.outstanding.fetch_add(1, Ordering::SeqCst);
                let payload = postcard::to_allocvec(&BlockPayload {
                    run: run.clone(),
                    rows,
                })
                .map_err(|e| Error::Data(format!("encoding a block: {e}")))?;
                let _ = inputs.send(Input::Gathered {
                    track: track.ir.name.clone(),
                    epoch,
                    payloads: vec![payload],
                    last: false,
                });
                Ok(())
            },
        )?;
        self.note_unknown_keys(&track.ir.name, source.unknown(found));
        Ok(records)
    }

    /// Counts (and logs) events whose key was no record of the track.
    fn note_unknown_keys(&self, track: &str, unknown: u64) {
        if unknown > 0 {
            self.shared
                .unknown_keys
                .fetch_add(unknown, Ordering::Relaxed);
            eprintln!(
                "node {}: track {track}: {unknown} event(s) named a key that is no record of \
                 its source; they are done with nothing decided",
                self.id
            );
        }
    }

    /// Closes a run whose blocks are all done, and with it its events that
    /// every track listening for them has decided.
    fn finish(&mut self, track: &str, r: OpenRun) -> Result<()> {
        let listeners = listeners(&self.bundle.tracks);
        self.store.finish_run(&r.run, r.records, 0, &listeners)?;
        let seconds = r.opened.elapsed().as_secs_f64();
        self.shared.metrics.observe_run(track, seconds);
        crate::run::prune_history(self.store.as_mut(), r.run.now, self.history_days)?;
        if let Some(mark) = &r.mark {
            self.store.set_mark(track, mark)?;
        }
        Ok(())
    }
}

/// A block worker: decides and commits the blocks handed to this node.
pub fn work_blocks(
    mut store: Box<dyn Store>,
    jobs: Arc<Mutex<Receiver<Block>>>,
    inputs: Sender<Input>,
    shared: Arc<Shared>,
    node: NodeId,
    history: HistorySettings,
) {
    let jit = match Jit::new() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("a block worker cannot start the JIT: {e}");
            return;
        }
    };
    let mut bundle: Option<Bundle> = None;
    loop {
        let block = match jobs.lock().expect("worker queue").recv() {
            Ok(b) => b,
            Err(_) => return,
        };
        let wanted = shared.bundle_hash.load(Ordering::SeqCst);
        if bundle.as_ref().is_none_or(|b| b.hash != wanted) {
            bundle = Bundle::load(store.as_mut(), &jit)
                .map_err(|e| eprintln!("a block worker cannot load the bundle: {e}"))
                .ok();
            // The decisions this worker makes are this node's (history).
            for t in bundle.iter_mut().flat_map(|b| b.tracks.iter_mut()) {
                t.node = Some(node as i64);
                t.history = history.enabled && !history.off.contains(&t.ir.name);
            }
        }
        let outcome = match execute(bundle.as_ref(), store.as_mut(), &block, &shared.metrics) {
            Ok(()) => Outcome::Done,
            Err(Error::Fenced { .. }) => Outcome::Fenced,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let _ = inputs.send(Input::Executed {
            id: block.id,
            outcome,
        });
    }
}

fn execute(
    bundle: Option<&Bundle>,
    store: &mut dyn Store,
    block: &Block,
    metrics: &NodeMetrics,
) -> Result<()> {
    let payload: BlockPayload = postcard::from_bytes(&block.payload)
        .map_err(|e| Error::Data(format!("block {}: cannot be read: {e}", block.id)))?;
    let track = bundle.and_then(|b| b.track(&block.track)).ok_or_else(|| {
        Error::Data(format!(
            "block {}: track {} is not in this node's bundle",
            block.id, block.track
        ))
    })?;
    let stats = execute_block(
        track,
        &payload.run,
        payload.rows,
        store.writer(),
        block.epoch,
    )?;
    for e in stats.errors.iter().take(3) {
        eprintln!("block {}: {e}", block.id);
    }
    let ir = &track.ir;
    let steps: Vec<(String, String, u64)> = stats
        .fired
        .iter()
        .map(|(&(step, rule), &n)| {
            let rule = rule.map_or_else(|| "none".to_string(), |r| (r + 1).to_string());
            (ir.steps[step].name.clone(), rule, n)
        })
        .collect();
    metrics.add_record_steps(&ir.name, &steps);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use trackc_compiler::value::Value;

    proptest! {
        /// Fuzzing block payloads on stable (issue 18): any bytes, and a
        /// real payload with bytes changed or cut, decode or are refused;
        /// nothing panics and nothing allocates without bound (postcard
        /// preallocates at most what the input can hold).
        #[test]
        fn any_block_payload_decodes_or_is_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let _ = postcard::from_bytes::<BlockPayload>(&bytes);
            let real = postcard::to_allocvec(&BlockPayload {
                run: RunInfo {
                    id: 3,
                    track: "t".into(),
                    now: 5,
                    last_run: 1,
                    resumed: false,
                    event: None,
                },
                rows: vec![vec![Value::Int(1), Value::Text("a@b".into()), Value::Null]],
            })
            .unwrap();
            let mut damaged = real.clone();
            for (at, byte) in flips {
                let i = at % damaged.len();
                damaged[i] ^= byte;
            }
            let _ = postcard::from_bytes::<BlockPayload>(&damaged);
            let _ = postcard::from_bytes::<BlockPayload>(&real[..cut % (real.len() + 1)]);
        }
    }
}
