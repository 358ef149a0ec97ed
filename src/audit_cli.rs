//! `trackc audit [--since WHEN]`: the audit log of a node's database or a
//! group (runtime/src/db/audit.rs): who did what, with which role, on what,
//! and how it ended.

use crate::group_cli::{call, Place, Target};
use crate::operate::{failed, open};
use crate::{usage, Format, UsageError};
use std::process::ExitCode;
use trackc_compiler::syntax::literals::{format_timestamp, parse_duration, parse_timestamp};
use trackc_runtime::clock::now_micros;
use trackc_runtime::db::audit::AUDIT_LIST_MAX;
use trackc_runtime::db::AuditEntry;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only entries since then: a duration back from now (30m, 12h, 7d, 2w) or an RFC 3339
    /// instant [default: all kept, the newest 10,000].
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    #[command(flatten)]
    target: Target,
    /// `human` for people (one line per entry, oldest first), `json` for tools.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

/// The instant `--since` names, in microseconds since the epoch.
fn since(text: &str, now: i64) -> Result<i64, String> {
    let duration = {
        let mut rest = text;
        let mut whole = !rest.is_empty();
        while whole && !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = ["ms", "s", "m", "h", "d", "w"]
                .into_iter()
                .find(|u| rest[digits..].starts_with(u));
            match unit {
                Some(u) if digits > 0 => rest = &rest[digits + u.len()..],
                _ => whole = false,
            }
        }
        whole
    };
    if duration {
        let back = parse_duration(text).ok_or_else(|| format!("--since {text}: too long"))?;
        return Ok(now.saturating_sub(back));
    }
    parse_timestamp(text).map_err(|_| {
        format!(
            "--since {text}: write a duration back from now (30m, 12h, 7d) or an instant \
             (2026-12-01T00:00:00Z)"
        )
    })
}

pub fn audit(args: &AuditArgs) -> Result<ExitCode, UsageError> {
    let since = match &args.since {
        Some(text) => since(text, now_micros()).map_err(usage)?,
        None => 0,
    };
    let entries: Vec<AuditEntry> = match args.target.place()? {
        Place::Db(url) => {
            let (_, mut store) = open(&url)?;
            store.audit_log(since, AUDIT_LIST_MAX).map_err(failed)?
        }
        Place::Group(remote) => {
            match call(&remote, "GET", &format!("/audit?since={since}"), None)? {
                Ok(answer) => serde_json::from_value(answer["entries"].clone()).map_err(|e| {
                    usage(format!(
                        "the node answered an audit log this trackc cannot read: {e}"
                    ))
                })?,
                Err(code) => return Ok(code),
            }
        }
    };
    match args.format {
        Format::Json => println!("{}", serde_json::json!({ "entries": entries })),
        Format::Human => {
            if entries.len() == AUDIT_LIST_MAX {
                eprintln!("(the newest {AUDIT_LIST_MAX} entries; narrow with --since)");
            }
            for e in &entries {
                let from = e
                    .address
                    .as_deref()
                    .map(|a| format!("  from {a}"))
                    .unwrap_or_default();
                println!(
                    "{}  {} ({})  {}  {}  {}{from}",
                    format_timestamp(e.at),
                    e.who,
                    e.role,
                    e.action,
                    e.target,
                    e.result
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_back_or_an_instant() {
        let now = 10 * 86_400_000_000;
        assert_eq!(since("1d", now), Ok(9 * 86_400_000_000));
        assert_eq!(since("1h30m", now), Ok(now - 5_400_000_000));
        assert_eq!(since("1970-01-02T00:00:00Z", now), Ok(86_400_000_000));
        for bad in ["", "d", "1x", "yesterday", "1d-"] {
            let e = since(bad, now).unwrap_err();
            assert!(e.contains("write a duration"), "{bad}: {e}");
        }
    }
}
