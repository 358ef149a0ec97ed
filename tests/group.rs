//! Three `trackc node` processes on loopback sharing the PostgreSQL on
//! this machine (cycle 200ms): deploy over the API (roles enforced), kill
//! -9 the owner of a track mid-run, pause another node (SIGSTOP) past the
//! failure timeout and resume it, raise an event, drain a node; every
//! effect in the user's tables must happen exactly once. Prints the
//! takeover time.

#[path = "support/db.rs"]
mod db;

use db::{free_port, temp_dir, Db};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ITEMS: i64 = 20_000;
const TOKENS: [(&str, &str); 4] = [
    ("admin", "admin-token"),
    ("author", "author-token"),
    ("operator", "operator-token"),
    ("viewer", "viewer-token"),
];

fn trackc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trackc"))
}

struct Node {
    id: u64,
    http: String,
    child: Option<Child>,
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

fn write_configs(dir: &Path, db: &Db) -> Vec<(u64, PathBuf, String)> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let peers: Vec<String> = ports
        .iter()
        .map(|(p, _)| format!("\"127.0.0.1:{p}\""))
        .collect();
    let users: String = TOKENS
        .iter()
        .map(|(role, token)| {
            let hash = trackc_runtime::node::config::token_sha256(token);
            format!("[[users]]\nname = \"{role}\"\nrole = \"{role}\"\ntoken_sha256 = \"{hash}\"\n")
        })
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, (peer, http))| {
            let id = i as u64 + 1;
            let path = dir.join(format!("node{id}.toml"));
            std::fs::write(
                &path,
                format!(
                    "id = {id}\nlisten = \"127.0.0.1:{peer}\"\nhttp = \"127.0.0.1:{http}\"\n\
                     peers = [{}]\ndatabase = \"{}\"\nsecret = \"the group secret of the test\"\n\
                     cycle = \"200ms\"\n{users}",
                    peers.join(", "),
                    db.url
                ),
            )
            .unwrap();
            (id, path, format!("http://127.0.0.1:{http}"))
        })
        .collect()
}

