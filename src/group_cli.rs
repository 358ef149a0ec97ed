//! `trackc node` and the commands that operate a running group over its
//! HTTP API: `deploy`, `status`, `drain`, `emit`.

use crate::operate::{failed, stop_flag};
use crate::{usage, UsageError};
use clap::{Args, ValueEnum};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use trackc_runtime::bundle::track_files;
use trackc_runtime::db::{AuditAction, NewEvent, EMIT_BATCH_MAX};
use trackc_runtime::node::api::{emitted, DeployRequest, EmitRequest, SourceFile};
use trackc_runtime::node::client::{request, Connection};
use trackc_runtime::node::config::NodeConfig;

#[derive(Args)]
pub struct NodeArgs {
    /// The node's `node.toml`.
    #[arg(long, value_name = "node.toml")]
    config: PathBuf,
}

/// Where a running group's API is, and who asks.
#[derive(Args)]
pub struct Remote {
    /// A node's HTTP API: https://HOST:PORT, or http:// to this machine.
    #[arg(long, value_name = "URL")]
    to: String,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// Where a command reads or acts: one node's database (`--db`), or a
/// running group through a node's API (`--to`).
#[derive(Args)]
pub struct Target {
    /// `sqlite:PATH` or `postgres://USER@HOST/DB`: a node's database, read or changed
    /// directly [default: sqlite:trackc.db, unless --to is given].
    #[arg(long, value_name = "URL", conflicts_with = "to")]
    db: Option<String>,
    /// A node's HTTP API: https://HOST:PORT, or http:// to this machine.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// What a `Target` names.
pub enum Place {
    Db(String),
    Group(Remote),
}

impl Target {
    pub fn place(&self) -> Result<Place, UsageError> {
        Ok(match &self.to {
            None => Place::Db(
                self.db
                    .clone()
                    .unwrap_or_else(|| "sqlite:trackc.db".to_string()),
            ),
            Some(to) => Place::Group(Remote {
                to: to.clone(),
                token: TokenArgs {
                    token: self.token.get()?,
                    token_file: None,
                },
                tls: self.tls.clone(),
            }),
        })
    }
}

/// How the connection to the API is secured.
#[derive(Args, Clone)]
pub struct ClientTlsArgs {
    /// Trust only the CA certificates in this PEM file (a private CA) instead of the
    /// system's.
    #[arg(long, value_name = "FILE.pem")]
    ca: Option<PathBuf>,
    /// A client certificate (PEM), for nodes with `tls_client_ca`.
    #[arg(long, value_name = "FILE.pem", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE.pem", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Allow plain http:// to another machine: the token crosses the network in clear.
    #[arg(long)]
    insecure_http: bool,
}

impl ClientTlsArgs {
    pub(crate) fn connection(&self) -> Connection {
        Connection {
            ca: self.ca.clone(),
            identity: self.client_cert.clone().zip(self.client_key.clone()),
            insecure_http: self.insecure_http,
        }
    }
}

/// Where the bearer token comes from: `--token-file`, else `--token`, else
/// the environment's `TRACKC_TOKEN` (a file or the environment keeps it
/// out of the shell's history and of `ps`).
#[derive(Args)]
pub struct TokenArgs {
    /// A bearer token of a user in the nodes' `node.toml`.
    #[arg(long, value_name = "T", env = "TRACKC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file whose first line is the token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    pub(crate) fn get(&self) -> Result<Option<String>, UsageError> {
        let Some(path) = &self.token_file else {
            return Ok(self.token.clone());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("--token-file {}: {e}", path.display())))?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(usage(format!(
                "--token-file {}: the first line is empty",
                path.display()
            )));
        }
        Ok(Some(token.to_string()))
    }
}

#[derive(Args)]
pub struct TokenNewArgs {
    /// The user's name in node.toml.
    #[arg(long)]
    name: String,
    /// What the user may do.
    #[arg(long, value_enum)]
    role: TokenRole,
}

