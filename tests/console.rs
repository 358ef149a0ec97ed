//! The web console in a real browser (issue 16): Debian's Chromium driven
//! by Playwright for Python (tests/console/, run with the virtual
//! environment .ci/run makes) against three `trackc node` processes on
//! PostgreSQL and a `trackc serve` on SQLite, both set up here with known
//! records; the counts the pages and `/metrics` must show are computed
//! here from the database and handed to the browser test in a JSON file.
//! Without a Python (`TRACKC_PYTHON`) or `/usr/bin/chromium` the test is
//! skipped loudly, unless `TRACKC_REQUIRE_PYTHON=1` (as .ci/run sets).

#[path = "support/db.rs"]
mod db;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/receivers.rs"]
mod receivers;

use db::{free_ports, temp_dir, Db};
use nodes::{start, status, trackc, wait_for, write_configs, Plan};
use receivers::HttpReceiver;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ITEMS: i64 = 30;
const CHROMIUM: &str = "/usr/bin/chromium";

/// The track of the test: a third of the records wait a day in `waiting`,
/// record 1 gets a webhook the receiver refuses once (it is parked), the
/// rest end.
fn track(receiver: &str) -> String {
    format!(
        "track journey {{\n    source key id {{ SELECT id, n, email FROM items }}\n    on every 1h\n\
         \n    step start {{\n        when n % 3 = 0 then goto waiting\n        \
         when id = 1 then webhook 'http://{receiver}/gone-once', end\n        else end\n    }}\n\
         \n    step waiting {{\n        wait 1d\n        when n > 0 then end\n    }}\n}}\n"
    )
}

/// The Python and Chromium the browser test needs, or `None` (skip).
fn tools() -> Option<std::ffi::OsString> {
    let required = std::env::var("TRACKC_REQUIRE_PYTHON").as_deref() == Ok("1");
    let python = std::env::var_os("TRACKC_PYTHON");
    let browser = Path::new(CHROMIUM).exists();
    if python.is_none() || !browser {
        assert!(
            !required,
            "TRACKC_REQUIRE_PYTHON=1 but the browser test lacks {}: run .ci/run (it installs \
             Chromium and makes the virtual environment)",
            if browser { "TRACKC_PYTHON" } else { CHROMIUM }
        );
        eprintln!(
            "SKIPPED: the console's browser test needs TRACKC_PYTHON (tests/console/requirements.txt) \
             and {CHROMIUM}; .ci/run provides both"
        );
        return None;
    }
    python
}

/// What the pages must show for `track`, from the database: records per
/// step, and record steps per (step, rule) from the decision history.
fn expected(db: &mut Db, track: &str) -> Value {
    let store = db.store.as_mut().unwrap();
    let mut steps = BTreeMap::new();
    for (step, n) in store.step_counts(track).unwrap() {
        steps.insert(step.unwrap_or_else(|| "(ended)".into()), n);
    }
    let names = ["start", "waiting"];
    let mut fired: BTreeMap<String, u64> = BTreeMap::new();
    for row in store.history_since(track, 0, 100_000).unwrap() {
        for (step, rule) in row.decisions() {
            let rule = if rule < 0 {
                "none".to_string()
            } else {
                (rule + 1).to_string()
            };
            *fired
                .entry(format!("{}/{rule}", names[step as usize]))
                .or_default() += 1;
        }
    }
    let outbox: Vec<Value> = store
        .outbox_counts()
        .unwrap()
        .into_iter()
        .map(|(kind, state, n)| json!({"kind": kind, "state": state, "rows": n}))
        .collect();
    let blocks = store
        .query_i64("SELECT count(*) FROM trackc_history")
        .unwrap();
    json!({"steps": steps, "record_steps": fired, "outbox": outbox, "blocks": blocks})
}

