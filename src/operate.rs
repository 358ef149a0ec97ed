//! `trackc run`, `trackc outbox` and `trackc demo`: the runtime on one
//! node.

use crate::group_cli::Place;
use crate::{usage, UsageError};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trackc_compiler::jit::Jit;
use trackc_runtime::bundle::{self, LoadedTrack};
use trackc_runtime::db::{self, Actor, AuditAction, AuditEntry, DbUrl, Store};
use trackc_runtime::deliver::{Deliverer, DeliveryConfig, DeliveryStats};
use trackc_runtime::engine;
use trackc_runtime::run::{Progress, RunStats, Runner, BLOCK_RECORDS};

#[derive(clap::Args)]
pub struct RunArgs {
    /// `sqlite:PATH` (the default: sqlite:trackc.db) or `postgres://USER@HOST/DB`.
    #[arg(long, value_name = "URL", default_value = "sqlite:trackc.db")]
    db: String,
    /// Run every track once now (with chained steps and the events raised), then exit.
    #[arg(long)]
    once: bool,
    /// `CREATE TABLE` statements for field types (default: `schema` of the files'
    /// trackc.toml, else schema.sql in a directory given); `NAME=FILE.sql` gives a source
    /// database's (default: its `schema` in trackc.toml).
    #[arg(long, value_name = "[NAME=]FILE.sql")]
    schema: Vec<String>,
    /// A source database tracks read with `source from NAME`: NAME=URL (repeatable;
    /// sqlite:PATH or postgres://…; opened read-only, never written).
    #[arg(long = "source-db", value_name = "NAME=URL")]
    source_db: Vec<String>,
    /// Move records out of a step the new version removes: TRACK.OLD_STEP=NEW_STEP.
    #[arg(long = "map", value_name = "T.OLD=NEW")]
    map: Vec<String>,
    /// Records per block.
    #[arg(long, default_value_t = BLOCK_RECORDS)]
    block: usize,
    /// Keep no decision history (`trackc why` then has nothing to show).
    #[arg(long)]
    no_history: bool,
    /// Decisions older than this are pruned (0: kept forever).
    #[arg(long, value_name = "DAYS", default_value_t = trackc_runtime::db::HISTORY_DAYS_DEFAULT)]
    history_days: i64,
    /// Keep no decision history for this track (repeatable).
    #[arg(long, value_name = "TRACK")]
    no_history_for: Vec<String>,
    /// Only write the outbox; deliver nothing (another process delivers).
    #[arg(long)]
    no_deliver: bool,
    #[command(flatten)]
    delivery: DeliveryArgs,
    /// Track files, or directories of them [default: the tracks deployed in the database,
    /// as `trackc rollback` or a group left them].
    #[arg(value_name = "DIR|FILES")]
    paths: Vec<PathBuf>,
}

/// How the outbox is delivered (`trackc run`, `trackc outbox deliver`).
#[derive(clap::Args)]
pub struct DeliveryArgs {
    /// SMTP server for `email` actions: smtp://HOST:PORT (plain), smtp://HOST?tls=required,
    /// smtps://USER:PASS@HOST. Without it e-mails wait in the outbox.
    #[arg(long, value_name = "URL")]
    smtp: Option<String>,
    /// The From of every e-mail.
    #[arg(
        long,
        value_name = "ADDRESS",
        default_value = "trackc <trackc@localhost>"
    )]
    smtp_from: String,
    /// Folder of e-mail templates: NAME.txt (first line `Subject: …`), optional NAME.html
    /// [default: ./templates if it exists].
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// Time limit of one delivery attempt (an HTTP request, an SMTP exchange).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    delivery_timeout: Duration,
    /// Attempts before a failing delivery is parked.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_attempts: i64,
    /// Wait before the first retry; it doubles with each attempt, up to 1h.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    retry_backoff: Duration,
}