#[derive(Clone, Copy, ValueEnum)]
enum TokenRole {
    Viewer,
    Operator,
    Author,
    Admin,
}

/// `trackc token new`: a fresh random token, printed once, and the
/// `[[users]]` entry with its SHA-256 for every node's node.toml.
pub fn token_new(args: &TokenNewArgs) -> Result<ExitCode, UsageError> {
    if args.name.is_empty() || args.name.contains(['"', '\\', '\n']) {
        return Err(usage(
            "--name: a name without quotes, backslashes or line breaks",
        ));
    }
    let token = trackc_runtime::node::config::new_token().map_err(failed)?;
    let role = match args.role {
        TokenRole::Viewer => "viewer",
        TokenRole::Operator => "operator",
        TokenRole::Author => "author",
        TokenRole::Admin => "admin",
    };
    println!("{token}");
    println!();
    println!("[[users]]");
    println!("name = \"{}\"", args.name);
    println!("role = \"{role}\"");
    println!(
        "token_sha256 = \"{}\"",
        trackc_runtime::node::config::token_sha256(&token)
    );
    eprintln!(
        "the first line is the token, shown this once: give it to {} (or keep it in a file for \
         --token-file); paste the [[users]] entry into every node's node.toml",
        args.name
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct DeployArgs {
    /// Track files or directories (a directory's schema.sql is the schema).
    #[arg(required = true, value_name = "FILES")]
    files: Vec<PathBuf>,
    /// The schema the tracks are checked against (default: `schema` of the files'
    /// trackc.toml, else a directory's schema.sql, else the deployed one); `NAME=FILE.sql`
    /// gives a source database's (default: `[databases.NAME]` of trackc.toml).
    #[arg(long, value_name = "[NAME=]FILE.sql")]
    schema: Vec<String>,
    /// Move records of a removed step: TRACK.OLD_STEP=NEW_STEP.
    #[arg(long, value_name = "MAPPING")]
    map: Vec<String>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum StatusFormat {
    Human,
    Json,
}

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = StatusFormat::Human)]
    format: StatusFormat,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Args)]
pub struct DrainArgs {
    /// The id of the node to drain.
    id: u64,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Args)]
