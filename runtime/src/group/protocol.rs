//! The peer-group protocol as a value without I/O: messages from peers,
//! cycle ticks and the results of commands go in; messages and commands
//! come out (`Group::take`). No sockets, no clock: a cycle is a call to
//! `tick`, so the tokio transport and the simulator drive the very same
//! code, and a simulated failure replays exactly.
//!
//! What it decides:
//! - membership: a peer silent for `missed_cycles` ticks is unavailable;
//!   an advertisement brings it back;
//! - the master: the lowest id among available, ready, active nodes;
//! - ownership of tracks: a claim counts down over `claim_counter`
//!   advertisements, competing claims go to the node owning fewest tracks,
//!   then the lowest id; the win is recorded in the database by
//!   compare-and-set of the epoch (`Command::RecordClaim`), and the
//!   database, not this value, fences commits: a block commits only under
//!   the epoch it was cut for;
//! - work: the owner's blocks go to nodes advertising free capacity
//!   (itself included), each tracked until acknowledged, sent again when
//!   unanswered, and handed to another node when its worker goes silent;
//! - load: each owner measures what its tracks cost (records per run) and
//!   advertises it; claims go to the node with the least cost, and a node
//!   over the average by more than `rebalance_threshold` hands a track to
//!   the least-loaded node at the end of a run (`balance::plan_moves`),
//!   at most one move per node per `rebalance_every` cycles, a moved track
//!   staying put for `rebalance_cooldown` cycles.

use super::balance::{plan_moves, plan_moves_without_hysteresis, Holding, PlannedMove};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub type NodeId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes tracks and blocks.
    Active,
    /// Takes tracks and blocks only while an active node is unavailable.
    Standby,
}

/// The protocol's parameters (from `node.toml`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub id: NodeId,
    pub role: Role,
    /// Silent cycles after which a peer is unavailable.
    pub missed_cycles: u32,
    /// Advertisements a claim is carried on before it is recorded.
    pub claim_counter: u32,
    /// Blocks this node works on at once.
    pub capacity: u32,
    /// Cycles an unacknowledged block waits before it is sent again.
    pub resend_cycles: u32,
    /// Cycles an owned run may make no progress (no block gathered or
    /// finished) before the owner gives the track up (`stuck_after`). A
    /// block unanswered for half of it goes to another worker.
    pub stuck_cycles: u32,
    /// Told apart blocks of this node's earlier lives (boot time, restart
    /// count): block ids stay unique across restarts.
    pub incarnation: u64,
    /// How far over the average cost per node a node may be before it
    /// hands a track over, in percent; 0 turns rebalancing off (claims
    /// still go to the least-loaded node).
    pub rebalance_threshold: u32,
    /// Cycles between two moves of one node (given or taken).
    pub rebalance_every: u32,
    /// Cycles a moved (or newly claimed) track stays where it is.
    pub rebalance_cooldown: u32,
    /// A deliberately broken rebalancer for the simulator's test: no
    /// hysteresis (`balance::plan_moves_without_hysteresis`). Never set
    /// by a node.
    pub mutant_no_hysteresis: bool,
}

impl Settings {
    pub fn new(id: NodeId, role: Role) -> Settings {
        Settings {
            id,
            role,
            missed_cycles: 4,
            claim_counter: 2,
            capacity: 2,
            resend_cycles: 4,
            stuck_cycles: 60,
            incarnation: 0,
            rebalance_threshold: 25,
            rebalance_every: 10,
            rebalance_cooldown: 60,
            mutant_no_hysteresis: false,
        }
    }
}

/// What a track costs its owner, as the owner measures it over its runs
/// (each an exponentially weighted average, a quarter for the newest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackCost {
    pub track: String,
    /// The weight balancing uses: records per run, at least 1; 0 when
    /// nothing is known yet (no run measured, none carried over).
    pub cost: u64,
    /// Runs measured by this owner (0: the cost is carried over from the
    /// previous owner, or unknown).
    pub runs: u32,
    /// Blocks per run.
    pub blocks: u64,
    /// Milliseconds per run, from opening it to closing it.
    pub millis: u64,
    /// Cycles this owner has held it.
    pub held: u32,
    /// Put on this node by an operator (`trackc move`): rebalancing leaves
    /// it there.
    pub pinned: bool,
}

/// A track its owner hands to a chosen node at the end of its current
/// run (`released` once it has).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub track: String,
    pub to: NodeId,
    /// Asked by an operator: the new owner keeps it pinned.
    pub manual: bool,
    pub released: bool,
    /// Its cost as the giver knew it (0: unknown).
    pub cost: u64,
}

/// What a node tells every peer each cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Advert {
    pub role: Role,
    /// It has proved it can work (database reachable, bundle compiled).
    pub ready: bool,
    pub draining: bool,
    /// A hash of the deployed bundle it runs.
    pub bundle: u64,
    /// Tracks it owns, with the epoch it won them under.
    pub owned: Vec<(String, u64)>,
    /// Tracks it claims, with the claim's counter.
    pub claims: Vec<(String, u32)>,
    /// Blocks it can take now ("advertising for work").
    pub free: u32,
    /// Blocks queued or in flight, per owned track that has any.
    pub busy: Vec<(String, u32)>,
    /// The master as it sees the group.
    pub master: Option<NodeId>,
    /// It reaches the database, so it can claim and commit. A node that
    /// cannot takes no blocks, claims nothing, is not master, and after
    /// `missed_cycles` gives its tracks up.
    pub database: bool,
    /// Owned tracks with a run in progress, each with a count that goes up
    /// whenever the run moves (a block gathered or finished): peers watch
    /// it to report a stalled owner. Since protocol 2.
    pub runs: Vec<(String, u64)>,
    /// Tracks it gave up because their run made no progress: it does not
    /// claim them again for `stuck_cycles`, and peers leave it out when
    /// they choose who claims them. Since protocol 2.
    pub gave_up: Vec<String>,
    /// It takes part in rebalancing (speaks protocol 4 with it on). Since
    /// protocol 4, as are the fields below.
    pub balancing: bool,
    /// What each owned track costs.
    pub costs: Vec<TrackCost>,
    /// Tracks it is handing to a chosen node.
    pub handoffs: Vec<Handoff>,
    /// Cycles since it last gave or took a track in a move (saturating).
    pub moved: u32,
    /// Moves an operator asked of this node (`trackc move`): track, node.
    /// The owner of the track takes them up.
    pub asks: Vec<(String, NodeId)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockId {
    pub owner: NodeId,
    pub incarnation: u64,
    pub seq: u64,
}

impl std::fmt::Display for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.owner, self.incarnation, self.seq)
    }
}

/// A block of records of one run of a track; the payload (the run and the
/// records) is opaque to the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub id: BlockId,
    pub track: String,
    /// The owner's epoch: the commit checks it.
    pub epoch: u64,
    pub payload: Vec<u8>,
}

/// How a worker finished a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Committed (or found already committed).
    Done,
    /// The track's epoch moved on: the sender no longer owns it.
    Fenced,
    /// The worker had no room (the owner's view of it was stale).
    Refused,
    /// It could not be done now (the database failed); its records stay
    /// due and the next run takes them.
    Failed(String),
}

impl Outcome {
    /// Its name in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Fenced => "fenced",
            Outcome::Refused => "refused",
            Outcome::Failed(_) => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Advert(Advert),
    Block(Block),
    /// A block is finished (or refused); `free` is the worker's room
    /// now, so the owner need not wait for its next advertisement to hand
    /// it another block.
    Ack {
        id: BlockId,
        outcome: Outcome,
        free: u32,
    },
    /// An operator asked the receiver to drain (`trackc drain`).
    Drain,
}

/// Work for the node around the protocol; each has an answer (a method of
/// `Group`) except `Leave`.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Record the claim in the database: set `track`'s owner to this node
    /// and its epoch to `known_epoch + 1` if its epoch is still
    /// `known_epoch`. Answer: `claim_recorded`.
    RecordClaim { track: String, known_epoch: u64 },
    /// Run `track` if it is due and `epoch` is still the database's:
    /// gather its records and cut them into blocks (`gathered`, as many
    /// times as needed, the last with `last = true`); if the epoch moved
    /// on, answer `lost` instead.
    Run { track: String, epoch: u64 },
    /// Every block of the run is acknowledged: close the run. Answer:
    /// `run_finished`.
    FinishRun {
        track: String,
        epoch: u64,
        /// Tries of its blocks that failed (kept with the run).
        failed_blocks: u32,
    },
    /// Ownership of `track` is gone (lost, fenced, handed over): stop
    /// gathering it; its blocks in flight are forgotten.
    Release { track: String },
    /// Evaluate the block and commit it under its epoch. Answer: `executed`.
    Execute(Block),
    /// A peer runs another bundle: load the newest deployment.
    CheckBundle,
    /// Drained: nothing owned, nothing in flight; the node may exit.
    Leave,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send this node's advertisement to every peer.
    Advertise(Advert),
    Send {
        to: NodeId,
        message: Message,
    },
    Command(Command),
    /// Something an operator should read in the log.
    Report(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Alive,
    Unavailable,
    Draining,
}

/// What this node knows of a peer.
#[derive(Clone, Debug)]
struct Peer {
    advert: Advert,
    heard_cycle: u64,
    /// Its room as last reported, by an advertisement or an ack.
    room: u32,
    /// Blocks handed to it since that report.
    given_since_report: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunPhase {
    Idle,
    /// Blocks are being gathered; `all` once the last has come.
    Gathering {
        all: bool,
    },
    /// `FinishRun` issued.
    Finishing,
}

#[derive(Clone, Debug)]
struct Owned {
    epoch: u64,
    phase: RunPhase,
    /// Blocks of the current run whose execution failed (each try).
    failed_blocks: u32,
    /// Goes up whenever the current run moves (advertised in `runs`).
    progress: u64,
    /// The cycle of the last progress (or of the run's start).
    progress_cycle: u64,
    /// When this node won it.
    acquired_cycle: u64,
    /// Put here by an operator's move.
    pinned: bool,
    /// Blocks gathered by the current run.
    run_blocks: u32,
    /// What its runs cost, measured here.
    measured: Option<Measured>,
}

/// A track's cost as measured by its owner: averages over its runs.
#[derive(Clone, Copy, Debug)]
struct Measured {
    records: f64,
    blocks: f64,
    millis: f64,
    runs: u32,
}

/// What the node measured of one run (`run_finished`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunMeasure {
    pub records: u64,
    pub millis: u64,
}

/// The weight of the newest run in a track's measured cost.
const COST_SMOOTHING: f64 = 0.25;

impl Owned {
    /// The current run moved (started, gathered, had a block answered).
    fn moved(&mut self, cycle: u64) {
        self.progress += 1;
        self.progress_cycle = cycle;
    }
}

