//! Events decided in batches, on SQLite and on PostgreSQL: the source is
//! read by its key (the plans say so), events for one key are decided one
//! run after the other in the order they were raised, and each event is
//! decided exactly once even when `trackc run` is killed with SIGKILL in
//! the middle of a batch.
//!
//! PostgreSQL as in tests/runtime.rs: `TRACKC_TEST_POSTGRES` is the admin
//! connection, and `TRACKC_REQUIRE_POSTGRES=1` makes its absence a failure.

#[path = "support/db.rs"]
mod db;

use db::{temp_dir, Db};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use trackc_runtime::db::{DbUrl, Dialect, Statement};
use trackc_runtime::run::RunSource;

fn trackc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trackc"))
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// SQLite always; PostgreSQL when there is one (required in CI).
fn both_stores(name: &str) -> Vec<Db> {
    let mut dbs = vec![Db::sqlite(&format!("events-{name}"))];
    dbs.extend(Db::postgres(&format!("events_{name}")));
    dbs
}

const SCHEMA: &str = "CREATE TABLE items (
    id      BIGINT PRIMARY KEY,
    n       BIGINT NOT NULL,
    email   TEXT
);
CREATE TABLE accounts (
    code TEXT PRIMARY KEY,
    n    BIGINT NOT NULL
);
CREATE TABLE effects (
    item BIGINT NOT NULL,
    what TEXT NOT NULL
);
";

/// The schema and `n` items (ids 1..=n) and `n` accounts (codes a1..an).
fn fill(db: &mut Db, n: i64) {
    let mut sql = SCHEMA.to_string();
    let ids: Vec<i64> = (1..=n).collect();
    for chunk in ids.chunks(1000) {
        let items: Vec<String> = chunk.iter().map(|i| format!("({i}, {i}, 'x')")).collect();
        let accounts: Vec<String> = chunk.iter().map(|i| format!("('a{i}', {i})")).collect();
        sql.push_str(&format!(
            "INSERT INTO items (id, n, email) VALUES {};\nINSERT INTO accounts (code, n) VALUES {};\n",
            items.join(", "),
            accounts.join(", ")
        ));
    }
    db.execute(&sql);
}

/// A directory with the schema and `tracks` (file name, text).
fn tracks_dir(test: &str, tracks: &[(&str, &str)]) -> PathBuf {
    let dir = temp_dir(&format!("{test}-tracks"));
    std::fs::write(dir.join("schema.sql"), SCHEMA).unwrap();
    for (file, text) in tracks {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

/// Raises `events` (name, key) in this order, in one statement.
fn raise(db: &mut Db, events: &[(&str, String)]) {
    let now = trackc_runtime::clock::now_micros();
    for chunk in events.chunks(1000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|(name, key)| format!("('{name}', '{key}', {now})"))
            .collect();
        db.execute(&format!(
            "INSERT INTO trackc_events (name, key, created_at) VALUES {};",
            rows.join(", ")
        ));
    }
}

fn run_once(db: &Db, dir: &Path) -> Output {
    trackc()
        .args(["run", "--once", "--db", &db.url])
        .arg(dir)
        .output()
        .unwrap()
}

/// Every step moves one event further: `a`, then `b`, then `c`, each in a
/// run of its own (`wait 0s`: a record entering a step is decided at the
/// next run, not in the same one). Deciding two events of one key in one
/// run would skip a step; deciding them out of order cannot happen.
const STEPPER: &str = "track stepper {
    source key id { SELECT id, n, email FROM items }
    on event bump
    step a {
        wait 0s
        when n >= 0 then sql { INSERT INTO effects (item, what) VALUES (:id, 'a') }, goto b
    }
    step b {
        wait 0s
        when n >= 0 then sql { INSERT INTO effects (item, what) VALUES (:id, 'b') }, goto c
    }
    step c {
        wait 0s
        when n >= 0 then sql { INSERT INTO effects (item, what) VALUES (:id, 'c') }, end
    }
}
";

/// A second track on the same event: it stays where it is and notes every
/// event it decides, so it counts them.
const ECHO: &str = "track echo {
    source key id { SELECT id, n, email FROM items }
    on event bump
    step e {
        when n >= 0 then sql { INSERT INTO effects (item, what) VALUES (:id, 'echo') }, stay
    }
}
";

