//! `trackc plan FILES… (--db URL | --to URL)`: a dry run of deploying the
//! files now (runtime/src/plan.rs, here or on a node of the group);
//! nothing is written.

use crate::group_cli::{call, deploy_request, Place, Target};
use crate::operate::{failed, open, source_databases};
use crate::{usage, Format, UsageError};
use std::path::PathBuf;
use std::process::ExitCode;
use trackc_compiler::jit::Jit;
use trackc_runtime::bundle;
use trackc_runtime::clock::now_micros;
use trackc_runtime::plan::Plan;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Where the tracks would be deployed: `--db URL` (one node's database) or `--to URL` (a
    /// group; the author role).
    #[command(flatten)]
    target: Target,
    /// `CREATE TABLE` statements for field types (default: `schema` of the files'
    /// trackc.toml, else schema.sql in a directory given); `NAME=FILE.sql` gives a source
    /// database's (default: its `schema` in trackc.toml).
    #[arg(long, value_name = "[NAME=]FILE.sql")]
    schema: Vec<String>,
    /// A source database tracks read with `source from NAME`: NAME=URL (repeatable;
    /// sqlite:PATH, postgres://… or mysql://…; only read). With `--db` only.
    #[arg(long = "source-db", value_name = "NAME=URL")]
    source_db: Vec<String>,
    /// `human` for people (a table per track), `json` for tools (one object).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Track files, or directories of them.
    #[arg(required = true, value_name = "DIR|FILES")]
    paths: Vec<PathBuf>,
}

pub fn plan(args: &PlanArgs) -> Result<ExitCode, UsageError> {
    let (state_schema, named_schemas) =
        crate::project::split_schemas(&args.schema).map_err(usage)?;
    let schema = crate::project::schema_for(state_schema.as_deref(), &args.paths).map_err(usage)?;
    let plan = match args.target.place()? {
        Place::Db(url) => {
            let (url, mut store) = open(&url)?;
            let jit = Jit::new().map_err(|e| usage(e.to_string()))?;
            let (files, schema) =
                bundle::read_paths(&args.paths, schema.as_deref()).map_err(failed)?;
            let (databases, mut source_dbs) =
                source_databases(&args.source_db, &named_schemas, &args.paths)?;
            let tracks = bundle::load_with(&jit, &files, schema, url.dialect(), databases)
                .map_err(failed)?;
            trackc_runtime::plan::plan(store.as_mut(), &mut source_dbs, &tracks, now_micros())
                .map_err(failed)?
        }
        Place::Group(_) if !args.source_db.is_empty() => {
            return Err(usage(
                "--source-db goes with --db: a group's nodes read the source databases of \
                 their node.toml",
            ))
        }
        Place::Group(remote) => {
            let request = deploy_request(&args.paths, schema.as_deref(), &named_schemas, &[])?;
            let body = serde_json::to_string(&request).expect("a plan request encodes");
            match call(&remote, "POST", "/plan", Some(body))? {
                Ok(answer) => serde_json::from_value::<Plan>(answer).map_err(|e| {
                    usage(format!(
                        "the node answered a plan this trackc cannot read: {e}"
                    ))
                })?,
                Err(code) => return Ok(code),
            }
        }
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(&plan).expect("a plan encodes as JSON")
        ),
        Format::Human => print!("{}", human(&plan)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Per track: its change and differences, a table of steps (records now,
/// due, how many due records each rule would fire for), stranded records.
pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    for t in &plan.tracks {
        out += &format!("track {}: {}\n", t.name, t.change);
        for d in &t.diff {
            out += &format!("  {d}\n");
        }
        let width = t
            .steps
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        out += &format!(
            "  {:<width$}  {:>8}  {:>8}  would fire\n",
            "step", "records", "due"
        );
        for s in &t.steps {
            let rules: Vec<String> = s
                .rules
                .iter()
                .map(|r| format!("rule {}: {}", r.rule, r.fire))
                .collect();
            out += &format!(
                "  {:<width$}  {:>8}  {:>8}  {}\n",
                s.name,
                s.records,
                s.due,
                rules.join(", ")
            );
        }
        for s in &t.stranded {
            out += &format!(
                "  stranded: {} record(s) in step `{}`, which this version removes; deploy with \
                 --map {}.{}=STEP\n",
                s.records, s.step, t.name, s.step
            );
        }
    }
    out
}
