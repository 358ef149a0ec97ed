//! Three `trackc node` processes on loopback sharing the PostgreSQL on
//! this machine (cycle 200ms): deploy over the API (roles enforced), kill
//! -9 the owner of a track mid-run, pause another node (SIGSTOP) past the
//! failure timeout and resume it, raise an event, drain a node; every
//! effect in the user's tables must happen exactly once. Prints the
//! takeover time.

#[path = "support/db.rs"]
mod db;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/peer_relay.rs"]
mod peer_relay;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/relay.rs"]
mod relay;

use db::{free_ports, server_of, temp_dir, Db};
use nodes::{
    check_alive, signal, start, start_single_node, start_single_node_on, status, trackc, wait_for,
    write_configs, Node, Plan, SECRET, TOKENS,
};
use peer_relay::PeerRelay;
use receivers::HttpReceiver;
use relay::Relay;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ITEMS: i64 = 20_000;
/// Items that also send a webhook in the terminated-connections test.
const HOOKS: i64 = 3_000;

/// A password the nodes' database URLs carry (trust authentication lets it
/// pass): it must never show in their logs.
const DB_PASSWORD: &str = "the-db-password-of-the-test";

/// `url` with `DB_PASSWORD` after its user.
fn with_password(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (user, host) = rest.split_once('@')?;
        (!user.contains(':')).then(|| format!("{scheme}://{user}:{DB_PASSWORD}@{host}"))
    }) {
        Some(u) => u,
        None => url.to_string(),
    }
}

/// No token and no database password in any node's log.
fn check_no_secrets_in_logs(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let log = std::fs::read_to_string(&path).unwrap();
            for secret in TOKENS.iter().map(|(_, t)| *t).chain([DB_PASSWORD, SECRET]) {
                assert!(
                    !log.contains(secret),
                    "{}: `{secret}` in the log",
                    path.display()
                );
            }
        }
    }
}

