//! A deterministic simulation of the peer group: the real `Group` values,
//! a simulated network (loss, duplication, delay and so reordering,
//! partitions), crashes and restarts, paused nodes, and a model of the
//! database with the two checks the real one makes: a claim is a
//! compare-and-set of the track's epoch, and a block commits only under
//! the track's current epoch, each record's change conditional on its
//! state (so a block applied twice changes nothing the second time).
//!
//! Everything random comes from one seed; a failing seed replays exactly
//! (`Sim::new(config, seed)` again), and its trace says what happened.
//! Invariants are checked after every step; after the faults stop, the
//! group must settle within a bound: every track one owner, one master,
//! every record's effect done exactly once.

use super::balance::{balanced, Holding};
use super::protocol::{
    Block, Command, Group, Message, NodeId, Outcome, Output, Role, RunMeasure, Settings,
};
use std::collections::{BTreeMap, VecDeque};

/// What a simulation runs and which faults it injects (per mille per
/// cycle unless said otherwise).
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub actives: usize,
    pub standbys: usize,
    pub tracks: usize,
    pub records_per_track: usize,
    pub block_records: usize,
    pub capacity: u32,
    pub missed_cycles: u32,
    pub claim_counter: u32,
    /// Cycles with faults; then the faults heal.
    pub fault_cycles: u64,
    /// Cycles the group has, after healing, to settle.
    pub settle_cycles: u64,
    pub loss: u32,
    pub duplicate: u32,
    /// Messages take 0 to this many cycles.
    pub delay_max: u64,
    pub crash: u32,
    pub pause: u32,
    pub partition: u32,
    /// New records per cycle (per mille chance of one).
    pub arrivals: u32,
    /// A node loses the database for a while: its database work waits
    /// (its threads retry) and the protocol is told every cycle.
    pub db_outage: u32,
    /// A node's database work hangs for a while (a query that never
    /// returns, a stalled proxy) while it still advertises and reaches the
    /// database: "alive but stuck".
    pub hang: u32,
    /// Cycles a run may make no progress before its owner gives it up.
    pub stuck_cycles: u32,
    /// Per mille of block commits whose answer is lost after the commit:
    /// the worker decides the block again on a new connection.
    pub lost_commit_answer: u32,
    /// Per mille of block commits that fail and stay failed after the
    /// worker's own retries: nothing is applied, the owner hears `Failed`
    /// and hands the block out again in the same run.
    pub failed_commit: u32,
    /// Per mille of block commits that fail with their answer lost: the
    /// worker cannot tell, decides the block again, and that one commits.
    pub failed_commit_answer_lost: u32,
    /// Per mille of blocks whose commit is slow: up to `stuck_cycles`
    /// cycles (past the owner's patience, which hands it to another
    /// worker).
    pub slow_commit: u32,
    /// A deliberately broken store for tests of this simulator: a block
    /// decided again ignores the records' sequence numbers.
    pub mutant_retry_ignores_seq: bool,
    /// What a run of each track costs (records per run), cycled over the
    /// tracks; empty: runs measure nothing (every track weighs alike).
    pub track_costs: Vec<u64>,
    /// Each measured run is off by up to this many percent either way.
    pub cost_noise: u32,
    /// Active nodes that are not there at the start: each joins at a
    /// random cycle of the faulty period (at the latest when it heals).
    pub joiners: usize,
    /// Per mille per cycle: a running active node is told to drain; once
    /// it has left it comes back a while later as a new life.
    pub drain: u32,
    pub rebalance_threshold: u32,
    pub rebalance_every: u32,
    pub rebalance_cooldown: u32,
    /// A deliberately broken rebalancer for tests of this simulator: no
    /// hysteresis (`Settings::mutant_no_hysteresis`).
    pub mutant_no_hysteresis: bool,
    /// Cycles watched once the group has settled: no track may change
    /// owner twice in them (no flapping), and the group must stay settled
    /// but for the moves it makes.
    pub quiet_cycles: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            actives: 3,
            standbys: 1,
            tracks: 4,
            records_per_track: 40,
            block_records: 4,
            capacity: 2,
            missed_cycles: 4,
            claim_counter: 2,
            fault_cycles: 120,
            settle_cycles: 60,
            loss: 50,
            duplicate: 30,
            delay_max: 2,
            crash: 15,
            pause: 15,
            partition: 10,
            arrivals: 300,
            db_outage: 8,
            hang: 5,
            stuck_cycles: 12,
            lost_commit_answer: 30,
            failed_commit: 20,
            failed_commit_answer_lost: 20,
            slow_commit: 20,
            mutant_retry_ignores_seq: false,
            track_costs: Vec::new(),
            cost_noise: 0,
            joiners: 0,
            drain: 0,
            rebalance_threshold: 25,
            rebalance_every: 4,
            rebalance_cooldown: 16,
            mutant_no_hysteresis: false,
            quiet_cycles: 0,
        }
    }
}

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

