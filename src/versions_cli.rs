//! `trackc versions` and `trackc rollback N`: the deploy history of a
//! node's database or a group (runtime/src/db/deploys.rs), and shipping
//! an earlier deploy's files again with the checks of any deploy.

use crate::group_cli::{call, Place, Target};
use crate::operate::{audit_local, failed, open};
use crate::{usage, Format, UsageError};
use std::process::ExitCode;
use trackc_compiler::jit::Jit;
use trackc_compiler::syntax::literals::format_timestamp;
use trackc_runtime::bundle;
use trackc_runtime::db::deploys::DEPLOYS_LIST_MAX;
use trackc_runtime::db::{Actor, AuditAction, DeployListing};
use trackc_runtime::node::api::RollbackRequest;

#[derive(clap::Args)]
pub struct VersionsArgs {
    #[command(flatten)]
    target: Target,
    /// `human` for people (newest first), `json` for tools (one object).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The deploy to ship again (a number of `trackc versions`).
    number: i64,
    /// Move records of a step the rolled-back version does not have:
    /// TRACK.OLD_STEP=NEW_STEP.
    #[arg(long, value_name = "MAPPING")]
    map: Vec<String>,
    /// Where: `--db URL` (one node's database) or `--to URL` (a group; the author role).
    #[command(flatten)]
    target: Target,
}

pub fn versions(args: &VersionsArgs) -> Result<ExitCode, UsageError> {
    let deploys: Vec<DeployListing> = match args.target.place()? {
        Place::Db(url) => {
            let (_, mut store) = open(&url)?;
            store.deploys(DEPLOYS_LIST_MAX).map_err(failed)?
        }
        Place::Group(remote) => match call(&remote, "GET", "/versions", None)? {
            Ok(answer) => serde_json::from_value(answer["deploys"].clone()).map_err(|e| {
                usage(format!(
                    "the node answered a deploy history this trackc cannot read: {e}"
                ))
            })?,
            Err(code) => return Ok(code),
        },
    };
    match args.format {
        Format::Json => println!("{}", serde_json::json!({ "deploys": deploys })),
        Format::Human => print!("{}", human(&deploys)),
    }
    Ok(ExitCode::SUCCESS)
}

/// One deploy per paragraph, newest first.
fn human(deploys: &[DeployListing]) -> String {
    if deploys.is_empty() {
        return "nothing was deployed yet\n".into();
    }
    let mut out = String::new();
    for d in deploys {
        let rollback = d
            .rollback_of
            .map(|n| format!(", a rollback to deploy {n}"))
            .unwrap_or_default();
        out += &format!(
            "deploy {}  {}  by {} ({}){rollback}\n",
            d.number,
            format_timestamp(d.at),
            d.by,
            d.role
        );
        out += &format!("    changed: {}\n", d.changed.join(", "));
        out += &format!("    files:   {}\n", d.files.join(", "));
        if !d.map.is_empty() {
            out += &format!("    map:     {}\n", d.map.join(", "));
        }
        out += &format!("    hash:    {}\n", d.hash);
    }
    out
}

pub fn rollback(args: &RollbackArgs) -> Result<ExitCode, UsageError> {
    let (changed, number) = match args.target.place()? {
        Place::Db(url) => {
            let (_, mut store) = open(&url)?;
            let jit = Jit::new().map_err(|e| usage(e.to_string()))?;
            let result = bundle::rollback(
                store.as_mut(),
                &jit,
                args.number,
                &args.map,
                &Actor::local(),
            );
            let target = format!("deploy {}", args.number);
            audit_local(store.as_mut(), AuditAction::Rollback, &target, &result);
            let (_, deployed) = result.map_err(failed)?;
            (deployed.changed, deployed.number)
        }
        Place::Group(remote) => {
            let body = serde_json::to_string(&RollbackRequest {
                map: args.map.clone(),
            })
            .expect("a rollback request encodes");
            let path = format!("/rollback/{}", args.number);
            match call(&remote, "POST", &path, Some(body))? {
                Ok(answer) => (
                    serde_json::from_value(answer["changed"].clone()).unwrap_or_default(),
                    answer["deploy"].as_i64(),
                ),
                Err(code) => return Ok(code),
            }
        }
    };
    match number {
        Some(n) => println!(
            "deploy {n}: deploy {}'s files again; changed {}",
            args.number,
            changed.join(", ")
        ),
        None => println!(
            "nothing changed: deploy {}'s tracks and schema are what is deployed",
            args.number
        ),
    }
    Ok(ExitCode::SUCCESS)
}