/// Three nodes on free loopback ports, each a peer of all, on `db`.
fn plans(db: &Db) -> Vec<Plan> {
    let ports = free_ports(6);
    let listen: Vec<SocketAddr> = ports[..3]
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    (0..3)
        .map(|i| Plan {
            id: i as u64 + 1,
            listen: listen[i],
            http: ports[3 + i],
            database: with_password(&db.url),
            peers: listen.clone(),
            extra: String::new(),
        })
        .collect()
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

/// Drains a node through its own API (as an operator) and waits until it
/// has handed over and exited 0.
fn drain_until_it_exits(node: &mut Node, within: Duration) {
    let out = trackc()
        .args(["drain", &node.id.to_string(), "--to", &node.http])
        .args(["--token", "operator-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let child = node.child.as_mut().unwrap();
    wait_for("the drained node exits", within, || {
        child.try_wait().unwrap().is_some()
    });
    assert!(child.try_wait().unwrap().unwrap().success());
    node.child = None;
}

/// A database with the items and three nodes on it, answering; the
/// folder with the track files and the schema.
fn start_group(name: &str) -> Option<(Db, Vec<Node>, PathBuf, PathBuf, PathBuf)> {
    start_group_wired(name, |_| {})
}

/// `start_group`, with the nodes' wiring changed by `wire` first.
fn start_group_wired(
    name: &str,
    wire: impl FnOnce(&mut [Plan]),
) -> Option<(Db, Vec<Node>, PathBuf, PathBuf, PathBuf)> {
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
    let mut plans = plans(&db);
    wire(&mut plans);
    let configs = write_configs(&dir, &plans);
    let nodes: Vec<Node> = configs
        .iter()
        .map(|(id, path, http)| start(*id, path, http, &dir))
        .collect();
    wait_for("the nodes answer", Duration::from_secs(30), || {
        nodes.iter().all(|n| status(n).is_some())
    });
    Some((db, nodes, dir, tracks, schema))
}

fn deploy(node: &Node, tracks: &Path) {
    let out = trackc()
        .arg("deploy")
        .arg(tracks)
        .args(["--to", &node.http, "--token", "author-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Every effect of the group fixture once: `extra` more than the three
/// per item (events).
fn check_every_effect_once(db: &mut Db, pinged: i64) {
    let items = db.count("SELECT count(*) FROM items");
    for (what, want) in [
        ("alpha1", items),
        ("alpha2", items),
        ("beta", items),
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

    // More tracks than one advertisement can carry (a node owning them
    // all could not be heard): refused, saying why, nothing stored.
    let many = dir.join("many");
    std::fs::create_dir(&many).unwrap();
    std::fs::copy(&schema, many.join("schema.sql")).unwrap();
    let text: String = (0..300)
        .map(|i| {
            format!(
                "track a_track_whose_name_is_long_enough_{i:03} {{\n    source key id {{ SELECT id FROM items }}\n    \
                 on every 1h\n    step s {{ else end }}\n}}\n"
            )
        })
        .collect();
    std::fs::write(many.join("many.dt"), text).unwrap();
    let out = deploy(Some("author-token"), &many);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        said.contains("422") && said.contains("one UDP datagram carries"),
        "{said}"
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
    // The decision history went with the state across the kill and the
    // pause: each record's change once (a row per block holds the keys it
    // changed: every record of alpha and beta, the one record pinged), each
    // row with the node that decided.
    for (track, changed) in [("alpha", ITEMS), ("beta", ITEMS), ("pinged", 1)] {
        let sql = format!(
            "SELECT count(DISTINCT k) FROM trackc_history,
             json_array_elements_text(keys::json) AS k WHERE track = '{track}'"
        );
        assert_eq!(db.count(&sql), changed, "{track}");
        let sql = format!(
            "SELECT count(*) FROM trackc_history, json_array_elements_text(keys::json) AS k
             WHERE track = '{track}'"
        );
        assert_eq!(db.count(&sql), changed, "{track}: a change twice");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM trackc_history WHERE node IS NULL"),
        0
    );

    // Drain the paused-and-resumed node: it hands over and exits 0.
    drain_until_it_exits(&mut nodes[paused], Duration::from_secs(20));
    let last = nodes.iter().find(|n| n.child.is_some()).unwrap();
    wait_for("one node owns everything", Duration::from_secs(20), || {
        ["alpha", "beta", "pinged"]
            .iter()
            .all(|t| owner(last, t) == Some(last.id))
    });
    check_no_secrets_in_logs(&dir);
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
    // Three times the items of the other tests, so that the work lasts
    // through several rounds even on a fast machine.
    db.execute(&format!(
        "INSERT INTO items (id, n, email) SELECT i, i, 'x' FROM generate_series({}, {}) i",
        ITEMS + 1,
        3 * ITEMS
    ));
    let effects = 3 * 3 * ITEMS;
    // And webhooks, so that rounds hit the master's deliveries too.
    let receiver = HttpReceiver::start();
    std::fs::write(
        tracks.join("hooks.dt"),
        format!(
            "track hooked {{\n    source key id {{ SELECT id, n, email FROM items WHERE id <= {HOOKS} }}\n    \
             on every 1h\n    step one {{\n        when n >= 0 then webhook 'http://{}/hook', end\n    }}\n}}\n",
            receiver.addr
        ),
    )
    .unwrap();
    deploy(&nodes[0], &tracks);
    // Rounds from the deploy on: the first ones meet the claims, the later
    // ones the runs and the deliveries.
    let mut rounds_mid_run = 0;
    for _ in 0..7 {
        let done = db.count("SELECT count(*) FROM effects");
        if done > 0 && done < effects {
            rounds_mid_run += 1;
        }
        db.terminate_connections();
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(rounds_mid_run >= 2, "the work ended too soon to be hit");
    let started = Instant::now();
    wait_for("every effect and webhook", Duration::from_secs(120), || {
        db.count("SELECT count(*) FROM effects") == effects
            && db.count("SELECT count(*) FROM trackc_outbox WHERE state = 'delivered'") == HOOKS
    });
    eprintln!(
        "work and deliveries finished {:.1} s after the last of 7 rounds of terminated \
         connections",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(1));
    check_every_effect_once(&mut db, 0);
    // Every webhook reached the receiver under its own idempotency key (a
    // delivery whose answer a round cut off is sent again with the same
    // key: at least once, deduplicated by the key).
    let hooks = receiver.hooks();
    let keys: HashSet<&str> = hooks
        .iter()
        .map(|h| h.idempotency_key.as_deref().expect("Idempotency-Key"))
        .collect();
    assert_eq!(keys.len() as i64, HOOKS);
    for h in &hooks {
        let body: serde_json::Value = serde_json::from_str(&h.body).unwrap();
        assert_eq!(body["id"], h.idempotency_key.as_deref().unwrap());
    }
    assert_eq!(db.count("SELECT count(*) FROM trackc_outbox"), HOOKS);
    eprintln!("{} webhooks received for {HOOKS} keys", hooks.len());
    check_alive(&mut nodes);
    for n in &nodes {
        let s = status(n).expect("the node answers");
        assert_eq!(s["database"]["reachable"], true, "node {}: {s}", n.id);
    }
    let log = std::fs::read_to_string(dir.join("node1.log")).unwrap();
    assert!(log.contains("the database is reachable again"), "{log}");
    check_no_secrets_in_logs(&dir);
}

/// `start_group` with node 1's PostgreSQL behind a fault relay (its URL
/// ending in `node1_query`, and `extra` lines in every node.toml); the
/// relay too.
fn start_group_relayed(
    name: &str,
    node1_query: &str,
    extra: &str,
) -> Option<(Db, Vec<Node>, PathBuf, PathBuf, Relay)> {
    let mut relayed = None;
    let (db, nodes, dir, tracks, _) = start_group_wired(name, |plans| {
        let server = server_of(&plans[0].database);
        let relay = Relay::start(server.parse().unwrap());
        plans[0].database = plans[0]
            .database
            .replacen(&server, &relay.addr.to_string(), 1)
            + node1_query;
        for p in plans.iter_mut() {
            p.extra = extra.to_string();
        }
        relayed = Some(relay);
    })?;
    Some((db, nodes, dir, tracks, relayed.expect("wired")))
}

/// Deploys the fixture and waits until the run has started: the track
/// node 1 owns (each of the three nodes gets one: the fewest tracks, then
/// the lowest id).
fn deploy_and_find_node1s_track(db: &mut Db, nodes: &[Node], tracks: &Path) -> &'static str {
    deploy(&nodes[0], tracks);
    let track = *["alpha", "beta", "pinged"]
        .iter()
        .find(|t| {
            wait_for("the tracks are owned", Duration::from_secs(30), || {
                owner(&nodes[1], t).is_some()
            });
            owner(&nodes[1], t) == Some(1)
        })
        .expect("node 1 owns a track");
    wait_for("the run has started", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM effects") > 0
    });
    track
}

/// The owner of a track loses its database (every connection cut, new
/// ones refused) mid-run while its peers keep theirs: it advertises that it
/// cannot commit, a peer takes the track over, the work finishes without
/// it; when the database is back it rejoins by itself. Prints both times
/// in cycles (BENCHMARKS.md).
#[test]
fn an_owner_that_loses_its_database_steps_back_and_rejoins() {
    let Some((mut db, mut nodes, _dir, tracks, relay)) = start_group_relayed("dblost", "", "")
    else {
        return;
    };
    let track = deploy_and_find_node1s_track(&mut db, &nodes, &tracks);
    let node1_database = |nodes: &[Node]| {
        status(&nodes[1]).and_then(|s| {
            s["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["id"] == 1)
                .map(|n| n["database"] == true)
        })
    };
    relay.sever(true);
    let cut_at = Instant::now();
    let seen = wait_for(
        "node 2 sees node 1 without its database",
        Duration::from_secs(20),
        || node1_database(&nodes) == Some(false),
    );
    let took = wait_for("the track is taken over", Duration::from_secs(30), || {
        owner(&nodes[1], track).is_some_and(|o| o != 1)
    });
    let took = cut_at.elapsed().max(took);
    eprintln!(
        "node 1 lost its database: its peers saw it in {:.2} s ({:.1} cycles of 200 ms), \
         `{track}` taken over in {:.2} s ({:.1} cycles)",
        seen.as_secs_f64(),
        seen.as_secs_f64() / 0.2,
        took.as_secs_f64(),
        took.as_secs_f64() / 0.2
    );
    wait_for(
        "every effect without node 1",
        Duration::from_secs(120),
        || db.count("SELECT count(*) FROM effects") == 3 * ITEMS,
    );
    relay.sever(false);
    let back = wait_for("node 1 rejoins", Duration::from_secs(30), || {
        node1_database(&nodes) == Some(true)
    });
    eprintln!(
        "node 1's database back: it advertises it can commit again after {:.2} s ({:.1} cycles)",
        back.as_secs_f64(),
        back.as_secs_f64() / 0.2
    );
    std::thread::sleep(Duration::from_secs(1));
    check_every_effect_once(&mut db, 0);
    check_alive(&mut nodes);
}

/// The owner's database connection hangs (a stalled proxy in front of
/// PostgreSQL: answers held, no error, nothing lost) while the node goes
/// on advertising: alive but stuck. Peers report the stalled run, the
/// owner gives the track up after `stuck_after` (2 s here), blocks it held
/// go to other workers, and the healthy nodes finish the work while it
/// still hangs. When its answers come through, its late commits are
/// fenced: every effect once, every node alive.
#[test]
fn an_owner_stuck_on_a_hung_database_gives_its_track_up_and_nothing_is_lost() {
    let Some((mut db, mut nodes, dir, tracks, relay)) =
        // Node 1 may hang inside a transaction that holds a lock the
        // others need (opening a run takes one per track): the server ends
        // such a session after idle_in_transaction_session_timeout, a
        // minute by default, 3 s here to keep the test short.
        start_group_relayed(
            "stuck",
            "?options=-c%20idle_in_transaction_session_timeout%3D3s",
            "stuck_after = \"2s\"",
        )
    else {
        return;
    };
    let track = deploy_and_find_node1s_track(&mut db, &nodes, &tracks);
    relay.stall(true);
    let stalled_at = Instant::now();
    let mut reported = false;
    wait_for(
        "the stuck track is taken over",
        Duration::from_secs(30),
        || {
            let s = status(&nodes[1]).unwrap_or_default();
            let view = s["tracks"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["name"] == track);
            reported |= view.is_some_and(|t| t["owner"] == 1 && t["stalled_cycles"].is_u64());
            owner(&nodes[1], track).is_some_and(|o| o != 1)
        },
    );
    let took = stalled_at.elapsed().as_secs_f64();
    eprintln!(
        "`{track}` taken over {took:.2} s ({:.1} cycles of 200 ms) after node 1's database \
         connection hung (stuck_after 2 s)",
        took / 0.2
    );
    assert!(
        reported,
        "node 2 never reported the stalled run of `{track}`"
    );
    wait_for(
        "every effect while node 1 hangs",
        Duration::from_secs(120),
        || db.count("SELECT count(*) FROM effects") == 3 * ITEMS,
    );
    relay.stall(false);
    std::thread::sleep(Duration::from_secs(3));
    check_every_effect_once(&mut db, 0);
    check_alive(&mut nodes);
    let log = std::fs::read_to_string(dir.join("node1.log")).unwrap();
    assert!(log.contains("made no progress"), "{log}");
}

/// Node 2 still speaks protocol 1 (a rolling upgrade half done), and the
/// owner of a track is cut off from its peers mid-run for 3 s (15 cycles)
/// while it keeps its database: both sides may claim, fencing decides,
/// and no effect is doubled. After healing the group converges on one
/// owner per track that every node agrees on. A frame of a protocol this
/// build does not read is named in the log and in the status.
#[test]
fn a_partitioned_node_in_a_mixed_version_group_doubles_nothing() {
    use trackc_runtime::group::protocol::{Advert, Message, Role};
    use trackc_runtime::group::wire::{Sealer, BROADCAST, PROTOCOL_VERSION};
    let mut relaying = None;
    let mut node1 = None;
    let Some((mut db, mut nodes, dir, tracks, _)) = start_group_wired("partition", |plans| {
        let listen = plans.iter().map(|p| (p.id, p.listen)).collect();
        let relay = PeerRelay::start(&listen);
        for p in plans.iter_mut() {
            p.peers = relay.peers_of(p.id).to_vec();
        }
        plans[1].extra = "protocol = 1".into();
        node1 = Some(plans[0].listen);
        relaying = Some(relay);
    }) else {
        return;
    };
    let relay = relaying.unwrap();
    // Each node hears the others, and knows which protocol each speaks.
    wait_for("the nodes see each other", Duration::from_secs(20), || {
        let s = status(&nodes[0]).unwrap_or_default();
        let protocols: Vec<_> = s["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| (n["id"].as_u64(), n["protocol"].as_u64(), n["state"].clone()))
            .collect();
        protocols
            == [
                (Some(1), Some(u64::from(PROTOCOL_VERSION)), "alive".into()),
                (Some(2), Some(1), "alive".into()),
                (Some(3), Some(u64::from(PROTOCOL_VERSION)), "alive".into()),
            ]
    });
    // A peer of a newer protocol is named, not counted as noise.
    let newer = PROTOCOL_VERSION + 1;
    let advert = Message::Advert(Advert {
        role: Role::Active,
        ready: true,
        draining: false,
        bundle: 0,
        owned: vec![],
        claims: vec![],
        free: 0,
        busy: vec![],
        master: None,
        database: true,
        runs: vec![],
        gave_up: vec![],
        balancing: true,
        costs: vec![],
        handoffs: vec![],
        moved: u32::MAX,
        asks: vec![],
    });
    let frame = Sealer::new(SECRET.as_bytes(), 9, 1)
        .speaking(newer)
        .seal(BROADCAST, &advert);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&frame, node1.unwrap()).unwrap();
    wait_for("the newer peer is named", Duration::from_secs(5), || {
        let s = status(&nodes[0]).unwrap_or_default();
        s["protocol"]["unreadable_peers"] == serde_json::json!([{"node": 9, "protocol": newer}])
    });
    let human = trackc()
        .args(["status", "--to", &nodes[0].http])
        .env("TRACKC_TOKEN", "viewer-token")
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains(&format!(
            "node 9 speaks protocol {newer}, this node {PROTOCOL_VERSION}"
        )),
        "{human}"
    );

    deploy(&nodes[0], &tracks);
    wait_for("alpha is owned", Duration::from_secs(30), || {
        owner(&nodes[0], "alpha").is_some()
    });
    wait_for("the run has started", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM effects") > 0
    });
    let cut = owner(&nodes[0], "alpha").unwrap();
    let epoch_sql = "SELECT epoch FROM trackc_owners WHERE track = 'alpha'";
    let epoch_at_cut = db.count(epoch_sql);
    let done_at_cut = db.count("SELECT count(*) FROM effects");
    relay.isolate(cut, true);
    std::thread::sleep(Duration::from_secs(3));
    // The peers took alpha over while it was cut off.
    assert!(
        db.count(epoch_sql) > epoch_at_cut,
        "alpha was not taken over"
    );
    relay.isolate(cut, false);
    let healed_at = Instant::now();
    assert!(done_at_cut < 3 * ITEMS, "the work ended before the cut");
    wait_for("every effect", Duration::from_secs(120), || {
        db.count("SELECT count(*) FROM effects") == 3 * ITEMS
    });
    // One owner per track, the same in every node's view, every node
    // alive in every view.
    wait_for("the views agree", Duration::from_secs(30), || {
        let views: Vec<_> = nodes
            .iter()
            .map(|n| status(n).unwrap_or_default())
            .collect();
        let owners = |s: &serde_json::Value| {
            ["alpha", "beta", "pinged"].map(|t| {
                s["tracks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|v| v["name"] == t)
                    .and_then(|v| v["owner"].as_u64())
            })
        };
        let all_alive = views.iter().all(|s| {
            s["nodes"]
                .as_array()
                .is_some_and(|ns| ns.len() == 3 && ns.iter().all(|n| n["state"] == "alive"))
        });
        all_alive
            && owners(&views[0]).iter().all(Option::is_some)
            && views.iter().all(|s| owners(s) == owners(&views[0]))
    });
    eprintln!(
        "node {cut} cut off for 3 s mid-run ({done_at_cut} effects done): every effect and one \
         agreed owner per track {:.1} s after healing",
        healed_at.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(1));
    check_every_effect_once(&mut db, 0);
    check_alive(&mut nodes);
    let log = std::fs::read_to_string(dir.join("node1.log")).unwrap();
    assert!(
        log.contains(&format!("node 9 speaks protocol {newer}")),
        "{log}"
    );

    // The upgrade's last step: node 2 drops its pin and restarts; the
    // group goes on with everyone speaking the newest protocol.
    signal(&nodes[1], "-TERM");
    let child = nodes[1].child.as_mut().unwrap();
    wait_for("node 2 stops", Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    nodes[1].child = None;
    let config = dir.join("node2.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("protocol = 1\n", "")).unwrap();
    let http = nodes[1].http.clone();
    nodes[1] = start(2, &config, &http, &dir);
    wait_for(
        "node 2 speaks the newest protocol",
        Duration::from_secs(20),
        || {
            let s = status(&nodes[0]).unwrap_or_default();
            s["nodes"].as_array().is_some_and(|ns| {
                ns.iter().any(|n| {
                    n["id"] == 2 && n["state"] == "alive" && n["protocol"] == PROTOCOL_VERSION
                })
            })
        },
    );
    let out = trackc()
        .args(["emit", "ping", "--key", "7", "--to", &nodes[1].http])
        .args(["--token", "operator-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for("the event is decided", Duration::from_secs(30), || {
        db.count("SELECT count(*) FROM effects WHERE what = 'pinged'") == 1
    });

    // Events in bulk over the API: more than the limit in one request is
    // refused whole (413, saying the limit); keys from a file go in parts.
    use trackc_runtime::db::EMIT_BATCH_MAX;
    let many: Vec<_> = (0..=EMIT_BATCH_MAX)
        .map(|i| serde_json::json!({"event": "bulk", "key": i.to_string()}))
        .collect();
    let (code, answer) = trackc_runtime::node::client::request(
        "POST",
        &format!("{}/emit", nodes[0].http),
        Some("operator-token"),
        Some(serde_json::Value::from(many).to_string()),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(code, 413, "{answer}");
    assert!(answer.contains("at most 10000"), "{answer}");
    assert_eq!(
        db.count("SELECT count(*) FROM trackc_events WHERE name = 'bulk'"),
        0
    );
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, "1\n2\n3\n").unwrap();
    // The token from a file this time (it wins over the environment's
    // TRACKC_TOKEN, a viewer's).
    let token_file = dir.join("operator.token");
    std::fs::write(&token_file, "operator-token\n").unwrap();
    let out = trackc()
        .args(["emit", "ping", "--to", &nodes[0].http, "--token-file"])
        .arg(&token_file)
        .arg("--keys-from")
        .arg(&keys)
        .env("TRACKC_TOKEN", "viewer-token")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "the bulk events are decided",
        Duration::from_secs(30),
        || db.count("SELECT count(*) FROM effects WHERE what = 'pinged'") == 4,
    );
    std::thread::sleep(Duration::from_secs(1));
    check_every_effect_once(&mut db, 4);
}

/// A GET of `path` from a client bound to `from` (another loopback address
/// than the tests' usual 127.0.0.1): the status code and the headers.
fn get_from(from: [u8; 4], http: &str, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: SocketAddr = http.trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let code = answer[9..12].parse().unwrap();
        (code, answer)
    })
}

/// A client that opens connections and sends its headers a byte at a time
/// (slowloris) is cut off after the header timeout, 10 s, while the API
/// goes on answering others.
#[test]
fn a_client_too_slow_with_its_headers_is_cut_off() {
    use std::io::{Read, Write};
    let (node, _dir) = start_single_node("slowloris");
    let addr = node.http.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(status(&node).is_some(), "others are answered meanwhile");
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let cut = started.elapsed();
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(20)).contains(&cut),
        "cut off after {cut:?}: {}",
        String::from_utf8_lossy(&rest)
    );
}

/// One node (SQLite, no peers) answers 401 to bad tokens, then 429 with
/// `Retry-After` to every request of that address for the rest of the
/// window, good token or not, while another address is answered at once.
#[test]
fn failed_authentications_are_limited_per_address() {
    let (node, dir) = start_single_node("authlimit");
    let url = format!("{}/status", node.http);
    let get = |token: &str| {
        trackc_runtime::node::client::request("GET", &url, Some(token), None, &Default::default())
            .unwrap()
    };
    let limit = 10;
    for n in 0..limit {
        assert_eq!(get("a-guess").0, 401, "failure {n}");
    }
    for _ in 0..100 {
        let (code, answer) = get("a-guess");
        assert_eq!(code, 429, "{answer}");
    }
    assert_eq!(
        get("viewer-token").0,
        429,
        "the address waits, good token or not"
    );
    let (code, answer) = get_from([127, 0, 0, 1], &node.http, "/status", "viewer-token");
    assert_eq!(code, 429, "{answer}");
    let retry_after: u64 = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_string)
        })
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry_after), "{answer}");
    // Another address is answered at once.
    let started = Instant::now();
    let (code, answer) = get_from([127, 0, 0, 2], &node.http, "/status", "viewer-token");
    assert_eq!(code, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let log = std::fs::read_to_string(dir.join("node1.log")).unwrap();
    assert!(
        log.contains("10 failed authentications from 127.0.0.1"),
        "{log}"
    );
    assert!(!log.contains("a-guess"), "a token in the log: {log}");
}

