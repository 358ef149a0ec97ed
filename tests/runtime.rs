//! End-to-end tests of `trackc run` and `trackc demo` against SQLite and
//! the PostgreSQL on this machine, including runs killed with SIGKILL at
//! random moments: every effect must happen exactly once.
//!
//! PostgreSQL: `TRACKC_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is the admin connection;
//! each test creates and drops its own database. Without a server the
//! PostgreSQL tests say so and skip, unless `TRACKC_REQUIRE_POSTGRES=1`
//! (as `.ci/run` sets), where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn trackc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trackc"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trackc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

/// A database to run against: SQLite in a temp dir, or a fresh
/// PostgreSQL database dropped at the end.
struct Db {
    url: String,
    store: Option<Box<dyn trackc_runtime::db::Store>>,
    drop_pg: Option<(String, String)>,
}

impl Db {
    fn sqlite(name: &str) -> Db {
        let path = temp_dir(name).join("t.db");
        let url = format!("sqlite:{}", path.display());
        let store =
            trackc_runtime::db::open(&trackc_runtime::db::DbUrl::parse(&url).unwrap()).unwrap();
        Db {
            url,
            store: Some(store),
            drop_pg: None,
        }
    }

    /// `None` (after a loud message) when no server is reachable and it is
    /// not required.
    fn postgres(name: &str) -> Option<Db> {
        let admin = std::env::var("TRACKC_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let db = format!("trackc_test_{name}_{}", std::process::id());
        if let Err(e) = pg_admin(&admin, &format!("DROP DATABASE IF EXISTS {db}"))
            .and_then(|_| pg_admin(&admin, &format!("CREATE DATABASE {db}")))
        {
            if std::env::var("TRACKC_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "PostgreSQL is required (TRACKC_REQUIRE_POSTGRES=1) but {admin} failed: {e}"
                );
            }
            eprintln!(
                "\n!!! SKIPPED: no PostgreSQL at {admin} ({e}); set TRACKC_TEST_POSTGRES !!!\n"
            );
            return None;
        }
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{db}");
        let store =
            trackc_runtime::db::open(&trackc_runtime::db::DbUrl::parse(&url).unwrap()).unwrap();
        Some(Db {
            url,
            store: Some(store),
            drop_pg: Some((admin, db)),
        })
    }

    fn count(&mut self, sql: &str) -> i64 {
        let store = self.store.as_mut().expect("open");
        store
            .query_i64(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn execute(&mut self, sql: &str) {
        self.store
            .as_mut()
            .expect("open")
            .execute_batch(sql)
            .unwrap();
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((admin, db)) = self.drop_pg.take() {
            // Close our connections first.
            self.store = None;
            let _ = pg_admin(
                &admin,
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            );
        }
    }
}

fn pg_admin(url: &str, sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(url, tokio_postgres::NoTls),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        client.batch_execute(sql).await.map_err(|e| e.to_string())?;
        drop(client);
        let _ = task.await;
        Ok(())
    })
}

fn run_once(db: &Db, extra: &[&str]) -> Output {
    let mut cmd = trackc();
    cmd.args(["run", "--once", "--db", &db.url])
        .args(extra)
        .arg(fixture("crash"));
    cmd.output().unwrap()
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
        ("SELECT count(*) FROM trackc_state WHERE step = 'finish'", count(&|i| i % 5 == 0)),
        ("SELECT count(*) FROM trackc_state WHERE step IS NULL", count(&|i| i % 5 != 0)),
        ("SELECT count(*) FROM trackc_runs WHERE finished_at IS NULL", 0),
    ];
    for (sql, want) in expect {
        assert_eq!(db.count(sql), want, "{sql}");
    }
}

fn runs_once_and_not_twice(db: &mut Db) {
    let n = 3000;
    db.execute(&items_sql(n));
    let out = run_once(db, &["--block", "100"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("records={n} record_steps={}", 3 * n)),
        "{}",
        text(&out)
    );
    check_exactly_once(db, n);
    // A second pass: ended records are done; those that stay fire again.
    let out = run_once(db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.count("SELECT count(*) FROM effects"), n + n - n / 5);
    assert_eq!(
        db.count("SELECT CAST(coalesce(sum(counter), 0) AS BIGINT) FROM items"),
        2 * (n / 5)
    );
}

#[test]
fn sqlite_runs_once_and_not_twice() {
    runs_once_and_not_twice(&mut Db::sqlite("once"));
}

#[test]
fn postgres_runs_once_and_not_twice() {
    if let Some(mut db) = Db::postgres("once") {
        runs_once_and_not_twice(&mut db);
    }
}

/// `trackc run --once` killed with SIGKILL at random moments, again and
/// again, then run to the end: every effect exactly once.
fn survives_kill_9(db: &mut Db, seed: u64) {
    let n = 20_000;
    db.execute(&items_sql(n));
    let mut rng = seed;
    let mut kills = 0;
    // Kill the pass until an attempt finishes it on its own (a finished
    // pass is done; the next `--once` would be a new pass).
    let mut finished = false;
    for _ in 0..8 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 30 + (rng >> 33) % 400;
        let mut child = trackc()
            .args(["run", "--once", "--block", "64", "--db", &db.url])
            .arg(fixture("crash"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
            child.wait().unwrap();
        } else {
            finished = true;
            break;
        }
    }
    if !finished {
        let out = run_once(db, &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(kills > 0, "no attempt was killed: make the work longer");
    eprintln!("killed {kills} times (seed {seed})");
    check_exactly_once(db, n);
}

#[test]
fn sqlite_survives_kill_9() {
    survives_kill_9(&mut Db::sqlite("kill"), 7);
}

#[test]
fn postgres_survives_kill_9() {
    if let Some(mut db) = Db::postgres("kill") {
        survives_kill_9(&mut db, 11);
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let db = Db::sqlite("bad");
    // The user's table is missing: the track's run fails, said plainly.
    let out = run_once(&db, &[]);
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
        .args(["run", "--once", "--db", "mysql://x"])
        .arg(fixture("crash"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a database URL"),
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
    let out = run_once(&db, &[]);
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
