//! One peer of a group (`trackc node --config node.toml`).
//!
//! Threads, each owning one thing:
//! - the protocol thread owns the `Group`: it opens incoming frames
//!   (HMAC, replay), ticks every cycle, seals and routes what the protocol
//!   says, and publishes the status;
//! - the owner thread does the database work of owned tracks (`work`);
//! - `capacity` block workers decide and commit blocks (`work`);
//! - the delivery thread delivers the outbox while this node is master;
//! - the API thread does the HTTP API's database work (`api`);
//! - a tokio runtime carries the network (`transport`) and the HTTP API.
//!
//! Shutdown is one path: `Shared::stop` (SIGTERM, or the protocol's
//! `Leave` after a drain); the block in hand is finished first.

pub mod api;
mod auth_limit;
pub mod client;
pub mod config;
pub mod metrics;
pub mod standalone;
pub mod tls;
mod transport;
pub mod work;

use crate::clock::now_micros;
use crate::db::{self, DbOptions, DbUrl, Health};
use crate::deliver::{Deliverer, DeliveryConfig};
use crate::error::{Error, Result};
use crate::group::protocol::{
    Block, BlockId, Command, Group, Message, NodeId, Outcome, Output, RunMeasure,
};
use crate::group::wire::{Opened, Opener, Rejected, Sealer, ADVERT_BYTES_MAX, BROADCAST};
use crate::group::wire::{PROTOCOL_OLDEST, PROTOCOL_VERSION};
use config::NodeConfig;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use transport::Outgoing;
use work::{Bundle, OwnerThread};

/// How often a node says its advertisements are too large to send: once
/// a minute is enough to be seen in a log, not to flood it.
const ADVERT_TOO_BIG_REPEAT: Duration = Duration::from_secs(60);

/// What the protocol thread is told.
pub enum Input {
    /// A frame from the network; the UDP sender's address if by UDP.
    Frame(Vec<u8>, Option<SocketAddr>),
    Claim {
        track: String,
        result: std::result::Result<u64, u64>,
    },
    Gathered {
        track: String,
        epoch: u64,
        payloads: Vec<Vec<u8>>,
        last: bool,
    },
    Lost {
        track: String,
        epoch: u64,
    },
    RunFinished {
        track: String,
        epoch: u64,
        measure: Option<RunMeasure>,
    },
    Executed {
        id: BlockId,
        outcome: Outcome,
    },
    Bundle {
        hash: u64,
        tracks: Vec<String>,
    },
    /// `trackc drain ID`.
    Drain(NodeId),
    /// `trackc move TRACK --to NODE`: what was done, or why not.
    Move {
        track: String,
        to: NodeId,
        reply: tokio::sync::oneshot::Sender<std::result::Result<String, String>>,
    },
    /// The tracks whose source database this node cannot read now.
    Unreadable(Vec<String>),
}

/// State the threads share.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    pub master: AtomicBool,
    /// Blocks this node has queued or in flight as an owner.
    pub outstanding: AtomicUsize,
    pub bundle_hash: AtomicU64,
    /// Events whose key was no record of a track's source (done, with
    /// nothing decided), since the node started.
    pub unknown_keys: AtomicU64,
    /// The status JSON, renewed every cycle.
    pub status: Mutex<serde_json::Value>,
    /// Record steps and run durations, for `/metrics`.
    pub metrics: metrics::NodeMetrics,
    /// The source databases the loaded bundle reads, each with the tracks
    /// that read it (the source watcher checks them).
    pub source_tracks: Mutex<std::collections::BTreeMap<String, Vec<String>>>,
}