fn start(id: u64, config: &Path, http: &str, dir: &Path) -> Node {
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

fn status(node: &Node) -> Option<serde_json::Value> {
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

/// The owner of `track` as `node` sees it.
fn owner(node: &Node, track: &str) -> Option<u64> {
    let s = status(node)?;
    s["tracks"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == track)?["owner"]
        .as_u64()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn signal(node: &Node, sig: &str) {
    let pid = node.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// A database with the items and three nodes on it, answering; the
/// folder with the track files and the schema.
fn start_group(name: &str) -> Option<(Db, Vec<Node>, PathBuf, PathBuf, PathBuf)> {
    let mut db = Db::postgres(name)?;
    let dir = temp_dir(name);
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crash/schema.sql");
    db.execute(&std::fs::read_to_string(&schema).unwrap());
    db.execute(&format!(
        "INSERT INTO items (id, n, email) SELECT i, i, 'x' FROM generate_series(1, {ITEMS}) i"
    ));
    let tracks = dir.join("tracks");
    std::fs::create_dir_all(&tracks).unwrap();
    std::fs::copy(&schema, tracks.join("schema.sql")).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/group/tracks.dt");
    std::fs::copy(&fixture, tracks.join("tracks.dt")).unwrap();
    let configs = write_configs(&dir, &db);
    let nodes: Vec<Node> = configs
        .iter()
        .map(|(id, path, http)| start(*id, path, http, &dir))
        .collect();
    wait_for("the nodes answer", Duration::from_secs(30), || {
        nodes.iter().all(|n| status(n).is_some())
    });
    Some((db, nodes, dir, tracks, schema))
}

/// Every effect of the group fixture once: `extra` more than the three
/// per item (events).
fn check_every_effect_once(db: &mut Db, pinged: i64) {
    for (what, want) in [
        ("alpha1", ITEMS),
        ("alpha2", ITEMS),
        ("beta", ITEMS),
        ("pinged", pinged),
    ] {
        let sql = format!("SELECT count(*) FROM effects WHERE what = '{what}'");
        assert_eq!(db.count(&sql), want, "{sql}");
    }
    assert_eq!(
        db.count(
            "SELECT count(*) FROM (SELECT item, what FROM effects GROUP BY item, what \
             HAVING count(*) > 1) d"
        ),
        0
    );
}

#[test]
fn three_nodes_survive_kill_and_pause_with_every_effect_once() {
    let Some((mut db, mut nodes, dir, tracks, schema)) = start_group("group") else {
        return;
    };

    // Roles: no token 401, a viewer may not deploy 403, nothing stored.
    let deploy = |token: Option<&str>, what: &Path| {
        let mut c = trackc();
        c.arg("deploy").arg(what).args(["--to", &nodes[0].http]);
        if let Some(t) = token {
            c.args(["--token", t]);
        }
        c.output().unwrap()
    };
    let out = deploy(None, &tracks);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let out = deploy(Some("viewer-token"), &tracks);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );
    let broken = dir.join("broken.dt");
    std::fs::write(
        &broken,
        "track broken { source key id { SELECT nope FROM items } }",
    )
    .unwrap();
    let out = trackc()
        .arg("deploy")
        .arg(&broken)
        .args(["--schema"])
        .arg(&schema)
        .args(["--to", &nodes[0].http, "--token", "author-token"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("422"),
        "{out:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM trackc_deployments"), 0);

    let out = deploy(Some("author-token"), &tracks);
    assert!(out.status.success(), "{out:?}");

    // The owner of alpha dies mid-run.
    wait_for("alpha is owned", Duration::from_secs(30), || {
        owner(&nodes[1], "alpha").is_some()
    });
    let victim = owner(&nodes[1], "alpha").unwrap();
    wait_for("alpha has started", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM effects WHERE what = 'alpha2'") > 0
    });
    let victim_index = (victim - 1) as usize;
    signal(&nodes[victim_index], "-KILL");
    let done_at_kill = db.count("SELECT count(*) FROM effects WHERE what = 'alpha2'");
    let killed_at = Instant::now();
    let _ = nodes[victim_index].child.as_mut().unwrap().wait();
    nodes[victim_index].child = None;
    let survivor = nodes.iter().find(|n| n.child.is_some()).unwrap().id as usize - 1;
    wait_for("alpha is taken over", Duration::from_secs(20), || {
        owner(&nodes[survivor], "alpha").is_some_and(|o| o != victim)
    });
    let takeover = killed_at.elapsed();
    eprintln!(
        "takeover of alpha after kill -9 of node {victim} ({done_at_kill} of {ITEMS} records \
         done): {:.2} s ({:.1} cycles of 200 ms)",
        takeover.as_secs_f64(),
        takeover.as_secs_f64() / 0.2
    );

    // Another node is paused past the failure timeout (4 × 200 ms), then
    // resumes.
    let paused = nodes.iter().position(|n| n.child.is_some()).unwrap();
    signal(&nodes[paused], "-STOP");
    std::thread::sleep(Duration::from_millis(2_000));
    signal(&nodes[paused], "-CONT");

    let live = nodes.iter().position(|n| n.child.is_some()).unwrap();
    let out = trackc()
        .args([
            "emit",
            "ping",
            "--key",
            "7",
            "--to",
            &nodes[live].http,
            "--token",
            "operator-token",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    wait_for("every effect", Duration::from_secs(180), || {
        db.count("SELECT count(*) FROM effects") == 3 * ITEMS + 1
    });
    // Settle, then check nothing more happened and nothing twice.
    std::thread::sleep(Duration::from_secs(2));
    check_every_effect_once(&mut db, 1);
    wait_for("the event is done", Duration::from_secs(10), || {
        db.count("SELECT count(*) FROM trackc_events WHERE done_at IS NULL") == 0
    });

    // Drain the paused-and-resumed node: it hands over and exits 0.
    let drained = nodes[paused].id;
    let out = trackc()
        .args(["drain", &drained.to_string(), "--to", &nodes[paused].http])
        .args(["--token", "operator-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let child = nodes[paused].child.as_mut().unwrap();
    wait_for("the drained node exits", Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    assert!(child.try_wait().unwrap().unwrap().success());
    nodes[paused].child = None;
    let last = nodes.iter().find(|n| n.child.is_some()).unwrap();
    wait_for("one node owns everything", Duration::from_secs(20), || {
        ["alpha", "beta", "pinged"]
            .iter()
            .all(|t| owner(last, t) == Some(last.id))
    });
}

/// Every connection of the group's database terminated in rounds, 700 ms
/// apart, while the nodes run (what a PostgreSQL restart or failover does
/// to each client: the report): the nodes reconnect by themselves,
/// stay alive, and finish the work with every effect once.
#[test]
fn three_nodes_survive_terminated_connections_with_every_effect_once() {
    let Some((mut db, mut nodes, dir, tracks, _)) = start_group("terminate") else {
        return;
    };
    let out = trackc()
        .arg("deploy")
        .arg(&tracks)
        .args(["--to", &nodes[0].http, "--token", "author-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for("the run has started", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM effects") > 0
    });
    let mut rounds_mid_run = 0;
    for _ in 0..5 {
        if db.count("SELECT count(*) FROM effects") < 3 * ITEMS {
            rounds_mid_run += 1;
        }
        db.terminate_connections();
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(rounds_mid_run >= 2, "the work ended too soon to be hit");
    let started = Instant::now();
    wait_for("every effect", Duration::from_secs(120), || {
        db.count("SELECT count(*) FROM effects") == 3 * ITEMS
    });
    eprintln!(
        "work finished {:.1} s after the last of 5 rounds of terminated connections",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(1));
    check_every_effect_once(&mut db, 0);
    for n in &mut nodes {
        let child = n.child.as_mut().unwrap();
        assert!(child.try_wait().unwrap().is_none(), "node {} died", n.id);
        let s = status(n).expect("the node answers");
        assert_eq!(s["database"]["reachable"], true, "node {}: {s}", n.id);
    }
    let log = std::fs::read_to_string(dir.join("node1.log")).unwrap();
    assert!(log.contains("the database is reachable again"), "{log}");
}