/// The source of a batch of events is read through the key's index or
/// primary key, not scanned: `EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on
/// PostgreSQL, for an integer key and for a text key.
#[test]
fn an_event_batch_reads_the_source_by_its_key() {
    for mut db in both_stores("plan") {
        fill(&mut db, 20_000);
        let dir = tracks_dir(
            "events-plan",
            &[
                (
                    "by_id.dt",
                    "track by_id {\n    source key id { SELECT id, n, email FROM items WHERE n >= 0 }\n    \
                     on event ping\n    step s { when n > 0 then end }\n}\n",
                ),
                (
                    "by_code.dt",
                    "track by_code {\n    source key code { SELECT code, n FROM accounts }\n    \
                     on event touch\n    step s { when n > 0 then end }\n}\n",
                ),
            ],
        );
        let url = DbUrl::parse(&db.url).unwrap();
        if url.dialect() == Dialect::Postgres {
            db.execute("ANALYZE items; ANALYZE accounts;");
        }
        // Twenty keys spread over the table: events as they trickle in.
        // (For a batch naming a large share of a table PostgreSQL may
        // rightly prefer a hash join over a scan; docs/runtime.md.)
        let keys: Vec<i64> = (1..=20).map(|i| i * 997).collect();
        let mut events: Vec<(&str, String)> =
            keys.iter().map(|i| ("ping", i.to_string())).collect();
        events.extend(keys.iter().map(|i| ("touch", format!("a{i}"))));
        raise(&mut db, &events);

        let jit = trackc_compiler::jit::Jit::new().unwrap();
        let tracks = trackc_runtime::bundle::load_paths(
            &jit,
            &[dir.join("by_id.dt"), dir.join("by_code.dt")],
            Some(&dir.join("schema.sql")),
            url.dialect(),
        )
        .unwrap();
        let store = db.store.as_mut().unwrap();
        let listeners = trackc_runtime::run::listeners(&tracks);
        for (track, table) in [(&tracks[0], "items"), (&tracks[1], "accounts")] {
            let key = track.ir.fields[track.ir.key].ty;
            let run = store
                .open_event_run(&track.ir.name, &listeners, key, 1)
                .unwrap()
                .expect("a batch of events");
            assert_eq!(store.run_events(run.id).unwrap().len(), 20);
            let source = RunSource::of(track, &run, store.as_mut()).unwrap();
            let query: &Statement = source.statement.as_ref().unwrap();
            let plan = store.explain(query).unwrap();
            let scans = match url.dialect() {
                Dialect::Sqlite => format!("SCAN {table}"),
                Dialect::Postgres => format!("Seq Scan on {table}"),
                Dialect::MySql => unreachable!("a state database is never MariaDB"),
            };
            assert!(
                !plan.contains(&scans),
                "{}: {} scans {table}:\n{plan}",
                db.url,
                track.ir.name
            );
            assert!(
                plan.contains("INDEX") || plan.contains("Index"),
                "{}: no index in the plan of {}:\n{plan}",
                db.url,
                track.ir.name
            );
        }
        // And the batches decide: every key once, nothing left waiting.
        let out = run_once(&db, &dir);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_state WHERE step IS NULL"),
            40,
            "{}",
            db.url
        );
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_events WHERE done_at IS NULL"),
            0
        );
        assert_eq!(db.count("SELECT count(*) FROM trackc_event_runs"), 0);
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_runs WHERE finished_at IS NULL"),
            0
        );
    }
}

/// Events for one key are decided in the order they were raised, one run
/// after the other, with the same result as deciding them one at a time;
/// a batch ends before a key it already holds.
#[test]
fn events_for_one_key_are_decided_in_order() {
    for (mut batched, mut one_by_one) in both_stores("order_a")
        .into_iter()
        .zip(both_stores("order_b"))
    {
        let dir = tracks_dir("events-order", &[("stepper.dt", STEPPER)]);
        // Keys 1..=20, then 1 again, then 21..=40 and 1, 2, 2.
        let mut keys: Vec<i64> = (1..=20).collect();
        keys.push(1);
        keys.extend(21..=40);
        keys.extend([1, 2, 2]);
        let events: Vec<(&str, String)> = keys.iter().map(|k| ("bump", k.to_string())).collect();

        fill(&mut batched, 60);
        raise(&mut batched, &events);
        let out = run_once(&batched, &dir);
        assert!(out.status.success(), "{}", text(&out));
        // Batches: 1..=20; 1 and 21..=40; 1, 2; 2.
        assert_eq!(
            batched.count("SELECT count(*) FROM trackc_runs WHERE track = 'stepper'"),
            4,
            "{}",
            batched.url
        );

        fill(&mut one_by_one, 60);
        for event in &events {
            raise(&mut one_by_one, std::slice::from_ref(event));
            let out = run_once(&one_by_one, &dir);
            assert!(out.status.success(), "{}", text(&out));
        }
        let effects = "SELECT item * 10 + CASE what WHEN 'a' THEN 1 WHEN 'b' THEN 2 ELSE 3 END \
                       FROM effects ORDER BY 1";
        let states = "SELECT CAST(key AS BIGINT) * 10 + CASE step WHEN 'a' THEN 1 WHEN 'b' THEN 2 \
                      WHEN 'c' THEN 3 ELSE 0 END FROM trackc_state ORDER BY 1";
        for sql in [effects, states] {
            assert_eq!(
                column(&mut batched, sql),
                column(&mut one_by_one, sql),
                "{}: {sql}",
                batched.url
            );
        }
        // Key 1 had three events: a, b and c, in that order; key 2 three
        // too; every other key one.
        assert_eq!(
            batched.count("SELECT count(*) FROM effects WHERE item = 1"),
            3
        );
        assert_eq!(
            batched.count("SELECT count(*) FROM effects WHERE item = 2"),
            3
        );
        assert_eq!(batched.count("SELECT count(*) FROM effects"), 40 + 4);
        assert_eq!(
            batched.count("SELECT count(*) FROM trackc_events WHERE done_at IS NULL"),
            0
        );
    }
}