impl DeliveryArgs {
    fn config(&self) -> DeliveryConfig {
        let default_templates = PathBuf::from("templates");
        DeliveryConfig {
            smtp: self.smtp.clone(),
            from: self.smtp_from.clone(),
            templates: self
                .templates
                .clone()
                .or_else(|| default_templates.is_dir().then_some(default_templates)),
            timeout: self.delivery_timeout,
            max_attempts: self.max_attempts,
            backoff: self.retry_backoff,
            ..DeliveryConfig::default()
        }
    }
}

/// `500ms`, `10s`, `2m`, `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write 500ms, 10s, 2m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: write a whole number and a unit (500ms, 10s, 2m, 1h)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{text}`: the unit is one of ms, s, m, h")),
    }
}

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
    /// List outbox rows, oldest first, with their attempts and last error.
    List {
        #[arg(long, value_name = "URL", default_value = "sqlite:trackc.db")]
        db: String,
        /// Only rows in this state.
        #[arg(long, value_parser = ["pending", "sending", "delivered", "parked"])]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Deliver what is due now, then exit.
    Deliver {
        #[arg(long, value_name = "URL", default_value = "sqlite:trackc.db")]
        db: String,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// Put parked rows back in the queue, due now: one by id, or all.
    Retry {
        #[command(flatten)]
        target: crate::group_cli::Target,
        #[arg(value_name = "ID", required_unless_present = "all")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo data goes.
    #[arg(long, value_name = "URL", default_value = "sqlite:trackc-demo.db")]
    db: String,
    /// Contacts to generate (the first time).
    #[arg(long, default_value_t = 100_000)]
    contacts: u64,
    /// Then serve the web console of the demo's database (until Ctrl-C).
    #[arg(long)]
    serve: bool,
    #[command(flatten)]
    console: crate::serve_cli::ServeOptions,
}

/// The source databases of `--source-db NAME=URL`, opened read-only, and
/// the schema each is checked against: `--schema NAME=FILE`, else the
/// `schema` of `[databases.NAME]` in the files' trackc.toml; the dialect is
/// the URL's.
pub(crate) fn source_databases(
    given: &[String],
    schemas: &[(String, PathBuf)],
    paths: &[PathBuf],
) -> Result<(Vec<bundle::SourceSchema>, db::SourceDbs), UsageError> {
    let project = match paths.first() {
        Some(p) => crate::project::Project::find(p).map_err(usage)?,
        None => None,
    };
    let mut databases = Vec::new();
    let mut open = db::SourceDbs::new();
    for value in given {
        let Some((name, url)) = value.split_once('=') else {
            return Err(usage(format!("--source-db {value}: write NAME=URL")));
        };
        if open.contains_key(name) {
            return Err(usage(format!("--source-db {name}: given twice")));
        }
        let parsed = DbUrl::parse(url).map_err(|e| usage(format!("--source-db {name}: {e}")))?;
        let schema_path = schemas
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .or_else(|| {
                project
                    .as_ref()?
                    .databases
                    .iter()
                    .find(|d| d.name == name)?
                    .schema
                    .clone()
            });
        let schema = schema_path
            .map(|p| {
                std::fs::read_to_string(&p)
                    .map(|text| (p.display().to_string(), text))
                    .map_err(|e| usage(format!("the schema of `{name}`, {}: {e}", p.display())))
            })
            .transpose()?;
        let store =
            db::open_source(&parsed).map_err(|e| usage(format!("--source-db {name}: {e}")))?;
        databases.push(bundle::SourceSchema {
            name: name.to_string(),
            dialect: parsed.dialect(),
            schema,
        });
        open.insert(name.to_string(), store);
    }
    Ok((databases, open))
}

/// Deploys tracks given on this machine (by `local`), writing the deploy
/// to the audit log when it changed something or was refused, and saying
/// what changed.
pub(crate) fn deploy_local(
    store: &mut dyn Store,
    tracks: &[LoadedTrack],
    sources: &bundle::Sources,
    databases: &[bundle::SourceSchema],
    map: &[String],
) -> Result<bundle::Deployed, UsageError> {
    let request = bundle::DeployRequest {
        sources,
        databases,
        map,
        by: &Actor::local(),
        rollback_of: None,
    };
    let result = bundle::deploy(store, tracks, &request);
    if result.as_ref().map_or(true, |d| d.number.is_some()) {
        let files: Vec<&str> = sources.0.iter().map(|f| f.0.as_str()).collect();
        audit_local(store, AuditAction::Deploy, &files.join(", "), &result);
    }
    let deployed = result.map_err(failed)?;
    if deployed.number.is_some() {
        eprintln!("{}", deployed.summary());
    }
    Ok(deployed)
}

/// Writes the audit entry of a command given the database itself (by
/// `local`), saying how `result` ended.
pub(crate) fn audit_local<T>(
    store: &mut dyn Store,
    action: AuditAction,
    target: &str,
    result: &trackc_runtime::Result<T>,
) {
    let outcome = trackc_runtime::db::audit::outcome(result);
    let entry = AuditEntry::new(
        trackc_runtime::clock::now_micros(),
        &Actor::local(),
        action,
        target,
        &outcome,
    );
    trackc_runtime::db::audit::write(store, &entry);
}

pub(crate) fn failed(e: trackc_runtime::Error) -> UsageError {
    usage(e.to_string())
}

/// SIGINT and SIGTERM set the flag: the current block finishes, then the
/// run stops cleanly.
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>, UsageError> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())
            .map_err(|e| usage(format!("cannot handle signals: {e}")))?;
    }
    Ok(flag)
}

