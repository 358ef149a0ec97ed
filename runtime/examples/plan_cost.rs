//! What `trackc plan` costs against reading the sources once (issue 15:
//! "on 100,000 records it takes about as long as reading the source
//! once"). The demo's contacts (N of them) and its seven example tracks,
//! nothing deployed (every record is new and due in its first step, the
//! most a plan decides). In the same run and process:
//! - **read**: each track's source query streamed in blocks of 1,024 with
//!   the keys' states looked up (what a run reads), decided nothing;
//! - **plan**: `plan::plan` over the same tracks (the same reads, and the
//!   JIT deciding every due record).
//!
//! Run: `cargo run --release -p trackc-runtime --example plan_cost -- URL N`
//! (URL `sqlite:/tmp/plan.db` or `postgres://…/db`; the contacts are made
//! once). Prints the best of 3 of each and the ratio.

use std::time::Instant;
use trackc_compiler::block::key_text;
use trackc_compiler::jit::Jit;
use trackc_runtime::bundle;
use trackc_runtime::clock::now_micros;
use trackc_runtime::db::{self, DbUrl, RunInfo};
use trackc_runtime::run::RunSource;

const REPEATS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "sqlite:/tmp/plan_cost.db".into());
    let n: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let url = DbUrl::parse(&url)?;
    let mut store = db::open(&url)?;
    store.migrate()?;
    trackc_runtime::demo::populate(store.as_mut(), n, now_micros())?;
    let jit = Jit::new()?;
    let files: Vec<(String, String)> = trackc_runtime::demo::TRACKS
        .iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect();
    let schema = Some((
        "schema.sql".into(),
        trackc_runtime::demo::schema_for(url.dialect()),
    ));
    let tracks = bundle::load(&jit, &files, schema, url.dialect())?;
    let (mut read_best, mut plan_best) = (f64::MAX, f64::MAX);
    let mut rows_read = 0u64;
    for _ in 0..REPEATS {
        let now = now_micros();
        let started = Instant::now();
        rows_read = 0;
        for track in &tracks {
            let run = RunInfo {
                id: 0,
                track: track.ir.name.clone(),
                now,
                last_run: 0,
                resumed: false,
                event: None,
            };
            let source = RunSource::of(track, &run, store.as_mut())?;
            let Some(query) = &source.statement else {
                continue;
            };
            let key = track.ir.key;
            let name = &track.ir.name;
            store.gather(query, &track.types, 1024, &mut |writer, rows| {
                let keys: Vec<String> = rows.iter().filter_map(|r| key_text(&r[key])).collect();
                writer.load_states(name, &keys)?;
                rows_read += rows.len() as u64;
                Ok(())
            })?;
        }
        read_best = read_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let plan =
            trackc_runtime::plan::plan(store.as_mut(), &mut Default::default(), &tracks, now)?;
        plan_best = plan_best.min(started.elapsed().as_secs_f64());
        let due: u64 = plan
            .tracks
            .iter()
            .flat_map(|t| &t.steps)
            .map(|s| s.due)
            .sum();
        assert_eq!(due, rows_read, "the plan decides every record read");
    }
    println!(
        "RESULT db={} contacts={n} rows_read={rows_read} read_seconds={read_best:.3} \
         plan_seconds={plan_best:.3} plan_over_read={:.2}",
        url.dialect().name(),
        plan_best / read_best
    );
    Ok(())
}