/// The values of a one-column integer query, in its order.
fn column(db: &mut Db, sql: &str) -> Vec<i64> {
    let store = db.store.as_mut().unwrap();
    let n = store
        .query_i64(&format!("SELECT count(*) FROM ({sql}) q"))
        .unwrap();
    (0..n)
        .map(|i| {
            store
                .query_i64(&format!("SELECT * FROM ({sql}) q LIMIT 1 OFFSET {i}"))
                .unwrap()
        })
        .collect()
}

/// Keys that are no record (an id that does not exist, text where the key
/// is an integer) are done and counted, not retried: the next pass has
/// nothing left to do.
#[test]
fn unknown_keys_are_done_and_counted() {
    for mut db in both_stores("unknown") {
        fill(&mut db, 50);
        let dir = tracks_dir("events-unknown", &[("stepper.dt", STEPPER)]);
        raise(
            &mut db,
            &[
                ("bump", "3".into()),
                ("bump", "999".into()),
                ("bump", "abc".into()),
                ("bump", " 7".into()),
            ],
        );
        let out = run_once(&db, &dir);
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("unknown_keys=2 "), "{}", text(&out));
        assert_eq!(db.count("SELECT count(*) FROM effects"), 2, "{}", db.url);
        assert_eq!(
            db.count("SELECT count(*) FROM trackc_events WHERE done_at IS NULL"),
            0
        );
        let again = run_once(&db, &dir);
        assert!(
            String::from_utf8_lossy(&again.stdout).contains("runs=0 "),
            "{}",
            text(&again)
        );
    }
}

/// `trackc run --once` killed with SIGKILL at random moments while it
/// decides batches of events, then run to the end: each event decided
/// exactly once by each of the two tracks on it (a step per event in one,
/// a row per event in the other), nothing left waiting.
#[test]
fn event_batches_survive_kill_9() {
    for (i, mut db) in both_stores("kill").into_iter().enumerate() {
        let n: i64 = 30_000;
        fill(&mut db, n);
        let dir = tracks_dir("events-kill", &[("stepper.dt", STEPPER), ("echo.dt", ECHO)]);
        // Every key once, then every third key again: two batches' worth
        // of repeats.
        let mut events: Vec<(&str, String)> = (1..=n).map(|k| ("bump", k.to_string())).collect();
        events.extend(
            (1..=n)
                .filter(|k| k % 3 == 0)
                .map(|k| ("bump", k.to_string())),
        );
        raise(&mut db, &events);
        let mut rng = 0x5eed + i as u64;
        let mut kills = 0;
        for _ in 0..8 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let delay = 50 + (rng >> 33) % 500;
            let mut child = trackc()
                .args(["run", "--once", "--block", "64", "--db", &db.url])
                .arg(&dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay));
            if child.try_wait().unwrap().is_some() {
                break;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        }
        // What is left: new passes until no event waits.
        for _ in 0..5 {
            if db.count("SELECT count(*) FROM trackc_events WHERE done_at IS NULL") == 0 {
                break;
            }
            let out = run_once(&db, &dir);
            assert!(out.status.success(), "{}", text(&out));
        }
        assert!(kills > 0, "{}: no attempt was killed", db.url);
        let twice = (1..=n).filter(|k| k % 3 == 0).count() as i64;
        for (sql, want) in [
            ("SELECT count(*) FROM effects WHERE what = 'a'", n),
            ("SELECT count(*) FROM effects WHERE what = 'b'", twice),
            ("SELECT count(*) FROM effects WHERE what = 'c'", 0),
            (
                "SELECT count(*) FROM effects WHERE what = 'echo'",
                n + twice,
            ),
            (
                "SELECT count(*) FROM (SELECT item, what FROM effects WHERE what <> 'echo' \
                 GROUP BY item, what HAVING count(*) > 1) d",
                0,
            ),
            (
                "SELECT count(*) FROM (SELECT item FROM effects WHERE what = 'echo' \
                 GROUP BY item HAVING count(*) > CASE WHEN item % 3 = 0 THEN 2 ELSE 1 END) d",
                0,
            ),
            (
                "SELECT count(*) FROM trackc_events WHERE done_at IS NULL",
                0,
            ),
            ("SELECT count(*) FROM trackc_event_runs", 0),
            (
                "SELECT count(*) FROM trackc_runs WHERE finished_at IS NULL",
                0,
            ),
        ] {
            assert_eq!(db.count(sql), want, "{}: {sql}", db.url);
        }
        eprintln!("{}: killed {kills} times", db.url);
    }
}