/// The group secret is rotated while alpha and beta run, in the three
/// steps of docs/group.md, each an edit of every node.toml and a SIGHUP
/// per node, one node after the other: no frame is refused on the way
/// (each node already accepts the secret the others switch to), every
/// node stays alive in every node's view, and every effect happens once.
/// After the rotation a frame under the old secret is refused.
#[test]
fn the_group_secret_is_rotated_without_a_restart_and_nothing_is_lost() {
    use trackc_runtime::group::protocol::{Advert, Message, Role};
    use trackc_runtime::group::wire::{Sealer, BROADCAST};
    let mut plans = Vec::new();
    let Some((mut db, mut nodes, dir, tracks, _)) =
        start_group_wired("rotation", |p| plans = p.to_vec())
    else {
        return;
    };
    deploy(&nodes[0], &tracks);
    wait_for("the run has started", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM effects") > 0
    });
    const NEW: &str = "the group secret after the rotation";
    let steps = [
        format!("secret_previous = \"{NEW}\""),
        format!("secret = \"{NEW}\"\nsecret_previous = \"{SECRET}\""),
        format!("secret = \"{NEW}\""),
    ];
    let mac_failures = |node: &Node| {
        let s = status(node).expect("a node answers");
        s["metrics"]["frames_rejected"]["mac"].as_u64().unwrap_or(0)
    };
    let all_alive = |node: &Node| {
        status(node).is_some_and(|s| {
            s["nodes"]
                .as_array()
                .is_some_and(|ns| ns.len() == 3 && ns.iter().all(|n| n["state"] == "alive"))
        })
    };
    for (n, step) in steps.iter().enumerate() {
        for (plan, node) in plans.iter_mut().zip(&nodes) {
            plan.extra = step.clone();
            write_configs(&dir, std::slice::from_ref(plan));
            signal(node, "-HUP");
            // A few cycles between nodes, as an operator's rollout.
            std::thread::sleep(Duration::from_millis(600));
        }
        wait_for("every node has reloaded", Duration::from_secs(10), || {
            (1..=3).all(|id| {
                let log = std::fs::read_to_string(dir.join(format!("node{id}.log"))).unwrap();
                log.matches("SIGHUP: reloaded").count() == n + 1
            })
        });
        std::thread::sleep(Duration::from_secs(1));
        for node in &nodes {
            assert_eq!(mac_failures(node), 0, "step {}: node {}", n + 1, node.id);
            assert!(all_alive(node), "step {}: node {}", n + 1, node.id);
        }
    }
    let items = db.count("SELECT count(*) FROM items");
    wait_for("alpha and beta are done", Duration::from_secs(240), || {
        db.count("SELECT count(*) FROM effects") >= 3 * items
    });
    std::thread::sleep(Duration::from_secs(1));
    check_every_effect_once(&mut db, 0);
    // The old secret is no longer heard.
    let advert = Message::Advert(Advert {
        role: Role::Active,
        ready: true,
        draining: false,
        bundle: 0,
        owned: vec![],
        claims: vec![],
        free: 0,
        busy: vec![],
        master: None,
        database: true,
        runs: vec![],
        gave_up: vec![],
        balancing: true,
        costs: vec![],
        handoffs: vec![],
        moved: u32::MAX,
        asks: vec![],
    });
    let frame = Sealer::new(SECRET.as_bytes(), 9, 1).seal(BROADCAST, &advert);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&frame, plans[0].listen).unwrap();
    wait_for("the old secret is refused", Duration::from_secs(5), || {
        mac_failures(&nodes[0]) == 1
    });
    check_alive(&mut nodes);
    check_no_secrets_in_logs(&dir);
    for id in 1..=3 {
        let log = std::fs::read_to_string(dir.join(format!("node{id}.log"))).unwrap();
        assert!(!log.contains(NEW), "the new secret in node {id}'s log");
    }
}