/// Runs a node until `stop` is set or it has drained. When `reload` is
/// set (SIGHUP), node.toml is read again: the group secrets and the TLS
/// files take effect at once; other keys need a restart and say so.
pub fn run_node(config: NodeConfig, stop: Arc<AtomicBool>, reload: Arc<AtomicBool>) -> Result<()> {
    let url = DbUrl::parse(&config.database)?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::ServerTls::load)
        .transpose()?
        .map(Arc::new);
    // One `Health` for every connection of the node: an outage is logged
    // once, and the protocol hears of it every cycle.
    let options = DbOptions {
        health: Health::new(&format!("node {}", config.id)),
        ..DbOptions::default()
    };
    let health = options.health.clone();
    let open = || db::open_with(&url, &options);
    // Join: the database is reachable and the current bundle compiles.
    let mut store = open()?;
    let jit = trackc_compiler::jit::Jit::new().map_err(|e| Error::Config(e.to_string()))?;
    let bundle = Bundle::load(store.as_mut(), &jit)?;
    let shared = Arc::new(Shared::default());
    shared.bundle_hash.store(bundle.hash, Ordering::SeqCst);
    let (inputs_tx, inputs) = channel::<Input>();
    let mut group = Group::new(config.settings(now_micros() as u64));
    group.ready(bundle.hash, bundle.names());

    let (owner_tx, owner_rx) = channel::<Command>();
    let mut owner = OwnerThread::new(
        config.id,
        store,
        jit,
        bundle,
        inputs_tx.clone(),
        shared.clone(),
    );
    owner.history_days = config.history.days;
    owner.databases = config.databases.clone();
    owner.share_source_tracks();
    let mut threads = vec![spawn("owner", move || owner.serve(owner_rx))?];
    {
        let (databases, inputs, shared) =
            (config.databases.clone(), inputs_tx.clone(), shared.clone());
        threads.push(spawn("sources", move || {
            work::watch_sources(databases, inputs, shared)
        })?);
    }
    let (block_tx, block_rx) = channel::<Block>();
    let block_rx = Arc::new(Mutex::new(block_rx));
    for n in 0..config.capacity {
        let (store, rx, tx, sh) = (open()?, block_rx.clone(), inputs_tx.clone(), shared.clone());
        let (id, history) = (config.id, config.history.clone());
        threads.push(spawn(&format!("worker {n}"), move || {
            work::work_blocks(store, rx, tx, sh, id, history)
        })?);
    }
    let deliverer = Deliverer::new(DeliveryConfig {
        smtp: config.smtp.clone(),
        from: config.smtp_from.clone(),
        templates: config.templates.clone().map(Into::into),
        ..DeliveryConfig::default()
    })?;
    let (mut store, sh, cycle) = (open()?, shared.clone(), config.cycle);
    threads.push(spawn("delivery", move || {
        while !sh.stop.load(Ordering::SeqCst) {
            if sh.master.load(Ordering::SeqCst) {
                if let Err(e) = deliverer.deliver_due(store.as_mut(), &sh.stop, Some(cycle)) {
                    eprintln!("delivery: {e}");
                }
            } else {
                // An idle node still learns each cycle whether it reaches
                // the database (the answer goes to `Health`).
                let _ = store.ping();
            }
            std::thread::sleep(cycle);
        }
    })?);
    let (api_tx, api_rx) = std::sync::mpsc::sync_channel::<api::ApiJob>(api::API_JOBS_MAX);
    let (store, owner_jobs) = (open()?, owner_tx.clone());
    let databases = config.databases.clone();
    threads.push(spawn("api", move || {
        api::serve_jobs(store, api_rx, owner_jobs, databases, true)
    })?);

    let (net_tx, net_rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the network runtime: {e}")))?;
    let listen = config.listen;
    let transport_inputs = inputs_tx.clone();
    let http = rt
        .block_on(tokio::net::TcpListener::bind(config.http))
        .map_err(|e| Error::Io(format!("`http` = {}: {e}", config.http)))?;
    let context = Arc::new(api::ApiContext {
        config: config.clone(),
        auth: Default::default(),
        shared: shared.clone(),
        jobs: api_tx,
        inputs: Mutex::new(inputs_tx.clone()),
        sessions: Default::default(),
        standalone: false,
    });
    let (bound_tx, bound_rx) = channel::<std::io::Result<()>>();
    let api_tls = tls.clone();
    let net_thread = spawn("network", move || {
        rt.block_on(async move {
            tokio::spawn(api::serve_http(http, context, api_tls));
            transport::run(listen, transport_inputs, net_rx, bound_tx).await;
        })
    })?;
    bound_rx
        .recv()
        .map_err(|_| Error::Io("the network thread ended".into()))?
        .map_err(|e| Error::Io(format!("`listen` = {listen}: {e}")))?;
    drop(inputs_tx);

    let mut protocol = ProtocolThread {
        group,
        sealer: Sealer::new(&config.secret, config.id, now_micros() as u64)
            .speaking(config.protocol),
        opener: {
            let mut opener = Opener::new(&config.secret, config.id);
            opener.set_secrets(&config.secret, config.secret_previous.as_deref());
            opener
        },
        tls,
        reload,
        addrs: HashMap::new(),
        versions: BTreeMap::new(),
        unreadable: BTreeMap::new(),
        advert_bytes: 0,
        advert_too_big_said: None,
        rejected: BTreeMap::new(),
        accepted: 0,
        config,
        net: net_tx,
        owner: owner_tx,
        blocks: block_tx,
        shared: shared.clone(),
        health: health.clone(),
    };
    protocol.serve(&inputs, &stop);
    shared.stop.store(true, Ordering::SeqCst);
    // Threads waiting for the database stop waiting.
    health.give_up();
    drop(protocol);
    for t in threads {
        let _ = t.join();
    }
    let _ = net_thread.join();
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::Io(format!("cannot start the {name} thread: {e}")))
}

