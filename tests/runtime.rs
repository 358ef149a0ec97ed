//! End-to-end tests of `trackc run` and `trackc demo` against SQLite and
//! the PostgreSQL on this machine, including runs killed with SIGKILL at
//! random moments: every effect must happen exactly once.
//!
//! PostgreSQL: `TRACKC_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is the admin connection;
//! each test creates and drops its own database. Without a server the
//! PostgreSQL tests say so and skip, unless `TRACKC_REQUIRE_POSTGRES=1`
//! (as `.ci/run` sets), where they fail.

#[path = "support/db.rs"]
mod db;
#[path = "support/pgcluster.rs"]
mod pgcluster;
#[path = "support/receivers.rs"]
mod receivers;

use db::{temp_dir, Db};
use pgcluster::Cluster;

use receivers::{HttpReceiver, SmtpSink};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn trackc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trackc"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of fixture folder `name` in which `RECEIVER` is `receiver`'s
/// address (the webhooks' host).
fn tracks_dir(test: &str, name: &str, receiver: &HttpReceiver) -> PathBuf {
    fn copy(from: &Path, to: &Path, addr: &str) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &target, addr);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(target, text.replace("RECEIVER", addr)).unwrap();
            }
        }
    }
    let dir = temp_dir(&format!("{test}-tracks")).join(name);
    copy(&fixture(name), &dir, &receiver.addr);
    dir
}

/// Receivers for the crash fixture's webhooks and e-mails, and the
/// arguments that deliver to them.
struct Receivers {
    http: HttpReceiver,
    smtp: SmtpSink,
    tracks: PathBuf,
}

impl Receivers {
    fn start(test: &str) -> Receivers {
        let http = HttpReceiver::start();
        let tracks = tracks_dir(test, "crash", &http);
        Receivers {
            http,
            smtp: SmtpSink::start(),
            tracks,
        }
    }

    fn delivery_args(&self) -> Vec<String> {
        vec![
            "--smtp".into(),
            self.smtp.url.clone(),
            "--templates".into(),
            self.tracks.join("templates").display().to_string(),
            "--delivery-timeout".into(),
            "1s".into(),
        ]
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Items 1..=n in the crash fixture's schema.
fn items_sql(n: i64) -> String {
    let mut sql = std::fs::read_to_string(fixture("crash/schema.sql")).unwrap();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| format!("({i}, {i}, 'item{i}@example.com')"))
            .collect();
        sql.push_str(&format!(
            "INSERT INTO items (id, n, email) VALUES {};\n",
            rows.join(", ")
        ));
    }
    sql
}

fn run_once(db: &Db, receivers: &Receivers, extra: &[&str]) -> Output {
    trackc()
        .args(["run", "--once", "--db", &db.url])
        .args(receivers.delivery_args())
        .args(extra)
        .arg(&receivers.tracks)
        .output()
        .unwrap()
}

/// `trackc outbox deliver` with `delivery`'s options.
fn deliver_once<S: AsRef<std::ffi::OsStr>>(db: &Db, delivery: &[S]) -> Output {
    trackc()
        .args(["outbox", "deliver", "--db", &db.url])
        .args(delivery)
        .output()
        .unwrap()
}

