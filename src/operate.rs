//! `trackc run` and `trackc demo`: the runtime on one node.

use crate::{usage, UsageError};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trackc_compiler::jit::Jit;
use trackc_runtime::bundle::{self, LoadedTrack};
use trackc_runtime::db::{self, DbUrl, Store};
use trackc_runtime::engine;
use trackc_runtime::run::{RunStats, Runner, BLOCK_RECORDS};

#[derive(clap::Args)]
pub struct RunArgs {
    /// `sqlite:PATH` (the default: sqlite:trackc.db) or `postgres://USER@HOST/DB`.
    #[arg(long, value_name = "URL", default_value = "sqlite:trackc.db")]
    db: String,
    /// Run every track once now (with chained steps and the events raised), then exit.
    #[arg(long)]
    once: bool,
    /// `CREATE TABLE` statements for field types (default: schema.sql in a directory given).
    #[arg(long, value_name = "FILE.sql")]
    schema: Option<PathBuf>,
    /// Move records out of a step the new version removes: TRACK.OLD_STEP=NEW_STEP.
    #[arg(long = "map", value_name = "T.OLD=NEW")]
    map: Vec<String>,
    /// Records per block.
    #[arg(long, default_value_t = BLOCK_RECORDS)]
    block: usize,
    /// Track files, or directories of them.
    #[arg(required = true, value_name = "DIR|FILES")]
    paths: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo data goes.
    #[arg(long, value_name = "URL", default_value = "sqlite:trackc-demo.db")]
    db: String,
    /// Contacts to generate (the first time).
    #[arg(long, default_value_t = 100_000)]
    contacts: u64,
}

fn failed(e: trackc_runtime::Error) -> UsageError {
    usage(e.to_string())
}

/// SIGINT and SIGTERM set the flag: the current block finishes, then the
/// run stops cleanly.
fn stop_flag() -> Result<Arc<AtomicBool>, UsageError> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())
            .map_err(|e| usage(format!("cannot handle signals: {e}")))?;
    }
    Ok(flag)
}

fn open(url: &str) -> Result<(DbUrl, Box<dyn Store>), UsageError> {
    let url = DbUrl::parse(url).map_err(failed)?;
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
    let tracks = bundle::load_paths(&jit, &args.paths, args.schema.as_deref(), url.dialect())
        .map_err(failed)?;
    let changed = bundle::deploy(store.as_mut(), &tracks, &args.map).map_err(failed)?;
    if !changed.is_empty() {
        eprintln!("deployed: {}", changed.join(", "));
    }
    let stop = stop_flag()?;
    let mut runner = Runner {
        store: store.as_mut(),
        tracks: &tracks,
        block_records: args.block,
        stop: &stop,
        progress: &|_, _| {},
    };
    let started = Instant::now();
    if args.once {
        let stats = engine::run_once(&mut runner).map_err(failed)?;
        print_errors(&stats);
        println!("{}", one_line(&stats, started.elapsed()));
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
    engine::serve(&mut runner, Duration::from_secs(1), &|stats| {
        print_errors(stats);
        if stats.runs > 0 {
            println!("{}", one_line(stats, Duration::ZERO));
        }
    })
    .map_err(failed)?;
    Ok(ExitCode::SUCCESS)
}

fn one_line(s: &RunStats, elapsed: Duration) -> String {
    format!(
        "runs={} records={} record_steps={} changes={} sql={} outbox={} events={} waiting={} errors={} seconds={:.3}",
        s.runs,
        s.records,
        s.record_steps,
        s.changes,
        s.sql,
        s.outbox,
        s.events,
        s.waiting,
        s.errors.len(),
        elapsed.as_secs_f64()
    )
}

pub fn demo(args: &DemoArgs) -> Result<ExitCode, UsageError> {
    let (url, mut store) = open(&args.db)?;
    let now = trackc_runtime::clock::now_micros();
    let created =
        trackc_runtime::demo::populate(store.as_mut(), args.contacts, now).map_err(failed)?;
    if created {
        println!(
            "created {} with {} synthetic contacts",
            args.db, args.contacts
        );
    } else {
        println!("using the demo data already in {}", args.db);
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
        bundle::load(&jit, &files, schema, url.dialect()).map_err(failed)?;
    bundle::deploy(store.as_mut(), &tracks, &[]).map_err(failed)?;
    let stop = stop_flag()?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let progress = |track: &str, records: u64| {
        bar.set_message(format!("{track}: {records} records"));
    };
    let started = Instant::now();
    let mut runner = Runner {
        store: store.as_mut(),
        tracks: &tracks,
        block_records: BLOCK_RECORDS,
        stop: &stop,
        progress: &progress,
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
         run it again (waiting records stay put), or write your own track and `trackc run --once --db {} DIR`",
        args.db.trim_start_matches("sqlite:"),
        args.db
    );
    Ok(ExitCode::SUCCESS)
}