/// A batch of 20,000 events for `pinged` in the group: its owner is
/// killed (SIGKILL) while the batch's blocks are being decided; the next
/// owner resumes the same run and every item is pinged exactly once.
#[test]
fn a_batch_of_events_survives_the_kill_of_its_owner() {
    let Some((mut db, mut nodes, dir, tracks, _schema)) = start_group("eventbatch") else {
        return;
    };
    deploy(&nodes[0], &tracks);
    wait_for("pinged is owned", Duration::from_secs(30), || {
        owner(&nodes[1], "pinged").is_some()
    });
    let keys = dir.join("keys");
    let lines: Vec<String> = (1..=ITEMS).map(|i| i.to_string()).collect();
    std::fs::write(&keys, lines.join("\n")).unwrap();
    let victim = owner(&nodes[1], "pinged").unwrap();
    let other = nodes.iter().find(|n| n.id != victim).unwrap();
    let out = trackc()
        .args(["emit", "ping", "--keys-from"])
        .arg(&keys)
        .args(["--to", &other.http, "--token", "operator-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for("the batch has started", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM effects WHERE what = 'pinged'") > 0
    });
    let victim_index = (victim - 1) as usize;
    signal(&nodes[victim_index], "-KILL");
    let done_at_kill = db.count("SELECT count(*) FROM effects WHERE what = 'pinged'");
    let _ = nodes[victim_index].child.as_mut().unwrap().wait();
    nodes[victim_index].child = None;
    wait_for("every event decided", Duration::from_secs(180), || {
        db.count("SELECT count(*) FROM trackc_events WHERE done_at IS NULL") == 0
    });
    eprintln!("owner of pinged killed with {done_at_kill} of {ITEMS} events decided");
    assert!(done_at_kill < ITEMS, "the batch was over before the kill");
    wait_for("every effect", Duration::from_secs(180), || {
        db.count("SELECT count(*) FROM effects") == 4 * ITEMS
    });
    std::thread::sleep(Duration::from_secs(1));
    check_every_effect_once(&mut db, ITEMS);
    // Batches, not a run per event: the emit raised its keys in two
    // transactions of 10,000, so one or two runs; a killed run is resumed,
    // not opened again.
    let runs = db.count("SELECT count(*) FROM trackc_runs WHERE track = 'pinged'");
    assert!((1..=2).contains(&runs), "{runs} runs of pinged");
}

