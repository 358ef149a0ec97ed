//! `trackc node` processes for the end-to-end tests: their `node.toml`
//! files, starting them, asking their status, signalling them.

#![allow(dead_code)]

use super::db::{free_ports, temp_dir};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "the group secret of the test";
pub const TOKENS: [(&str, &str); 4] = [
    ("admin", "admin-token"),
    ("author", "author-token"),
    ("operator", "operator-token"),
    ("viewer", "viewer-token"),
];

pub fn trackc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trackc"))
}

pub struct Node {
    pub id: u64,
    pub http: String,
    pub child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One node as the test wires it, before its `node.toml` is written.
#[derive(Clone)]
pub struct Plan {
    pub id: u64,
    pub listen: SocketAddr,
    pub http: u16,
    pub database: String,
    pub peers: Vec<SocketAddr>,
    /// More `node.toml` lines; a `secret = …` line there replaces the
    /// test's secret.
    pub extra: String,
}

/// Every node process still runs.
pub fn check_alive(nodes: &mut [Node]) {
    for n in nodes {
        let child = n.child.as_mut().unwrap();
        assert!(child.try_wait().unwrap().is_none(), "node {} died", n.id);
    }
}

/// Writes each node's `node.toml`: (id, path, HTTP URL).
pub fn write_configs(dir: &Path, plans: &[Plan]) -> Vec<(u64, PathBuf, String)> {
    let users: String = TOKENS
        .iter()
        .map(|(role, token)| {
            let hash = trackc_runtime::node::config::token_sha256(token);
            format!("[[users]]\nname = \"{role}\"\nrole = \"{role}\"\ntoken_sha256 = \"{hash}\"\n")
        })
        .collect();
    plans
        .iter()
        .map(|p| {
            let path = dir.join(format!("node{}.toml", p.id));
            let peers: Vec<String> = p.peers.iter().map(|a| format!("\"{a}\"")).collect();
            let secret = if p.extra.lines().any(|l| l.starts_with("secret =")) {
                String::new()
            } else {
                format!("secret = \"{SECRET}\"\n")
            };
            std::fs::write(
                &path,
                format!(
                    "id = {}\nlisten = \"{}\"\nhttp = \"127.0.0.1:{}\"\n\
                     peers = [{}]\ndatabase = \"{}\"\n{secret}\
                     cycle = \"200ms\"\n{}\n{users}",
                    p.id,
                    p.listen,
                    p.http,
                    peers.join(", "),
                    p.database,
                    p.extra,
                ),
            )
            .unwrap();
            (p.id, path, format!("http://127.0.0.1:{}", p.http))
        })
        .collect()
}

pub fn start(id: u64, config: &Path, http: &str, dir: &Path) -> Node {
    let log = std::fs::File::create(dir.join(format!("node{id}.log"))).unwrap();
    let child = trackc()
        .args(["node", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Node {
        id,
        http: http.to_string(),
        child: Some(child),
    }
}

pub fn status(node: &Node) -> Option<serde_json::Value> {
    let out = trackc()
        .args([
            "status",
            "--format",
            "json",
            "--to",
            &node.http,
            "--token",
            "viewer-token",
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).ok()
}

pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

pub fn signal(node: &Node, sig: &str) {
    let pid = node.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// One node on SQLite without peers, answering; its folder.
pub fn start_single_node(name: &str) -> (Node, PathBuf) {
    let dir = temp_dir(name);
    let database = format!("sqlite:{}", dir.join("node.db").display());
    start_single_node_on(name, &database)
}

/// One node on `database` without peers, answering; its folder.
pub fn start_single_node_on(name: &str, database: &str) -> (Node, PathBuf) {
    let dir = temp_dir(name);
    let ports = free_ports(2);
    let listen = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let plan = Plan {
        id: 1,
        listen,
        http: ports[1],
        database: database.to_string(),
        peers: vec![listen],
        extra: String::new(),
    };
    let configs = write_configs(&dir, &[plan]);
    let node = start(1, &configs[0].1, &configs[0].2, &dir);
    wait_for("the node answers", Duration::from_secs(30), || {
        status(&node).is_some()
    });
    (node, dir)
}