/// Work a node's command does, finished at `due`.
#[derive(Clone, Debug)]
struct Job {
    due: u64,
    command: Command,
}

struct SimNode {
    id: NodeId,
    role: Role,
    /// `None` while crashed.
    group: Option<Group>,
    restart_at: u64,
    paused_until: u64,
    incarnation: u64,
    jobs: Vec<Job>,
    left: bool,
    /// It reaches the database again at this cycle.
    db_back_at: u64,
    /// Its database work hangs until this cycle.
    hung_until: u64,
}

struct Envelope {
    at: u64,
    from: NodeId,
    to: NodeId,
    message: Message,
}

/// The database as the group sees it.
#[derive(Default)]
struct SimDb {
    /// track → (owner, epoch)
    owners: BTreeMap<String, (NodeId, u64)>,
    /// track → effects done per record
    effects: BTreeMap<String, Vec<u32>>,
    commits: u64,
    fenced: u64,
}

/// What a finished simulation measured.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub cycles: u64,
    /// Cycles after healing until the group settled.
    pub settled_after: u64,
    pub messages: u64,
    pub crashes: u64,
    pub pauses: u64,
    /// Nodes that lost the database for a while.
    pub db_outages: u64,
    /// Nodes whose database work hung for a while.
    pub hangs: u64,
    /// Commits whose answer was lost and that were decided again.
    pub lost_answers: u64,
    /// Commits that failed (answer given or lost).
    pub failed_commits: u64,
    /// Commits that took longer than the owner waits.
    pub slow_commits: u64,
    pub commits: u64,
    /// Block commits refused because the epoch had moved on.
    pub fenced: u64,
    pub records: u64,
    /// Drains asked (each node left and came back).
    pub drains: u64,
    /// Nodes that joined after the start.
    pub joins: u64,
    /// Owner changes of tracks in the quiet period.
    pub quiet_moves: u64,
}

/// A broken invariant, with the seed and the last steps.
#[derive(Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub cycle: u64,
    pub message: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at cycle {}: {}",
            self.seed, self.cycle, self.message
        )?;
        writeln!(f, "last steps:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: TRACKC_SIM_SEED={} cargo test -p trackc-runtime --test simulation",
            self.seed
        )
    }
}

/// Lines of trace kept for a failure report.
const TRACE_MAX: usize = 400;

pub struct Sim {
    config: SimConfig,
    seed: u64,
    rng: Rng,
    cycle: u64,
    nodes: Vec<SimNode>,
    net: Vec<Envelope>,
    db: SimDb,
    /// Pairs of nodes that cannot reach each other until the cycle.
    cut: BTreeMap<(NodeId, NodeId), u64>,
    faults: bool,
    /// The faults have healed (`run`).
    healed: bool,
    trace: VecDeque<String>,
    report: SimReport,
}