/// A peer's run as this node watches it, to report it when it stalls.
#[derive(Clone, Debug)]
struct Watched {
    owner: NodeId,
    progress: u64,
    /// The cycle this node first saw `progress`.
    since: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClaimPhase {
    Counting(u32),
    /// `RecordClaim` issued.
    Recording,
}

#[derive(Clone, Debug)]
struct InFlight {
    block: Block,
    worker: NodeId,
    /// When it was last sent (resent after `resend_cycles`).
    sent_cycle: u64,
    /// When it was handed to this worker.
    given_cycle: u64,
}

/// Blocks remembered after they are done, to answer a block sent again.
const DONE_REMEMBERED_MAX: usize = 4096;
/// Times a failed block (its worker gave up after its own retries, about a
/// minute of them for a database fault) is handed out again in the same
/// run, to another worker when there is one. Past that its records wait
/// for the track's next run, and the failure is in the log: a fault that
/// outlasts this many tries is not one more try will fix.
const BLOCK_RETRIES_MAX: u32 = 3;
/// Cycles before a failed block's first retry; doubled for each next one.
const BLOCK_RETRY_CYCLES: u64 = 2;
/// Operator moves a node asks for at once (`trackc move`); more are
/// refused. They last a few cycles each, and a group has no more tracks
/// to move than this in practice.
pub const ASKS_MAX: usize = 64;

/// A move this node is making, as its giver.
#[derive(Clone, Debug)]
struct Handing {
    to: NodeId,
    manual: bool,
    /// When it was released (`None`: the run is not over yet).
    released: Option<u64>,
}

/// One node's view of the group and its part in it.
pub struct Group {
    settings: Settings,
    cycle: u64,
    ready_cycle: Option<u64>,
    /// When the bundle last changed.
    view_cycle: u64,
    draining: bool,
    left: bool,
    bundle: u64,
    tracks: BTreeSet<String>,
    peers: BTreeMap<NodeId, Peer>,
    /// The highest epoch seen per track (adverts, failed claims).
    known_epochs: BTreeMap<String, u64>,
    owned: BTreeMap<String, Owned>,
    claims: BTreeMap<String, ClaimPhase>,
    queue: VecDeque<Block>,
    in_flight: BTreeMap<BlockId, InFlight>,
    next_block: u64,
    /// Blocks this node works on, by id.
    working: BTreeSet<BlockId>,
    done: VecDeque<(BlockId, Outcome)>,
    /// A `CheckBundle` went out this cycle.
    bundle_asked: bool,
    /// The cycle this node lost the database, while it has not got it
    /// back (`set_database`); `None`: it reaches the database.
    database_lost_cycle: Option<u64>,
    /// Blocks taken back from a worker that did not answer or that failed
    /// them, and that worker: they go elsewhere when there is room
    /// elsewhere.
    unanswered_by: BTreeMap<BlockId, NodeId>,
    /// Failed blocks waiting to be handed out again, with the cycle they
    /// may go (at most `BLOCK_RETRIES_MAX` per block).
    retrying: Vec<(u64, Block)>,
    /// The retries each block of a current run has had.
    retries: BTreeMap<BlockId, u32>,
    /// Tracks this node gave up as stuck, with the cycle it did.
    gave_up: BTreeMap<String, u64>,
    /// Tracks whose source database this node cannot read now: advertised
    /// with `gave_up`, so that peers that can read it own them.
    unreadable: std::collections::BTreeSet<String>,
    /// Peers' runs in progress, by track.
    watched: BTreeMap<String, Watched>,
    /// The last cost heard of each track (its owner's advertisements, this
    /// node's own runs): claims and plans weigh tracks by it.
    known_costs: BTreeMap<String, u64>,
    /// Tracks this node is handing over, to whom.
    handing: BTreeMap<String, Handing>,
    /// When this node last gave or took a track in a move.
    last_move_cycle: Option<u64>,
    /// Operator moves asked of this node: track → (node, cycle asked).
    asks: BTreeMap<String, (NodeId, u64)>,
    counts: BlockCounts,
    out: Vec<Output>,
}

/// What became of blocks, for the status.
#[derive(Clone, Debug, Default)]
pub struct BlockCounts {
    /// Blocks this node worked on, by outcome.
    pub executed: BTreeMap<&'static str, u64>,
    /// Blocks this node handed out and had refused (its view of the
    /// worker's room was stale).
    pub refused: u64,
}

/// A summary for status pages and tests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeView {
    pub id: NodeId,
    pub state: PeerState,
    pub role: Role,
    pub master: bool,
    pub tracks: Vec<String>,
    /// It reaches the database.
    pub database: bool,
    /// Blocks it can take now (its free capacity, as advertised).
    pub free: u32,
    /// Blocks its owned tracks have queued or in flight.
    pub blocks_in_flight: u32,
    /// The cost of the tracks it owns, summed (`TrackView::cost`).
    pub load: u64,
}

/// A track as the status shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackView {
    pub name: String,
    pub owner: Option<NodeId>,
    pub epoch: Option<u64>,
    pub blocks_in_flight: u32,
    /// Cycles its run has made no progress, once that is half of
    /// `stuck_cycles` or more: this node's own run, or a peer's as its
    /// adverts show it.
    pub stalled_cycles: Option<u64>,
    /// The weight balancing gives it: its owner's measured records per
    /// run, else the last one heard, else the average of the tracks.
    pub cost: u64,
    /// Its owner's measurements, as last advertised.
    pub measured: Option<TrackCost>,
}

/// The plan the group would follow now (`trackc rebalance --dry-run`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RebalanceView {
    pub threshold_percent: u32,
    pub every_cycles: u32,
    pub cooldown_cycles: u32,
    /// Cost per node taking part.
    pub loads: Vec<(NodeId, u64)>,
    pub moves: Vec<PlannedMove>,
    /// Moves being made: the giver hands the track over at the end of its
    /// run, or has, and the taker is claiming it.
    pub under_way: Vec<PlannedMove>,
    /// Why no plan is made now, when none is.
    pub waiting: Option<String>,
}