/// Delivers again and again until `remaining` (a count of rows) is 0:
/// rows whose deliverer was killed are due again when their lease ends,
/// retries when their backoff has passed.
fn deliver_until_none<S: AsRef<std::ffi::OsStr>>(
    db: &mut Db,
    delivery: &[S],
    remaining: &str,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let out = deliver_once(db, delivery);
        assert!(out.status.success(), "{}", text(&out));
        if db.count(remaining) == 0 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "outbox not delivered: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The next number of a seeded sequence (an LCG's high bits).
fn next_random(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// Starts `cmd`, waits `delay`, and kills it with SIGKILL if it is still
/// running; true when it was killed.
fn kill_after(cmd: &mut Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    if child.try_wait().unwrap().is_some() {
        return false;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    true
}

/// Every webhook and e-mail of the outbox reached its receiver, each under
/// its own id (sent again only after a crash: `duplicates` says how often).
fn check_delivered(db: &mut Db, receivers: &Receivers, n: i64) -> usize {
    let count = |p: &dyn Fn(i64) -> bool| (1..=n).filter(|&i| p(i)).count();
    let hooks = receivers.http.hooks();
    let keys: HashSet<&str> = hooks
        .iter()
        .map(|h| h.idempotency_key.as_deref().expect("Idempotency-Key"))
        .collect();
    assert_eq!(keys.len(), count(&|i| i % 3 == 0));
    assert_eq!(
        db.count(
            "SELECT count(*) FROM trackc_outbox WHERE kind = 'webhook' AND state = 'delivered'"
        ),
        keys.len() as i64
    );
    for h in &hooks {
        let body: serde_json::Value = serde_json::from_str(&h.body).unwrap();
        assert_eq!(body["id"], h.idempotency_key.as_deref().unwrap());
        assert_eq!(body["record"]["n"].as_i64().unwrap() % 3, 0, "{}", h.body);
    }
    let mails = receivers.smtp.mails();
    let ids: HashSet<String> = mails
        .iter()
        .map(|m| m.header("Message-ID").expect("Message-ID"))
        .collect();
    assert_eq!(ids.len(), count(&|i| i % 3 == 1));
    for m in &mails {
        let item = m.header("Subject").unwrap();
        let item: i64 = item.trim_start_matches("Hello item ").parse().unwrap();
        assert_eq!(m.to, [format!("item{item}@example.com")]);
        assert!(m
            .data
            .contains(&format!("Item {item} has n = {item} (track three_steps).")));
    }
    hooks.len() - keys.len() + mails.len() - ids.len()
}

/// What one full pass over items 1..=n must have done, exactly.
fn check_exactly_once(db: &mut Db, n: i64) {
    let count = |p: &dyn Fn(i64) -> bool| (1..=n).filter(|&i| p(i)).count() as i64;
    let expect = [
        ("SELECT count(*) FROM effects WHERE what = 'even'", count(&|i| i % 2 == 0)),
        ("SELECT count(*) FROM effects WHERE what = 'odd'", count(&|i| i % 2 != 0)),
        ("SELECT count(*) FROM effects WHERE what = 'done'", count(&|i| i % 5 != 0)),
        ("SELECT CAST(coalesce(sum(counter), 0) AS BIGINT) FROM items", count(&|i| i % 5 == 0)),
        ("SELECT count(*) FROM items WHERE counter > 1", 0),
        (
            "SELECT count(*) FROM (SELECT item, what FROM effects GROUP BY item, what HAVING count(*) > 1) d",
            0,
        ),
        ("SELECT count(*) FROM trackc_outbox WHERE kind = 'webhook'", count(&|i| i % 3 == 0)),
        ("SELECT count(*) FROM trackc_outbox WHERE kind = 'email'", count(&|i| i % 3 == 1)),
        ("SELECT count(*) FROM trackc_events WHERE name = 'noticed'", count(&|i| i % 3 == 2)),
        (
            "SELECT count(*) FROM trackc_state WHERE track = 'three_steps' AND step = 'finish'",
            count(&|i| i % 5 == 0),
        ),
        (
            "SELECT count(*) FROM trackc_state WHERE track = 'three_steps' AND step IS NULL",
            count(&|i| i % 5 != 0),
        ),
        ("SELECT count(*) FROM trackc_runs WHERE finished_at IS NULL", 0),
    ];
    for (sql, want) in expect {
        assert_eq!(db.count(sql), want, "{sql}");
    }
}

fn runs_once_and_not_twice(db: &mut Db, test: &str) {
    let n = 3000;
    let receivers = Receivers::start(test);
    db.execute(&items_sql(n));
    let out = run_once(db, &receivers, &["--block", "100"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hooks = (1..=n).filter(|i| i % 3 == 0).count();
    let mails = (1..=n).filter(|i| i % 3 == 1).count();
    assert!(
        stdout.contains(&format!("records={n} record_steps={}", 3 * n))
            && stdout.contains(&format!("delivered={} retrying=0 parked=0", hooks + mails)),
        "{}",
        text(&out)
    );
    check_exactly_once(db, n);
    assert_eq!(
        check_delivered(db, &receivers, n),
        0,
        "nothing was sent twice"
    );
    // A second pass: ended records are done; those that stay fire again.
    let out = run_once(db, &receivers, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("delivered=0 "),
        "{}",
        text(&out)
    );
    assert_eq!(db.count("SELECT count(*) FROM effects"), n + n - n / 5);
    assert_eq!(
        db.count("SELECT CAST(coalesce(sum(counter), 0) AS BIGINT) FROM items"),
        2 * (n / 5)
    );
}

#[test]
fn sqlite_runs_once_and_not_twice() {
    runs_once_and_not_twice(&mut Db::sqlite("once"), "sqlite-once");
}

#[test]
fn postgres_runs_once_and_not_twice() {
    if let Some(mut db) = Db::postgres("once") {
        runs_once_and_not_twice(&mut db, "pg-once");
    }
}

/// `trackc run --once` killed with SIGKILL at random moments, again and
/// again, then run to the end: every effect exactly once, every webhook and
/// e-mail delivered under its own id.
fn survives_kill_9(db: &mut Db, test: &str, seed: u64) {
    let n = 20_000;
    let receivers = Receivers::start(test);
    db.execute(&items_sql(n));
    let mut rng = seed;
    let mut kills = 0;
    // Kill the pass until an attempt finishes it on its own (a finished
    // pass is done; the next `--once` would be a new pass).
    let mut finished = false;
    for _ in 0..8 {
        let delay = 30 + next_random(&mut rng) % 400;
        let mut run = trackc();
        run.args(["run", "--once", "--block", "64", "--db", &db.url])
            .args(receivers.delivery_args())
            .arg(&receivers.tracks);
        if !kill_after(&mut run, Duration::from_millis(delay)) {
            finished = true;
            break;
        }
        kills += 1;
        // Killed while delivering, after the pass was done: what is left
        // is delivery (another `--once` would be a new pass).
        if db.count("SELECT count(*) FROM trackc_passes WHERE finished_at IS NOT NULL") > 0 {
            finished = true;
            break;
        }
    }
    if !finished {
        let out = run_once(db, &receivers, &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(kills > 0, "no attempt was killed: make the work longer");
    // Delivery killed too: rows a killed deliverer had claimed are
    // claimed again when their lease ends.
    let mut delivery_kills = 0;
    for _ in 0..4 {
        let delay = 20 + next_random(&mut rng) % 200;
        let mut deliver = trackc();
        deliver
            .args(["outbox", "deliver", "--db", &db.url])
            .args(receivers.delivery_args());
        if !kill_after(&mut deliver, Duration::from_millis(delay)) {
            break;
        }
        delivery_kills += 1;
    }
    deliver_until_none(
        db,
        &receivers.delivery_args(),
        "SELECT count(*) FROM trackc_outbox WHERE state <> 'delivered'",
        Duration::from_secs(60),
    );
    check_exactly_once(db, n);
    let resent = check_delivered(db, &receivers, n);
    eprintln!(
        "seed {seed}: runs killed {kills} times, deliveries {delivery_kills} times; \
         {resent} deliveries sent again after a kill"
    );
}

#[test]
fn sqlite_survives_kill_9() {
    survives_kill_9(&mut Db::sqlite("kill"), "sqlite-kill", 7);
}

#[test]
fn postgres_survives_kill_9() {
    if let Some(mut db) = Db::postgres("kill") {
        survives_kill_9(&mut db, "pg-kill", 11);
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let db = Db::sqlite("bad");
    let receivers = Receivers::start("bad");
    // The user's table is missing: the track's run fails, said plainly.
    let out = run_once(&db, &receivers, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("track three_steps") && stderr.contains("no such table: items"),
        "{stderr}"
    );
    // Unreachable database and bad URL.
    let out = trackc()
        .args(["run", "--once", "--db", "postgres://nobody@127.0.0.1:1/x"])
        .arg(fixture("crash"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot connect to postgres://nobody@127.0.0.1:1/x"),
        "{}",
        text(&out)
    );
    let out = trackc()
        .args(["run", "--once", "--db", "oracle://x"])
        .arg(fixture("crash"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a database URL"),
        "{}",
        text(&out)
    );
    // MariaDB/MySQL can be a source, never the state database.
    let out = trackc()
        .args(["run", "--once", "--db", "mysql://x"])
        .arg(fixture("crash"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("mysql://x: trackc keeps its own tables in PostgreSQL or SQLite"),
        "{}",
        text(&out)
    );
}

#[test]
fn null_keys_are_skipped_and_reported() {
    let mut db = Db::sqlite("nullkey");
    db.execute("CREATE TABLE items (id BIGINT, n BIGINT NOT NULL, email TEXT, counter BIGINT NOT NULL DEFAULT 0);
                CREATE TABLE effects (item BIGINT NOT NULL, what TEXT NOT NULL);
                INSERT INTO items (id, n) VALUES (1, 1), (NULL, 2), (3, 3);");
    let out = run_once(&db, &Receivers::start("nullkey"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key `id` is NULL"),
        "{}",
        text(&out)
    );
    assert_eq!(
        db.count("SELECT count(*) FROM effects WHERE what IN ('odd', 'even')"),
        2
    );
}

/// A SQLite database, and a PostgreSQL one when the server is there.
fn both_stores(sqlite: &str, postgres: &str) -> Vec<Db> {
    let mut dbs = vec![Db::sqlite(sqlite)];
    dbs.extend(Db::postgres(postgres));
    dbs
}

/// `execute_script` is one transaction on both stores: a failing part
/// leaves nothing of the earlier ones; the demo's filling uses it and
/// raises its orders' events by plain SQL in the same transaction.
#[test]
fn a_script_is_all_or_nothing_and_the_demo_fills_in_one() {
    let mut dbs = both_stores("script", "trackc_test_script");
    for db in &mut dbs {
        let store = db.store.as_mut().unwrap();
        let parts = |last: &str| {
            vec![
                "CREATE TABLE t (x BIGINT);".to_string(),
                "INSERT INTO t VALUES (1);".to_string(),
                last.to_string(),
            ]
        };
        let failed = store.execute_script(&parts("INSERT INTO nope VALUES (1);"));
        assert!(failed.is_err(), "{}", db.url);
        assert!(
            store.query_i64("SELECT count(*) FROM t").is_err(),
            "{}",
            db.url
        );
        store
            .execute_script(&parts("INSERT INTO t VALUES (2);"))
            .unwrap();
        assert_eq!(db.count("SELECT count(*) FROM t"), 2);
        let store = db.store.as_mut().unwrap();
        let now = trackc_runtime::clock::now_micros();
        assert!(trackc_runtime::demo::populate(store.as_mut(), 3000, now).unwrap());
        assert!(!trackc_runtime::demo::populate(store.as_mut(), 3000, now).unwrap());
        assert_eq!(db.count("SELECT count(*) FROM contacts"), 3000);
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_events WHERE name = 'order_placed'"),
            db.count("SELECT count(*) FROM orders")
        );
    }
}

/// Another system raises events with plain SQL on `trackc_events` (the
/// documented columns, docs/runtime.md): they are decided like emitted
/// ones, a key that is no record is marked done without an effect, and an
/// insert with its own id is idempotent.
#[test]
fn events_inserted_by_plain_sql_are_decided() {
    let mut dbs = both_stores("sql-events", "trackc_test_sql_events");
    for db in &mut dbs {
        let tracks = temp_dir("sql-events-tracks");
        std::fs::copy(fixture("crash/schema.sql"), tracks.join("schema.sql")).unwrap();
        std::fs::write(
            tracks.join("pinged.dt"),
            "track pinged {\n    source key id { SELECT id, n, email FROM items }\n    on event ping\n    \
             step one {\n        when n >= 0 then sql { INSERT INTO effects (item, what) VALUES (:id, 'pinged') }, end\n    }\n}\n",
        )
        .unwrap();
        let mut sql = std::fs::read_to_string(tracks.join("schema.sql")).unwrap();
        for i in 1..=10 {
            sql.push_str(&format!(
                "INSERT INTO items (id, n, email) VALUES ({i}, {i}, 'x');\n"
            ));
        }
        db.execute(&sql);
        let now = trackc_runtime::clock::now_micros();
        // What another system writes: a name, the key as text, the time in
        // microseconds; optionally an id of its own, for retries.
        db.execute(&format!(
            "INSERT INTO trackc_events (name, key, created_at) VALUES ('ping', '3', {now}), ('ping', '999', {now});\n\
             INSERT INTO trackc_events (id, name, key, created_at) VALUES ('crm-1', 'ping', '7', {now}) ON CONFLICT (id) DO NOTHING;\n\
             INSERT INTO trackc_events (id, name, key, created_at) VALUES ('crm-1', 'ping', '7', {now}) ON CONFLICT (id) DO NOTHING;"
        ));
        let out = trackc()
            .args(["run", "--once", "--db", &db.url])
            .arg(&tracks)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            db.count("SELECT count(*) FROM effects WHERE what = 'pinged'"),
            2,
            "{}",
            db.url
        );
        assert_eq!(
            db.count("SELECT count(*) FROM effects WHERE what = 'pinged' AND item IN (3, 7)"),
            2
        );
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_events WHERE done_at IS NULL"),
            0,
            "{}",
            db.url
        );
    }
}

/// `trackc emit --db` on one node: one key, keys from a file in parts of
/// 10,000 (blank lines skipped, the file's order kept), keys from stdin.
#[test]
fn emit_raises_events_in_bulk_into_a_database() {
    let mut dbs = both_stores("emit-bulk", "trackc_test_emit_bulk");
    for db in &mut dbs {
        let dir = temp_dir("emit-bulk-keys");
        let file = dir.join("keys.txt");
        let keys: Vec<String> = (1..=25_000).map(|i| format!("k{i}")).collect();
        std::fs::write(&file, keys.join("\r\n") + "\n\n").unwrap();
        let out = trackc()
            .args(["emit", "ping", "--db", &db.url, "--keys-from"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("raised 25000 `ping` events"),
            "{}",
            text(&out)
        );
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_events WHERE name = 'ping'"),
            25_000
        );
        // In the file's order: seq follows the line number.
        assert_eq!(
            db.count(
                "SELECT count(*) FROM trackc_events a JOIN trackc_events b \
                 ON CAST(substr(a.key, 2) AS BIGINT) < CAST(substr(b.key, 2) AS BIGINT) \
                 AND a.seq > b.seq WHERE a.key IN ('k1', 'k9999', 'k10001', 'k25000') \
                 AND b.key IN ('k1', 'k9999', 'k10001', 'k25000')"
            ),
            0
        );
        let out = trackc()
            .args(["emit", "pong", "--key", "7", "--db", &db.url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let mut child = trackc()
            .args(["emit", "pang", "--keys-from", "-", "--db", &db.url])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"1\n2\n3\n").unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_events WHERE name IN ('pong', 'pang')"),
            4
        );
        // Neither a group nor a database: a usage error.
        let out = trackc()
            .args(["emit", "ping", "--key", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    }
}

#[test]
fn demo_runs_twice() {
    let dir = temp_dir("demo");
    let url = format!("sqlite:{}", dir.join("demo.db").display());
    for round in 0..2 {
        let out = trackc()
            .args(["demo", "--contacts", "3000", "--db", &url])
            .output()
            .unwrap();
        assert!(out.status.success(), "round {round}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("onboarding") && stdout.contains("record-steps per second"),
            "{stdout}"
        );
    }
}

/// `trackc demo --serve` ends the demo by serving its console: it prints
/// the address and a fresh admin token, and that token signs in.
#[test]
fn the_demo_ends_by_serving_its_console() {
    use std::io::BufRead;
    let dir = temp_dir("demo-serve");
    let url = format!("sqlite:{}", dir.join("demo.db").display());
    let port = db::free_ports(1)[0];
    let mut child = trackc()
        .args([
            "demo",
            "--contacts",
            "300",
            "--serve",
            "--db",
            &url,
            "--http",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut address, mut token) = (None, None);
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.split("is at ").nth(1) {
            address = Some(rest.trim().trim_end_matches('/').to_string());
        }
        if let Some(t) = line.split("shown this once): ").nth(1) {
            token = Some(t.trim().to_string());
            break;
        }
    }
    let (address, token) = (address.expect("the address"), token.expect("the token"));
    assert_eq!(address, format!("http://127.0.0.1:{port}"));
    let connection = Default::default();
    let request = |method, path: &str, token: Option<&str>, body: Option<String>| {
        trackc_runtime::node::client::request(
            method,
            &format!("{address}{path}"),
            token,
            body,
            &connection,
        )
        .unwrap()
    };
    assert_eq!(request("GET", "/status", Some(&token), None).0, 200);
    assert_eq!(request("GET", "/status", Some("guess"), None).0, 401);
    let (status, page) = request("GET", "/signin", None, None);
    assert_eq!(status, 200);
    assert!(page.contains("Sign in"), "{page}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Retries with backoff, parking with the reason, a receiver that hangs
/// (the others are delivered meanwhile), re-queueing parked rows.
#[test]
fn failed_deliveries_are_retried_then_parked_never_dropped() {
    let mut db = Db::sqlite("delivery");
    let http = HttpReceiver::start();
    let smtp = SmtpSink::start();
    let tracks = tracks_dir("delivery", "delivery", &http);
    std::fs::copy(fixture("crash/schema.sql"), tracks.join("schema.sql")).unwrap();
    // n = 4 has no e-mail address; 6..=40 are plain deliveries.
    let mut sql = std::fs::read_to_string(tracks.join("schema.sql")).unwrap();
    sql.push_str("INSERT INTO items (id, n, email) VALUES (4, 4, NULL);\n");
    for i in (1..=40).filter(|&i| i != 4) {
        sql.push_str(&format!(
            "INSERT INTO items (id, n, email) VALUES ({i}, {i}, 'item{i}@example.com');\n"
        ));
    }
    db.execute(&sql);
    let templates = fixture("crash/templates").display().to_string();
    let delivery = [
        "--smtp",
        &smtp.url,
        "--templates",
        &templates,
        "--delivery-timeout",
        "1s",
        "--max-attempts",
        "3",
        "--retry-backoff",
        "200ms",
    ];
    let started = Instant::now();
    let out = trackc()
        .args(["run", "--once", "--db", &db.url])
        .args(delivery)
        .arg(&tracks)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The templates folder lacks `missing`: said before anything runs.
    assert!(
        stderr.contains("no e-mail template `missing.txt`"),
        "{stderr}"
    );
    // Items 6..=40 each send a webhook and an e-mail: all delivered in the
    // first round, while the receiver of item 3's webhook hangs.
    assert_eq!(
        http.hooks().iter().filter(|h| h.path == "/hook").count(),
        35
    );
    assert_eq!(smtp.mails().len(), 35);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    // Attempt 1 of /flaky failed (500) and /hang timed out: both retry;
    // /gone (404), no recipient and no template are parked at once.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("delivered=70 retrying=2 parked=3"),
        "{}",
        text(&out)
    );
    for part in [
        "webhook deliveries/1/1/0 (http://",
        "the receiver answered 500 Internal Server Error; attempt 1 of 3, will retry",
        "parked: the receiver answered 404 Not Found",
        "parked: the record has no recipient",
        "parked: no template `missing.txt`",
    ] {
        assert!(stderr.contains(part), "{part}\n{stderr}");
    }
    // Later rounds: /flaky succeeds at its third attempt, /hang gives up.
    deliver_until_none(
        &mut db,
        &delivery,
        "SELECT count(*) FROM trackc_outbox WHERE state IN ('pending', 'sending')",
        Duration::from_secs(30),
    );
    let flaky: Vec<_> = http
        .hooks()
        .into_iter()
        .filter(|h| h.path == "/flaky")
        .collect();
    assert_eq!(flaky.len(), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM trackc_outbox WHERE state = 'delivered'"),
        71
    );
    let out = trackc()
        .args(["outbox", "list", "--state", "parked", "--db", &db.url])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for part in [
        "deliveries/2/1/0",
        "404 Not Found",
        "deliveries/3/1/0",
        "gave up after 3 attempts",
        "deliveries/4/1/0",
        "deliveries/5/1/0",
    ] {
        assert!(list.contains(part), "{part}\n{list}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM trackc_outbox WHERE state = 'parked'"),
        4
    );
    // `why` shows each record's effects with their delivery state.
    let why = |key: &str| {
        let out = trackc()
            .args(["why", "--db", &db.url, "deliveries", key])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let parked = why("2");
    assert!(
        parked.contains(
            "effect:  webhook deliveries/2/1/0 (parked: the receiver answered 404 Not Found"
        ),
        "{parked}"
    );
    assert!(parked.contains("rule 2: when n = 2  ("), "{parked}");
    let delivered = why("7");
    assert!(
        delivered.contains("webhook deliveries/7/1/0 (delivered)")
            && delivered.contains("email deliveries/7/1/1 (delivered)"),
        "{delivered}"
    );
    // Re-queued, a parked row is attempted again (and parked again: the
    // receiver still answers 404).
    let out = trackc()
        .args(["outbox", "retry", "deliveries/2/1/0", "--db", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = deliver_once(&db, &delivery);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("delivered=0 retrying=0 parked=1"),
        "{}",
        text(&out)
    );
    assert_eq!(http.hooks().iter().filter(|h| h.path == "/gone").count(), 2);
    let out = trackc()
        .args(["outbox", "retry", "nope", "--db", &db.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no parked outbox row `nope`"));
}

/// `trackc run` without `--once`: runs by triggers, handles events as they
/// come, delivers, and stops cleanly on SIGTERM.
#[test]
fn serves_until_sigterm() {
    let mut db = Db::sqlite("serve");
    let receivers = Receivers::start("serve");
    std::fs::copy(
        fixture("serve/pinged.dt"),
        receivers.tracks.join("pinged.dt"),
    )
    .unwrap();
    let n = 300;
    db.execute(&items_sql(n));
    let child = trackc()
        .args(["run", "--db", &db.url])
        .args(receivers.delivery_args())
        .arg(&receivers.tracks)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |db: &mut Db, sql: &str, want: i64| {
        let started = Instant::now();
        while db.count(sql) != want {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{sql} is {} (want {want})",
                db.count(sql)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // `on every 1h` is due at once; its webhooks and e-mails go out.
    wait_for(
        &mut db,
        "SELECT count(*) FROM trackc_outbox WHERE state = 'delivered'",
        n / 3 + n / 3,
    );
    // An event for key 7 runs `pinged` for that record only, once.
    db.store
        .as_mut()
        .unwrap()
        .insert_event("ping", Some("7"), trackc_runtime::clock::now_micros())
        .unwrap();
    wait_for(
        &mut db,
        "SELECT count(*) FROM effects WHERE what = 'pinged'",
        1,
    );
    assert_eq!(
        db.count("SELECT count(*) FROM effects WHERE what = 'pinged' AND item = 7"),
        1
    );
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    check_exactly_once(&mut db, n);
    assert_eq!(check_delivered(&mut db, &receivers, n), 0);
}

/// A new version that removes a step still holding records is refused,
/// changing nothing, unless `--map` says where the records go.
#[test]
fn deploy_removing_an_occupied_step_needs_a_mapping() {
    let mut db = Db::sqlite("deploy");
    let receivers = Receivers::start("deploy");
    let n = 100;
    db.execute(&items_sql(n));
    let out = run_once(&db, &receivers, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let in_finish = "SELECT count(*) FROM trackc_state WHERE step = 'finish'";
    assert_eq!(db.count(in_finish), n / 5);
    // Version 2: `notify` ends the record; `finish` is gone.
    let file = receivers.tracks.join("three_steps.dt");
    let v1 = std::fs::read_to_string(&file).unwrap();
    let cut = v1.find("    step finish").unwrap();
    let v2 = format!("{}}}\n", &v1[..cut]).replace("goto finish", "end");
    std::fs::write(&file, v2).unwrap();
    let effects = db.count("SELECT count(*) FROM effects");
    let out = run_once(&db, &receivers, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deploy refused, nothing changed")
            && stderr.contains("step `finish` holds 20 record(s)")
            && stderr.contains("--map three_steps.finish=STEP"),
        "{stderr}"
    );
    assert_eq!(db.count("SELECT count(*) FROM effects"), effects);
    assert_eq!(db.count(in_finish), n / 5);
    // A mapping to a step that does not exist is refused too.
    let out = run_once(&db, &receivers, &["--map", "three_steps.finish=nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("names no step of the new version"));
    // Mapped to `notify`, the records are decided there in the same run.
    let out = run_once(&db, &receivers, &["--map", "three_steps.finish=notify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.count(in_finish), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM trackc_state WHERE step IS NULL"),
        n
    );
}

/// A `trackc run --once` of the crash fixture over `n` items, started.
fn spawn_pass(db: &Db, receivers: &Receivers) -> std::process::Child {
    trackc()
        .args(["run", "--once", "--block", "64", "--db", &db.url])
        .args(receivers.delivery_args())
        .arg(&receivers.tracks)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The output of `child`, which must end within `limit`.
fn finish_within(child: std::process::Child, limit: Duration) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("the pass did not finish within {limit:?}")
    })
}

/// Waits for a faulted pass and checks it finished on its own with every
/// effect exactly once and nothing delivered twice; its output.
fn finished_once(child: std::process::Child, db: &mut Db, receivers: &Receivers, n: i64) -> Output {
    let out = finish_within(child, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    check_exactly_once(db, n);
    assert_eq!(check_delivered(db, receivers, n), 0, "nothing sent twice");
    out
}

/// Waits until the pass has written some states (so that a fault lands
/// in the middle of it).
fn wait_for_progress(db: &mut Db, child: &mut std::process::Child) {
    let started = Instant::now();
    while db.count("SELECT count(*) FROM trackc_state") == 0 {
        assert!(child.try_wait().unwrap().is_none(), "the pass ended early");
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `trackc run --once` while its own PostgreSQL cluster restarts in `mode`
/// mid-pass: the store reconnects, the interrupted run is resumed, the
/// pass finishes on its own, every effect exactly once, and the outage is
/// logged once when lost and once when back.
fn pass_survives_a_restart(mode: &str) {
    let Some(cluster) = Cluster::start(&format!("restart-{mode}")) else {
        return;
    };
    let mut db = Db::postgres_at(&cluster.url("postgres"), "restart").expect("the cluster runs");
    let n = 6_000;
    let receivers = Receivers::start(&format!("pg-restart-{mode}"));
    db.execute(&items_sql(n));
    let mut child = spawn_pass(&db, &receivers);
    wait_for_progress(&mut db, &mut child);
    let restarted = Instant::now();
    cluster.restart(mode);
    let restart_took = restarted.elapsed();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the pass finished before the restart ended: make the work longer"
    );
    let out = finished_once(child, &mut db, &receivers, n);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("the database is unreachable").count(),
        1,
        "one line when lost: {}",
        text(&out)
    );
    assert_eq!(
        stderr.matches("the database is reachable again").count(),
        1,
        "one line when back: {}",
        text(&out)
    );
    eprintln!("restart -m {mode} took {restart_took:?}; the pass finished");
}

#[test]
fn postgres_pass_survives_a_fast_restart() {
    pass_survives_a_restart("fast");
}

#[test]
fn postgres_pass_survives_an_immediate_restart() {
    pass_survives_a_restart("immediate");
}

/// `trackc run --once` while every connection to its database is
/// terminated in rounds, 300 ms apart (what a restart or a failover does
/// to each client): the pass and the delivery finish, every effect once.
#[test]
fn postgres_pass_survives_terminated_connections() {
    let Some(mut db) = Db::postgres("terminate") else {
        return;
    };
    let receivers = Receivers::start("pg-terminate");
    let n = 6_000;
    db.execute(&items_sql(n));
    let mut child = spawn_pass(&db, &receivers);
    wait_for_progress(&mut db, &mut child);
    let mut rounds = 0;
    for _ in 0..5 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        db.terminate_connections();
        rounds += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        rounds >= 2,
        "the pass ended after {rounds} rounds: make it longer"
    );
    let out = finished_once(child, &mut db, &receivers, n);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the database is reachable again"),
        "{}",
        text(&out)
    );
    eprintln!("connections terminated in {rounds} rounds; the pass finished");
}

/// Passwords in database and SMTP URLs stay out of what trackc prints,
/// even when it reports a failure involving them.
#[test]
fn passwords_in_urls_stay_out_of_messages() {
    let receivers = Receivers::start("secrets");
    // A database that does not exist on a server that answers (trust
    // authentication takes any password): refused at once, not retried.
    if let Some(pg) = Db::postgres("trackc_test_secrets") {
        let server = db::server_of(&pg.url);
        let url = format!("postgres://postgres:db-password-42@{server}/trackc_no_such_db");
        let out = trackc()
            .args(["run", "--once", "--db", &url])
            .arg(&receivers.tracks)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let all = text(&out);
        assert!(all.contains("postgres:***@"), "{all}");
        assert!(!all.contains("db-password-42"), "{all}");
    }
    let db = Db::sqlite("secrets");
    let out = trackc()
        .args(["run", "--once", "--db", &db.url])
        .args([
            "--smtp",
            "smtp://someone:smtp-password-42@mail.example:bad-port",
        ])
        .arg(&receivers.tracks)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("--smtp"), "{all}");
    assert!(!all.contains("smtp-password-42"), "{all}");
}

/// The decision history on SQLite and PostgreSQL: a record that went
/// through three steps in one run has three decisions, each with the rule
/// as written, the values read and its effects; a record the source does
/// not select never entered; `--no-history` keeps none.
#[test]
fn why_tells_a_records_path_from_the_decision_history() {
    let dbs: Vec<Db> = [Some(Db::sqlite("why")), Db::postgres("why")]
        .into_iter()
        .flatten()
        .collect();
    for mut db in dbs {
        db.execute(&std::fs::read_to_string(fixture("crash/schema.sql")).unwrap());
        db.execute(
            "INSERT INTO items (id, n, email) VALUES (1, 1, 'one@example.com'), \
             (12, 12, 'twelve@example.com'), (500, 500, 'big@example.com')",
        );
        let out = trackc()
            .args(["run", "--once", "--no-deliver", "--db", &db.url])
            .arg(fixture("history"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let url = db.url.clone();
        let why = |key: &str, format: &str| {
            let out = trackc()
                .args(["why", "--db", &url, "--format", format, "journey", key])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let report: serde_json::Value = serde_json::from_str(&why("1", "json")).unwrap();
        assert_eq!(report["now"]["step"], "end", "{report}");
        let decisions = report["decisions"].as_array().unwrap();
        let path: Vec<(&str, i64, &str)> = decisions
            .iter()
            .map(|d| {
                (
                    d["step"].as_str().unwrap(),
                    d["rule"].as_i64().unwrap(),
                    d["next"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            path,
            [("a", 1, "b"), ("b", 2, "c"), ("c", 2, "end")],
            "{report}"
        );
        assert_eq!(decisions[0]["condition"], "when n > 0");
        assert!(
            decisions[0]["source"]
                .as_str()
                .unwrap()
                .ends_with("journey.dt:9"),
            "{report}"
        );
        assert_eq!(decisions[1]["values"], serde_json::json!({"n": 1}));
        assert_eq!(
            decisions[2]["values"],
            serde_json::json!({"n": 1, "email": "one@example.com"})
        );
        assert_eq!(decisions[1]["effects"][0]["kind"], "sql");
        assert_eq!(decisions[1]["effects"][0]["state"], "applied");
        assert_eq!(decisions[2]["effects"][0]["kind"], "email");
        assert_eq!(decisions[2]["effects"][0]["id"], "journey/1/3/0");
        assert_eq!(decisions[2]["effects"][0]["state"], "pending");
        if db.url.starts_with("sqlite:") {
            let repo = env!("CARGO_MANIFEST_DIR");
            let text = redact_times(&why("1", "human")).replace(repo, "<repo>");
            insta::assert_snapshot!("why_human", text);
        }
        let human = why("12", "human");
        assert!(human.starts_with("journey `12`: ended at "), "{human}");
        assert!(
            human.contains("step `c`  rule 1: when n >= 10 and email is not null"),
            "{human}"
        );
        assert!(
            human.contains("effect:  emit journey/12/3/0 (raised)"),
            "{human}"
        );
        // 500 is not selected (n < 100): the source, asked again for that
        // key alone, still does not select it. 7 was added after the run:
        // the source selects it now, and it enters at the next run.
        let never = why("500", "human");
        assert!(
            never.contains("never entered: the track's source does not select this key"),
            "{never}"
        );
        db.execute("INSERT INTO items (id, n, email) VALUES (7, 7, 'seven@example.com')");
        let later: serde_json::Value = serde_json::from_str(&why("7", "json")).unwrap();
        assert!(
            later["never_entered"]
                .as_str()
                .unwrap()
                .contains("selects this key now"),
            "{later}"
        );
        db.execute("DELETE FROM items WHERE id = 7");
        // A parked e-mail says so, with its last error.
        let out = trackc()
            .args(["outbox", "deliver", "--db", &db.url, "--max-attempts", "1"])
            .args(["--smtp", "smtp://127.0.0.1:1", "--templates"])
            .arg(fixture("crash/templates"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let parked: serde_json::Value = serde_json::from_str(&why("1", "json")).unwrap();
        let effect = &parked["decisions"][2]["effects"][0];
        assert_eq!(effect["state"], "parked", "{parked}");
        assert!(
            !effect["error"].as_str().unwrap_or("").is_empty(),
            "{parked}"
        );
        assert!(
            why("1", "human").contains("effect:  email journey/1/3/0 (parked: "),
            "{parked}"
        );
        // One row per block, holding the decisions of its records.
        assert_eq!(db.count("SELECT count(*) FROM trackc_history"), 1);
        // Without history, the next records decide as before and leave none.
        db.execute("INSERT INTO items (id, n, email) VALUES (2, 2, 'two@example.com')");
        let out = trackc()
            .args([
                "run",
                "--once",
                "--no-deliver",
                "--no-history",
                "--db",
                &db.url,
            ])
            .arg(fixture("history"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_state WHERE key = '2' AND step IS NULL"),
            1
        );
        assert_eq!(db.count("SELECT count(*) FROM trackc_history"), 1);
        // Retention: decisions older than --history-days go after a run
        // (with 0, none do).
        db.execute("UPDATE trackc_history SET at = 0");
        let url = db.url.clone();
        let run = |days: &str| {
            let out = trackc()
                .args(["run", "--once", "--no-deliver", "--history-days", days])
                .args(["--db", &url])
                .arg(fixture("history"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
        };
        run("0");
        assert_eq!(db.count("SELECT count(*) FROM trackc_history"), 1);
        run("30");
        assert_eq!(db.count("SELECT count(*) FROM trackc_history"), 0);
    }
}

/// `trackc plan` on SQLite and PostgreSQL: per rule, how many of the due
/// records would fire it, checked against the same counts in SQL; records
/// in a step the new version removes are reported as stranded; nothing is
/// written.
#[test]
fn plan_counts_what_a_deploy_would_do_and_writes_nothing() {
    let dbs: Vec<Db> = [Some(Db::sqlite("plan")), Db::postgres("plan")]
        .into_iter()
        .flatten()
        .collect();
    let v1 =
        "track waits {\n    source key id { SELECT id, n, email FROM items }\n    on every 1h\n\
        step a {\n        when n % 3 = 0 then goto b\n        when n % 3 = 1 then end\n    }\n\
        step b {\n        wait 1d\n        when n > 50 then end\n    }\n}\n";
    // v2 drops step b and changes a rule of a.
    let v2 = "track waits {\n    source key id { SELECT id, n, email FROM items }\n    on every 1h\n\
        step a {\n        when n % 3 = 0 then end\n        when n % 3 = 1 then end\n        else stay\n    }\n}\n";
    for mut db in dbs {
        let dir = temp_dir(&format!("plan-{}", db.name()));
        std::fs::copy(fixture("crash/schema.sql"), dir.join("schema.sql")).unwrap();
        db.execute(&std::fs::read_to_string(fixture("crash/schema.sql")).unwrap());
        let mut values = Vec::new();
        for i in 1..=200 {
            values.push(format!("({i}, {i}, 'i{i}@example.com')"));
        }
        db.execute(&format!(
            "INSERT INTO items (id, n, email) VALUES {}",
            values.join(", ")
        ));
        std::fs::write(dir.join("waits.dt"), v1).unwrap();
        let plan = |db: &Db| {
            let out = trackc()
                .args(["plan", "--format", "json", "--db", &db.url])
                .arg(&dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(&out.stdout))
                .unwrap()
        };
        // Nothing deployed: every record is new and due in the first step.
        let p = plan(&db);
        let t = &p["tracks"][0];
        assert_eq!(t["change"], "new");
        assert_eq!(t["steps"][0]["due"], 200);
        let fire =
            |t: &serde_json::Value, s: usize, r: usize| t["steps"][s]["rules"][r]["fire"].clone();
        assert_eq!(
            fire(t, 0, 0),
            db.count("SELECT count(*) FROM items WHERE n % 3 = 0")
        );
        assert_eq!(
            fire(t, 0, 1),
            db.count("SELECT count(*) FROM items WHERE n % 3 = 1")
        );
        assert_eq!(db.count("SELECT count(*) FROM trackc_deployments"), 0);
        // Deploy and run v1: 66 records wait in b.
        let out = trackc()
            .args(["run", "--once", "--no-deliver", "--db", &db.url])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let waiting = db.count("SELECT count(*) FROM trackc_state WHERE step = 'b'");
        assert_eq!(
            waiting,
            db.count("SELECT count(*) FROM items WHERE n % 3 = 0")
        );
        // The same files again: unchanged; b's records are not due yet,
        // a's (n % 3 = 2: no rule fired) are due again.
        let p = plan(&db);
        let t = &p["tracks"][0];
        assert_eq!(t["change"], "unchanged");
        assert_eq!(t["steps"][1]["records"], waiting);
        assert_eq!(t["steps"][1]["due"], 0);
        assert_eq!(
            t["steps"][0]["due"],
            db.count("SELECT count(*) FROM items WHERE n % 3 = 2")
        );
        // v2 removes b: its records are stranded, and the diff says what changed.
        std::fs::write(dir.join("waits.dt"), v2).unwrap();
        let (deployments, history) = (
            db.count("SELECT count(*) FROM trackc_deployments"),
            db.count("SELECT count(*) FROM trackc_history"),
        );
        let p = plan(&db);
        let t = &p["tracks"][0];
        assert_eq!(t["change"], "changed");
        assert_eq!(
            t["stranded"],
            serde_json::json!([{"step": "b", "records": waiting}])
        );
        let diff: Vec<&str> = t["diff"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(
            diff,
            [
                "step `b` removed",
                "step `a` rule 1: `when n % 3 = 0 then goto b` → `when n % 3 = 0 then end`",
                "step `a` rule 3 added: `else stay`"
            ]
        );
        // The rule `else stay` of v2 would fire for the 66 records of a.
        assert_eq!(
            fire(t, 0, 2),
            db.count("SELECT count(*) FROM items WHERE n % 3 = 2")
        );
        let out = trackc()
            .args(["plan", "--db", &db.url])
            .arg(&dir)
            .output()
            .unwrap();
        let human = String::from_utf8_lossy(&out.stdout);
        if db.url.starts_with("sqlite:") {
            insta::assert_snapshot!("plan_human", human);
        }
        assert!(
            human.contains("stranded: 66 record(s) in step `b`, which this version removes; deploy with --map waits.b=STEP"),
            "{human}"
        );
        // A plan writes nothing.
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_deployments"),
            deployments
        );
        assert_eq!(db.count("SELECT count(*) FROM trackc_history"), history);
    }
}

/// The deploy history and the audit log on SQLite and PostgreSQL: each
/// deploy that changes something is kept with its files, map, who and
/// when; a rollback ships an earlier deploy again with the checks of any
/// deploy (a step it lacks that holds records needs --map); `trackc run`
/// without files runs what is deployed; deploys, refusals, rollbacks,
/// emits and retries are in the audit log.
#[test]
fn deploys_are_kept_rolled_back_and_audited() {
    let dbs: Vec<Db> = [Some(Db::sqlite("versions")), Db::postgres("versions")]
        .into_iter()
        .flatten()
        .collect();
    // The source does date arithmetic on a run instant, as LANGUAGE.md's
    // example does (PostgreSQL must be told the parameter's type).
    let v1 = "track waits {\n    source key id { SELECT id, n, email FROM items \
        WHERE :last_run - INTERVAL '1 day' < :now }\n    on every 1h\n\
        step a {\n        when n % 2 = 0 then goto b\n    }\n\
        step b {\n        wait 1d\n        when n > 0 then end\n    }\n}\n";
    let v2 =
        "track waits {\n    source key id { SELECT id, n, email FROM items }\n    on every 1h\n\
        step a {\n        when n % 2 = 0 then end\n    }\n}\n";
    for mut db in dbs {
        let dir = temp_dir(&format!("versions-{}", db.name()));
        std::fs::copy(fixture("crash/schema.sql"), dir.join("schema.sql")).unwrap();
        db.execute(&std::fs::read_to_string(fixture("crash/schema.sql")).unwrap());
        db.execute(
            "INSERT INTO items (id, n, email) VALUES (1, 1, 'a@example.com'), \
             (2, 2, 'b@example.com'), (4, 4, 'c@example.com')",
        );
        let file = dir.join("waits.dt");
        let url = db.url.clone();
        let trackc_on = |args: &[&str]| trackc().args(args).args(["--db", &url]).output().unwrap();
        let run = |extra: &[&str]| {
            trackc()
                .args(["run", "--once", "--no-deliver", "--db", &url])
                .args(extra)
                .output()
                .unwrap()
        };
        let dir_arg = dir.to_str().unwrap();
        std::fs::write(&file, v1).unwrap();
        let out = run(&[dir_arg]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("deploy 1: changed waits"),
            "{}",
            text(&out)
        );
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_state WHERE step = 'b'"),
            2
        );
        // The same files again: nothing changed, nothing kept.
        let out = run(&[dir_arg]);
        assert!(out.status.success(), "{}", text(&out));
        // v2 removes b, which holds two records: refused, then mapped.
        std::fs::write(&file, v2).unwrap();
        let out = run(&[dir_arg]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("--map waits.b=STEP"), "{}", text(&out));
        let out = run(&["--map", "waits.b=a", dir_arg]);
        assert!(out.status.success(), "{}", text(&out));
        let versions = |db_args: &[&str]| -> serde_json::Value {
            let mut args = vec!["versions", "--format", "json"];
            args.extend_from_slice(db_args);
            let out = trackc_on(&args);
            assert!(out.status.success(), "{}", text(&out));
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let list = versions(&[]);
        let deploys = list["deploys"].as_array().unwrap();
        assert_eq!(deploys.len(), 2, "{list}");
        assert_eq!(deploys[0]["number"], 2);
        assert_eq!(deploys[0]["by"], "local");
        assert_eq!(deploys[0]["changed"], serde_json::json!(["waits"]));
        assert_eq!(deploys[0]["map"], serde_json::json!(["waits.b=a"]));
        assert!(deploys[0]["files"][0]
            .as_str()
            .unwrap()
            .ends_with("waits.dt"));
        assert_eq!(deploys[1]["number"], 1);
        assert_ne!(deploys[0]["hash"], deploys[1]["hash"]);
        let active_source = |db: &mut Db| {
            db.count(&format!(
                "SELECT count(*) FROM trackc_deployments WHERE active AND source = '{}'",
                v1.replace('\'', "''")
            ))
        };
        assert_eq!(active_source(&mut db), 0);
        // Roll back to deploy 1: its text is deployed again, as deploy 3.
        let out = trackc_on(&["rollback", "1"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("deploy 3: deploy 1's files again; changed waits"),
            "{}",
            text(&out)
        );
        assert_eq!(active_source(&mut db), 1);
        assert_eq!(versions(&[])["deploys"][0]["rollback_of"], 1);
        let human = String::from_utf8_lossy(&trackc_on(&["versions"]).stdout).into_owned();
        assert!(human.contains("deploy 3  "), "{human}");
        assert!(human.contains(", a rollback to deploy 1"), "{human}");
        // Again: nothing to change.
        let out = trackc_on(&["rollback", "1"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("nothing changed"), "{}", text(&out));
        // `trackc run` without files runs what is deployed (v1): a new
        // record goes to b (2 and 4 ended under v2), and rolling back to
        // deploy 2 (no b) is refused.
        db.execute("INSERT INTO items (id, n, email) VALUES (6, 6, 'd@example.com')");
        let out = run(&[]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_state WHERE step = 'b'"),
            1
        );
        let out = trackc_on(&["rollback", "2"]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("step `b` holds 1 record(s)"),
            "{}",
            text(&out)
        );
        let out = trackc_on(&["rollback", "2", "--map", "waits.b=a"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_state WHERE step = 'b'"),
            0
        );
        let out = trackc_on(&["rollback", "99"]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("there is no deploy 99: deploys are numbered 1 to 4"),
            "{}",
            text(&out)
        );
        // An emit and a retry of the outbox, given the database itself.
        let out = trackc_on(&["emit", "nudge", "--key", "1"]);
        assert!(out.status.success(), "{}", text(&out));
        let out = trackc_on(&["outbox", "retry", "--all"]);
        assert!(!out.status.success(), "nothing parked: {}", text(&out));
        let audit = |extra: &[&str]| -> Vec<(String, String, String)> {
            let mut args = vec!["audit", "--format", "json"];
            args.extend_from_slice(extra);
            let out = trackc_on(&args);
            assert!(out.status.success(), "{}", text(&out));
            let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            log["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    assert_eq!(e["who"], "local", "{e}");
                    let result = e["result"].as_str().unwrap();
                    let result = result.split(':').next().unwrap().to_string();
                    (
                        e["action"].as_str().unwrap().to_string(),
                        e["target"].as_str().unwrap().to_string(),
                        result,
                    )
                })
                .collect()
        };
        let entries = audit(&[]);
        let actions: Vec<(&str, &str)> = entries
            .iter()
            .map(|(a, _, r)| (a.as_str(), r.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("deploy", "ok"),
                ("deploy", "refused"),
                ("deploy", "ok"),
                ("rollback", "ok"),
                ("rollback", "ok"),
                ("rollback", "refused"),
                ("rollback", "ok"),
                ("rollback", "refused"),
                ("emit", "ok"),
                ("outbox retry", "ok"),
            ],
            "{entries:?}"
        );
        assert_eq!(entries[3].1, "deploy 1");
        assert_eq!(entries[8].1, "event nudge (1 raised)");
        assert_eq!(audit(&["--since", "1h"]).len(), entries.len());
        assert!(audit(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
        let out = trackc_on(&["audit", "--since", "yesterday"]);
        assert!(!out.status.success());
        assert!(text(&out).contains("write a duration"), "{}", text(&out));
    }
}

/// Sources in other databases (issue 20, PostgreSQL and SQLite): state in
/// SQLite reading a source in PostgreSQL, and state in PostgreSQL reading a
/// source in SQLite. Each record is decided once with its effects in the
/// state database, the source database gets no table of trackc's (the
/// SQLite file is not even written), and a missing source is a clear error.
#[test]
fn a_track_reads_its_source_from_another_database() {
    let Some(mut pg) = Db::postgres("crm_source") else {
        return;
    };
    let people = "CREATE TABLE people (id BIGINT PRIMARY KEY, email TEXT, vip BOOLEAN);\n";
    let rows = "INSERT INTO people (id, email, vip) VALUES (1, 'a@example.com', TRUE), \
                (2, 'b@example.com', FALSE), (3, 'c@example.com', TRUE);";
    let dir = temp_dir("crm-source");
    std::fs::write(dir.join("crm.sql"), people).unwrap();
    std::fs::write(
        dir.join("trackc.toml"),
        "[databases.crm]\nschema = \"crm.sql\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vip.dt"),
        "track vip {\n    source from crm key id { SELECT id, email, vip FROM people }\n    \
         on every 1h\n    step s {\n        when vip then email 'hello', end\n        else end\n    }\n}\n",
    )
    .unwrap();
    let run = |state: &str, source: &str| {
        trackc()
            .args(["run", "--once", "--no-deliver", "--db", state])
            .args(["--source-db", &format!("crm={source}")])
            .arg(&dir)
            .output()
            .unwrap()
    };
    // State in SQLite, source in PostgreSQL.
    pg.execute(people);
    pg.execute(rows);
    let mut lite = Db::sqlite("crm-state");
    let out = run(&lite.url, &pg.url);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lite.count("SELECT count(*) FROM trackc_state WHERE track = 'vip'"),
        3
    );
    assert_eq!(
        lite.count("SELECT count(*) FROM trackc_outbox WHERE kind = 'email'"),
        2
    );
    // Again: every record has its state, nothing is decided twice.
    let out = run(&lite.url, &pg.url);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lite.count("SELECT count(*) FROM trackc_outbox WHERE kind = 'email'"),
        2
    );
    // State in PostgreSQL, source in SQLite, opened read-only: the file
    // is the same bytes after the run.
    let mut file = Db::sqlite("crm-source-file");
    file.execute(&format!("{people}{rows}"));
    let source_url = file.url.clone();
    drop(file);
    let source = std::path::PathBuf::from(source_url.trim_start_matches("sqlite:"));
    let before = std::fs::read(&source).unwrap();
    let Some(mut state) = Db::postgres("crm_state") else {
        return;
    };
    let out = run(&state.url, &source_url);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        state.count("SELECT count(*) FROM trackc_state WHERE track = 'vip'"),
        3
    );
    assert_eq!(
        state.count("SELECT count(*) FROM trackc_outbox WHERE kind = 'email'"),
        2
    );
    assert_eq!(
        std::fs::read(&source).unwrap(),
        before,
        "the SQLite source was written"
    );
    // Nothing was written to PostgreSQL as a source (the test's helper
    // made trackc's tables there; the runs left them empty).
    for table in [
        "trackc_state",
        "trackc_runs",
        "trackc_outbox",
        "trackc_deployments",
    ] {
        assert_eq!(
            pg.count(&format!("SELECT count(*) FROM {table}")),
            0,
            "trackc wrote to its source: {table}"
        );
    }
    // A source that is not there, and one that is not given.
    let out = run(
        &lite.url,
        &format!("sqlite:{}", dir.join("missing.db").display()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--source-db crm: the source database sqlite:"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    let out = trackc()
        .args(["run", "--once", "--no-deliver", "--db", &lite.url])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("track vip reads database `crm`: give --source-db crm=URL"),
        "{}",
        text(&out)
    );
    // Deployed here with crm's schema: without the files, the deployed
    // bundle compiles against it and still needs the database.
    let out = trackc()
        .args(["run", "--once", "--no-deliver", "--db", &lite.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("give --source-db crm=URL"),
        "{}",
        text(&out)
    );
    let out = trackc()
        .args(["run", "--once", "--no-deliver", "--db", &lite.url])
        .args(["--source-db", &format!("crm={}", pg.url)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// `text` with each RFC 3339 instant (`2026-12-03T05:01:46.911437Z`) as
/// `<time>`, for snapshots of output that says when.
fn redact_times(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
        let candidate = &rest[at..];
        let looks = candidate.len() >= 20
            && candidate.as_bytes()[4] == b'-'
            && candidate.as_bytes()[7] == b'-'
            && candidate.as_bytes()[10] == b'T';
        if looks {
            if let Some(z) = candidate.find('Z') {
                out.push_str(&rest[..at]);
                out.push_str("<time>");
                rest = &candidate[z + 1..];
                continue;
            }
        }
        let next = at + candidate.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out.push_str(rest);
    out
}