pub(crate) fn open(url: &str) -> Result<(DbUrl, Box<dyn Store>), UsageError> {
    let url = DbUrl::parse_state(url).map_err(failed)?;
    let store = db::open(&url).map_err(failed)?;
    Ok((url, store))
}

fn print_errors(stats: &RunStats) {
    for e in &stats.errors {
        eprintln!("warning: {e}");
    }
}

pub fn run(args: &RunArgs) -> Result<ExitCode, UsageError> {
    if args.block == 0 {
        return Err(usage("--block must be at least 1"));
    }
    let (url, mut store) = open(&args.db)?;
    let jit = Jit::new().map_err(|e| usage(e.to_string()))?;
    let (state_schema, named_schemas) =
        crate::project::split_schemas(&args.schema).map_err(usage)?;
    let sources = if args.paths.is_empty() {
        if !args.map.is_empty() || state_schema.is_some() {
            return Err(usage(
                "--map and --schema go with track files: without files, what is deployed runs",
            ));
        }
        let sources = bundle::deployed_sources(store.as_mut()).map_err(failed)?;
        if sources.0.is_empty() {
            return Err(usage(format!(
                "nothing is deployed in {}: give track files (or directories of them)",
                trackc_runtime::error::redact_url(&args.db)
            )));
        }
        sources
    } else {
        let schema =
            crate::project::schema_for(state_schema.as_deref(), &args.paths).map_err(usage)?;
        bundle::read_paths(&args.paths, schema.as_deref()).map_err(failed)?
    };
    let (mut databases, mut source_dbs) =
        source_databases(&args.source_db, &named_schemas, &args.paths)?;
    // A database given without a schema here is checked against the one
    // deployed with it; one deployed but not given is still declared (its
    // tracks then fail to run saying which --source-db is missing).
    for deployed in store.source_schemas().map_err(failed)? {
        match databases.iter_mut().find(|d| d.name == deployed.name) {
            Some(d) if d.schema.is_none() => d.schema = deployed.schema,
            Some(_) => {}
            None => databases.push(deployed),
        }
    }
    let mut tracks = bundle::load_with(
        &jit,
        &sources.0,
        sources.1.clone(),
        url.dialect(),
        databases.clone(),
    )
    .map_err(failed)?;
    for t in &tracks {
        if let Some(name) = &t.ir.source_database {
            if !source_dbs.contains_key(name) {
                return Err(usage(format!(
                    "track {} reads database `{name}`: give --source-db {name}=URL",
                    t.ir.name
                )));
            }
        }
    }
    for name in &args.no_history_for {
        if !tracks.iter().any(|t| &t.ir.name == name) {
            return Err(usage(format!("--no-history-for {name}: no such track")));
        }
    }
    for t in &mut tracks {
        t.history = !args.no_history && !args.no_history_for.contains(&t.ir.name);
    }
    if !args.paths.is_empty() {
        deploy_local(store.as_mut(), &tracks, &sources, &databases, &args.map)?;
    }
    let deliverer = if args.no_deliver {
        None
    } else {
        Some(deliverer_for(&args.delivery, &tracks)?)
    };
    let stop = stop_flag()?;
    let mut runner = Runner {
        store: store.as_mut(),
        tracks: &tracks,
        block_records: args.block,
        stop: &stop,
        progress: &|_| {},
        count_first: false,
        history_days: args.history_days,
        sources: &mut source_dbs,
    };
    let started = Instant::now();
    if args.once {
        let stats = engine::run_once(&mut runner).map_err(failed)?;
        print_errors(&stats);
        let delivered = match &deliverer {
            Some(d) => {
                let delivered = deliver(d, store.as_mut(), &stop, None).map_err(failed)?;
                note_waiting_email(d, store.as_mut())?;
                delivered
            }
            None => DeliveryStats::default(),
        };
        println!(
            "{} {}",
            one_line(&stats, started.elapsed()),
            delivery_line(&delivered)
        );
        return Ok(if stats.errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    eprintln!(
        "running {} track(s); Ctrl-C stops after the current block",
        tracks.len()
    );
    let stop_ref: &AtomicBool = &stop;
    engine::serve(&mut runner, Duration::from_secs(1), &mut |store, stats| {
        print_errors(stats);
        // A backlog is delivered a few seconds at a time, so that tracks
        // due meanwhile are not held up by it.
        let delivered = match &deliverer {
            Some(d) => deliver(d, store, stop_ref, Some(Duration::from_secs(5)))?,
            None => DeliveryStats::default(),
        };
        if stats.runs > 0 || delivered != DeliveryStats::default() {
            println!(
                "{} {}",
                one_line(stats, Duration::ZERO),
                delivery_line(&delivered)
            );
        }
        Ok(delivered.more)
    })
    .map_err(failed)?;
    Ok(ExitCode::SUCCESS)
}

/// A deliverer for `args`; warns about e-mail templates the tracks use
/// that the templates folder lacks (those e-mails would be parked).
fn deliverer_for(args: &DeliveryArgs, tracks: &[LoadedTrack]) -> Result<Deliverer, UsageError> {
    let deliverer = Deliverer::new(args.config()).map_err(failed)?;
    let mut wanted: Vec<&str> = tracks
        .iter()
        .flat_map(|t| &t.ir.steps)
        .flat_map(|s| &s.rules)
        .flat_map(|r| &r.effects)
        .filter_map(|e| match e {
            trackc_compiler::ir::Effect::Email { template, .. } => Some(template.as_str()),
            _ => None,
        })
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    for (name, folder) in deliverer.missing_templates(wanted) {
        eprintln!(
            "warning: no e-mail template `{name}.txt` in {folder}: such e-mails will be parked"
        );
    }
    Ok(deliverer)
}

/// Delivers what is due now (for at most `budget`), reporting each failure.
fn deliver(
    deliverer: &Deliverer,
    store: &mut dyn Store,
    stop: &AtomicBool,
    budget: Option<Duration>,
) -> trackc_runtime::Result<DeliveryStats> {
    let stats = deliverer.deliver_due(store, stop, budget)?;
    for f in &stats.failures {
        eprintln!("warning: {f}");
    }
    Ok(stats)
}

/// Says how many e-mails wait because no SMTP server was given.
fn note_waiting_email(deliverer: &Deliverer, store: &mut dyn Store) -> Result<(), UsageError> {
    if deliverer.kinds().email {
        return Ok(());
    }
    let waiting: i64 = store
        .outbox_counts()
        .map_err(failed)?
        .iter()
        .filter(|(kind, state, _)| kind == "email" && state == "pending")
        .map(|(_, _, n)| n)
        .sum();
    if waiting > 0 {
        eprintln!("note: {waiting} e-mail(s) wait in the outbox: give --smtp URL to send them");
    }
    Ok(())
}

fn delivery_line(d: &DeliveryStats) -> String {
    format!(
        "delivered={} retrying={} parked={}",
        d.delivered, d.retried, d.parked
    )
}

pub fn outbox(command: &OutboxCommand) -> Result<ExitCode, UsageError> {
    match command {
        OutboxCommand::List { db, state, limit } => {
            let (_, mut store) = open(db)?;
            let rows = store
                .list_outbox(state.as_deref(), *limit)
                .map_err(failed)?;
            println!(
                "{:<32} {:<8} {:<10} {:>8}  {:<28} target / last error",
                "id", "kind", "state", "attempts", "next attempt (UTC)"
            );
            for r in rows {
                let next = if r.state == "pending" || r.state == "sending" {
                    db::format_sqlite_timestamp(r.next_attempt_at)
                } else {
                    "-".into()
                };
                println!(
                    "{:<32} {:<8} {:<10} {:>8}  {:<28} {}{}",
                    r.id,
                    r.kind,
                    r.state,
                    r.attempts,
                    next,
                    r.target,
                    r.recipient
                        .map(|to| format!(" to {to}"))
                        .unwrap_or_default()
                );
                if let Some(e) = r.last_error {
                    println!("{:<32} {e}", "");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        OutboxCommand::Deliver { db, delivery } => {
            let (_, mut store) = open(db)?;
            let deliverer = Deliverer::new(delivery.config()).map_err(failed)?;
            let stop = stop_flag()?;
            let stats = deliver(&deliverer, store.as_mut(), &stop, None).map_err(failed)?;
            note_waiting_email(&deliverer, store.as_mut())?;
            println!("{}", delivery_line(&stats));
            Ok(ExitCode::SUCCESS)
        }
        OutboxCommand::Retry { target, id, all: _ } => {
            let n = match target.place()? {
                Place::Db(url) => {
                    let (_, mut store) = open(&url)?;
                    let result =
                        store.retry_parked(id.as_deref(), trackc_runtime::clock::now_micros());
                    let what = match id {
                        Some(id) => format!("outbox row {id}"),
                        None => "every parked outbox row".into(),
                    };
                    audit_local(store.as_mut(), AuditAction::OutboxRetry, &what, &result);
                    result.map_err(failed)?
                }
                Place::Group(remote) => {
                    let body = serde_json::json!({ "id": id }).to_string();
                    match crate::group_cli::call(&remote, "POST", "/outbox/retry", Some(body))? {
                        Ok(answer) => answer["requeued"].as_u64().unwrap_or(0),
                        Err(code) => return Ok(code),
                    }
                }
            };
            if n == 0 {
                return Err(usage(match id {
                    Some(id) => format!("no parked outbox row `{id}`"),
                    None => "no parked outbox rows".into(),
                }));
            }
            println!("{n} row(s) due again");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn one_line(s: &RunStats, elapsed: Duration) -> String {
    format!(
        "runs={} records={} record_steps={} changes={} sql={} outbox={} events={} waiting={} unknown_keys={} errors={} seconds={:.3}",
        s.runs,
        s.records,
        s.record_steps,
        s.changes,
        s.sql,
        s.outbox,
        s.events,
        s.waiting,
        s.unknown_keys,
        s.errors.len(),
        elapsed.as_secs_f64()
    )
}

pub fn demo(args: &DemoArgs) -> Result<ExitCode, UsageError> {
    let (url, mut store) = open(&args.db)?;
    let now = trackc_runtime::clock::now_micros();
    let filling = std::time::Instant::now();
    let created =
        trackc_runtime::demo::populate(store.as_mut(), args.contacts, now).map_err(failed)?;
    if created {
        println!(
            "created {} with {} synthetic contacts in {:.1} s",
            trackc_runtime::error::redact_url(&args.db),
            args.contacts,
            filling.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "using the demo data already in {}",
            trackc_runtime::error::redact_url(&args.db)
        );
    }
    let jit = Jit::new().map_err(|e| usage(e.to_string()))?;
    let files: Vec<(String, String)> = trackc_runtime::demo::TRACKS
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let schema = Some((
        "tracks/schema.sql".to_string(),
        trackc_runtime::demo::SCHEMA.to_string(),
    ));
    let tracks: Vec<LoadedTrack> =
        bundle::load(&jit, &files, schema.clone(), url.dialect()).map_err(failed)?;
    deploy_local(store.as_mut(), &tracks, &(files, schema), &[], &[])?;
    let stop = stop_flag()?;
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(100));
    // A bar where the run's total is known (a scheduled run, counted
    // first; a batch of events, its keys), a spinner where it is not.
    let known = ProgressStyle::with_template(
        "{elapsed_precise} {msg:<24} [{bar:32}] {pos:>7}/{len:7} records",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let unknown =
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg:<24} {pos} records")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let progress = |p: Progress<'_>| {
        if p.records == 0 {
            match p.total {
                Some(total) => {
                    bar.set_style(known.clone());
                    bar.set_length(total);
                }
                None => bar.set_style(unknown.clone()),
            }
            bar.set_message(p.track.to_string());
        }
        bar.set_position(p.records);
    };
    let started = Instant::now();
    let mut runner = Runner {
        store: store.as_mut(),
        tracks: &tracks,
        block_records: BLOCK_RECORDS,
        stop: &stop,
        progress: &progress,
        count_first: true,
        history_days: trackc_runtime::db::HISTORY_DAYS_DEFAULT,
        sources: &mut Default::default(),
    };
    let stats = engine::run_once(&mut runner).map_err(failed)?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    print_errors(&stats);
    println!("\n{:<20} {:<16} {:>9}", "track", "step", "records");
    for t in &tracks {
        let counts = store.step_counts(&t.ir.name).map_err(failed)?;
        for (step, n) in counts {
            println!(
                "{:<20} {:<16} {:>9}",
                t.ir.name,
                step.as_deref().unwrap_or("(ended)"),
                n
            );
        }
    }
    println!("\n{:<10} {:<10} {:>9}", "effect", "state", "count");
    for (kind, state, n) in store.outbox_counts().map_err(failed)? {
        println!("{kind:<10} {state:<10} {n:>9}");
    }
    println!(
        "{:<10} {:<10} {:>9}\n{:<10} {:<10} {:>9}",
        "sql", "applied", stats.sql, "event", "raised", stats.events
    );
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "\n{} records, {} record-steps in {:.2} s: {:.0} record-steps per second",
        stats.records,
        stats.record_steps,
        secs,
        stats.record_steps as f64 / secs
    );
    println!(
        "\nnext: look inside with `sqlite3 {}` (tables trackc_state, trackc_outbox, trackc_events),\n\
         the e-mails and webhooks waiting for delivery with `trackc outbox list --db {}`,\n\
         run it again (waiting records stay put), or write your own track and `trackc run --once --db {} DIR`",
        args.db.trim_start_matches("sqlite:"),
        args.db,
        args.db
    );
    if args.serve {
        drop(store);
        println!();
        return crate::serve_cli::serve_db(&args.db, &args.console);
    }
    Ok(ExitCode::SUCCESS)
}