/// The blocks nodes hand each other, captured on the wire by a relay
/// between them, hold no field value of the records: protocol 3 encrypts
/// them. The same capture in a group speaking protocol 2 (HMAC only) finds
/// the values, so the search is one that can fail.
#[test]
fn block_transfers_carry_no_record_value_in_clear() {
    for (name, protocol, encrypted) in [("wire3", None, true), ("wire2", Some(2), false)] {
        let mut relaying = None;
        let Some((mut db, nodes, _dir, tracks, _)) = start_group_wired(name, |plans| {
            let listen = plans.iter().map(|p| (p.id, p.listen)).collect();
            let relay = PeerRelay::start(&listen);
            for p in plans.iter_mut() {
                p.peers = relay.peers_of(p.id).to_vec();
                if let Some(v) = protocol {
                    p.extra = format!("protocol = {v}");
                }
            }
            relaying = Some(relay);
        }) else {
            return;
        };
        let relay = relaying.unwrap();
        db.execute("UPDATE items SET email = 'field-value-' || id || '@example.com'");
        deploy(&nodes[0], &tracks);
        wait_for("every effect", Duration::from_secs(180), || {
            db.count("SELECT count(*) FROM effects") == 3 * ITEMS
        });
        let wire = relay.captured_tcp();
        // Blocks of the 20,000 records crossed the relay (each record's
        // email alone is over 20 bytes).
        assert!(wire.len() > 100_000, "{name}: {} bytes relayed", wire.len());
        let found = wire.windows(12).any(|w| w == b"field-value-");
        assert_eq!(
            found, !encrypted,
            "{name}: a field value on the wire: {found}"
        );
    }
}

