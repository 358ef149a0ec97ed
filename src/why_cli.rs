//! `trackc why TRACK KEY (--db URL | --to URL)`: a record's path through a
//! track (runtime/src/why.rs builds the report, here or on a node of the
//! group), printed for people or as JSON.

use crate::group_cli::{call, Place, Target};
use crate::operate::{failed, open};
use crate::{usage, Format, UsageError};
use serde_json::Value as Json;
use std::process::ExitCode;
use trackc_compiler::jit::Jit;
use trackc_runtime::node::client::query;

#[derive(clap::Args)]
pub struct WhyArgs {
    #[command(flatten)]
    target: Target,
    /// `human` for people, `json` for tools (one object).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    track: String,
    key: String,
}

pub fn why(args: &WhyArgs) -> Result<ExitCode, UsageError> {
    let report = match args.target.place()? {
        Place::Db(url) => {
            let (_, mut store) = open(&url)?;
            let jit = Jit::new().map_err(|e| usage(e.to_string()))?;
            trackc_runtime::why::report(store.as_mut(), &jit, &args.track, &args.key)
                .map_err(failed)?
        }
        Place::Group(remote) => {
            let path = format!(
                "/why?{}",
                query(&[("track", &args.track), ("key", &args.key)])
            );
            match call(&remote, "GET", &path, None)? {
                Ok(report) => report,
                Err(code) => return Ok(code),
            }
        }
    };
    match args.format {
        Format::Json => println!("{report}"),
        Format::Human => print!("{}", human(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The report for people.
fn human(report: &Json) -> String {
    let text = |v: &Json| v.as_str().unwrap_or("").to_string();
    let mut out = format!("{} `{}`", text(&report["track"]), text(&report["key"]));
    if let Some(reason) = report["never_entered"].as_str() {
        return format!("{out}: never entered: {reason}\n");
    }
    let now = &report["now"];
    out += &match now["step"].as_str() {
        Some("end") => {
            let at = report["decisions"]
                .as_array()
                .and_then(|d| d.last())
                .map_or_else(|| text(&now["since"]), |d| text(&d["at"]));
            format!(": ended at {at}\n")
        }
        Some(step) => match now["wake_at"].as_str() {
            Some(wake) => format!(
                ": in step `{step}` since {}, waits until {wake}\n",
                text(&now["since"])
            ),
            None => format!(
                ": in step `{step}` since {}, due at the next run\n",
                text(&now["since"])
            ),
        },
        None => ": no state (its history was kept, the state is gone)\n".to_string(),
    };
    let decisions = report["decisions"].as_array().cloned().unwrap_or_default();
    if decisions.is_empty() {
        out += "no decision recorded (history off, or pruned)\n";
    }
    for d in &decisions {
        let rule = match (d["rule"].as_i64(), d["condition"].as_str()) {
            (Some(n), Some(c)) => format!("rule {n}: {c}  ({})", text(&d["source"])),
            (Some(n), None) => format!("rule {n}"),
            (None, _) => "no rule fired".to_string(),
        };
        out += &format!(
            "\n{}  step `{}`  {rule}\n",
            text(&d["at"]),
            text(&d["step"])
        );
        let read = trackc_runtime::why::read_as_written(&d["values"]);
        if !read.is_empty() {
            out += &format!("    read:    {read}\n");
        }
        for e in d["effects"].as_array().into_iter().flatten() {
            let id = e["id"]
                .as_str()
                .map(|i| format!(" {i}"))
                .unwrap_or_default();
            let error = e["error"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            out += &format!(
                "    effect:  {}{id} ({}{error})\n",
                text(&e["kind"]),
                text(&e["state"])
            );
        }
        out += &format!("    next:    {}\n", text(&d["next"]));
    }
    out
}