#[test]
fn the_console_in_a_real_browser() {
    let Some(python) = tools() else { return };
    let Some(mut db) = Db::postgres("console") else {
        return;
    };
    let receiver = HttpReceiver::start();
    let dir = temp_dir("console");
    let schema = "CREATE TABLE items (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, email TEXT);\n";
    db.execute(schema);
    db.execute(&format!(
        "INSERT INTO items (id, n, email) SELECT i, i, 'x' FROM generate_series(1, {ITEMS}) i"
    ));
    let tracks = dir.join("tracks");
    std::fs::create_dir_all(&tracks).unwrap();
    std::fs::write(tracks.join("schema.sql"), schema).unwrap();
    std::fs::write(tracks.join("journey.dt"), track(&receiver.addr)).unwrap();
    // Three nodes on PostgreSQL.
    let ports = free_ports(6);
    let listen: Vec<SocketAddr> = ports[..3]
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    let plans: Vec<Plan> = (0..3)
        .map(|i| Plan {
            id: i as u64 + 1,
            listen: listen[i],
            http: ports[3 + i],
            database: db.url.clone(),
            peers: listen.clone(),
            extra: String::new(),
        })
        .collect();
    let configs = write_configs(&dir, &plans);
    let nodes: Vec<nodes::Node> = configs
        .iter()
        .map(|(id, path, http)| start(*id, path, http, &dir))
        .collect();
    wait_for("the nodes answer", Duration::from_secs(30), || {
        nodes.iter().all(|n| status(n).is_some())
    });
    let out = trackc()
        .arg("deploy")
        .arg(&tracks)
        .args(["--to", &nodes[0].http, "--token", "author-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for("every record decided", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM trackc_state WHERE track = 'journey'") == ITEMS
    });
    wait_for("record 1's webhook parked", Duration::from_secs(60), || {
        db.count("SELECT count(*) FROM trackc_outbox WHERE state = 'parked'") == 1
    });
    let group = expected(&mut db, "journey");
    // `trackc serve` on SQLite, over the same track and records.
    let mut lite = Db::sqlite("console-serve");
    lite.execute(schema);
    let values: Vec<String> = (1..=ITEMS).map(|i| format!("({i}, {i}, 'x')")).collect();
    lite.execute(&format!(
        "INSERT INTO items (id, n, email) VALUES {}",
        values.join(", ")
    ));
    let out = trackc()
        .args(["run", "--once", "--no-deliver", "--db", &lite.url])
        .arg(&tracks)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let served = expected(&mut lite, "journey");
    let serve_port = free_ports(1)[0];
    let users = dir.join("node1.toml");
    let serve_log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let serve = nodes::Node {
        id: 0,
        http: format!("http://127.0.0.1:{serve_port}"),
        child: Some(
            trackc()
                .args(["serve", "--db", &lite.url, "--http"])
                .arg(format!("127.0.0.1:{serve_port}"))
                .arg("--users")
                .arg(&users)
                .stdout(Stdio::null())
                .stderr(serve_log)
                .spawn()
                .unwrap(),
        ),
    };
    wait_for("trackc serve answers", Duration::from_secs(30), || {
        status(&serve).is_some()
    });
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).unwrap();
    let config = json!({
        "chromium": CHROMIUM,
        "screenshots": screenshots,
        "tokens": {"viewer": "viewer-token", "operator": "operator-token", "author": "author-token"},
        "group": {
            "nodes": nodes.iter().map(|n| json!({
                "id": n.id, "url": n.http, "pid": n.child.as_ref().unwrap().id(),
            })).collect::<Vec<_>>(),
            "cycle_ms": 200,
            "track": "journey",
            "expected": group,
            "waiting_key": "3",
            "parked": "journey/1/1/0",
        },
        "serve": {
            "url": serve.http,
            "track": "journey",
            "expected": served,
            "waiting_key": "3",
        },
    });
    let config_path = dir.join("console.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let log_path = dir.join("pytest.log");
    let status = Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/console",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TRACKC_CONSOLE_CONFIG", &config_path)
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    println!("{log}");
    assert!(status.success(), "the browser test failed:\n{log}");
    // The retried webhook reached the receiver a second time, and was
    // answered 200 then.
    assert_eq!(
        receiver
            .hooks()
            .iter()
            .filter(|h| h.path == "/gone-once")
            .count(),
        2
    );
    for page in ["signin", "group", "track", "record", "outbox", "plan"] {
        for place in ["group", "serve"] {
            let shot = screenshots.join(format!("{place}-{page}.png"));
            assert!(shot.is_file(), "no screenshot {}", shot.display());
        }
    }
}