impl Sim {
    pub fn new(config: SimConfig, seed: u64) -> Sim {
        let mut db = SimDb::default();
        for t in 0..config.tracks {
            db.effects
                .insert(track_name(t), vec![0; config.records_per_track]);
        }
        // When each joiner comes: drawn apart from the faults' stream.
        let mut joins = Rng::new(seed ^ 0x6a6f_696e);
        let nodes = (0..config.actives + config.standbys + config.joiners)
            .map(|i| {
                let role = if i < config.actives || i >= config.actives + config.standbys {
                    Role::Active
                } else {
                    Role::Standby
                };
                let mut node = SimNode {
                    id: i as NodeId + 1,
                    role,
                    group: None,
                    restart_at: 0,
                    paused_until: 0,
                    db_back_at: 0,
                    hung_until: 0,
                    incarnation: 0,
                    jobs: Vec::new(),
                    left: false,
                };
                if i >= config.actives + config.standbys {
                    node.restart_at = 1 + joins.below(config.fault_cycles.max(1));
                } else {
                    node.group = Some(boot(&config, &node));
                }
                node
            })
            .collect();
        Sim {
            rng: Rng::new(seed),
            seed,
            cycle: 0,
            nodes,
            net: Vec::new(),
            db,
            cut: BTreeMap::new(),
            faults: true,
            healed: false,
            trace: VecDeque::new(),
            report: SimReport::default(),
            config,
        }
    }