/// Issue 15 over the API, on a node on SQLite and one on PostgreSQL:
/// `why`, `plan`, `versions` and `rollback` through `--to`, each route
/// refusing a role that may not (403) and a missing token (401), and every
/// deploy, rollback, emit, retry, drain and refusal in the audit log with
/// the token's user, its role and the client's address.
#[test]
fn the_api_answers_why_plan_versions_rollback_and_audits_every_action() {
    let dbs: Vec<Db> = [Some(Db::sqlite("api-insight")), Db::postgres("api_insight")]
        .into_iter()
        .flatten()
        .collect();
    let schema = "CREATE TABLE items (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);\n";
    let v1 = "track waits {\n    source key id { SELECT id, n FROM items }\n    on every 1h\n\
        step a {\n        when n % 2 = 0 then goto b\n    }\n\
        step b {\n        wait 1d\n        when n > 0 then end\n    }\n}\n";
    let v2 = "track waits {\n    source key id { SELECT id, n FROM items }\n    on every 1h\n\
        step a {\n        when n % 2 = 0 then end\n    }\n}\n";
    for mut db in dbs {
        db.execute(schema);
        db.execute("INSERT INTO items (id, n) VALUES (1, 1), (2, 2), (3, 3), (4, 4), (6, 6)");
        let (node, dir) = start_single_node_on(&format!("api-insight-{}", db.name()), &db.url);
        let (first, second) = (dir.join("v1"), dir.join("v2"));
        for (folder, text) in [(&first, v1), (&second, v2)] {
            std::fs::create_dir_all(folder).unwrap();
            std::fs::write(folder.join("schema.sql"), schema).unwrap();
            std::fs::write(folder.join("waits.dt"), text).unwrap();
        }
        let as_user = |token: &str, args: &[&str]| {
            trackc()
                .args(args)
                .args(["--to", &node.http, "--token", token])
                .output()
                .unwrap()
        };
        let json_of = |out: &std::process::Output| -> serde_json::Value {
            assert!(out.status.success(), "{out:?}");
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let refused = |out: &std::process::Output, status: &str| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{out:?}");
            assert!(stderr.contains(&format!("answered {status}")), "{stderr}");
        };
        let url = format!("{}/deploy", node.http);
        let (status, _) = trackc_runtime::node::client::request(
            "POST",
            &url,
            None,
            Some("{}".into()),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(status, 401);
        let v1_dir = first.to_str().unwrap();
        refused(&as_user("viewer-token", &["deploy", v1_dir]), "403");
        let out = as_user("author-token", &["deploy", v1_dir]);
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("deploy 1: changed waits"));
        wait_for("the first run", Duration::from_secs(60), || {
            db.count("SELECT count(*) FROM trackc_state WHERE step = 'b'") == 3
        });
        // why, as a viewer.
        let report = json_of(&as_user(
            "viewer-token",
            &["why", "waits", "2", "--format", "json"],
        ));
        assert_eq!(report["now"]["step"], "b", "{report}");
        assert!(report["now"]["wake_at"].is_string(), "{report}");
        assert_eq!(report["decisions"][0]["next"], "b", "{report}");
        assert_eq!(report["decisions"][0]["values"]["n"], 2, "{report}");
        let never = json_of(&as_user(
            "viewer-token",
            &["why", "waits", "99", "--format", "json"],
        ));
        assert!(
            never["never_entered"]
                .as_str()
                .unwrap()
                .contains("does not select this key"),
            "{never}"
        );
        let out = as_user("viewer-token", &["why", "nosuch", "1"]);
        refused(&out, "404");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no track `nosuch`"));
        // plan: the author role; it sees the records v2 would strand.
        let v2_dir = second.to_str().unwrap();
        refused(&as_user("viewer-token", &["plan", v2_dir]), "403");
        let plan = json_of(&as_user(
            "author-token",
            &["plan", "--format", "json", v2_dir],
        ));
        assert_eq!(plan["tracks"][0]["change"], "changed", "{plan}");
        assert_eq!(
            plan["tracks"][0]["stranded"],
            serde_json::json!([{"step": "b", "records": 3}])
        );
        refused(&as_user("author-token", &["deploy", v2_dir]), "409");
        let out = as_user("author-token", &["deploy", v2_dir, "--map", "waits.b=a"]);
        assert!(out.status.success(), "{out:?}");
        // versions, as a viewer; rollback needs the author role.
        let versions = json_of(&as_user("viewer-token", &["versions", "--format", "json"]));
        let deploys = versions["deploys"].as_array().unwrap();
        assert_eq!(deploys.len(), 2, "{versions}");
        assert_eq!(deploys[0]["by"], "author");
        assert_eq!(deploys[0]["role"], "author");
        assert_eq!(deploys[0]["map"], serde_json::json!(["waits.b=a"]));
        refused(&as_user("operator-token", &["rollback", "1"]), "403");
        let out = as_user("author-token", &["rollback", "1"]);
        assert!(out.status.success(), "{out:?}");
        let versions = json_of(&as_user("viewer-token", &["versions", "--format", "json"]));
        assert_eq!(versions["deploys"][0]["rollback_of"], 1, "{versions}");
        // The node runs the rolled-back version: its source is v1 again.
        wait_for("the rollback is loaded", Duration::from_secs(30), || {
            db.count(&format!(
                "SELECT count(*) FROM trackc_deployments WHERE active AND source = '{}'",
                v1.replace('\'', "''")
            )) == 1
        });
        let out = as_user("operator-token", &["emit", "nudge", "--key", "1"]);
        assert!(out.status.success(), "{out:?}");
        let out = as_user("operator-token", &["outbox", "retry", "--all"]);
        assert_eq!(out.status.code(), Some(2), "nothing parked: {out:?}");
        let entries = || -> Vec<String> {
            let log = json_of(&as_user("viewer-token", &["audit", "--format", "json"]));
            log["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["role"] != "node")
                .map(|e| {
                    assert_eq!(e["address"], "127.0.0.1", "{e}");
                    format!(
                        "{} ({}) {}: {} => {}",
                        e["who"].as_str().unwrap(),
                        e["role"].as_str().unwrap(),
                        e["action"].as_str().unwrap(),
                        e["target"].as_str().unwrap(),
                        e["result"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let log = entries();
        let v1_file = first.join("waits.dt").display().to_string();
        let v2_file = second.join("waits.dt").display().to_string();
        assert_eq!(
            log,
            [
                "unknown (none) refused request: POST /deploy => refused (401): no bearer token"
                    .to_string(),
                "viewer (viewer) refused request: POST /deploy => refused (403): needs the \
                 author role"
                    .to_string(),
                format!("author (author) deploy: {v1_file} => ok: deploy 1: changed waits"),
                "viewer (viewer) refused request: POST /plan => refused (403): needs the author \
                 role"
                    .to_string(),
                format!(
                    "author (author) deploy: {v2_file} => refused (409): deploy refused, nothing \
                     changed:\n  track waits: step `b` holds 3 record(s) and the new version \
                     removes it; keep the step, or move them with --map waits.b=STEP"
                ),
                format!("author (author) deploy: {v2_file} => ok: deploy 2: changed waits"),
                "operator (operator) refused request: POST /rollback/1 => refused (403): needs \
                 the author role"
                    .to_string(),
                "author (author) rollback: deploy 1 => ok: deploy 3: changed waits".to_string(),
                "operator (operator) emit: event nudge (1 raised) => ok".to_string(),
                "operator (operator) outbox retry: every parked outbox row => ok: 0 re-queued"
                    .to_string(),
            ],
            "{log:#?}"
        );
        // The node's claim of the track is kept with the people's actions.
        assert_eq!(
            db.count(
                "SELECT count(*) FROM trackc_audit WHERE who = 'node 1' AND action = 'claim' \
                 AND target = 'track waits' AND result = 'ok: claimed at epoch 1'"
            ),
            1
        );
        // A drain is audited too (the node then leaves: read the table).
        let out = as_user("operator-token", &["drain", "1"]);
        assert!(out.status.success(), "{out:?}");
        wait_for(
            "the drain is in the audit log",
            Duration::from_secs(30),
            || {
                db.count(
                "SELECT count(*) FROM trackc_audit WHERE action = 'drain' AND who = 'operator' \
                 AND target = 'node 1' AND result = 'ok'",
            ) == 1
            },
        );
    }
}

/// Six tracks over shares of the items, so of different sizes (per cent of
/// the items each reads): what the rebalancing test runs.
const SHARES: [(&str, u32); 6] = [
    ("huge", 36),
    ("large", 24),
    ("big", 18),
    ("medium", 12),
    ("small", 6),
    ("tiny", 3),
];

/// Each node's load (its tracks' costs summed) as `node` sees them.
fn loads(node: &Node) -> Option<Vec<(u64, u64, usize)>> {
    let s = status(node)?;
    let nodes = s["nodes"].as_array()?;
    Some(
        nodes
            .iter()
            .filter(|n| n["state"] == "alive")
            .map(|n| {
                let tracks = n["tracks"].as_array().map_or(0, Vec::len);
                (
                    n["id"].as_u64().unwrap(),
                    n["load"].as_u64().unwrap(),
                    tracks,
                )
            })
            .collect(),
    )
}

/// Whether every track is owned, every one of `ids` owns one, and the
/// group is balanced by the rule of docs/group.md: the most loaded node is
/// within 25 % of the average, or none of the tracks it may give (not
/// pinned) is small enough to narrow the gap to the least loaded by the
/// threshold.
fn fair_share(node: &Node, ids: &[u64]) -> bool {
    let (Some(loads), Some(s)) = (loads(node), status(node)) else {
        return false;
    };
    let owned: usize = loads.iter().map(|l| l.2).sum();
    let present: Vec<u64> = loads.iter().map(|l| l.0).collect();
    if owned != SHARES.len() || ids.iter().any(|id| !present.contains(id)) {
        return false;
    }
    if loads.iter().any(|l| l.2 == 0) {
        return false;
    }
    let total: u64 = loads.iter().map(|l| l.1).sum();
    let average = total as f64 / ids.len() as f64;
    let max = loads.iter().max_by_key(|l| l.1).unwrap();
    let min = loads.iter().min_by_key(|l| l.1).unwrap();
    if max.1 as f64 <= 1.25 * average {
        return true;
    }
    let gap = (max.1 - min.1) as f64;
    !s["tracks"].as_array().unwrap().iter().any(|t| {
        t["owner"] == max.0
            && t["measured"]["pinned"] != true
            && t["cost"].as_f64().unwrap() <= gap - 0.25 * average
    })
}

/// Every effect of the rebalancing tracks once: one row per track and
/// item of its share.
fn check_shares_once(db: &mut Db) {
    for (track, share) in SHARES {
        let want = db.count(&format!(
            "SELECT count(*) FROM items WHERE id % 100 < {share}"
        ));
        let sql = format!("SELECT count(*) FROM effects WHERE what = '{track}'");
        assert_eq!(db.count(&sql), want, "{sql}");
    }
    assert_eq!(
        db.count(
            "SELECT count(*) FROM (SELECT item, what FROM effects GROUP BY item, what \
             HAVING count(*) > 1) d"
        ),
        0,
        "an effect done twice"
    );
}

/// Load follows the group (issue 19): one node runs six tracks of
/// different sizes; two more join and within the bound each owns a fair
/// share by measured cost, every effect once across the moves (items are
/// added while tracks move); an operator moves a track by hand and it
/// stays; then a node drains and its tracks go to the others, still
/// balanced and still once.
#[test]
fn load_follows_the_group_as_nodes_join_and_drain() {
    let Some(mut db) = Db::postgres("rebalance") else {
        return;
    };
    let dir = temp_dir("rebalance");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crash/schema.sql");
    db.execute(&std::fs::read_to_string(&schema).unwrap());
    db.execute("INSERT INTO items (id, n, email) SELECT i, i, 'x' FROM generate_series(1, 3000) i");
    let tracks = dir.join("tracks");
    std::fs::create_dir_all(&tracks).unwrap();
    std::fs::copy(&schema, tracks.join("schema.sql")).unwrap();
    let text: String = SHARES
        .iter()
        .map(|(name, share)| {
            format!(
                "track {name} {{\n    source key id {{ SELECT id, n, email FROM items WHERE id % 100 < {share} }}\n    \
                 on every 1s\n    step one {{\n        when n >= 0 then sql {{ INSERT INTO effects (item, what) \
                 VALUES (:id, '{name}') }}, end\n    }}\n}}\n"
            )
        })
        .collect();
    std::fs::write(tracks.join("shares.dt"), text).unwrap();
    let mut plans = plans(&db);
    for p in &mut plans {
        p.extra = "rebalance_every = 5\nrebalance_cooldown = \"3s\"\n".into();
    }
    let configs = write_configs(&dir, &plans);
    let mut nodes: Vec<Node> = Vec::new();
    nodes.push(start(configs[0].0, &configs[0].1, &configs[0].2, &dir));
    wait_for("node 1 answers", Duration::from_secs(30), || {
        status(&nodes[0]).is_some()
    });
    deploy(&nodes[0], &tracks);
    // Node 1 alone owns all six and has measured each.
    wait_for(
        "node 1 owns and measures every track",
        Duration::from_secs(60),
        || {
            status(&nodes[0]).is_some_and(|s| {
                s["tracks"].as_array().is_some_and(|ts| {
                    ts.len() == 6
                        && ts
                            .iter()
                            .all(|t| t["owner"] == 1 && t["measured"]["runs"].as_u64() >= Some(1))
                })
            })
        },
    );
    let alone = loads(&nodes[0]).unwrap();
    assert_eq!(alone.len(), 1, "{alone:?}");
    // Two nodes join; items arrive while the tracks move.
    for c in &configs[1..] {
        nodes.push(start(c.0, &c.1, &c.2, &dir));
    }
    db.execute(
        "INSERT INTO items (id, n, email) SELECT i, i, 'x' FROM generate_series(3001, 6000) i",
    );
    let took = wait_for("a fair share by cost", Duration::from_secs(60), || {
        fair_share(&nodes[0], &[1, 2, 3])
    });
    eprintln!(
        "grown from 1 to 3 nodes: fair share by cost in {took:.1?}: {:?}",
        loads(&nodes[0]).unwrap()
    );
    // The same plan seen from another node: nothing to do.
    let out = trackc()
        .args(["rebalance", "--dry-run", "--to", &nodes[2].http])
        .args(["--token", "viewer-token"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("load"), "{out:?}");
    db.execute(
        "INSERT INTO items (id, n, email) SELECT i, i, 'x' FROM generate_series(6001, 7000) i",
    );
    wait_for("every effect", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM effects")
            == SHARES.iter().map(|(_, s)| i64::from(*s) * 70).sum::<i64>()
    });
    check_shares_once(&mut db);

    // An operator moves `tiny` by hand, asking a node that does not own
    // it; a viewer may not.
    let from = owner(&nodes[0], "tiny").unwrap();
    let to = if from == 3 { 2 } else { 3 };
    let asked = nodes.iter().find(|n| n.id != from).unwrap();
    let moving = |token: &str| {
        trackc()
            .args([
                "move",
                "tiny",
                "--to",
                &to.to_string(),
                "--via",
                &asked.http,
            ])
            .args(["--token", token])
            .output()
            .unwrap()
    };
    let out = moving("viewer-token");
    assert!(!out.status.success(), "{out:?}");
    let out = moving("operator-token");
    assert!(out.status.success(), "{out:?}");
    wait_for("tiny moves", Duration::from_secs(20), || {
        owner(&nodes[0], "tiny") == Some(to)
    });
    let out = trackc()
        .args([
            "move",
            "tiny",
            "--to",
            &to.to_string(),
            "--via",
            &asked.http,
        ])
        .args(["--token", "operator-token"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("owns `tiny` already"),
        "{out:?}"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM trackc_audit WHERE action = 'move' AND who = 'operator' \
             AND target = 'track tiny to node {to}' AND result LIKE 'ok%'"
        )),
        1
    );

    // The node with most tracks drains: they spread over the other two
    // (each to the least loaded at the time, costliest first), balanced.
    let before = loads(&nodes[0]).unwrap();
    let drained = before.iter().max_by_key(|l| (l.2, l.0)).unwrap().0;
    let gone: Vec<String> = SHARES
        .iter()
        .map(|(t, _)| t.to_string())
        .filter(|t| owner(&nodes[0], t) == Some(drained))
        .collect();
    assert!(gone.len() >= 2, "{before:?}");
    let d = nodes.iter().position(|n| n.id == drained).unwrap();
    drain_until_it_exits(&mut nodes[d], Duration::from_secs(30));
    nodes.remove(d);
    db.execute(
        "INSERT INTO items (id, n, email) SELECT i, i, 'x' FROM generate_series(7001, 8000) i",
    );
    let rest: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    let start = Instant::now();
    while !fair_share(&nodes[0], &rest) {
        let s = status(&nodes[0]).unwrap_or_default();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no fair share after the drain within 60 s: {}\n{}\n{}",
            s["nodes"],
            s["tracks"],
            s["rebalance"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    let takers: HashSet<u64> = gone.iter().filter_map(|t| owner(&nodes[0], t)).collect();
    eprintln!(
        "drained node {drained} ({gone:?}): fair share in {took:.1?}: {:?}; its tracks went to \
         {takers:?}",
        loads(&nodes[0]).unwrap()
    );
    assert_eq!(
        takers.len(),
        2,
        "the drained tracks did not spread: {takers:?}"
    );
    wait_for(
        "every effect after the drain",
        Duration::from_secs(60),
        || {
            db.count("SELECT count(*) FROM effects")
                == SHARES.iter().map(|(_, s)| i64::from(*s) * 80).sum::<i64>()
        },
    );
    check_shares_once(&mut db);
    check_alive(&mut nodes);
    check_no_secrets_in_logs(&dir);
}
