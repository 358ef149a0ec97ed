//! `trackc move` and `trackc rebalance`: an operator's hand on where
//! tracks run (docs/group.md, "Rebalancing").

use crate::group_cli::{call, call_at, Api, ClientTlsArgs, Remote, TokenArgs};
use crate::UsageError;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct MoveArgs {
    /// The track to move.
    track: String,
    /// The id of the node that is to own it.
    #[arg(long = "to", value_name = "NODE")]
    node: u64,
    /// A node's HTTP API (any node of the group): https://HOST:PORT, or http:// to this
    /// machine.
    #[arg(long, value_name = "URL")]
    via: String,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Args)]
pub struct RebalanceArgs {
    /// Show the plan without making a move (the group makes its moves by itself; `trackc
    /// move` makes one by hand).
    #[arg(long, required = true)]
    dry_run: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub fn move_track(args: &MoveArgs) -> Result<ExitCode, UsageError> {
    let api = Api {
        url: &args.via,
        token: &args.token,
        tls: &args.tls,
    };
    let path = format!("/move?track={}&to={}", percent(&args.track), args.node);
    match call_at(&api, "POST", &path, None)? {
        Ok(answer) => {
            println!("{}", answer["moving"].as_str().unwrap_or("moving"));
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

pub fn rebalance(args: &RebalanceArgs) -> Result<ExitCode, UsageError> {
    debug_assert!(args.dry_run, "clap requires --dry-run");
    let status = match call(&args.remote, "GET", "/status", None)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let plan = &status["rebalance"];
    if args.json {
        println!("{plan}");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", describe(status["node"].as_u64().unwrap_or(0), plan));
    Ok(ExitCode::SUCCESS)
}

/// The plan as people read it.
fn describe(node: u64, plan: &serde_json::Value) -> String {
    let mut out = format!(
        "as node {node} sees the group (threshold {} %, one move per node every {} cycles, \
         a moved track stays {} cycles):\n",
        plan["threshold_percent"], plan["every_cycles"], plan["cooldown_cycles"]
    );
    let loads: Vec<(u64, u64)> = (plan["loads"].as_array().into_iter().flatten())
        .filter_map(|l| Some((l[0].as_u64()?, l[1].as_u64()?)))
        .collect();
    if !loads.is_empty() {
        let average = loads.iter().map(|l| l.1).sum::<u64>() / loads.len() as u64;
        out.push_str(&format!("  average load {average}\n"));
        for (id, load) in &loads {
            out.push_str(&format!("  node {id:<4} load {load}\n"));
        }
    }
    let moves = |key: &str| -> Vec<String> {
        (plan[key].as_array().into_iter().flatten())
            .map(|m| {
                format!(
                    "{} (cost {}) from node {} to node {}",
                    m["track"].as_str().unwrap_or("?"),
                    m["cost"],
                    m["from"],
                    m["to"]
                )
            })
            .collect()
    };
    for m in moves("under_way") {
        out.push_str(&format!("  under way: {m}\n"));
    }
    if let Some(why) = plan["waiting"].as_str() {
        out.push_str(&format!("  no plan now: {why}\n"));
    } else {
        let planned = moves("moves");
        if planned.is_empty() {
            out.push_str("  balanced: no move to make\n");
        }
        for m in planned {
            out.push_str(&format!("  would move {m}\n"));
        }
    }
    out
}

/// A track's measurements as the status line shows them.
pub fn measured(m: &serde_json::Value) -> String {
    if m.is_null() {
        return String::new();
    }
    let mut text = if m["runs"] == 0 {
        "(no run measured yet)".to_string()
    } else {
        format!(
            "({} records, {} blocks, {} ms per run over {} runs)",
            m["cost"], m["blocks"], m["millis"], m["runs"]
        )
    };
    if m["pinned"] == true {
        text.push_str(" pinned");
    }
    text
}

/// `text` percent-encoded for a query string.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_as_moves_loads_and_why_it_waits() {
        let plan = serde_json::json!({
            "threshold_percent": 25, "every_cycles": 10, "cooldown_cycles": 600,
            "loads": [[1, 700], [2, 300], [3, 0]],
            "moves": [{"track": "big", "from": 1, "to": 3, "cost": 300}],
            "under_way": [{"track": "small", "from": 2, "to": 3, "cost": 40}],
            "waiting": null,
        });
        insta::assert_snapshot!(describe(1, &plan));
        let waiting = serde_json::json!({
            "threshold_percent": 25, "every_cycles": 10, "cooldown_cycles": 600,
            "loads": [], "moves": [], "under_way": [],
            "waiting": "node 2 is claiming tracks",
        });
        insta::assert_snapshot!(describe(1, &waiting));
    }

    #[test]
    fn track_names_are_percent_encoded() {
        assert_eq!(percent("a b/ç"), "a%20b%2F%C3%A7");
    }
}