impl Group {
    pub fn new(settings: Settings) -> Group {
        assert!(settings.missed_cycles >= 1 && settings.claim_counter >= 1);
        Group {
            settings,
            cycle: 0,
            ready_cycle: None,
            view_cycle: 0,
            draining: false,
            left: false,
            bundle: 0,
            tracks: BTreeSet::new(),
            peers: BTreeMap::new(),
            known_epochs: BTreeMap::new(),
            owned: BTreeMap::new(),
            claims: BTreeMap::new(),
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            next_block: 0,
            working: BTreeSet::new(),
            done: VecDeque::new(),
            bundle_asked: false,
            database_lost_cycle: None,
            unanswered_by: BTreeMap::new(),
            retrying: Vec::new(),
            retries: BTreeMap::new(),
            gave_up: BTreeMap::new(),
            unreadable: Default::default(),
            watched: BTreeMap::new(),
            known_costs: BTreeMap::new(),
            handing: BTreeMap::new(),
            last_move_cycle: None,
            asks: BTreeMap::new(),
            counts: BlockCounts::default(),
            out: Vec::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.settings.id
    }

    /// The outputs produced since the last call.
    pub fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// The node proved it can work: it runs bundle `bundle` of `tracks`.
    pub fn ready(&mut self, bundle: u64, tracks: impl IntoIterator<Item = String>) {
        if self.ready_cycle.is_none() {
            self.ready_cycle = Some(self.cycle);
        }
        self.set_bundle(bundle, tracks);
    }

    /// A new bundle was loaded: tracks it no longer has are released.
    pub fn set_bundle(&mut self, bundle: u64, tracks: impl IntoIterator<Item = String>) {
        if bundle != self.bundle {
            // Peers load the new bundle within a cycle or two; claims wait
            // for them, so that the tracks are divided among all.
            self.view_cycle = self.cycle;
        }
        self.bundle = bundle;
        self.tracks = tracks.into_iter().collect();
        let gone: Vec<String> = self
            .owned
            .keys()
            .filter(|t| !self.tracks.contains(*t))
            .cloned()
            .collect();
        for t in gone {
            self.release(&t);
        }
        self.claims.retain(|t, _| self.tracks.contains(t));
        self.handing.retain(|t, _| self.tracks.contains(t));
        self.asks.retain(|t, _| self.tracks.contains(t));
    }

    /// Whether this node reaches the database now (the node tells it every
    /// cycle). Without it the node steps back: no blocks, no claims, not
    /// master; after `missed_cycles` it gives its tracks up so that a
    /// healthy peer claims them. It comes back by itself.
    pub fn set_database(&mut self, reachable: bool) {
        if reachable {
            self.database_lost_cycle = None;
        } else if self.database_lost_cycle.is_none() {
            self.database_lost_cycle = Some(self.cycle);
        }
    }

    fn has_database(&self) -> bool {
        self.database_lost_cycle.is_none()
    }

    /// Hand the tracks over, finish the blocks, then leave.
    pub fn drain(&mut self) {
        self.draining = true;
        self.claims.clear();
    }

    /// The tracks whose source database this node cannot read now
    /// (node.toml lacks it, or it does not answer): peers that can read
    /// them are chosen to own them, and an owned one is handed back at its
    /// next idle moment when a peer can take it. With no such peer this
    /// node keeps it (its runs fail saying why, and nothing is lost).
    pub fn set_unreadable(&mut self, tracks: Vec<String>) {
        self.unreadable = tracks.into_iter().collect();
        // A claim still counting is dropped; one being recorded finishes
        // (and is handed back at the track's first idle moment).
        let unreadable = &self.unreadable;
        self.claims
            .retain(|t, phase| *phase == ClaimPhase::Recording || !unreadable.contains(t));
    }

    /// A peer that takes work, runs this bundle and can read `track`.
    fn peer_can_own(&self, track: &str) -> bool {
        self.peers.values().any(|p| {
            self.peer_takes_work(p)
                && p.advert.bundle == self.bundle
                && !p.advert.gave_up.iter().any(|g| g == track)
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    pub fn is_master(&self) -> bool {
        self.master() == Some(self.settings.id)
    }

    /// One cycle: membership, claims, runs, resends, then the
    /// advertisement.
    pub fn tick(&mut self) {
        if self.left {
            return;
        }
        self.cycle += 1;
        self.bundle_asked = false;
        self.requeue_from_unavailable();
        self.resend_unanswered();
        self.retry_failed();
        self.advance_claims();
        self.start_claims();
        self.give_up_stuck();
        self.expire_moves();
        self.rebalance();
        self.drive_runs();
        self.assign();
        self.finish_drain();
        if !self.left {
            let advert = self.advert();
            self.out.push(Output::Advertise(advert));
        }
    }

    /// A message from peer `from` (already authenticated).
    pub fn handle(&mut self, from: NodeId, message: Message) {
        if from == self.settings.id || self.left {
            return;
        }
        match message {
            Message::Advert(advert) => self.on_advert(from, advert),
            Message::Block(block) => self.on_block(from, block),
            Message::Ack { id, outcome, free } => {
                if let Some(p) = self.peers.get_mut(&from) {
                    p.room = free;
                    p.given_since_report = 0;
                }
                self.on_ack(from, id, outcome)
            }
            Message::Drain => self.drain(),
        }
    }

    /// The answer to `RecordClaim`: `Ok(epoch)` won, `Err(epoch)` the
    /// database has another epoch.
    pub fn claim_recorded(&mut self, track: &str, result: Result<u64, u64>) {
        if self.claims.remove(track) != Some(ClaimPhase::Recording) {
            return;
        }
        match result {
            Ok(epoch) => {
                self.note_epoch(track, epoch);
                if self.draining || !self.tracks.contains(track) {
                    return;
                }
                // Taken through a handoff to this node: a move.
                let handoff = self.handoff_of(track).filter(|h| h.to == self.settings.id);
                if handoff.is_some() {
                    self.last_move_cycle = Some(self.cycle);
                }
                self.handing.remove(track);
                self.owned.insert(
                    track.to_string(),
                    Owned {
                        epoch,
                        phase: RunPhase::Idle,
                        failed_blocks: 0,
                        progress: 0,
                        progress_cycle: self.cycle,
                        acquired_cycle: self.cycle,
                        pinned: handoff.is_some_and(|h| h.manual),
                        run_blocks: 0,
                        measured: None,
                    },
                );
            }
            Err(current) => self.note_epoch(track, current),
        }
    }

    /// Blocks gathered for a run of `track` under `epoch`; `last` when the
    /// run has no more.
    pub fn gathered(&mut self, track: &str, epoch: u64, payloads: Vec<Vec<u8>>, last: bool) {
        let Some(owned) = self.owned.get_mut(track) else {
            return;
        };
        if owned.epoch != epoch || !matches!(owned.phase, RunPhase::Gathering { all: false }) {
            return;
        }
        if last {
            owned.phase = RunPhase::Gathering { all: true };
        }
        owned.moved(self.cycle);
        owned.run_blocks = owned.run_blocks.saturating_add(payloads.len() as u32);
        for payload in payloads {
            let id = BlockId {
                owner: self.settings.id,
                incarnation: self.settings.incarnation,
                seq: self.next_block,
            };
            self.next_block += 1;
            self.queue.push_back(Block {
                id,
                track: track.to_string(),
                epoch,
                payload,
            });
        }
        self.assign();
        self.maybe_finish(track);
    }

    /// The database has a newer epoch for `track` than `epoch` (found by a
    /// run or a commit): this node no longer owns it.
    pub fn lost(&mut self, track: &str, epoch: u64) {
        if self.owns_epoch(track, epoch) {
            self.release(track);
        }
    }

    /// The answer to `FinishRun`, with what the run cost when one was
    /// due (a track checked and not due measures nothing).
    pub fn run_finished(&mut self, track: &str, epoch: u64, measure: Option<RunMeasure>) {
        let Some(owned) = self.owned.get_mut(track) else {
            return;
        };
        if owned.epoch != epoch || owned.phase != RunPhase::Finishing {
            return;
        }
        owned.phase = RunPhase::Idle;
        let Some(m) = measure else {
            return;
        };
        let blocks = f64::from(owned.run_blocks);
        let (records, millis) = (m.records as f64, m.millis as f64);
        let measured = match owned.measured {
            None => Measured {
                records,
                blocks,
                millis,
                runs: 1,
            },
            Some(old) => Measured {
                records: old.records + COST_SMOOTHING * (records - old.records),
                blocks: old.blocks + COST_SMOOTHING * (blocks - old.blocks),
                millis: old.millis + COST_SMOOTHING * (millis - old.millis),
                runs: old.runs.saturating_add(1),
            },
        };
        owned.measured = Some(measured);
        self.known_costs
            .insert(track.to_string(), (measured.records.round() as u64).max(1));
    }

    /// The answer to `Execute`.
    pub fn executed(&mut self, id: BlockId, outcome: Outcome) {
        if !self.working.remove(&id) {
            return;
        }
        *self.counts.executed.entry(outcome.name()).or_default() += 1;
        if self.done.len() >= DONE_REMEMBERED_MAX {
            self.done.pop_front();
        }
        self.done.push_back((id, outcome.clone()));
        if id.owner == self.settings.id {
            self.on_ack(self.settings.id, id, outcome);
        } else {
            self.ack(id.owner, id, outcome);
        }
    }

    pub fn block_counts(&self) -> &BlockCounts {
        &self.counts
    }

    /// Blocks queued or in flight for `track` (status).
    pub fn blocks_in_flight(&self, track: &str) -> usize {
        self.queue.iter().filter(|b| b.track == track).count()
            + self
                .retrying
                .iter()
                .filter(|(_, b)| b.track == track)
                .count()
            + self
                .in_flight
                .values()
                .filter(|f| f.block.track == track)
                .count()
    }

    /// Blocks this node has handed out or queued, all tracks.
    pub fn blocks_outstanding(&self) -> usize {
        self.queue.len() + self.in_flight.len() + self.retrying.len()
    }

    /// The tracks this node owns and their epochs.
    pub fn owned(&self) -> Vec<(String, u64)> {
        self.owned
            .iter()
            .map(|(t, o)| (t.clone(), o.epoch))
            .collect()
    }

    /// Every node this one knows, itself first.
    pub fn nodes(&self) -> Vec<NodeView> {
        let master = self.master();
        let mut nodes = vec![NodeView {
            id: self.settings.id,
            state: if self.draining {
                PeerState::Draining
            } else {
                PeerState::Alive
            },
            role: self.settings.role,
            master: master == Some(self.settings.id),
            tracks: self.owned.keys().cloned().collect(),
            database: self.has_database(),
            free: self.free(),
            blocks_in_flight: self
                .owned
                .keys()
                .map(|t| self.blocks_in_flight(t) as u32)
                .sum(),
            load: self.owned.keys().map(|t| self.cost_of(t)).sum(),
        }];
        for (&id, p) in &self.peers {
            // What it owns as this node sees it: nothing once it is
            // unavailable, and not a track a later epoch took from it.
            let tracks: Vec<String> = (p.advert.owned.iter())
                .filter(|(t, _)| self.owner_of(t).is_some_and(|(o, _)| o == id))
                .map(|(t, _)| t.clone())
                .collect();
            nodes.push(NodeView {
                id,
                state: self.peer_state(p),
                role: p.advert.role,
                master: master == Some(id),
                load: tracks.iter().map(|t| self.cost_of(t)).sum(),
                tracks,
                database: p.advert.database,
                free: p.advert.free,
                blocks_in_flight: p.advert.busy.iter().map(|(_, n)| n).sum(),
            });
        }
        nodes
    }

    /// Every track of the bundle: its owner and epoch as this node sees
    /// them, and the blocks its owner has queued or in flight.
    pub fn tracks(&self) -> Vec<TrackView> {
        self.tracks
            .iter()
            .map(|t| {
                let owner = self.owner_of(t);
                let blocks = match owner {
                    Some((id, _)) if id == self.settings.id => self.blocks_in_flight(t) as u32,
                    Some((id, _)) => self.peers[&id]
                        .advert
                        .busy
                        .iter()
                        .find(|(b, _)| b == t)
                        .map_or(0, |(_, n)| *n),
                    None => 0,
                };
                TrackView {
                    name: t.clone(),
                    owner: owner.map(|o| o.0),
                    epoch: owner.map(|o| o.1),
                    blocks_in_flight: blocks,
                    stalled_cycles: owner.and_then(|(id, _)| self.stalled_cycles(t, id)),
                    cost: self.cost_of(t),
                    measured: match owner {
                        Some((id, _)) if id == self.settings.id => {
                            Some(self.track_cost(t, &self.owned[t]))
                        }
                        Some((id, _)) => {
                            let costs = &self.peers[&id].advert.costs;
                            costs.iter().find(|c| c.track == *t).cloned()
                        }
                        None => None,
                    },
                }
            })
            .collect()
    }

    /// Cycles the run of `track` under `owner` has not moved, when that is
    /// half of `stuck_cycles` or more.
    fn stalled_cycles(&self, track: &str, owner: NodeId) -> Option<u64> {
        let since = if owner == self.settings.id {
            let o = self.owned.get(track)?;
            (o.phase != RunPhase::Idle).then_some(o.progress_cycle)?
        } else {
            let w = self.watched.get(track)?;
            (w.owner == owner).then_some(w.since)?
        };
        let stalled = self.cycle - since;
        (2 * stalled >= u64::from(self.settings.stuck_cycles)).then_some(stalled)
    }

    fn peer_state(&self, p: &Peer) -> PeerState {
        if !self.available(p) {
            PeerState::Unavailable
        } else if p.advert.draining {
            PeerState::Draining
        } else {
            PeerState::Alive
        }
    }

    fn available(&self, p: &Peer) -> bool {
        self.cycle.saturating_sub(p.heard_cycle) < u64::from(self.settings.missed_cycles)
    }

    fn is_ready(&self) -> bool {
        self.ready_cycle.is_some()
    }

    /// Whether a standby may take tracks and blocks: an active peer it has
    /// heard of is unavailable.
    fn standby_called(&self) -> bool {
        self.peers
            .values()
            .any(|p| p.advert.role == Role::Active && (!self.available(p) || !p.advert.database))
    }

    /// A standby whose active peers are all back: it gives its tracks up
    /// (each once its run is over) for the active nodes to claim.
    fn standby_steps_back(&self) -> bool {
        self.settings.role == Role::Standby
            && !self.standby_called()
            && self
                .peers
                .values()
                .any(|p| p.advert.role == Role::Active && self.peer_takes_work(p))
    }

    fn takes_work(&self) -> bool {
        self.is_ready()
            && self.has_database()
            && !self.draining
            && (self.settings.role == Role::Active || self.standby_called())
    }

    fn peer_takes_work(&self, p: &Peer) -> bool {
        self.available(p)
            && p.advert.ready
            && p.advert.database
            && !p.advert.draining
            && (p.advert.role == Role::Active || self.standby_called())
    }

    /// The lowest id among available, ready, active, non-draining nodes;
    /// with none, the lowest among the standbys that took over.
    pub fn master(&self) -> Option<NodeId> {
        let me = self.settings.id;
        let candidate = |active: bool| {
            let mine = (self.is_ready()
                && self.has_database()
                && !self.draining
                && (self.settings.role == Role::Active) == active)
                .then_some(me);
            let theirs = self.peers.iter().filter_map(|(&id, p)| {
                (self.available(p)
                    && p.advert.ready
                    && p.advert.database
                    && !p.advert.draining
                    && (p.advert.role == Role::Active) == active)
                    .then_some(id)
            });
            mine.into_iter().chain(theirs).min()
        };
        candidate(true).or_else(|| {
            if self.takes_work() || self.standby_called() {
                candidate(false)
            } else {
                None
            }
        })
    }

    fn free(&self) -> u32 {
        if self.takes_work() {
            self.settings
                .capacity
                .saturating_sub(self.working.len() as u32)
        } else {
            0
        }
    }

    /// The advertisement this node would send now.
    pub fn advert(&self) -> Advert {
        Advert {
            role: self.settings.role,
            ready: self.is_ready(),
            draining: self.draining,
            bundle: self.bundle,
            owned: self.owned(),
            claims: self
                .claims
                .iter()
                .map(|(t, c)| {
                    let n = match c {
                        ClaimPhase::Counting(n) => *n,
                        ClaimPhase::Recording => 0,
                    };
                    (t.clone(), n)
                })
                .collect(),
            free: self.free(),
            busy: self
                .owned
                .keys()
                .map(|t| (t.clone(), self.blocks_in_flight(t) as u32))
                .filter(|(_, n)| *n > 0)
                .collect(),
            master: self.master(),
            database: self.has_database(),
            runs: self
                .owned
                .iter()
                .filter(|(_, o)| o.phase != RunPhase::Idle)
                .map(|(t, o)| (t.clone(), o.progress))
                .collect(),
            gave_up: self
                .gave_up
                .keys()
                .chain(&self.unreadable)
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            balancing: self.settings.rebalance_threshold > 0,
            costs: self
                .owned
                .iter()
                .map(|(t, o)| self.track_cost(t, o))
                .collect(),
            handoffs: self
                .handing
                .iter()
                .map(|(t, h)| Handoff {
                    track: t.clone(),
                    to: h.to,
                    manual: h.manual,
                    released: h.released.is_some(),
                    cost: self.known_costs.get(t).copied().unwrap_or(0),
                })
                .collect(),
            moved: self.moved_ago(),
            asks: self
                .asks
                .iter()
                .map(|(t, &(to, _))| (t.clone(), to))
                .collect(),
        }
    }

    /// An owned track's cost as advertised.
    fn track_cost(&self, track: &str, o: &Owned) -> TrackCost {
        let m = o.measured;
        TrackCost {
            track: track.to_string(),
            cost: self.known_costs.get(track).copied().unwrap_or(0),
            runs: m.map_or(0, |m| m.runs),
            blocks: m.map_or(0, |m| m.blocks.round() as u64),
            millis: m.map_or(0, |m| m.millis.round() as u64),
            held: u32::try_from(self.cycle - o.acquired_cycle).unwrap_or(u32::MAX),
            pinned: o.pinned,
        }
    }

    /// Cycles since this node last gave or took a track in a move.
    fn moved_ago(&self) -> u32 {
        self.last_move_cycle.map_or(u32::MAX, |c| {
            u32::try_from(self.cycle - c).unwrap_or(u32::MAX)
        })
    }

    /// The weight of `track`: the last cost heard of it, else the average
    /// of the tracks whose cost is known, else 1 (every track alike, as
    /// when nothing has run yet).
    fn cost_of(&self, track: &str) -> u64 {
        self.known_costs
            .get(track)
            .copied()
            .unwrap_or_else(|| self.average_cost())
    }

    fn average_cost(&self) -> u64 {
        let known: Vec<u64> = (self.tracks.iter())
            .filter_map(|t| self.known_costs.get(t).copied())
            .collect();
        if known.is_empty() {
            return 1;
        }
        (known.iter().sum::<u64>() / known.len() as u64).max(1)
    }

    /// The live handoff of an unowned `track` (this node's or a peer's):
    /// the node it goes to claims it.
    fn handoff_of(&self, track: &str) -> Option<Handoff> {
        if let Some(h) = self.handing.get(track) {
            return h.released.is_some().then(|| Handoff {
                track: track.to_string(),
                to: h.to,
                manual: h.manual,
                released: true,
                cost: 0,
            });
        }
        self.peers
            .values()
            .filter(|p| self.available(p))
            .flat_map(|p| &p.advert.handoffs)
            .find(|h| h.track == track && h.released)
            .cloned()
    }

    /// Whether node `id` (this one or a peer) takes work now, runs this
    /// bundle, and has not given `track` up.
    fn peer_takes_track(&self, id: NodeId, track: &str) -> bool {
        if id == self.settings.id {
            return self.takes_work()
                && !self.gave_up.contains_key(track)
                && !self.unreadable.contains(track);
        }
        self.peers.get(&id).is_some_and(|p| {
            self.peer_takes_work(p)
                && p.advert.bundle == self.bundle
                && !p.advert.gave_up.iter().any(|g| g == track)
        })
    }

    fn note_epoch(&mut self, track: &str, epoch: u64) {
        let e = self.known_epochs.entry(track.to_string()).or_insert(0);
        *e = (*e).max(epoch);
    }

    /// The owner of `track`: this node, or the available peer advertising
    /// it under the highest epoch.
    fn owner_of(&self, track: &str) -> Option<(NodeId, u64)> {
        let mine = self.owned.get(track).map(|o| (self.settings.id, o.epoch));
        let theirs = self.peers.iter().filter_map(|(&id, p)| {
            if !self.available(p) {
                return None;
            }
            p.advert
                .owned
                .iter()
                .find(|(t, _)| t == track)
                .map(|&(_, e)| (id, e))
        });
        mine.into_iter()
            .chain(theirs)
            .max_by_key(|&(id, e)| (e, u64::MAX - id))
    }

    fn on_advert(&mut self, from: NodeId, advert: Advert) {
        for (t, e) in &advert.owned {
            self.note_epoch(t, *e);
            // A higher epoch elsewhere: this node was superseded.
            if self.owned.get(t).is_some_and(|o| o.epoch < *e) {
                self.release(t);
            }
        }
        for c in advert.costs.iter().filter(|c| c.cost > 0) {
            if !self.owned.contains_key(&c.track) {
                self.known_costs.insert(c.track.clone(), c.cost);
            }
        }
        for h in advert.handoffs.iter().filter(|h| h.cost > 0) {
            if !self.owned.contains_key(&h.track) {
                self.known_costs.insert(h.track.clone(), h.cost);
            }
        }
        // Operator moves asked of a peer, for tracks this node owns.
        for (t, to) in &advert.asks {
            if self.owned.contains_key(t) && !self.handing.contains_key(t) {
                // The asking node checked the target; one this node finds
                // unable is left to the ask's expiry (the ask is repeated
                // every cycle, a report would be too).
                let _ = self.hand_over(t, *to, true);
            }
        }
        if advert.ready && advert.bundle != self.bundle && self.is_ready() && !self.bundle_asked {
            self.bundle_asked = true;
            self.out.push(Output::Command(Command::CheckBundle));
        }
        let cycle = self.cycle;
        self.watched
            .retain(|t, w| w.owner != from || advert.runs.iter().any(|(r, _)| r == t));
        for (t, progress) in &advert.runs {
            let moved = self
                .watched
                .get(t)
                .is_none_or(|w| w.owner != from || w.progress != *progress);
            if moved {
                let w = Watched {
                    owner: from,
                    progress: *progress,
                    since: cycle,
                };
                self.watched.insert(t.clone(), w);
            }
        }
        self.peers
            .entry(from)
            .and_modify(|p| {
                p.room = advert.free;
                p.given_since_report = 0;
                p.advert = advert.clone();
                p.heard_cycle = cycle;
            })
            .or_insert(Peer {
                room: advert.free,
                given_since_report: 0,
                advert,
                heard_cycle: cycle,
            });
        self.assign();
    }

    fn on_block(&mut self, from: NodeId, block: Block) {
        if block.id.owner != from {
            return;
        }
        if let Some((_, outcome)) = self.done.iter().find(|(id, _)| *id == block.id) {
            self.ack(from, block.id, outcome.clone());
            return;
        }
        if self.working.contains(&block.id) {
            return;
        }
        if self.free() == 0 || block.epoch == 0 {
            self.ack(from, block.id, Outcome::Refused);
            return;
        }
        self.working.insert(block.id);
        self.out.push(Output::Command(Command::Execute(block)));
    }

    /// Answers the owner of block `id`, telling it this node's room.
    fn ack(&mut self, owner: NodeId, id: BlockId, outcome: Outcome) {
        let free = self.free();
        self.out.push(Output::Send {
            to: owner,
            message: Message::Ack { id, outcome, free },
        });
    }

    fn on_ack(&mut self, from: NodeId, id: BlockId, outcome: Outcome) {
        let Some(flight) = self.in_flight.get(&id) else {
            return;
        };
        if flight.worker != from {
            return;
        }
        let flight = self.in_flight.remove(&id).expect("looked up above");
        let track = flight.block.track.clone();
        if !matches!(outcome, Outcome::Failed(_) | Outcome::Refused) {
            self.retries.remove(&id);
        }
        if let Some(o) = self.owned.get_mut(&track) {
            if o.epoch == flight.block.epoch {
                o.moved(self.cycle);
            }
        }
        match outcome {
            Outcome::Done => {}
            Outcome::Failed(why) => {
                let owned = self.owns_epoch(&track, flight.block.epoch);
                if owned {
                    if let Some(o) = self.owned.get_mut(&track) {
                        o.failed_blocks += 1;
                    }
                }
                let tries = self.retries.entry(id).or_default();
                if *tries < BLOCK_RETRIES_MAX && owned {
                    *tries += 1;
                    let tries = *tries;
                    let wait = BLOCK_RETRY_CYCLES << (tries - 1);
                    self.out.push(Output::Report(format!(
                        "block {id} of `{track}` failed on node {from} ({why}): retry {tries} of \
                         {BLOCK_RETRIES_MAX} in {wait} cycles"
                    )));
                    self.unanswered_by.insert(id, from);
                    self.retrying.push((self.cycle + wait, flight.block));
                } else {
                    self.retries.remove(&id);
                    self.out.push(Output::Report(format!(
                        "block {id} of `{track}` failed on node {from} ({why}): its records wait \
                         for the next run"
                    )));
                }
            }
            Outcome::Refused => {
                self.counts.refused += 1;
                if self.owns_epoch(&track, flight.block.epoch) {
                    self.queue.push_front(flight.block);
                }
            }
            Outcome::Fenced => {
                if self.owns_epoch(&track, flight.block.epoch) {
                    self.release(&track);
                }
            }
        }
        self.assign();
        self.maybe_finish(&track);
    }

    fn owns_epoch(&self, track: &str, epoch: u64) -> bool {
        self.owned.get(track).is_some_and(|o| o.epoch == epoch)
    }

    /// Gives up `track`: its queue and blocks in flight are forgotten (a
    /// later commit of them is fenced by the database).
    fn release(&mut self, track: &str) {
        if self.owned.remove(track).is_none() {
            return;
        }
        // A handoff not yet made is off (the track went another way).
        if self
            .handing
            .get(track)
            .is_some_and(|h| h.released.is_none())
        {
            self.handing.remove(track);
        }
        self.queue.retain(|b| b.track != track);
        self.in_flight.retain(|_, f| f.block.track != track);
        self.retrying.retain(|(_, b)| b.track != track);
        // What is remembered of blocks goes with them.
        let live: BTreeSet<BlockId> = (self.queue.iter())
            .chain(self.retrying.iter().map(|(_, b)| b))
            .map(|b| b.id)
            .chain(self.in_flight.keys().copied())
            .collect();
        self.unanswered_by.retain(|id, _| live.contains(id));
        self.retries.retain(|id, _| live.contains(id));
        self.out.push(Output::Command(Command::Release {
            track: track.to_string(),
        }));
    }

    /// Takes back the blocks of workers that are gone or say they cannot
    /// reach the database (such a worker may still commit one when its
    /// database is back: the sequence condition makes the second a no-op).
    fn requeue_from_unavailable(&mut self) {
        let gone: Vec<BlockId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| {
                f.worker != self.settings.id
                    && self
                        .peers
                        .get(&f.worker)
                        .is_none_or(|p| !self.available(p) || !p.advert.database)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            let f = self.in_flight.remove(&id).expect("listed above");
            self.queue.push_front(f.block);
        }
    }

    /// Queues the failed blocks whose wait is over.
    fn retry_failed(&mut self) {
        let cycle = self.cycle;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retrying)
            .into_iter()
            .partition(|(at, _)| *at <= cycle);
        self.retrying = waiting;
        self.queue.extend(due.into_iter().map(|(_, b)| b));
    }

    fn resend_unanswered(&mut self) {
        let me = self.settings.id;
        let cycle = self.cycle;
        // A worker that still advertises but has not answered for half of
        // `stuck_cycles` is stuck (a hung database call, a paused thread):
        // the block goes to another one. Doing it twice is harmless, the
        // commit's sequence condition makes the second a no-op.
        let reassign_after = u64::from(self.settings.stuck_cycles.div_ceil(2));
        let unanswered: Vec<BlockId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| cycle - f.given_cycle >= reassign_after)
            .map(|(&id, _)| id)
            .collect();
        for id in unanswered {
            let f = self.in_flight.remove(&id).expect("listed above");
            self.out.push(Output::Report(format!(
                "block {id} of `{}` unanswered by node {} for {reassign_after} cycles: \
                 handed to another worker",
                f.block.track, f.worker
            )));
            self.unanswered_by.insert(id, f.worker);
            self.queue.push_front(f.block);
        }
        let after = u64::from(self.settings.resend_cycles);
        for f in self.in_flight.values_mut() {
            if f.worker != me && cycle - f.sent_cycle >= after {
                f.sent_cycle = cycle;
                self.out.push(Output::Send {
                    to: f.worker,
                    message: Message::Block(f.block.clone()),
                });
            }
        }
    }

    /// (cost owned, tracks owned, id): the lower wins a competing claim.
    fn standing(&self, id: NodeId) -> (u64, usize, NodeId) {
        if id == self.settings.id {
            let cost = self.owned.keys().map(|t| self.cost_of(t)).sum();
            return (cost, self.owned.len(), id);
        }
        let owned = self.peers.get(&id).map_or(&[][..], |p| &p.advert.owned[..]);
        let cost = owned.iter().map(|(t, _)| self.cost_of(t)).sum();
        (cost, owned.len(), id)
    }

    /// Whether an available peer claims `track` with a better standing.
    fn beaten(&self, track: &str) -> bool {
        let mine = self.standing(self.settings.id);
        self.peers.iter().any(|(&id, p)| {
            self.peer_takes_work(p)
                && p.advert.claims.iter().any(|(t, _)| t == track)
                && self.standing(id) < mine
        })
    }

    fn advance_claims(&mut self) {
        let tracks: Vec<String> = self.claims.keys().cloned().collect();
        for t in tracks {
            let ClaimPhase::Counting(n) = self.claims[&t] else {
                continue;
            };
            if !self.takes_work() || self.owner_of(&t).is_some() || self.beaten(&t) {
                self.claims.remove(&t);
                continue;
            }
            // The advertisement just sent carried `n`; this tick counts it.
            let n = n.saturating_sub(1);
            if n == 0 {
                self.claims.insert(t.clone(), ClaimPhase::Recording);
                let known_epoch = self.known_epochs.get(&t).copied().unwrap_or(0);
                self.out.push(Output::Command(Command::RecordClaim {
                    track: t,
                    known_epoch,
                }));
            } else {
                self.claims.insert(t, ClaimPhase::Counting(n));
            }
        }
    }

    /// Divides the unowned tracks among the nodes that take work: a track
    /// handed to a chosen node goes to it; the others, costliest first, to
    /// the node with the least cost (owned and claimed), then fewest
    /// tracks, then lowest id. Claims this node's share. Every node
    /// computes the same division from the same view, so claims rarely
    /// compete.
    fn start_claims(&mut self) {
        let settle = u64::from(self.settings.missed_cycles);
        let warmed = self
            .ready_cycle
            .is_some_and(|c| self.cycle - c >= settle && self.cycle - self.view_cycle >= settle);
        if !warmed || !self.takes_work() {
            return;
        }
        let me = self.settings.id;
        let weigh = |tracks: &mut dyn Iterator<Item = &String>| {
            tracks.fold((0u64, 0usize), |(c, n), t| (c + self.cost_of(t), n + 1))
        };
        let mut load: BTreeMap<NodeId, (u64, usize)> = BTreeMap::new();
        load.insert(me, weigh(&mut self.owned.keys().chain(self.claims.keys())));
        for (&id, p) in &self.peers {
            if self.peer_takes_work(p) && p.advert.bundle == self.bundle {
                let tracks = p.advert.owned.iter().map(|(t, _)| t);
                let claims = p.advert.claims.iter().map(|(t, _)| t);
                load.insert(id, weigh(&mut tracks.chain(claims)));
            }
        }
        let mut unowned: Vec<(u64, String)> = self
            .tracks
            .iter()
            .filter(|t| self.owner_of(t).is_none() && !self.claims.contains_key(*t))
            .map(|t| (self.cost_of(t), t.clone()))
            .collect();
        unowned.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (cost, t) in unowned {
            let claimed_by_peer = self.peers.iter().any(|(_, p)| {
                self.peer_takes_work(p) && p.advert.claims.iter().any(|(c, _)| *c == t)
            });
            if claimed_by_peer {
                continue;
            }
            // Nodes that gave this track up as stuck are left out while
            // another can take it.
            let gave_up = |id: NodeId| {
                if id == me {
                    self.gave_up.contains_key(&t) || self.unreadable.contains(&t)
                } else {
                    self.peers[&id].advert.gave_up.contains(&t)
                }
            };
            let handed_to = self
                .handoff_of(&t)
                .map(|h| h.to)
                .filter(|to| load.contains_key(to) && !gave_up(*to));
            let fresh = load.iter().filter(|&(&id, _)| !gave_up(id));
            let winner = handed_to.unwrap_or_else(|| {
                let (&winner, _) = fresh
                    .min_by_key(|&(&id, &n)| (n, id))
                    .or_else(|| load.iter().min_by_key(|&(&id, &n)| (n, id)))
                    .expect("this node is in the map");
                winner
            });
            let l = load.get_mut(&winner).expect("present");
            *l = (l.0 + cost, l.1 + 1);
            if winner == me {
                self.claims
                    .insert(t, ClaimPhase::Counting(self.settings.claim_counter));
            }
        }
    }

    /// Starts a run of every idle owned track (the node checks whether it
    /// is due); a draining node hands idle tracks over instead.
    fn drive_runs(&mut self) {
        if let Some(lost) = self.database_lost_cycle {
            // Runs would only wait for the database; after missed_cycles
            // the tracks go to peers that have it (fencing keeps a commit
            // of this node's that was still on its way harmless).
            if self.cycle - lost >= u64::from(self.settings.missed_cycles) {
                let owned: Vec<String> = self.owned.keys().cloned().collect();
                for track in owned {
                    self.release(&track);
                }
            }
            return;
        }
        let idle: Vec<(String, u64)> = self
            .owned
            .iter()
            .filter(|(_, o)| o.phase == RunPhase::Idle)
            .map(|(t, o)| (t.clone(), o.epoch))
            .collect();
        let hand_back = self.draining || self.standby_steps_back();
        for (track, epoch) in idle {
            if hand_back || (self.unreadable.contains(&track) && self.peer_can_own(&track)) {
                self.release(&track);
                continue;
            }
            if let Some(to) = self.handing.get(&track).map(|h| h.to) {
                // The run is over: hand the track to the chosen node if it
                // can still take it.
                let cycle = self.cycle;
                if self.peer_takes_track(to, &track) {
                    if let Some(h) = self.handing.get_mut(&track) {
                        h.released = Some(cycle);
                    }
                    self.release(&track);
                    continue;
                }
                self.handing.remove(&track);
                self.out.push(Output::Report(format!(
                    "not handing `{track}` to node {to}: it no longer takes this track"
                )));
            }
            let cycle = self.cycle;
            let o = self.owned.get_mut(&track).expect("listed");
            o.phase = RunPhase::Gathering { all: false };
            o.failed_blocks = 0;
            o.run_blocks = 0;
            o.moved(cycle);
            self.out
                .push(Output::Command(Command::Run { track, epoch }));
        }
    }

    /// Gives up every owned track whose run has not moved for
    /// `stuck_cycles` while this node still reaches the database (a hung
    /// query, a lock, a worker that never answers): a peer claims it under
    /// a new epoch, and fencing makes whatever this node still commits for
    /// it harmless. This node does not claim it back for `stuck_cycles`.
    fn give_up_stuck(&mut self) {
        let cycle = self.cycle;
        let limit = u64::from(self.settings.stuck_cycles);
        self.gave_up.retain(|_, at| cycle - *at < limit);
        // Blocks waiting for a worker with room are load, not a stuck run.
        for b in &self.queue {
            if let Some(o) = self.owned.get_mut(&b.track) {
                o.progress_cycle = cycle;
            }
        }
        let stuck: Vec<String> = self
            .owned
            .iter()
            .filter(|(_, o)| o.phase != RunPhase::Idle && cycle - o.progress_cycle >= limit)
            .map(|(t, _)| t.clone())
            .collect();
        for track in stuck {
            self.out.push(Output::Report(format!(
                "the run of `{track}` made no progress for {limit} cycles: giving the track up"
            )));
            self.release(&track);
            self.gave_up.insert(track, cycle);
        }
    }

    fn maybe_finish(&mut self, track: &str) {
        let Some(owned) = self.owned.get(track) else {
            return;
        };
        if owned.phase != (RunPhase::Gathering { all: true }) || self.blocks_in_flight(track) > 0 {
            return;
        }
        let (epoch, failed_blocks) = (owned.epoch, owned.failed_blocks);
        self.owned.get_mut(track).expect("looked up").phase = RunPhase::Finishing;
        self.out.push(Output::Command(Command::FinishRun {
            track: track.to_string(),
            epoch,
            failed_blocks,
        }));
    }

    /// Hands queued blocks to nodes with room: the one with most room
    /// first, this node on a tie.
    fn assign(&mut self) {
        let me = self.settings.id;
        while let Some(next) = self.queue.front() {
            // A block taken back from a worker that did not answer goes
            // to that worker again only when no other has room.
            let shunned = self.unanswered_by.get(&next.id).copied();
            let own_room = self.free();
            let mut best: Option<(bool, u32, NodeId)> =
                (own_room > 0).then_some((shunned != Some(me), own_room, me));
            for (&id, p) in &self.peers {
                if !self.peer_takes_work(p) || p.advert.bundle != self.bundle {
                    continue;
                }
                let room = p.room.saturating_sub(p.given_since_report);
                let candidate = (shunned != Some(id), room, id);
                if room > 0 && best.is_none_or(|(s, r, _)| (candidate.0, room) > (s, r)) {
                    best = Some(candidate);
                }
            }
            let Some((_, _, worker)) = best else {
                return;
            };
            let block = self.queue.pop_front().expect("not empty");
            self.unanswered_by.remove(&block.id);
            self.in_flight.insert(
                block.id,
                InFlight {
                    block: block.clone(),
                    worker,
                    sent_cycle: self.cycle,
                    given_cycle: self.cycle,
                },
            );
            if worker == me {
                if !self.working.insert(block.id) {
                    // Still on this node's own (stuck) worker.
                    continue;
                }
                self.out.push(Output::Command(Command::Execute(block)));
            } else {
                self.peers
                    .get_mut(&worker)
                    .expect("chosen")
                    .given_since_report += 1;
                self.out.push(Output::Send {
                    to: worker,
                    message: Message::Block(block),
                });
            }
        }
    }

    /// Starts handing `track` to node `to` at the end of its current run.
    fn hand_over(&mut self, track: &str, to: NodeId, manual: bool) -> Result<(), String> {
        if !self.owned.contains_key(track) {
            return Err(format!("node {} does not own `{track}`", self.settings.id));
        }
        if to == self.settings.id {
            return Err(format!("node {to} owns `{track}` already"));
        }
        if !self.peer_takes_track(to, track) {
            return Err(format!(
                "node {to} cannot take `{track}` now: it is unavailable, draining, a standby not \
                 called in, runs another bundle, or gave the track up"
            ));
        }
        self.handing.insert(
            track.to_string(),
            Handing {
                to,
                manual,
                released: None,
            },
        );
        self.last_move_cycle = Some(self.cycle);
        let why = if manual {
            "an operator asked"
        } else {
            "to even out the load"
        };
        self.out.push(Output::Report(format!(
            "handing `{track}` (cost {}) to node {to} at the end of its run: {why}",
            self.cost_of(track)
        )));
        Ok(())
    }

    /// An operator's move (`trackc move TRACK --to NODE`): the owner hands
    /// the track over at the end of its current run, and the new owner
    /// keeps it (rebalancing leaves it pinned there). Asked of another
    /// node than the owner, the ask rides on this node's advertisements
    /// until the owner takes it up. What was done, or why not.
    pub fn ask_move(&mut self, track: &str, to: NodeId) -> Result<String, String> {
        let me = self.settings.id;
        if !self.tracks.contains(track) {
            return Err(format!("no track `{track}` in the deployed bundle"));
        }
        if to != me && !self.peers.contains_key(&to) {
            return Err(format!("no node {to} in the group as node {me} sees it"));
        }
        if !self.peer_takes_track(to, track) {
            return Err(format!(
                "node {to} cannot take `{track}` now: it is unavailable, draining, a standby not \
                 called in, runs another bundle, or gave the track up"
            ));
        }
        match self.owner_of(track) {
            None => Err(format!(
                "`{track}` has no owner at this moment (it is being claimed): ask again in a few \
                 cycles"
            )),
            Some((owner, _)) if owner == to => Err(format!("node {to} owns `{track}` already")),
            Some((owner, _)) if owner == me => {
                self.hand_over(track, to, true)?;
                Ok(format!(
                    "node {me} hands `{track}` to node {to} at the end of its current run"
                ))
            }
            Some((owner, _)) => {
                if self.asks.len() >= ASKS_MAX && !self.asks.contains_key(track) {
                    return Err(format!(
                        "node {me} already carries {ASKS_MAX} moves: ask again in a few cycles"
                    ));
                }
                self.asks.insert(track.to_string(), (to, self.cycle));
                Ok(format!(
                    "asked node {owner} to hand `{track}` to node {to} at the end of its current run"
                ))
            }
        }
    }

    /// Forgets handoffs that are done (the track has an owner again) or
    /// that the chosen node did not take up in time (then any node may
    /// claim the track), and asks the owner has taken up or that are old.
    fn expire_moves(&mut self) {
        let cycle = self.cycle;
        let live = u64::from(2 * self.settings.missed_cycles + self.settings.claim_counter);
        let over: Vec<String> = (self.handing.iter())
            .filter(|(t, h)| match h.released {
                Some(at) => cycle - at > live || self.owner_of(t).is_some(),
                None => !self.owned.contains_key(*t),
            })
            .map(|(t, _)| t.clone())
            .collect();
        for t in over {
            self.handing.remove(&t);
        }
        let ask_live = 2 * live;
        let answered: Vec<String> = (self.asks.iter())
            .filter(|(t, &(to, at))| {
                cycle - at > ask_live
                    || self.owner_of(t).is_some_and(|(o, _)| o == to)
                    || self.peers.values().any(|p| {
                        p.advert
                            .handoffs
                            .iter()
                            .any(|h| h.track == **t && h.to == to)
                    })
            })
            .map(|(t, _)| t.clone())
            .collect();
        for t in answered {
            self.asks.remove(&t);
        }
    }

    /// Hands over this node's move of the group's plan, if it has one.
    fn rebalance(&mut self) {
        if self.settings.rebalance_threshold == 0 || !self.handing.is_empty() {
            return;
        }
        let Ok(holdings) = self.holdings() else {
            return;
        };
        let me = self.settings.id;
        let mine = self.plan(&holdings).into_iter().find(|m| m.from == me);
        if let Some(m) = mine {
            // Checked by `holdings`: owned here, the taker takes work.
            let _ = self.hand_over(&m.track, m.to, false);
        }
    }

    fn plan(&self, holdings: &[Holding]) -> Vec<PlannedMove> {
        if self.settings.mutant_no_hysteresis {
            return plan_moves_without_hysteresis(holdings);
        }
        plan_moves(holdings, self.settings.rebalance_threshold)
    }

    /// The plan the group would follow now, with each node's load, or why
    /// it waits (`trackc rebalance --dry-run`).
    pub fn rebalance_view(&self) -> RebalanceView {
        let threshold = self.settings.rebalance_threshold;
        let (loads, moves, waiting) = match self.holdings() {
            Ok(h) => (
                h.iter().map(|h| (h.node, h.load())).collect(),
                self.plan(&h),
                None,
            ),
            Err(why) => (Vec::new(), Vec::new(), Some(why)),
        };
        let mine = self
            .handing
            .iter()
            .map(|(t, h)| (self.settings.id, t, h.to));
        let theirs = (self.peers.iter())
            .filter(|(_, p)| self.available(p))
            .flat_map(|(&id, p)| p.advert.handoffs.iter().map(move |h| (id, &h.track, h.to)));
        let under_way = mine
            .chain(theirs)
            .map(|(from, track, to)| PlannedMove {
                track: track.clone(),
                from,
                to,
                cost: self.cost_of(track),
            })
            .collect();
        RebalanceView {
            threshold_percent: threshold,
            every_cycles: self.settings.rebalance_every,
            cooldown_cycles: self.settings.rebalance_cooldown,
            loads,
            moves,
            under_way,
            waiting,
        }
    }

    /// What each active node taking work holds, as the plan sees it, or
    /// why no plan is made now: every node must see a settled group (every
    /// track owned or being handed over, no claim under way, no standby or
    /// draining node holding tracks) so that all compute the same plan.
    fn holdings(&self) -> Result<Vec<Holding>, String> {
        if self.settings.rebalance_threshold == 0 {
            return Err("rebalancing is off on this node (rebalance_threshold = 0)".into());
        }
        let me = self.settings.id;
        let mut members: Vec<NodeId> = Vec::new();
        if self.draining {
            return Err(format!("node {me} is draining"));
        }
        if self.settings.role == Role::Standby && !self.owned.is_empty() {
            return Err(format!(
                "standby node {me} holds tracks while an active node is away"
            ));
        }
        if self.settings.role == Role::Active && self.takes_work() {
            members.push(me);
        }
        for (&id, p) in self.peers.iter().filter(|(_, p)| self.available(p)) {
            let a = &p.advert;
            if a.draining && !a.owned.is_empty() {
                return Err(format!("node {id} is draining"));
            }
            if a.role == Role::Standby && !a.owned.is_empty() {
                return Err(format!(
                    "standby node {id} holds tracks while an active node is away"
                ));
            }
            if a.role == Role::Active && self.peer_takes_work(p) {
                if a.bundle != self.bundle {
                    return Err(format!("node {id} runs another bundle"));
                }
                if !a.balancing {
                    return Err(format!(
                        "node {id} takes no part in rebalancing (rebalance_threshold = 0 there, \
                         or it speaks protocol 3)"
                    ));
                }
                if !a.claims.is_empty() {
                    return Err(format!("node {id} is claiming tracks"));
                }
                members.push(id);
            }
        }
        if !self.claims.is_empty() {
            return Err(format!("node {me} is claiming tracks"));
        }
        if members.is_empty() {
            return Err("no active node takes work".into());
        }
        let cooldown = self.settings.rebalance_cooldown;
        let every = self.settings.rebalance_every;
        let mut holdings: BTreeMap<NodeId, Holding> = BTreeMap::new();
        for &id in &members {
            let (may_move, refuses) = if id == me {
                let refuses = self.gave_up.keys().chain(&self.unreadable).cloned();
                (
                    self.moved_ago() >= every && self.handing.is_empty(),
                    refuses.collect(),
                )
            } else {
                let a = &self.peers[&id].advert;
                (
                    a.moved >= every && a.handoffs.is_empty(),
                    a.gave_up.iter().cloned().collect(),
                )
            };
            holdings.insert(
                id,
                Holding {
                    node: id,
                    may_move,
                    tracks: Vec::new(),
                    refuses,
                },
            );
        }
        for t in &self.tracks {
            let cost = self.cost_of(t);
            let (holder, movable) = match self.owner_of(t) {
                Some((owner, _)) if owner == me => {
                    let o = &self.owned[t];
                    let movable = !o.pinned
                        && self.cycle - o.acquired_cycle >= u64::from(cooldown)
                        && !self.handing.contains_key(t);
                    (owner, movable)
                }
                Some((owner, _)) => {
                    let Some(p) = self.peers.get(&owner) else {
                        return Err(format!("`{t}` is owned by node {owner}, unknown here"));
                    };
                    let moving = p.advert.handoffs.iter().any(|h| h.track == *t);
                    let cost = p.advert.costs.iter().find(|c| c.track == *t);
                    let movable = !moving && cost.is_some_and(|c| !c.pinned && c.held >= cooldown);
                    (owner, movable)
                }
                None => match self.handoff_of(t) {
                    Some(h) => (h.to, false),
                    None => return Err(format!("`{t}` has no owner yet")),
                },
            };
            let Some(h) = holdings.get_mut(&holder) else {
                return Err(format!(
                    "`{t}` is held by node {holder}, which takes no part in the plan now"
                ));
            };
            h.tracks.push((t.clone(), cost, movable));
        }
        // A node a track is being handed to (at the end of a run, or
        // released and being claimed) is taking its move.
        let mine = self.handing.values().map(|h| h.to);
        let theirs = (self.peers.values())
            .filter(|p| self.available(p))
            .flat_map(|p| p.advert.handoffs.iter().map(|h| h.to));
        for to in mine.chain(theirs) {
            if let Some(h) = holdings.get_mut(&to) {
                h.may_move = false;
            }
        }
        Ok(holdings.into_values().collect())
    }

    fn finish_drain(&mut self) {
        if self.draining
            && self.owned.is_empty()
            && self.in_flight.is_empty()
            && self.queue.is_empty()
            && self.working.is_empty()
        {
            self.left = true;
            self.out.push(Output::Command(Command::Leave));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::sim::{track_name, Sim, SimConfig};

    fn calm(actives: usize, standbys: usize, tracks: usize) -> Sim {
        Sim::calm(
            SimConfig {
                actives,
                standbys,
                tracks,
                records_per_track: 8,
                ..SimConfig::default()
            },
            1,
        )
    }

    /// Steps until `done` holds; the cycles it took.
    fn until(sim: &mut Sim, limit: u64, done: impl Fn(&Sim) -> bool) -> u64 {
        let start = sim.cycle();
        while !done(sim) {
            assert!(sim.cycle() - start < limit, "not within {limit} cycles");
            sim.step().unwrap();
        }
        sim.cycle() - start
    }

    /// A node that cannot read a track's source database (node.toml lacks
    /// it, or it does not answer) hands the track to a peer that can, and
    /// is not chosen for it while one can; with every node unable, one
    /// keeps it (its runs say why) rather than leaving it unowned.
    #[test]
    fn a_node_that_cannot_read_a_source_leaves_its_tracks_to_peers() {
        let mut sim = calm(3, 0, 3);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
        let track = track_name(0);
        let (owner, _) = sim.db_owner(&track).unwrap();
        sim.group_of_mut(owner)
            .unwrap()
            .set_unreadable(vec![track.clone()]);
        until(&mut sim, 30, |s| {
            s.db_owner(&track).is_some_and(|(o, _)| o != owner) && s.is_settled().is_ok()
        });
        let advert = sim.group(owner).unwrap().advert();
        assert_eq!(advert.gave_up, vec![track.clone()]);
        // The new owner loses it too: the third node takes it.
        let (second, _) = sim.db_owner(&track).unwrap();
        sim.group_of_mut(second)
            .unwrap()
            .set_unreadable(vec![track.clone()]);
        until(&mut sim, 30, |s| {
            s.db_owner(&track)
                .is_some_and(|(o, _)| o != owner && o != second)
                && s.is_settled().is_ok()
        });
        // All three: the track stays owned.
        let (third, _) = sim.db_owner(&track).unwrap();
        sim.group_of_mut(third)
            .unwrap()
            .set_unreadable(vec![track.clone()]);
        for _ in 0..20 {
            sim.step().unwrap();
        }
        assert!(sim.db_owner(&track).is_some());
        assert!(sim.is_settled().is_ok(), "{:?}", sim.is_settled());
        // Readable again: nothing moves for it (no flapping).
        let before = sim.db_owner(&track);
        for id in [owner, second, third] {
            sim.group_of_mut(id).unwrap().set_unreadable(Vec::new());
        }
        for _ in 0..20 {
            sim.step().unwrap();
        }
        assert_eq!(sim.db_owner(&track), before);
    }

    #[test]
    fn tracks_are_spread_fewest_first_and_one_master_rules() {
        let mut sim = calm(3, 0, 6);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
        let mut per_node = [0; 4];
        for t in 0..6 {
            per_node[sim.db_owner(&track_name(t)).unwrap().0 as usize] += 1;
        }
        assert_eq!(per_node[1..], [2, 2, 2]);
        for id in 1..=3 {
            assert_eq!(sim.group(id).unwrap().master(), Some(1));
            assert_eq!(sim.group(id).unwrap().is_master(), id == 1);
        }
    }

    #[test]
    fn an_owners_tracks_are_taken_over_in_missed_plus_claim_cycles() {
        let mut sim = calm(3, 0, 3);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
        let (owner, epoch) = sim.db_owner("track0").unwrap();
        sim.crash(owner);
        sim.add_records("track0", 5);
        let took = until(&mut sim, 30, |s| {
            s.db_owner("track0")
                .is_some_and(|(n, e)| n != owner && e > epoch)
        });
        // Silent for missed_cycles (4), then a claim over 2 advertisements,
        // each step one cycle, give or take a message's cycle of delay.
        assert!((6..=8).contains(&took), "took {took} cycles");
        until(&mut sim, 10, |s| s.undone("track0") == 0);
    }

    #[test]
    fn a_node_without_its_database_steps_back_and_rejoins() {
        let mut sim = calm(3, 0, 3);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
        let (owner, epoch) = sim.db_owner("track0").unwrap();
        let was_master = sim.group(owner).unwrap().is_master();
        sim.lose_database(owner, 20);
        sim.add_records("track0", 5);
        // It says so at once: no room for blocks, not master, and its
        // peers see it in its advertisement.
        sim.step().unwrap();
        let g = sim.group(owner).unwrap();
        assert_eq!(g.advert().free, 0);
        assert!(!g.advert().database && !g.is_master());
        let peer = (1..=3).find(|&id| id != owner).unwrap();
        until(&mut sim, 3, |s| {
            s.group(peer)
                .unwrap()
                .nodes()
                .iter()
                .any(|n| n.id == owner && !n.database)
        });
        if was_master {
            until(&mut sim, 3, |s| {
                s.group(peer).unwrap().master() != Some(owner)
            });
        }
        // After missed_cycles it gives the track up and a peer claims it.
        let took = until(&mut sim, 15, |s| {
            s.db_owner("track0")
                .is_some_and(|(n, e)| n != owner && e > epoch)
        });
        assert!((4..=9).contains(&took), "took {took} cycles");
        until(&mut sim, 10, |s| s.undone("track0") == 0);
        // Back with its database, it takes work again.
        until(&mut sim, 30, |s| s.group(owner).unwrap().advert().database);
        until(&mut sim, 10, |s| s.group(owner).unwrap().advert().free > 0);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
    }

    #[test]
    fn an_owner_whose_run_is_stuck_gives_the_track_up_and_peers_see_it() {
        let mut sim = calm(3, 0, 3);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
        let (owner, epoch) = sim.db_owner("track0").unwrap();
        let peer = (1..=3).find(|&id| id != owner).unwrap();
        // Its database work hangs far longer than stuck_cycles (12) while
        // it still advertises that it reaches the database.
        sim.hang(owner, 200);
        sim.add_records("track0", 5);
        // A peer reports the stall from half of stuck_cycles on.
        until(&mut sim, 12, |s| {
            s.group(peer)
                .unwrap()
                .tracks()
                .iter()
                .any(|t| t.name == "track0" && t.owner == Some(owner) && t.stalled_cycles.is_some())
        });
        // The owner gives the track up and a peer claims it (the owner is
        // left out of the choice while it is in `gave_up`).
        let took = until(&mut sim, 30, |s| {
            s.db_owner("track0")
                .is_some_and(|(n, e)| n != owner && e > epoch)
        });
        assert!(took <= 20, "took {took} cycles");
        assert!(sim.group(owner).unwrap().advert().gave_up == vec!["track0".to_string()]);
        // The records are done by healthy nodes while it still hangs: a
        // block it held is handed to another worker.
        until(&mut sim, 40, |s| s.undone("track0") == 0);
        for t in ["track1", "track2"] {
            until(&mut sim, 60, |s| s.undone(t) == 0);
        }
    }

    #[test]
    fn the_master_is_re_elected_when_it_goes_silent() {
        let mut sim = calm(3, 0, 2);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
        sim.crash(1);
        let took = until(&mut sim, 20, |s| {
            (2..=3).all(|id| s.group(id).unwrap().master() == Some(2))
        });
        assert!((4..=6).contains(&took), "took {took} cycles");
        sim.restart(1);
        until(&mut sim, 20, |s| {
            (1..=3).all(|id| s.group(id).is_some_and(|g| g.master() == Some(1)))
        });
    }

    #[test]
    fn a_draining_node_hands_its_tracks_over_and_leaves() {
        let mut sim = calm(3, 0, 6);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
        sim.drain(2);
        until(&mut sim, 30, |s| s.has_left(2));
        until(&mut sim, 30, |s| {
            (0..6).all(|t| s.db_owner(&track_name(t)).is_some_and(|(n, _)| n != 2))
        });
        sim.add_records("track1", 9);
        until(&mut sim, 30, |s| s.undone("track1") == 0);
    }

    /// A calm group of `actives` nodes over six tracks of different
    /// costs, nodes 2 and up away at the start.
    fn growing(actives: usize) -> Sim {
        let mut sim = Sim::calm(
            SimConfig {
                actives,
                standbys: 0,
                tracks: 6,
                records_per_track: 8,
                track_costs: vec![400, 250, 150, 100, 60, 40],
                cost_noise: 10,
                ..SimConfig::default()
            },
            1,
        );
        for id in 2..=actives as NodeId {
            sim.crash(id);
        }
        sim
    }

    /// The owners' epochs, to count moves.
    fn epochs(sim: &Sim) -> Vec<u64> {
        (0..6)
            .map(|t| sim.db_owner(&track_name(t)).map_or(0, |(_, e)| e))
            .collect()
    }

    fn loads(sim: &Sim) -> Vec<(NodeId, u64)> {
        sim.holdings().iter().map(|h| (h.node, h.load())).collect()
    }

    #[test]
    fn a_group_that_grows_from_one_node_shares_its_tracks_by_cost() {
        let mut sim = growing(3);
        // Node 1 alone owns everything and measures it.
        until(&mut sim, 40, |s| {
            s.is_settled().is_ok()
                && s.group(1)
                    .unwrap()
                    .tracks()
                    .iter()
                    .all(|t| t.measured.as_ref().is_some_and(|m| m.runs > 0))
        });
        assert_eq!(sim.group(1).unwrap().owned().len(), 6);
        let before = epochs(&sim);
        sim.restart(2);
        sim.restart(3);
        // Each cycle: how long each track has had no holder (a move
        // releases it at the end of a run; the chosen node claims it).
        let mut unowned = [0u64; 6];
        let mut longest = 0;
        let mut took = 0;
        while !(sim.is_settled().is_ok()
            && loads(&sim).len() == 3
            && loads(&sim).iter().all(|&(_, l)| l > 0))
        {
            assert!(
                took < 120,
                "not balanced within 120 cycles: {:?}",
                loads(&sim)
            );
            sim.step().unwrap();
            took += 1;
            for (t, gap) in unowned.iter_mut().enumerate() {
                let held = (1..=3).any(|id| {
                    sim.group(id)
                        .is_some_and(|g| g.owned().iter().any(|(o, _)| *o == track_name(t)))
                });
                *gap = if held { 0 } else { *gap + 1 };
                longest = longest.max(*gap);
            }
        }
        // A few cycles: the handoff's advert on its way (up to 1), the
        // claim's counter (2), its compare-and-set (up to 2 in the
        // simulator), and the tick it lands in.
        assert!(longest <= 6, "a track had no owner for {longest} cycles");
        // Fair by cost: total about 1,000, so about 333 each; the 400 track
        // alone is over it, and the rest splits 300/300 or so.
        let l = loads(&sim);
        let max = l.iter().map(|&(_, l)| l).max().unwrap();
        assert!(max <= 450, "loads {l:?}");
        // Nothing moved twice, and then nothing moves.
        let after = epochs(&sim);
        assert!(
            before.iter().zip(&after).all(|(b, a)| a - b <= 1),
            "{before:?} -> {after:?} in {took} cycles"
        );
        sim.steps(120).unwrap();
        assert_eq!(
            epochs(&sim),
            after,
            "moves after settling: {:?}",
            loads(&sim)
        );
        sim.add_records("track0", 5);
        until(&mut sim, 30, |s| s.undone("track0") == 0);
    }

    #[test]
    fn the_plan_waits_for_a_settled_group_and_shows_loads() {
        let mut sim = growing(2);
        sim.steps(1).unwrap();
        let view = sim.group(1).unwrap().rebalance_view();
        assert!(view.waiting.is_some(), "{view:?}");
        until(&mut sim, 40, |s| s.is_settled().is_ok());
        sim.steps(20).unwrap();
        let view = sim.group(1).unwrap().rebalance_view();
        assert_eq!(view.waiting, None);
        assert_eq!(view.loads.len(), 1);
        sim.restart(2);
        // Node 2 comes, ready with nothing: the plan moves a track to it.
        // The giver acts on the plan in the cycle it is made: the move
        // shows under way, on the giver and then on the taker.
        let under_way = |s: &Sim, id| s.group(id).unwrap().rebalance_view().under_way;
        until(&mut sim, 30, |s| !under_way(s, 1).is_empty());
        let m = under_way(&sim, 1)[0].clone();
        assert_eq!((m.from, m.to), (1, 2));
        until(&mut sim, 3, |s| under_way(s, 2).contains(&m));
        until(&mut sim, 20, |s| {
            s.db_owner(&m.track).is_some_and(|(n, _)| n == 2)
        });
    }

    #[test]
    fn an_operator_moves_a_track_and_rebalancing_leaves_it_there() {
        let mut sim = growing(3);
        sim.restart(2);
        sim.restart(3);
        until(&mut sim, 150, |s| {
            s.is_settled().is_ok() && s.group(3).is_some_and(|g| !g.owned().is_empty())
        });
        sim.steps(60).unwrap();
        let (owner, _) = sim.db_owner("track5").unwrap();
        let to = if owner == 3 { 2 } else { 3 };
        // Asked of a node that does not own it: the ask rides on adverts.
        let asked_of = (1..=3).find(|&n| n != owner).unwrap();
        let g = sim.group_of_mut(asked_of).unwrap();
        assert!(g.ask_move("nope", to).unwrap_err().contains("no track"));
        assert!(g.ask_move("track5", 9).unwrap_err().contains("no node 9"));
        assert!(g.ask_move("track5", owner).unwrap_err().contains("owns"));
        g.ask_move("track5", to).unwrap();
        until(&mut sim, 30, |s| {
            s.db_owner("track5").is_some_and(|(n, _)| n == to)
        });
        let pinned = |s: &Sim| {
            s.group(to)
                .unwrap()
                .tracks()
                .iter()
                .any(|t| t.name == "track5" && t.measured.as_ref().is_some_and(|m| m.pinned))
        };
        until(&mut sim, 5, pinned);
        sim.steps(200).unwrap();
        assert_eq!(sim.db_owner("track5").unwrap().0, to, "moved back");
    }

    #[test]
    fn a_draining_node_spreads_its_tracks_to_the_least_loaded() {
        let mut sim = growing(3);
        sim.restart(2);
        sim.restart(3);
        until(&mut sim, 150, |s| {
            s.is_settled().is_ok() && loads(s).iter().all(|&(_, l)| l > 0)
        });
        sim.steps(40).unwrap();
        sim.drain(1);
        until(&mut sim, 60, |s| s.has_left(1) && s.is_settled().is_ok());
        let l = loads(&sim);
        assert_eq!(l.len(), 2);
        let (a, b) = (l[0].1, l[1].1);
        // 1,000 over two nodes: no more apart than the largest track can
        // make them, and within the threshold once moves are done.
        until(&mut sim, 120, |s| {
            let l = loads(s);
            l.len() == 2 && l[0].1.abs_diff(l[1].1) <= 400
        });
        assert!(a + b >= 900, "{l:?}");
    }

    #[test]
    fn a_standby_takes_tracks_only_while_an_active_node_is_away() {
        let mut sim = calm(2, 1, 4);
        until(&mut sim, 30, |s| s.is_settled().is_ok());
        sim.steps(20).unwrap();
        assert!(sim.group(3).unwrap().owned().is_empty());
        assert_eq!(sim.group(3).unwrap().advert().free, 0);
        sim.crash(1);
        until(&mut sim, 30, |s| !s.group(3).unwrap().owned().is_empty());
        // Node 1 back: the standby hands its tracks to the active nodes.
        sim.restart(1);
        until(&mut sim, 30, |s| {
            s.group(3).unwrap().owned().is_empty() && s.is_settled().is_ok()
        });
    }

    /// Node 1 owning track `t` with one run's `blocks` gathered, and an
    /// idle active peer 2 advertising room for two blocks; the blocks sent
    /// to peer 2 so far.
    fn owner_with_blocks(blocks: u8) -> (Group, Vec<BlockId>) {
        let tracks = || ["t".to_string()];
        let mut owner = Group::new(Settings::new(1, Role::Active));
        owner.ready(7, tracks());
        let mut peer = Group::new(Settings::new(2, Role::Active));
        peer.ready(7, tracks());
        let mut run = None;
        for _ in 0..20 {
            owner.handle(2, Message::Advert(peer.advert()));
            owner.tick();
            for output in owner.take() {
                match output {
                    Output::Command(Command::RecordClaim { track, known_epoch }) => {
                        owner.claim_recorded(&track, Ok(known_epoch + 1))
                    }
                    Output::Command(Command::Run { epoch, .. }) => run = Some(epoch),
                    _ => {}
                }
            }
            if run.is_some() {
                break;
            }
        }
        let epoch = run.expect("node 1 claims t and runs it");
        owner.gathered("t", epoch, (0..blocks).map(|b| vec![b]).collect(), true);
        let sent = sent_to(&mut owner, 2);
        (owner, sent)
    }

    fn sent_to(group: &mut Group, peer: NodeId) -> Vec<BlockId> {
        group
            .take()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    message: Message::Block(b),
                } if to == peer => Some(b.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_ack_reports_the_workers_room_so_blocks_flow_between_adverts() {
        let (mut owner, sent) = owner_with_blocks(10);
        // Two for the owner itself, two for the peer's advertised room.
        assert_eq!(sent.len(), 2);
        let ack = |id, outcome, free| Message::Ack { id, outcome, free };
        owner.handle(2, ack(sent[0], Outcome::Done, 1));
        assert_eq!(sent_to(&mut owner, 2).len(), 1, "the room the ack reported");
        // A refusal says the peer is full: nothing more until it reports room.
        owner.handle(2, ack(sent[1], Outcome::Refused, 0));
        assert_eq!(sent_to(&mut owner, 2).len(), 0);
        assert_eq!(owner.block_counts().refused, 1);
        // One block is done; the refused one waits in the queue again.
        assert_eq!(owner.blocks_in_flight("t"), 10 - 1);
    }

    #[test]
    fn a_failed_block_is_retried_in_the_same_run_a_bounded_number_of_times() {
        // One block went to peer 2, two to the owner's own workers; the
        // owner's are done, so it has room again.
        let (mut owner, sent) = owner_with_blocks(3);
        let failed = sent[0];
        for seq in (0..3).filter(|&s| s != failed.seq) {
            let id = BlockId { seq, ..failed };
            owner.executed(id, Outcome::Done);
        }
        let fail = |owner: &mut Group, from| {
            let outcome = Outcome::Failed("connection lost".into());
            if from == 1 {
                owner.executed(failed, outcome);
            } else {
                let ack = Message::Ack {
                    id: failed,
                    outcome,
                    free: 1,
                };
                owner.handle(from, ack);
            }
        };
        // Each failure: the block waits 2, 4, then 8 cycles, then goes to a
        // worker other than the one that failed it, and the run does not
        // finish meanwhile.
        let mut peer = Group::new(Settings::new(2, Role::Active));
        peer.ready(7, ["t".to_string()]);
        let mut worker = 2;
        for wait in [2u64, 4, 8] {
            fail(&mut owner, worker);
            let mut handed = None;
            for cycle in 1..=wait {
                // Peer 2 stays in the group, with room.
                owner.handle(2, Message::Advert(peer.advert()));
                owner.tick();
                for o in owner.take() {
                    match o {
                        Output::Command(Command::Execute(b)) if b.id == failed => {
                            handed = Some((cycle, 1))
                        }
                        Output::Send {
                            to,
                            message: Message::Block(b),
                        } if b.id == failed => handed = Some((cycle, to)),
                        Output::Command(Command::FinishRun { .. }) => panic!("finished early"),
                        _ => {}
                    }
                }
            }
            let (cycle, to) = handed.expect("handed out again");
            assert_eq!(cycle, wait, "after {wait} cycles");
            assert_ne!(to, worker, "not to the worker that failed it");
            worker = to;
        }
        // The fourth failure is the last: the block is dropped (its records
        // wait for the next run) and the run finishes.
        fail(&mut owner, worker);
        assert_eq!(owner.blocks_in_flight("t"), 0);
        // The run is finished with its four failed tries, for the console.
        let finishing = owner.take().into_iter().any(|o| {
            matches!(
                o,
                Output::Command(Command::FinishRun {
                    failed_blocks: 4,
                    ..
                })
            )
        });
        assert!(finishing);
    }
}