struct ProtocolThread {
    group: Group,
    sealer: Sealer,
    opener: Opener,
    /// Peers' addresses, learned from their advertisements.
    addrs: HashMap<NodeId, SocketAddr>,
    /// The protocol version of each peer's last authentic frame.
    versions: BTreeMap<NodeId, u8>,
    /// Peers heard speaking a version this build does not read (`None`
    /// when the sender id could not be read), with when last heard.
    unreadable: BTreeMap<(Option<NodeId>, u8), Instant>,
    /// The size of the last advertisement sent, and when this node last
    /// said that one was too large for a datagram.
    advert_bytes: usize,
    advert_too_big_said: Option<Instant>,
    rejected: BTreeMap<&'static str, u64>,
    accepted: u64,
    config: NodeConfig,
    net: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    owner: Sender<Command>,
    blocks: Sender<Block>,
    shared: Arc<Shared>,
    health: Arc<Health>,
    /// The HTTP API's TLS, replaced on reload.
    tls: Option<Arc<tls::ServerTls>>,
    /// Set by SIGHUP: read node.toml again.
    reload: Arc<AtomicBool>,
}

impl ProtocolThread {
    /// Reads node.toml again (SIGHUP) and applies the group secrets and
    /// the TLS files, all or nothing: a file that cannot be read keeps
    /// the running configuration, and the log says why.
    fn reload_config(&mut self) {
        let id = self.config.id;
        let Some(path) = self.config.path.clone() else {
            return;
        };
        let new = match NodeConfig::read(&path) {
            Ok(new) => new,
            Err(e) => {
                eprintln!("node {id}: SIGHUP: kept the running configuration: {e}");
                return;
            }
        };
        if let (Some(tls), Some(files)) = (&self.tls, &new.tls) {
            if let Err(e) = tls.reload(files) {
                eprintln!("node {id}: SIGHUP: kept the running configuration: {e}");
                return;
            }
        }
        self.sealer.set_secret(&new.secret);
        self.opener
            .set_secrets(&new.secret, new.secret_previous.as_deref());
        let restart = self.config.needs_restart_for(&new);
        eprintln!(
            "node {id}: SIGHUP: reloaded {}{}{}",
            if self.tls.is_some() {
                "the TLS files and "
            } else {
                ""
            },
            if new.secret_previous.is_some() {
                "the group secrets (and the previous one)"
            } else {
                "the group secret"
            },
            if restart.is_empty() {
                String::new()
            } else {
                format!(
                    "; changed {} only at the next start",
                    restart
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        self.config.secret = new.secret;
        self.config.secret_previous = new.secret_previous;
        self.config.tls = new.tls;
    }

    fn serve(&mut self, inputs: &Receiver<Input>, stop: &AtomicBool) {
        let cycle = self.config.cycle;
        let mut next_tick = Instant::now();
        loop {
            if stop.load(Ordering::SeqCst) || self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if self.reload.swap(false, Ordering::SeqCst) {
                self.reload_config();
            }
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match inputs.recv_timeout(wait) {
                Ok(input) => self.input(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= next_tick {
                self.group.set_database(self.health.is_reachable());
                self.group.tick();
                // After a pause (SIGSTOP), the next cycle starts now, not
                // in a burst of missed ones.
                next_tick = (next_tick + cycle).max(now);
                self.publish_status();
            }
            for output in self.group.take() {
                self.route(output);
            }
            self.shared
                .outstanding
                .store(self.group.blocks_outstanding(), Ordering::SeqCst);
            self.shared
                .master
                .store(self.group.is_master(), Ordering::SeqCst);
        }
    }

    fn input(&mut self, input: Input) {
        let g = &mut self.group;
        match input {
            Input::Frame(frame, from_addr) => match self.opener.open(&frame) {
                Ok(Opened {
                    sender,
                    version,
                    message,
                }) => {
                    self.accepted += 1;
                    if let (Some(addr), Message::Advert(_)) = (from_addr, &message) {
                        self.addrs.insert(sender, addr);
                    }
                    self.versions.insert(sender, version);
                    self.unreadable.retain(|&(id, _), _| id != Some(sender));
                    g.handle(sender, message);
                }
                Err(why) => {
                    *self.rejected.entry(why.name()).or_default() += 1;
                    if let Rejected::Version { sender, version } = why {
                        self.heard_unreadable(sender, version);
                    }
                }
            },
            Input::Claim { track, result } => g.claim_recorded(&track, result),
            Input::Gathered {
                track,
                epoch,
                payloads,
                last,
            } => g.gathered(&track, epoch, payloads, last),
            Input::Lost { track, epoch } => g.lost(&track, epoch),
            Input::RunFinished {
                track,
                epoch,
                measure,
            } => g.run_finished(&track, epoch, measure),
            Input::Executed { id, outcome } => g.executed(id, outcome),
            Input::Bundle { hash, tracks } => g.set_bundle(hash, tracks),
            Input::Unreadable(tracks) => g.set_unreadable(tracks),
            Input::Move { track, to, reply } => {
                let _ = reply.send(g.ask_move(&track, to));
            }
            Input::Drain(id) if id == self.config.id => g.drain(),
            Input::Drain(id) => {
                if let Some(&addr) = self.addrs.get(&id) {
                    let frame = self.sealer.seal(id, &Message::Drain);
                    let _ = self.net.send(Outgoing::Tcp(addr, frame));
                }
            }
        }
    }

    /// Names a peer this node cannot read, once (and again after it has
    /// been quiet for a while), instead of counting its frames as noise.
    fn heard_unreadable(&mut self, sender: Option<NodeId>, version: u8) {
        let now = Instant::now();
        let last = self.unreadable.insert((sender, version), now);
        if last.is_none_or(|t| now.duration_since(t) > self.unreadable_memory()) {
            let who = sender.map_or("a peer".to_string(), |id| format!("node {id}"));
            eprintln!(
                "node {}: {who} speaks protocol {version}, this node {} (it reads {PROTOCOL_OLDEST} to \
                 {PROTOCOL_VERSION}): its frames are dropped until both speak a common version \
                 (docs/group.md, Upgrades)",
                self.config.id, self.config.protocol
            );
        }
    }

    /// Says, once a minute, that this node's adverts are too large to be
    /// sent: its peers cannot hear it and will take its tracks. A deploy
    /// to a group refuses a bundle that could make one
    /// (`wire::advert_bytes_at_most`); a bundle deployed by a build before
    /// that check, or by `trackc serve`, may not have been.
    fn say_if_advert_too_big(&mut self) {
        let bytes = self.advert_bytes;
        let said = self.advert_too_big_said;
        if bytes <= ADVERT_BYTES_MAX || said.is_some_and(|t| t.elapsed() < ADVERT_TOO_BIG_REPEAT) {
            return;
        }
        self.advert_too_big_said = Some(Instant::now());
        eprintln!(
            "node {}: its advertisement takes {bytes} bytes, more than the {ADVERT_BYTES_MAX} \
             one UDP datagram carries: peers do not hear it and will take its tracks; deploy \
             fewer tracks or shorter names (docs/group.md, Limits)",
            self.config.id
        );
    }

    /// How long a peer of an unreadable version stays named after its last
    /// frame: as long as a silent peer stays in the group's view.
    fn unreadable_memory(&self) -> Duration {
        self.config.cycle * (self.config.missed_cycles + 1)
    }

    fn route(&mut self, output: Output) {
        match output {
            Output::Advertise(advert) => {
                let message = Message::Advert(advert);
                for &addr in &self.config.peers {
                    let frame = self.sealer.seal(BROADCAST, &message);
                    self.advert_bytes = frame.len();
                    let _ = self.net.send(Outgoing::Udp(addr, frame));
                }
                self.say_if_advert_too_big();
            }
            Output::Send { to, message } => {
                if let Some(&addr) = self.addrs.get(&to) {
                    let frame = self.sealer.seal(to, &message);
                    let _ = self.net.send(Outgoing::Tcp(addr, frame));
                }
            }
            Output::Report(text) => eprintln!("node {}: {text}", self.config.id),
            Output::Command(Command::Execute(block)) => {
                let _ = self.blocks.send(block);
            }
            Output::Command(Command::Leave) => {
                eprintln!("node {}: drained, leaving", self.config.id);
                self.shared.stop.store(true, Ordering::SeqCst);
            }
            Output::Command(command) => {
                let _ = self.owner.send(command);
            }
        }
    }

    fn publish_status(&mut self) {
        let memory = self.unreadable_memory();
        self.unreadable.retain(|_, t| t.elapsed() <= memory);
        let mut nodes = serde_json::to_value(self.group.nodes()).expect("node views encode");
        for n in nodes.as_array_mut().into_iter().flatten() {
            let id = n["id"].as_u64();
            let version = if id == Some(self.config.id) {
                Some(self.config.protocol)
            } else {
                id.and_then(|id| self.versions.get(&id).copied())
            };
            n["protocol"] = serde_json::json!(version);
        }
        let unreadable: Vec<_> = self
            .unreadable
            .keys()
            .map(|&(node, protocol)| serde_json::json!({"node": node, "protocol": protocol}))
            .collect();
        let status = serde_json::json!({
            "node": self.config.id,
            "protocol": {
                "speaks": self.config.protocol,
                "reads": [PROTOCOL_OLDEST, PROTOCOL_VERSION],
                "unreadable_peers": unreadable,
                "advert_bytes": self.advert_bytes,
                "advert_bytes_max": ADVERT_BYTES_MAX,
            },
            "database": {
                "reachable": self.health.is_reachable(),
                "unreachable_for_seconds": self.health.unreachable_for().map(|d| d.as_secs_f64()),
                "error": self.health.last_error(),
                "retries": self.health.retries(),
            },
            "nodes": nodes,
            "tracks": self.group.tracks(),
            "rebalance": self.group.rebalance_view(),
            "metrics": {
                "frames_accepted": self.accepted,
                "frames_rejected": self.rejected,
                "blocks_outstanding": self.group.blocks_outstanding(),
                "blocks_executed": self.group.block_counts().executed,
                "blocks_refused": self.group.block_counts().refused,
                "events_unknown_keys": self.shared.unknown_keys.load(Ordering::Relaxed),
            },
        });
        *self.shared.status.lock().expect("status") = status;
    }
}