pub struct EmitArgs {
    /// The event's name.
    event: String,
    /// The key of the record it is for.
    #[arg(long, conflicts_with = "keys_from")]
    key: Option<String>,
    /// Keys, one per line (`-`: standard input; blank lines are skipped):
    /// one event each, raised in parts of 10,000 per transaction.
    #[arg(long, value_name = "FILE|-")]
    keys_from: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

pub fn node(args: &NodeArgs) -> Result<ExitCode, UsageError> {
    let config = NodeConfig::read(&args.config).map_err(failed)?;
    let stop = stop_flag()?;
    // SIGHUP: read node.toml again (secrets, TLS files).
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(|e| usage(format!("cannot handle signals: {e}")))?;
    eprintln!(
        "node {} listening on {} (peers), {} (HTTP{})",
        config.id,
        config.listen,
        config.http,
        if config.tls.is_some() { "S" } else { "" }
    );
    trackc_runtime::node::run_node(config, stop, reload).map_err(failed)?;
    Ok(ExitCode::SUCCESS)
}

/// Sends a request; prints the answer's error and exits 1 on a refusal.
pub(crate) fn call(
    remote: &Remote,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<Result<serde_json::Value, ExitCode>, UsageError> {
    let api = Api {
        url: &remote.to,
        token: &remote.token,
        tls: &remote.tls,
    };
    call_at(&api, method, path, body)
}

/// A node's API as a command reaches it.
pub(crate) struct Api<'a> {
    pub url: &'a str,
    pub token: &'a TokenArgs,
    pub tls: &'a ClientTlsArgs,
}

/// `call`, for a command whose API URL is not `--to` (`trackc move`,
/// whose `--to` is the node a track goes to).
pub(crate) fn call_at(
    api: &Api,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<Result<serde_json::Value, ExitCode>, UsageError> {
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    let token = api.token.get()?;
    let (status, text) =
        request(method, &url, token.as_deref(), body, &api.tls.connection()).map_err(failed)?;
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if (200..300).contains(&status) {
        return Ok(Ok(value));
    }
    let message = value["error"].as_str().map(str::to_string).unwrap_or(text);
    eprintln!("error: {url} answered {status}: {message}");
    Ok(Err(ExitCode::from(if status == 422 { 1 } else { 2 })))
}

/// The request that ships the track files under `paths` and their schema
/// (`schema`, else a directory's schema.sql, else none: the deployed one).
pub fn deploy_request(
    paths: &[PathBuf],
    schema: Option<&std::path::Path>,
    named: &[(String, PathBuf)],
    map: &[String],
) -> Result<DeployRequest, UsageError> {
    let (files, schema) = track_files(paths, schema).map_err(failed)?;
    // The named source databases of trackc.toml and `--schema NAME=FILE`,
    // shipped so that every node compiles against the same schemas.
    let project = match paths.first() {
        Some(p) => crate::project::Project::find(p).map_err(usage)?,
        None => None,
    };
    let dialect = project.as_ref().and_then(|p| p.dialect).unwrap_or_default();
    let databases = crate::project::Project::databases(project.as_ref(), named, dialect)
        .map_err(usage)?
        .into_iter()
        .map(|d| {
            Ok(trackc_runtime::node::api::DatabaseSchema {
                dialect: d.dialect.name().to_string(),
                schema: d
                    .schema
                    .map(|input| {
                        String::from_utf8(input.bytes)
                            .map(|text| SourceFile {
                                name: input.name.clone(),
                                text,
                            })
                            .map_err(|_| usage(format!("{}: not UTF-8 text", input.name)))
                    })
                    .transpose()?,
                name: d.name,
            })
        })
        .collect::<Result<Vec<_>, UsageError>>()?;
    let read = |p: &PathBuf| -> Result<SourceFile, UsageError> {
        Ok(SourceFile {
            name: p.display().to_string(),
            text: std::fs::read_to_string(p).map_err(|e| usage(format!("{}: {e}", p.display())))?,
        })
    };
    Ok(DeployRequest {
        files: files.iter().map(read).collect::<Result<_, _>>()?,
        schema: schema.as_ref().map(read).transpose()?,
        map: map.to_vec(),
        databases,
    })
}

pub fn deploy(args: &DeployArgs) -> Result<ExitCode, UsageError> {
    let (state_schema, named) = crate::project::split_schemas(&args.schema).map_err(usage)?;
    let schema = crate::project::schema_for(state_schema.as_deref(), &args.files).map_err(usage)?;
    let request = deploy_request(&args.files, schema.as_deref(), &named, &args.map)?;
    let body = serde_json::to_string(&request).expect("a deploy request encodes");
    match call(&args.remote, "POST", "/deploy", Some(body))? {
        Ok(answer) => {
            println!("deployed: {}", answer["tracks"]);
            println!("{}", answer["summary"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

pub fn status(args: &StatusArgs) -> Result<ExitCode, UsageError> {
    let status = match call(&args.remote, "GET", "/status", None)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    match args.format {
        StatusFormat::Json => println!("{status}"),
        StatusFormat::Human => {
            println!("as node {} sees the group:", status["node"]);
            let database = &status["database"];
            if database["reachable"] == false {
                println!(
                    "  this node cannot reach the database for {:.0} s: {}",
                    database["unreachable_for_seconds"].as_f64().unwrap_or(0.0),
                    database["error"].as_str().unwrap_or("?")
                );
            }
            let protocol = &status["protocol"];
            for peer in protocol["unreadable_peers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let who = match peer["node"].as_u64() {
                    Some(id) => format!("node {id}"),
                    None => "a peer".into(),
                };
                println!(
                    "  {who} speaks protocol {}, this node {}: their frames are dropped",
                    peer["protocol"], protocol["speaks"]
                );
            }
            for n in status["nodes"].as_array().into_iter().flatten() {
                println!(
                    "  node {:<4} {:<12} {:<8}{} database {:<11} protocol {:<2} load {:<8} tracks: {}",
                    n["id"],
                    n["state"].as_str().unwrap_or("?"),
                    n["role"].as_str().unwrap_or("?"),
                    if n["master"] == true {
                        " master"
                    } else {
                        "       "
                    },
                    if n["database"] == true {
                        "ok"
                    } else {
                        "unreachable"
                    },
                    n["protocol"],
                    n["load"],
                    n["tracks"]
                );
            }
            for t in status["tracks"].as_array().into_iter().flatten() {
                println!(
                    "  track {:<24} owner {:<4} epoch {:<4} blocks in flight {:<4} cost {:<8} {}",
                    t["name"].as_str().unwrap_or("?"),
                    t["owner"],
                    t["epoch"],
                    t["blocks_in_flight"],
                    t["cost"],
                    crate::balance_cli::measured(&t["measured"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn drain(args: &DrainArgs) -> Result<ExitCode, UsageError> {
    match call(&args.remote, "POST", &format!("/drain/{}", args.id), None)? {
        Ok(_) => {
            println!("node {} is draining", args.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

/// Raises a part of the events: `Ok(Err(code))` when the group refused it.
type RaiseEvents = dyn FnMut(&[NewEvent]) -> Result<Result<(), ExitCode>, UsageError>;

pub fn emit(args: &EmitArgs) -> Result<ExitCode, UsageError> {
    if args.target.db.is_none() && args.target.to.is_none() {
        return Err(usage("give --to URL (a group) or --db URL (one node)"));
    }
    let mut raise: Box<RaiseEvents> = match args.target.place()? {
        Place::Db(url) => {
            let (_, mut store) = crate::operate::open(&url)?;
            Box::new(move |events| {
                let result = store.insert_events(events, trackc_runtime::clock::now_micros());
                crate::operate::audit_local(
                    store.as_mut(),
                    AuditAction::Emit,
                    &emitted(events),
                    &result,
                );
                result.map_err(failed)?;
                Ok(Ok(()))
            })
        }
        Place::Group(remote) => Box::new(move |events| {
            let body: Vec<EmitRequest> = events
                .iter()
                .map(|e| EmitRequest {
                    event: e.name.clone(),
                    key: e.key.clone(),
                })
                .collect();
            let body = serde_json::to_string(&body).expect("an emit request encodes");
            Ok(call(&remote, "POST", "/emit", Some(body))?.map(drop))
        }),
    };
    let event = |key: Option<String>| NewEvent {
        name: args.event.clone(),
        key,
    };
    let Some(path) = &args.keys_from else {
        return Ok(match raise(&[event(args.key.clone())])? {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        });
    };
    let reader: Box<dyn std::io::BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    // Read and raise a part at a time: memory stays bounded for any file.
    let (mut raised, mut part) = (0usize, Vec::with_capacity(EMIT_BATCH_MAX));
    let mut lines = reader.lines();
    loop {
        let line = lines
            .next()
            .transpose()
            .map_err(|e| usage(format!("{}: after {raised} events: {e}", path.display())))?;
        if let Some(key) = &line {
            let key = key.trim_end_matches('\r');
            if !key.trim().is_empty() {
                part.push(event(Some(key.to_string())));
            }
        }
        if part.len() == EMIT_BATCH_MAX || (line.is_none() && !part.is_empty()) {
            match raise(&part) {
                Ok(Ok(())) => raised += part.len(),
                outcome => {
                    eprintln!(
                        "error: {raised} events were raised before this part of {} failed; \
                         the rest were not",
                        part.len()
                    );
                    return outcome.map(|o| o.err().unwrap_or(ExitCode::from(1)));
                }
            }
            part.clear();
        }
        if line.is_none() {
            break;
        }
    }
    println!("raised {raised} `{}` events", args.event);
    Ok(ExitCode::SUCCESS)
}