    /// Runs the faulty cycles, heals, and waits for the group to settle.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        for _ in 0..self.config.fault_cycles {
            self.step()?;
        }
        self.heal();
        let healed_at = self.cycle;
        for _ in 0..self.config.settle_cycles {
            self.step()?;
            if self.settled().is_ok() {
                self.report.settled_after = self.cycle - healed_at;
                self.quiet()?;
                self.report.cycles = self.cycle;
                self.report.commits = self.db.commits;
                self.report.fenced = self.db.fenced;
                self.report.records = self.db.effects.values().map(|e| e.len() as u64).sum();
                return Ok(self.report);
            }
        }
        let why = self.settled().unwrap_err();
        Err(self.failure(format!(
            "not settled {} cycles after the faults healed: {why}",
            self.config.settle_cycles
        )))
    }

    /// The quiet period after settling: nothing changes in the group, so
    /// no track may change owner twice (flapping), and the group ends
    /// settled.
    fn quiet(&mut self) -> Result<(), SimFailure> {
        let epochs = |sim: &Sim| -> BTreeMap<String, u64> {
            sim.db
                .owners
                .iter()
                .map(|(t, &(_, e))| (t.clone(), e))
                .collect()
        };
        let start = epochs(self);
        for _ in 0..self.config.quiet_cycles {
            self.step()?;
            let now = epochs(self);
            for (t, e) in &now {
                let moves = e - start.get(t).copied().unwrap_or(0);
                if moves > 1 {
                    return Err(self.failure(format!(
                        "{t} changed owner {moves} times in a quiet period (flapping)"
                    )));
                }
            }
        }
        let end = epochs(self);
        self.report.quiet_moves = end
            .iter()
            .map(|(t, e)| e - start.get(t).copied().unwrap_or(0))
            .sum();
        if self.config.quiet_cycles > 0 {
            if let Err(why) = self.settled() {
                return Err(self.failure(format!("unsettled in the quiet period: {why}")));
            }
        }
        Ok(())
    }

    /// A simulation without faults, driven step by step (tests,
    /// benchmarks).
    pub fn calm(config: SimConfig, seed: u64) -> Sim {
        let mut sim = Sim::new(config, seed);
        sim.faults = false;
        sim
    }

    /// Runs `cycles` steps.
    pub fn steps(&mut self, cycles: u64) -> Result<(), SimFailure> {
        for _ in 0..cycles {
            self.step()?;
        }
        Ok(())
    }

    pub fn cycle(&self) -> u64 {
        self.cycle
    }

    /// Kills node `id` (it stays down until `restart`).
    pub fn crash(&mut self, id: NodeId) {
        let i = self.index(id).expect("a simulated node");
        let n = &mut self.nodes[i];
        n.group = None;
        n.jobs.clear();
        n.restart_at = u64::MAX;
        self.note(format!("node {id} killed"));
    }

    pub fn restart(&mut self, id: NodeId) {
        let i = self.index(id).expect("a simulated node");
        self.nodes[i].restart_at = self.cycle;
    }

    /// Tells node `id` to drain.
    pub fn drain(&mut self, id: NodeId) {
        let i = self.index(id).expect("a simulated node");
        if let Some(g) = self.nodes[i].group.as_mut() {
            g.drain();
        }
    }

    /// Whether node `id` has drained and left.
    pub fn has_left(&self, id: NodeId) -> bool {
        self.index(id).is_some_and(|i| self.nodes[i].left)
    }

    /// The owner and epoch the database records for `track`.
    pub fn db_owner(&self, track: &str) -> Option<(NodeId, u64)> {
        self.db.owners.get(track).copied()
    }

    /// Records of `track` whose effect is not done yet.
    pub fn undone(&self, track: &str) -> usize {
        self.db.effects[track].iter().filter(|&&n| n == 0).count()
    }

    /// Adds `n` due records to `track`.
    pub fn add_records(&mut self, track: &str, n: usize) {
        let e = self.db.effects.get_mut(track).expect("a simulated track");
        e.extend(std::iter::repeat_n(0, n));
    }

    /// Whether the group has settled (see `run`), and if not, why.
    pub fn is_settled(&self) -> Result<(), String> {
        self.settled()
    }

    /// The group of node `id` (tests, benchmarks).
    pub fn group(&self, id: NodeId) -> Option<&Group> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.group.as_ref())
    }

    /// The group of node `id`, to change (tests).
    pub fn group_of_mut(&mut self, id: NodeId) -> Option<&mut Group> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .and_then(|n| n.group.as_mut())
    }

    fn note(&mut self, line: String) {
        if self.trace.len() >= TRACE_MAX {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{}] {line}", self.cycle));
    }

    fn failure(&self, message: String) -> SimFailure {
        SimFailure {
            seed: self.seed,
            cycle: self.cycle,
            message,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    fn heal(&mut self) {
        self.faults = false;
        self.healed = true;
        self.cut.clear();
        let cycle = self.cycle;
        for n in &mut self.nodes {
            n.paused_until = n.paused_until.min(cycle);
            n.restart_at = n.restart_at.min(cycle);
            n.db_back_at = n.db_back_at.min(cycle);
            n.hung_until = n.hung_until.min(cycle);
        }
        self.note("faults healed".into());
    }

    /// One cycle of the whole group.
    pub fn step(&mut self) -> Result<(), SimFailure> {
        self.cycle += 1;
        if self.faults {
            self.inject_faults();
        }
        self.restart_due();
        if self.rng.chance(self.config.arrivals) && self.faults {
            let t = track_name(self.rng.below(self.config.tracks as u64) as usize);
            self.db.effects.get_mut(&t).expect("track").push(0);
        }
        self.deliver_messages();
        self.finish_jobs()?;
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        for i in order {
            if self.runs(i) {
                let reachable = self.reaches_db(i);
                let group = self.nodes[i].group.as_mut().expect("runs");
                group.set_database(reachable);
                group.tick();
                self.collect(i);
            }
        }
        self.check_safety()
    }

    /// Node `id` cannot reach the database for `cycles` cycles.
    pub fn lose_database(&mut self, id: NodeId, cycles: u64) {
        let i = self.index(id).expect("a simulated node");
        self.nodes[i].db_back_at = self.cycle + cycles;
        self.report.db_outages += 1;
        self.note(format!("node {id} loses the database for {cycles} cycles"));
    }

    /// Node `id`'s database work hangs for `cycles` cycles while it goes
    /// on advertising that it reaches the database.
    pub fn hang(&mut self, id: NodeId, cycles: u64) {
        let i = self.index(id).expect("a simulated node");
        self.nodes[i].hung_until = self.cycle + cycles;
        self.report.hangs += 1;
        self.note(format!(
            "node {id}'s database work hangs for {cycles} cycles"
        ));
    }

    fn reaches_db(&self, i: usize) -> bool {
        self.nodes[i].db_back_at <= self.cycle
    }

    /// Whether node `i` is up and not paused.
    fn runs(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.group.is_some() && !n.left && n.paused_until <= self.cycle
    }

    fn inject_faults(&mut self) {
        let count = self.nodes.len() as u64;
        if self.rng.chance(self.config.crash) {
            let i = self.rng.below(count) as usize;
            if self.nodes[i].group.is_some() {
                let down = 1 + self.rng.below(3 * u64::from(self.config.missed_cycles));
                let n = &mut self.nodes[i];
                n.group = None;
                n.jobs.clear();
                n.restart_at = self.cycle + down;
                self.report.crashes += 1;
                let id = n.id;
                self.note(format!("node {id} crashes for {down} cycles"));
            }
        }
        if self.rng.chance(self.config.pause) {
            let i = self.rng.below(count) as usize;
            let length = 1 + self.rng.below(3 * u64::from(self.config.missed_cycles));
            self.nodes[i].paused_until = self.cycle + length;
            self.report.pauses += 1;
            let id = self.nodes[i].id;
            self.note(format!("node {id} paused for {length} cycles"));
        }
        if self.rng.chance(self.config.partition) {
            let a = self.rng.below(count) as NodeId + 1;
            let length = 1 + self.rng.below(4 * u64::from(self.config.missed_cycles));
            for b in 1..=count as NodeId {
                if b != a {
                    self.cut.insert((a.min(b), a.max(b)), self.cycle + length);
                }
            }
            self.note(format!("node {a} cut off for {length} cycles"));
        }
        if self.rng.chance(self.config.drain) {
            let i = self.rng.below(count) as usize;
            let n = &mut self.nodes[i];
            if n.role == Role::Active && !n.left {
                if let Some(g) = n.group.as_mut().filter(|g| !g.is_draining()) {
                    g.drain();
                    self.report.drains += 1;
                    let id = n.id;
                    self.note(format!("node {id} drains"));
                }
            }
        }
        if self.rng.chance(self.config.db_outage) {
            let id = self.rng.below(count) as NodeId + 1;
            let length = 1 + self.rng.below(3 * u64::from(self.config.missed_cycles));
            self.lose_database(id, length);
        }
        if self.rng.chance(self.config.hang) {
            let id = self.rng.below(count) as NodeId + 1;
            let length = 1 + self.rng.below(2 * u64::from(self.config.stuck_cycles));
            self.hang(id, length);
        }
        let cycle = self.cycle;
        self.cut.retain(|_, until| *until > cycle);
    }

    fn restart_due(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if (n.group.is_none() || n.left) && n.restart_at <= self.cycle {
                let n = &mut self.nodes[i];
                let joins = n.incarnation == 0 && i >= self.config.actives + self.config.standbys;
                n.incarnation += 1;
                n.paused_until = 0;
                n.left = false;
                n.jobs.clear();
                n.group = Some(boot(&self.config, n));
                let id = n.id;
                if joins {
                    self.report.joins += 1;
                    self.note(format!("node {id} joins"));
                } else {
                    self.note(format!("node {id} restarts"));
                }
            }
        }
    }

    fn cut_off(&self, a: NodeId, b: NodeId) -> bool {
        self.cut.contains_key(&(a.min(b), a.max(b)))
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        self.report.messages += 1;
        let copies = if !self.faults {
            1
        } else if self.rng.chance(self.config.loss) {
            0
        } else if self.rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.faults {
                self.rng.below(self.config.delay_max + 1)
            } else {
                self.rng.below(2)
            };
            self.net.push(Envelope {
                at: self.cycle + delay,
                from,
                to,
                message: message.clone(),
            });
        }
    }

    fn deliver_messages(&mut self) {
        let cycle = self.cycle;
        let mut due = Vec::new();
        let mut later = Vec::new();
        for e in std::mem::take(&mut self.net) {
            if e.at <= cycle {
                due.push(e);
            } else {
                later.push(e);
            }
        }
        self.net = later;
        for e in due {
            let Some(i) = self.index(e.to) else { continue };
            if self.cut_off(e.from, e.to) || self.nodes[i].group.is_none() {
                continue;
            }
            if !self.runs(i) {
                // A paused process reads its socket when it resumes.
                self.net.push(Envelope { at: cycle + 1, ..e });
                continue;
            }
            if let Message::Block(b) = &e.message {
                let line = format!("{} -> {}: block {} of {}", e.from, e.to, b.id, b.track);
                self.note(line);
            }
            self.nodes[i]
                .group
                .as_mut()
                .expect("runs")
                .handle(e.from, e.message);
            self.collect(i);
        }
    }

    fn index(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Takes node `i`'s outputs: messages onto the network, commands into
    /// its job list, finished a little later.
    fn collect(&mut self, i: usize) {
        let outputs = self.nodes[i].group.as_mut().expect("runs").take();
        let from = self.nodes[i].id;
        for output in outputs {
            match output {
                Output::Advertise(advert) => {
                    for j in 0..self.nodes.len() {
                        let to = self.nodes[j].id;
                        if to != from {
                            self.send(from, to, Message::Advert(advert.clone()));
                        }
                    }
                }
                Output::Send { to, message } => self.send(from, to, message),
                Output::Report(text) => self.note(format!("node {from}: {text}")),
                Output::Command(command) => {
                    let mut due = self.cycle + self.rng.below(3);
                    if matches!(command, Command::Execute(_))
                        && self.faults
                        && self.rng.chance(self.config.slow_commit)
                    {
                        due += 1 + self.rng.below(u64::from(self.config.stuck_cycles));
                        self.report.slow_commits += 1;
                    }
                    if let Command::Leave = command {
                        // Back after its maintenance; once the faults have
                        // healed, at once (the group must settle whole).
                        // A calm run's drained node stays away.
                        let back = if self.faults {
                            self.cycle
                                + 1
                                + self.rng.below(4 * u64::from(self.config.missed_cycles))
                        } else if self.healed {
                            self.cycle + 1
                        } else {
                            u64::MAX
                        };
                        let n = &mut self.nodes[i];
                        n.left = true;
                        n.restart_at = back;
                        self.note(format!("node {from} leaves"));
                        continue;
                    }
                    self.nodes[i].jobs.push(Job { due, command });
                }
            }
        }
    }

    fn finish_jobs(&mut self) -> Result<(), SimFailure> {
        for i in 0..self.nodes.len() {
            // Without the database the node's threads retry: its work
            // waits, it is not lost.
            if !self.runs(i) || !self.reaches_db(i) || self.nodes[i].hung_until > self.cycle {
                continue;
            }
            let cycle = self.cycle;
            let (now, later): (Vec<Job>, Vec<Job>) = std::mem::take(&mut self.nodes[i].jobs)
                .into_iter()
                .partition(|j| j.due <= cycle);
            self.nodes[i].jobs = later;
            for job in now {
                self.do_job(i, job.command)?;
                self.collect(i);
            }
        }
        Ok(())
    }

    fn do_job(&mut self, i: usize, command: Command) -> Result<(), SimFailure> {
        let id = self.nodes[i].id;
        match command {
            Command::RecordClaim { track, known_epoch } => {
                let current = self.db.owners.get(&track).map_or(0, |&(_, e)| e);
                let result = if current == known_epoch {
                    self.db.owners.insert(track.clone(), (id, current + 1));
                    self.note(format!("node {id} owns {track} at epoch {}", current + 1));
                    Ok(current + 1)
                } else {
                    self.note(format!(
                        "node {id} loses {track}: epoch {current}, not {known_epoch}"
                    ));
                    Err(current)
                };
                self.group_mut(i).claim_recorded(&track, result);
            }
            Command::Run { track, epoch } => {
                if self.db.owners.get(&track).map_or(0, |&(_, e)| e) != epoch {
                    self.note(format!("node {id}: {track} epoch {epoch} is stale"));
                    self.group_mut(i).lost(&track, epoch);
                    return Ok(());
                }
                let block_records = self.config.block_records;
                let due: Vec<u32> = self.db.effects[&track]
                    .iter()
                    .enumerate()
                    .filter(|(_, &n)| n == 0)
                    .map(|(r, _)| r as u32)
                    .collect();
                let payloads: Vec<Vec<u8>> = due
                    .chunks(block_records)
                    .map(|c| c.iter().flat_map(|r| r.to_le_bytes()).collect())
                    .collect();
                // Sometimes in two parts, as a long gather hands them over.
                let split = self.rng.below(payloads.len() as u64 + 1) as usize;
                let (first, second) = payloads.split_at(split);
                let (first, second) = (first.to_vec(), second.to_vec());
                let group = self.group_mut(i);
                group.gathered(&track, epoch, first, false);
                group.gathered(&track, epoch, second, true);
            }
            Command::FinishRun { track, epoch, .. } => {
                let measure = self.measure(&track);
                self.group_mut(i).run_finished(&track, epoch, measure)
            }
            Command::Release { .. } | Command::CheckBundle | Command::Leave => {}
            Command::Execute(block) => {
                let outcome = self.commit(id, &block)?;
                self.group_mut(i).executed(block.id, outcome);
            }
        }
        Ok(())
    }

    /// What a run of `track` costs, with the configured noise.
    fn measure(&mut self, track: &str) -> Option<RunMeasure> {
        let size = self.track_cost(track)?;
        let noise = u64::from(self.config.cost_noise);
        let percent = 100 - noise + self.rng.below(2 * noise + 1);
        Some(RunMeasure {
            records: size * percent / 100,
            millis: 1 + size / 100,
        })
    }

    /// The configured cost of `track` (its number picks from the list).
    fn track_cost(&self, track: &str) -> Option<u64> {
        let costs = &self.config.track_costs;
        let t: usize = track.strip_prefix("track")?.parse().ok()?;
        (!costs.is_empty()).then(|| costs[t % costs.len()])
    }

    /// What each running active node owns and what it costs, as the
    /// owners measured it (the balance check's view).
    pub fn holdings(&self) -> Vec<Holding> {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Active && !n.left)
            .filter_map(|n| {
                let g = n.group.as_ref()?;
                let views = g.tracks();
                let tracks = g
                    .owned()
                    .into_iter()
                    .map(|(t, _)| {
                        let cost = views.iter().find(|v| v.name == t).map_or(1, |v| v.cost);
                        (t, cost, true)
                    })
                    .collect();
                Some(Holding {
                    node: n.id,
                    may_move: true,
                    tracks,
                    refuses: Default::default(),
                })
            })
            .collect()
    }

    fn group_mut(&mut self, i: usize) -> &mut Group {
        self.nodes[i].group.as_mut().expect("job of a running node")
    }

    /// A block's transaction: the epoch check, then each record's change
    /// conditional on its state.
    fn commit(&mut self, worker: NodeId, block: &Block) -> Result<Outcome, SimFailure> {
        let current = self.db.owners.get(&block.track).map_or(0, |&(_, e)| e);
        if current != block.epoch {
            self.db.fenced += 1;
            self.note(format!(
                "node {worker}: block {} of {} fenced (epoch {} < {current})",
                block.id, block.track, block.epoch
            ));
            return Ok(Outcome::Fenced);
        }
        if self.faults && self.rng.chance(self.config.failed_commit) {
            self.report.failed_commits += 1;
            self.note(format!(
                "node {worker}: block {} of {} failed",
                block.id, block.track
            ));
            return Ok(Outcome::Failed("the commit failed".into()));
        }
        if self.faults && self.rng.chance(self.config.failed_commit_answer_lost) {
            // Nothing was applied; the worker decides the block again.
            self.report.failed_commits += 1;
            self.note(format!(
                "node {worker}: block {}'s commit failed and its answer was lost; decided again",
                block.id
            ));
        }
        self.db.commits += 1;
        self.apply_block(block, true);
        self.note(format!(
            "node {worker}: block {} of {} committed",
            block.id, block.track
        ));
        if self.faults && self.rng.chance(self.config.lost_commit_answer) {
            // The answer was lost: the worker cannot tell whether it
            // committed and decides the block again, which must change
            // nothing.
            self.report.lost_answers += 1;
            self.note(format!(
                "node {worker}: the answer to block {}'s commit was lost; decided again",
                block.id
            ));
            self.apply_block(block, !self.config.mutant_retry_ignores_seq);
        }
        Ok(Outcome::Done)
    }

    /// Each record's change, conditional on its state (`conditional`) as
    /// the store's sequence numbers make it, or not (the mutant).
    fn apply_block(&mut self, block: &Block, conditional: bool) {
        let effects = self.db.effects.get_mut(&block.track).expect("track");
        for r in block.payload.chunks(4) {
            let r = u32::from_le_bytes(r.try_into().expect("4 bytes")) as usize;
            if effects[r] == 0 || !conditional {
                effects[r] += 1;
            }
        }
    }

    /// At most one node holds a track under its current epoch, and it is
    /// the one the database names; no effect happened twice.
    fn check_safety(&self) -> Result<(), SimFailure> {
        for (track, &(owner, epoch)) in &self.db.owners {
            let holders: Vec<NodeId> = self
                .nodes
                .iter()
                .filter_map(|n| {
                    let g = n.group.as_ref()?;
                    g.owned()
                        .iter()
                        .any(|(t, e)| t == track && *e == epoch)
                        .then_some(n.id)
                })
                .collect();
            if holders.len() > 1 || holders.iter().any(|&h| h != owner) {
                return Err(self.failure(format!(
                    "track {track} epoch {epoch} (database owner {owner}) held by {holders:?}"
                )));
            }
        }
        for (track, effects) in &self.db.effects {
            if let Some(r) = effects.iter().position(|&n| n > 1) {
                return Err(self.failure(format!("record {r} of {track} done twice")));
            }
        }
        Ok(())
    }

    /// Every track owned by exactly one running node under the database's
    /// epoch, every node agreeing on the master, every record done.
    fn settled(&self) -> Result<(), String> {
        let running: Vec<&SimNode> = self
            .nodes
            .iter()
            .filter(|n| n.group.is_some() && !n.left)
            .collect();
        for t in 0..self.config.tracks {
            let track = track_name(t);
            let Some(&(owner, epoch)) = self.db.owners.get(&track) else {
                return Err(format!("{track} was never claimed"));
            };
            let holders = running
                .iter()
                .filter(|n| {
                    n.group
                        .as_ref()
                        .is_some_and(|g| g.owned().iter().any(|(o, e)| *o == track && *e == epoch))
                })
                .count();
            if holders != 1 || !running.iter().any(|n| n.id == owner) {
                return Err(format!(
                    "{track}: {holders} holders of epoch {epoch}, database owner {owner}"
                ));
            }
            let undone = self.db.effects[&track].iter().filter(|&&n| n == 0).count();
            if undone > 0 {
                return Err(format!("{track}: {undone} records not done"));
            }
        }
        if running.iter().any(|n| n.role == Role::Active) {
            if let Some(n) = running.iter().find(|n| {
                n.role == Role::Standby && n.group.as_ref().is_some_and(|g| !g.owned().is_empty())
            }) {
                return Err(format!(
                    "standby {} keeps tracks while active nodes run",
                    n.id
                ));
            }
        }
        if self.config.rebalance_threshold > 0 && !self.config.track_costs.is_empty() {
            balanced(&self.holdings(), self.config.rebalance_threshold)?;
        }
        let expected = running
            .iter()
            .filter(|n| n.role == Role::Active)
            .map(|n| n.id)
            .min();
        for n in &running {
            let master = n.group.as_ref().and_then(Group::master);
            if expected.is_some() && master != expected {
                return Err(format!(
                    "node {} sees master {master:?}, not {expected:?}",
                    n.id
                ));
            }
        }
        Ok(())
    }
}

pub fn track_name(t: usize) -> String {
    format!("track{t}")
}

/// A node's protocol value at (re)start: ready at once with the bundle of
/// every track (the simulated join always succeeds).
fn boot(config: &SimConfig, node: &SimNode) -> Group {
    let mut settings = Settings::new(node.id, node.role);
    settings.missed_cycles = config.missed_cycles;
    settings.claim_counter = config.claim_counter;
    settings.capacity = config.capacity;
    settings.stuck_cycles = config.stuck_cycles;
    settings.incarnation = node.incarnation;
    settings.rebalance_threshold = config.rebalance_threshold;
    settings.rebalance_every = config.rebalance_every;
    settings.rebalance_cooldown = config.rebalance_cooldown;
    settings.mutant_no_hysteresis = config.mutant_no_hysteresis;
    let mut group = Group::new(settings);
    group.ready(1, (0..config.tracks).map(track_name));
    group
}
