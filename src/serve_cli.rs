//! `trackc serve --db URL`: the web console and the API of one database,
//! without a group (runtime/src/node/standalone.rs); `trackc demo --serve`
//! ends the demo with it.

use crate::operate::{failed, stop_flag};
use crate::UsageError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use trackc_runtime::node::config::{new_token, token_sha256, NodeConfig, User, UserRole};

/// Where the console listens, and who may sign in.
#[derive(clap::Args, Clone)]
pub struct ServeOptions {
    /// The address of the console and the API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8100")]
    http: SocketAddr,
    /// A TOML file with the `[[users]]` who may sign in (a node.toml will do) [default: a
    /// fresh admin token, printed once].
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// A source database tracks read with `source from NAME`: NAME=URL (repeatable; for
    /// the plan page; only read).
    #[arg(long = "source-db", value_name = "NAME=URL")]
    source_db: Vec<String>,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// `sqlite:PATH` or `postgres://USER@HOST/DB`.
    #[arg(long, value_name = "URL", default_value = "sqlite:trackc.db")]
    db: String,
    #[command(flatten)]
    options: ServeOptions,
}

pub fn serve(args: &ServeArgs) -> Result<ExitCode, UsageError> {
    serve_db(&args.db, &args.options)
}

/// Serves the console of database `db` until SIGINT or SIGTERM.
pub fn serve_db(db: &str, options: &ServeOptions) -> Result<ExitCode, UsageError> {
    let (users, token) = match &options.users {
        Some(path) => (NodeConfig::users_of(path).map_err(failed)?, None),
        None => {
            let token = new_token().map_err(failed)?;
            let user = User {
                name: "admin".into(),
                role: UserRole::Admin,
                token_sha256: token_sha256(&token),
            };
            (vec![user], Some(token))
        }
    };
    let mut config = NodeConfig::standalone(db, options.http, users).map_err(failed)?;
    for value in &options.source_db {
        let Some((name, url)) = value.split_once('=') else {
            return Err(crate::usage(format!("--source-db {value}: write NAME=URL")));
        };
        trackc_runtime::db::DbUrl::parse(url)
            .map_err(|e| crate::usage(format!("--source-db {name}: {e}")))?;
        if config
            .databases
            .insert(name.to_string(), url.to_string())
            .is_some()
        {
            return Err(crate::usage(format!("--source-db {name}: given twice")));
        }
    }
    let stop = stop_flag()?;
    trackc_runtime::node::standalone::serve(config, stop, |addr| {
        println!(
            "the console of {} is at http://{addr}/",
            trackc_runtime::error::redact_url(db)
        );
        if let Some(token) = &token {
            println!("sign in with this token (user admin; shown this once): {token}");
        }
    })
    .map_err(failed)?;
    Ok(ExitCode::SUCCESS)
}
