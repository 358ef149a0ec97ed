//! Tracks whose source is in a MariaDB database while trackc keeps its
//! state in SQLite or PostgreSQL (`source from crm`, `--source-db
//! crm=mysql://…`): every column type mapped, runs and event runs decided
//! exactly once, a run killed with SIGKILL again and again, and the
//! mistakes a user makes (a wrong password, a missing database, an
//! unsigned value too large, an unknown table, `sql on crm`) told plainly.
//!
//! MariaDB: `TRACKC_TEST_MARIADB` (default `mysql://root@127.0.0.1:3306`,
//! the MariaDB of this machine); each test creates and drops its own
//! database. Without a server these tests say so loudly and skip, unless
//! `TRACKC_REQUIRE_MARIADB=1` (as `.ci/run` sets), where they fail.

#[path = "support/db.rs"]
mod db;
#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/receivers.rs"]
mod receivers;

use db::{temp_dir, Db};
use mariadb::MariaDb;
use receivers::HttpReceiver;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

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

/// The CRM's table as MariaDB's own `mysqldump --no-data` writes it: every
/// type the issue names (unsigned, TINYINT(1), DECIMAL, DATETIME,
/// TIMESTAMP, DATE, ENUM, text).
const PEOPLE: &str = "CREATE TABLE `people` (
  `id` bigint(20) unsigned NOT NULL,
  `email` varchar(200) DEFAULT NULL,
  `active` tinyint(1) NOT NULL,
  `level` tinyint(4) DEFAULT NULL,
  `visits` int(10) unsigned DEFAULT NULL,
  `balance` decimal(12,2) DEFAULT NULL,
  `ratio` double DEFAULT NULL,
  `share` float DEFAULT NULL,
  `seen` datetime(6) DEFAULT NULL,
  `stamped` timestamp(6) NULL DEFAULT NULL,
  `born` date DEFAULT NULL,
  `kind` enum('lead','customer') DEFAULT NULL,
  `notes` text DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
";

/// A project folder: the CRM's schema declared as a MariaDB database, the
/// state database's schema, and `track` in `t.dt`.
fn project(name: &str, state_schema: &str, track: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("crm.sql"), PEOPLE).unwrap();
    std::fs::write(dir.join("state.sql"), state_schema).unwrap();
    std::fs::write(
        dir.join("trackc.toml"),
        "schema = \"state.sql\"\n\n[databases.crm]\nschema = \"crm.sql\"\ndialect = \"mysql\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("t.dt"), track).unwrap();
    dir
}

fn run(state: &str, crm: &str, dir: &Path, extra: &[&str]) -> Output {
    trackc()
        .args(["run", "--once", "--db", state])
        .args(["--source-db", &format!("crm={crm}")])
        .args(extra)
        .arg(dir.join("t.dt"))
        .output()
        .unwrap()
}

/// Rows of `effects` repeated for the same `columns`: an effect done twice.
fn done_twice(state: &mut Db, columns: &str) -> i64 {
    state.count(&format!(
        "SELECT count(*) FROM (SELECT {columns} FROM effects GROUP BY {columns} \
         HAVING count(*) > 1) AS twice"
    ))
}

/// The states in which these tests keep trackc's tables: SQLite, and the
/// PostgreSQL of this machine when there is one.
fn states(name: &str) -> Vec<Db> {
    let mut all = vec![Db::sqlite(&format!("{name}-state"))];
    all.extend(Db::postgres(&format!("{name}_state")));
    all
}

/// Each column type arrives as the track's field type with its exact
/// value: the record a webhook carries is the oracle. A TIMESTAMP written
/// in another session time zone is the same instant; a DATETIME is taken
/// as UTC; DECIMAL is the nearest float; an unsigned value too large for
/// an int is an error that names the column and the value.
#[test]
fn every_mariadb_column_type_maps_to_its_field_type() {
    let Some(mut crm) = MariaDb::new("types") else {
        return;
    };
    crm.execute(PEOPLE);
    crm.execute(
        "SET time_zone = '+02:00';
         INSERT INTO people VALUES
         (1, 'a@example.com', 1, 5, 4294967295, 1234.56, 0.25, 0.5,
          '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05.5', '2026-01-02', 'lead', 'héllo'),
         (2, NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
         (3, 'c@example.com', 0, -128, 0, -0.01, 1e300, 0, '1970-01-01 00:00:00',
          '1970-01-02 00:00:00', '1000-01-01', 'customer', ''),
         (9223372036854775807, 'max@example.com', 7, 127, 1, 9999999999.99, -2.5, 1,
          '9999-12-31 23:59:59.999999', '2038-01-19 05:14:07', '9999-12-31', 'customer', 'x');\n",
    );
    for mut state in states("types") {
        let receiver = HttpReceiver::start();
        let track = format!(
            "track types {{\n    source from crm key id {{\n        SELECT id, email, active, level, \
             visits, balance, ratio, share, seen, stamped, born, kind, notes FROM people\n    }}\n    \
             on every 1h\n    step s {{\n        when active then webhook 'http://{}/hook', end\n        \
             else end\n    }}\n}}\n",
            receiver.addr
        );
        let dir = project("types", "", &track);
        let out = run(&state.url, &crm.url, &dir, &[]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            state.count("SELECT count(*) FROM trackc_state WHERE track = 'types'"),
            4
        );
        let mut records: Vec<serde_json::Value> = receiver
            .hooks()
            .iter()
            .map(|h| serde_json::from_str::<serde_json::Value>(&h.body).unwrap()["record"].clone())
            .collect();
        records.sort_by_key(|r| r["id"].as_i64());
        let expected = serde_json::json!([
            {
                "id": 1, "email": "a@example.com", "active": true, "level": 5,
                "visits": 4294967295u64, "balance": 1234.56, "ratio": 0.25, "share": 0.5,
                "seen": "2026-01-02T03:04:05.123456Z",
                // Written at 03:04:05.5 in UTC+2.
                "stamped": "2026-01-02T01:04:05.500Z",
                "born": "2026-01-02T00:00:00Z", "kind": "lead", "notes": "héllo"
            },
            {
                "id": 2, "email": null, "active": true, "level": null, "visits": null,
                "balance": null, "ratio": null, "share": null, "seen": null, "stamped": null,
                "born": null, "kind": null, "notes": null
            },
            {
                // TINYINT(1) 7 is true, as MySQL reads it.
                "id": 9223372036854775807i64, "email": "max@example.com", "active": true,
                "level": 127, "visits": 1, "balance": 9999999999.99, "ratio": -2.5,
                "share": 1.0, "seen": "9999-12-31T23:59:59.999999Z",
                "stamped": "2038-01-19T03:14:07Z", "born": "9999-12-31T00:00:00Z",
                "kind": "customer", "notes": "x"
            }
        ]);
        assert_eq!(serde_json::Value::Array(records), expected);
    }
    // One unsigned value past i64::MAX: the run fails saying which column
    // and value, and how to read it instead.
    crm.execute(
        "INSERT INTO people (id, email, active) VALUES (18446744073709551615, 'big', 1);\n",
    );
    let state = Db::sqlite("types-overflow");
    let dir = project(
        "types-overflow",
        "",
        "track types {\n    source from crm key id { SELECT id, active FROM people }\n    \
         on every 1h\n    step s {\n        else end\n    }\n}\n",
    );
    let out = run(&state.url, &crm.url, &dir, &["--no-deliver"]);
    let said = text(&out);
    assert!(
        said.contains(
            "column `id`: the unsigned value 18446744073709551615 does not fit a track's int"
        ),
        "{said}"
    );
}

/// Runs over a MariaDB source with state in SQLite and in PostgreSQL: each
/// record decided once over two runs; an event with a key reads just that
/// record (the keys go to MariaDB as one JSON array); a key that is no
/// record is counted; `:now` is bound as a DATETIME in UTC.
#[test]
fn a_mariadb_source_is_decided_once_and_events_find_their_record() {
    let Some(mut crm) = MariaDb::new("once") else {
        return;
    };
    crm.execute(PEOPLE);
    let mut rows = String::from("INSERT INTO people (id, email, active, seen) VALUES ");
    let values: Vec<String> = (1..=500)
        .map(|i| {
            format!(
                "({i}, 'p{i}@example.com', {}, '2026-01-01 00:00:00')",
                i % 2
            )
        })
        .collect();
    rows.push_str(&values.join(", "));
    rows.push_str(";\n");
    crm.execute(&rows);
    // Seen in the future: not selected yet by `seen <= :now`.
    crm.execute(
        "INSERT INTO people (id, email, active, seen) VALUES (900, 'later@example.com', 1, '2999-01-01 00:00:00');\n",
    );
    let track = "track welcome {\n    source from crm key id {\n        SELECT `id`, email, active \
                 FROM people WHERE seen <= :now\n    }\n    on every 1h\n    on event touched\n    \
                 step s {\n        when active then sql { INSERT INTO effects (person, what) VALUES \
                 (:id, 'welcomed') }, end\n        else end\n    }\n}\n";
    let state_schema = "CREATE TABLE effects (person BIGINT NOT NULL, what TEXT NOT NULL);\n";
    for mut state in states("once") {
        state.execute(state_schema);
        let dir = project("once", state_schema, track);
        // The plan of the first deploy reads the MariaDB source too: all
        // 500 records due in the first step, the active half to fire rule 1.
        let out = trackc()
            .args(["plan", "--format", "json", "--db", &state.url])
            .args(["--source-db", &format!("crm={}", crm.url)])
            .arg(dir.join("t.dt"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let step = &plan["tracks"][0]["steps"][0];
        assert_eq!(plan["tracks"][0]["change"], "new", "{plan}");
        assert_eq!(step["due"], 500, "{plan}");
        assert_eq!(step["rules"][0]["fire"], 250, "{plan}");
        for _ in 0..2 {
            let out = run(
                &state.url,
                &crm.url,
                &dir,
                &["--no-deliver", "--block", "64"],
            );
            assert!(out.status.success(), "{}", text(&out));
        }
        assert_eq!(state.count("SELECT count(*) FROM effects"), 250);
        assert_eq!(done_twice(&mut state, "person"), 0);
        assert_eq!(
            state.count("SELECT count(*) FROM trackc_state WHERE track = 'welcome'"),
            500
        );
        // Person 900 comes into view; an event names it, one names no
        // record, one cannot be an id at all.
        crm.execute("UPDATE people SET seen = '2026-06-01 00:00:00' WHERE id = 900;\n");
        for key in ["900", "12345", "abc"] {
            let out = trackc()
                .args(["emit", "touched", "--key", key, "--db", &state.url])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
        }
        let out = run(&state.url, &crm.url, &dir, &["--no-deliver"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("unknown_keys=2"), "{}", text(&out));
        // `why` of the key that is no record does not ask the state
        // database in the source's stead.
        let out = trackc()
            .args(["why", "welcome", "12345", "--db", &state.url])
            .output()
            .unwrap();
        assert!(
            text(&out).contains("reads its records from database `crm`, which `why` does not open"),
            "{}",
            text(&out)
        );
        assert_eq!(
            state.count("SELECT count(*) FROM effects WHERE person = 900"),
            1
        );
        assert_eq!(state.count("SELECT count(*) FROM effects"), 251);
        crm.execute("UPDATE people SET seen = '2999-01-01 00:00:00' WHERE id = 900;\n");
    }
    // The keys of an event run find their records by the primary key,
    // not by a scan of the table.
    let keyed = trackc_runtime::sqltext::filter_by_keys(
        "SELECT `id`, email, active FROM people WHERE seen <= :now",
        "id",
        trackc_compiler::types::Type::Int,
        trackc_runtime::db::Dialect::MySql,
    )
    .unwrap();
    let mut source =
        trackc_runtime::db::open_source(&trackc_runtime::db::DbUrl::parse(&crm.url).unwrap())
            .unwrap();
    let plan = source
        .explain(&trackc_runtime::db::Statement {
            sql: keyed,
            params: vec![
                ("now".into(), trackc_compiler::value::Value::Timestamp(0)),
                (
                    trackc_runtime::sqltext::EVENT_KEYS_PARAM.into(),
                    trackc_compiler::value::Value::Text("[1, 2, 3]".into()),
                ),
            ],
        })
        .unwrap();
    assert!(
        plan.contains("table=people type=eq_ref") && plan.contains("key=PRIMARY"),
        "{plan}"
    );
    // A text key: the keys read as VARCHAR from the JSON array, compared
    // with the key as text, in the order of the keys as text.
    let by_email = trackc_runtime::sqltext::filter_by_keys(
        "SELECT email, `id` FROM people",
        "email",
        trackc_compiler::types::Type::Text,
        trackc_runtime::db::Dialect::MySql,
    )
    .unwrap();
    let mut found = Vec::new();
    source
        .read(
            &trackc_runtime::db::Statement {
                sql: by_email,
                params: vec![(
                    trackc_runtime::sqltext::EVENT_KEYS_PARAM.into(),
                    trackc_compiler::value::Value::Text(trackc_runtime::sqltext::event_keys(&[
                        trackc_compiler::value::Value::Text("p4@example.com".into()),
                        trackc_compiler::value::Value::Text("p2@example.com".into()),
                        trackc_compiler::value::Value::Text("nobody@example.com".into()),
                    ])),
                )],
            },
            &[
                trackc_compiler::types::Type::Text,
                trackc_compiler::types::Type::Int,
            ],
            10,
            &mut |rows| {
                found.extend(rows);
                Ok(())
            },
        )
        .unwrap();
    use trackc_compiler::value::Value as V;
    assert_eq!(
        found,
        [
            vec![V::Text("p2@example.com".into()), V::Int(2)],
            vec![V::Text("p4@example.com".into()), V::Int(4)],
        ]
    );
    // trackc wrote nothing to its source: the database has the one table.
    assert_eq!(
        crm.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{}'",
            crm.name
        )),
        1
    );
}

/// `trackc run --once` over 20,000 MariaDB records killed with SIGKILL at
/// random moments, then run to the end: every record's action SQL and
/// webhook row exactly once in the state database.
#[test]
fn a_run_over_a_mariadb_source_survives_kill_9() {
    let Some(mut crm) = MariaDb::new("kill") else {
        return;
    };
    crm.execute(PEOPLE);
    let n = 20_000;
    for chunk in (1..=n).collect::<Vec<i64>>().chunks(2_000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("({i}, 'p{i}@example.com', 1, {})", i % 3))
            .collect();
        crm.execute(&format!(
            "INSERT INTO people (id, email, active, level) VALUES {};\n",
            values.join(", ")
        ));
    }
    let track = "track kill {\n    source from crm key id { SELECT id, level FROM people }\n    \
                 on every 1h\n    step first {\n        when level = 0 then webhook \
                 'http://127.0.0.1:9/hook', goto second\n        else sql { INSERT INTO effects \
                 (person, what) VALUES (:id, 'first') }, goto second\n    }\n    step second {\n        \
                 else sql { INSERT INTO effects (person, what) VALUES (:id, 'second') }, end\n    }\n}\n";
    let state_schema = "CREATE TABLE effects (person BIGINT NOT NULL, what TEXT NOT NULL);\n";
    let mut seed: u64 = 20;
    for mut state in states("kill") {
        state.execute(state_schema);
        let dir = project("kill", state_schema, track);
        let mut kills = 0;
        let mut finished = false;
        for _ in 0..8 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let delay = 50 + (seed >> 33) % 400;
            let mut child = trackc()
                .args([
                    "run",
                    "--once",
                    "--no-deliver",
                    "--block",
                    "64",
                    "--db",
                    &state.url,
                ])
                .args(["--source-db", &format!("crm={}", crm.url)])
                .arg(dir.join("t.dt"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay));
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            if state.count("SELECT count(*) FROM trackc_passes WHERE finished_at IS NOT NULL") > 0 {
                finished = true;
                break;
            }
        }
        if !finished {
            let out = run(
                &state.url,
                &crm.url,
                &dir,
                &["--no-deliver", "--block", "64"],
            );
            assert!(out.status.success(), "{}", text(&out));
        }
        assert!(kills > 0, "no attempt was killed: make the work longer");
        let thirds = (1..=n).filter(|i| i % 3 == 0).count() as i64;
        assert_eq!(
            state.count("SELECT count(*) FROM effects WHERE what = 'first'"),
            n - thirds
        );
        assert_eq!(
            state.count("SELECT count(*) FROM effects WHERE what = 'second'"),
            n
        );
        assert_eq!(done_twice(&mut state, "person, what"), 0);
        assert_eq!(
            state.count("SELECT count(*) FROM trackc_outbox WHERE kind = 'webhook'"),
            thirds
        );
        assert_eq!(
            state.count("SELECT count(*) FROM trackc_state WHERE track = 'kill' AND step IS NULL"),
            n
        );
        eprintln!("{}: killed {kills} times", state.url);
    }
}

/// A source connection the server closed while it was idle (a restart, a
/// failover, `wait_timeout`) is opened again by the next read, which then
/// succeeds: no run fails for it.
#[test]
fn a_mariadb_connection_closed_by_the_server_is_opened_again() {
    let Some(mut crm) = MariaDb::new("reconnect") else {
        return;
    };
    crm.execute(PEOPLE);
    crm.execute("INSERT INTO people (id, email, active) VALUES (1, 'a', 1), (2, 'b', 0);\n");
    let mut source =
        trackc_runtime::db::open_source(&trackc_runtime::db::DbUrl::parse(&crm.url).unwrap())
            .unwrap();
    let query = trackc_runtime::db::Statement {
        sql: "SELECT id, active FROM people ORDER BY id".into(),
        params: Vec::new(),
    };
    use trackc_compiler::types::Type;
    let read = |source: &mut Box<dyn trackc_runtime::db::SourceDb>| {
        let mut rows = Vec::new();
        source
            .read(&query, &[Type::Int, Type::Bool], 10, &mut |block| {
                rows.extend(block);
                Ok(())
            })
            .map(|()| rows)
    };
    assert_eq!(read(&mut source).unwrap().len(), 2);
    // One connection, and one again after each reconnection (none leaked).
    let settle = std::time::Duration::from_secs(5);
    for round in 0..3 {
        assert_eq!(crm.await_connections(1, settle), 1, "round {round}");
        assert_eq!(crm.kill_connections(), 1, "round {round}");
        let rows = read(&mut source).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(rows.len(), 2);
        assert_eq!(source.count_rows(&query).unwrap(), 2);
        assert_eq!(crm.await_connections(1, settle), 1, "round {round}");
        assert_eq!(crm.kill_connections(), 1, "round {round}");
        source.ping().unwrap();
    }
}

/// What a user gets wrong, told plainly: a wrong password, a database that
/// does not exist, a server that is not there; an unknown table of the
/// CRM's schema at its span (MySQL's backquotes parsed); `sql on crm`.
#[test]
fn mariadb_source_mistakes_are_clear() {
    let Some(mut crm) = MariaDb::new("mistakes") else {
        return;
    };
    crm.execute(PEOPLE);
    let state = Db::sqlite("mistakes-state");
    let dir = project(
        "mistakes",
        "",
        "track t {\n    source from crm key id { SELECT `id`, email FROM people }\n    \
         on every 1h\n    step s {\n        else end\n    }\n}\n",
    );
    let server = mariadb::admin_url();
    let (scheme, rest) = server.split_once("://").unwrap();
    let user = rest.split('@').next().unwrap().split(':').next().unwrap();
    let host = rest.rsplit('@').next().unwrap();
    let cases = [
        (
            format!("{scheme}://{user}:wrong-password@{host}/{}", crm.name),
            "access denied",
        ),
        (
            format!("{}/trackc_no_such_database", server.trim_end_matches('/')),
            "no such database",
        ),
        (
            format!("mysql://{user}@127.0.0.1:{}/x", db::free_port()),
            "Could not connect",
        ),
    ];
    for (url, said) in cases {
        let out = run(&state.url, &url, &dir, &["--no-deliver"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--source-db crm: connecting to the source database"),
            "{stderr}"
        );
        assert!(stderr.contains(said), "{said}: {stderr}");
        assert!(
            !stderr.contains("wrong-password"),
            "the password was shown: {stderr}"
        );
    }
    // `check` against the CRM's schema, in MySQL's dialect.
    let track = "track t {\n    source from crm key id { SELECT `id`, email FROM peeple }\n    \
                 step s {\n        when email is not null then sql on crm { DELETE FROM people }, end\n        \
                 else end\n    }\n}\n";
    std::fs::write(dir.join("t.dt"), track).unwrap();
    let out = trackc()
        .args(["check", "--format", "json"])
        .arg(dir.join("t.dt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let diagnostics: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let unknown = diagnostics
        .iter()
        .find(|d| d["code"] == "E015")
        .unwrap_or_else(|| panic!("{stdout}"));
    let start = unknown["span"]["start"]["offset"].as_u64().unwrap() as usize;
    let end = unknown["span"]["end"]["offset"].as_u64().unwrap() as usize;
    assert_eq!(&track[start..end], "peeple");
    assert!(
        unknown["help"].as_str().unwrap_or("").contains("people"),
        "{unknown}"
    );
    let refused = diagnostics
        .iter()
        .find(|d| d["code"] == "E020")
        .unwrap_or_else(|| panic!("{stdout}"));
    let start = refused["span"]["start"]["offset"].as_u64().unwrap() as usize;
    let end = refused["span"]["end"]["offset"].as_u64().unwrap() as usize;
    assert_eq!(&track[start..end], "sql on crm");
}

/// Nodes 1, 2, … on the state database `state`, each with its own line
/// of `[databases]` (`crm` = the URL, or none), started and answering;
/// then `t.dt` of `dir` deployed through node 1.
fn start_group_and_deploy(
    dir: &Path,
    state: &str,
    crm_urls: &[Option<String>],
) -> Vec<nodes::Node> {
    let n = crm_urls.len();
    let ports = db::free_ports(2 * n);
    let listens: Vec<std::net::SocketAddr> = (0..n)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], ports[i])))
        .collect();
    let plans: Vec<nodes::Plan> = (0..n)
        .map(|i| nodes::Plan {
            id: i as u64 + 1,
            listen: listens[i],
            http: ports[n + i],
            database: state.to_string(),
            peers: listens.clone(),
            // Before the helper's `[[users]]` in each node.toml.
            extra: crm_urls[i]
                .as_ref()
                .map(|url| format!("\n[databases]\ncrm = \"{url}\"\n"))
                .unwrap_or_default(),
        })
        .collect();
    let configs = nodes::write_configs(dir, &plans);
    let group: Vec<nodes::Node> = configs
        .iter()
        .map(|(id, path, http)| nodes::start(*id, path, http, dir))
        .collect();
    for node in &group {
        nodes::wait_for("the node answers", Duration::from_secs(30), || {
            nodes::status(node).is_some()
        });
    }
    let out = trackc()
        .arg("deploy")
        .arg(dir.join("t.dt"))
        .args(["--to", &group[0].http, "--token", "author-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    group
}

/// A group of three nodes on one PostgreSQL state database, of which only
/// node 2 reads the CRM in MariaDB (node 1's node.toml lacks it, node 3's
/// points at a server that is not there). `trackc deploy --to` ships the
/// CRM's schema with the tracks; node 2 owns the track although node 1
/// would win it by arbitration; every record is decided once (blocks are
/// decided on any node: they carry their rows); the nodes that cannot
/// read the CRM say why in their logs.
#[test]
fn in_a_group_only_nodes_that_read_the_source_own_its_track() {
    let Some(mut crm) = MariaDb::new("group") else {
        return;
    };
    let Some(mut state) = Db::postgres("sources_group") else {
        return;
    };
    crm.execute(PEOPLE);
    let n = 3_000;
    let values: Vec<String> = (1..=n)
        .map(|i| format!("({i}, 'p{i}@example.com', {})", i % 2))
        .collect();
    crm.execute(&format!(
        "INSERT INTO people (id, email, active) VALUES {};\n",
        values.join(", ")
    ));
    let state_schema = "CREATE TABLE effects (person BIGINT NOT NULL, what TEXT NOT NULL);\n";
    state.execute(state_schema);
    let track =
        "track crm_welcome {\n    source from crm key id { SELECT id, active FROM people }\n    \
                 on every 1h\n    step s {\n        when active then sql { INSERT INTO effects \
                 (person, what) VALUES (:id, 'welcomed') }, end\n        else end\n    }\n}\n";
    let dir = project("group", state_schema, track);
    let unreachable = format!("mysql://root@127.0.0.1:{}/crm", db::free_port());
    let group = start_group_and_deploy(
        &dir,
        &state.url,
        &[None, Some(crm.url.clone()), Some(unreachable)],
    );
    nodes::wait_for("every record decided", Duration::from_secs(60), || {
        state.count("SELECT count(*) FROM trackc_state WHERE track = 'crm_welcome'") == n
    });
    assert_eq!(
        state.count("SELECT node FROM trackc_owners WHERE track = 'crm_welcome'"),
        2
    );
    assert_eq!(
        state.count(
            "SELECT count(*) FROM trackc_databases WHERE name = 'crm' AND dialect = 'mysql'"
        ),
        1
    );
    // Let a few more cycles pass: nothing is decided twice.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state.count("SELECT count(*) FROM effects"), n / 2);
    assert_eq!(done_twice(&mut state, "person"), 0);
    // A plan asked of node 2 reads the CRM through its node.toml; node 1
    // says it has no such database.
    let plan = |node: &nodes::Node| {
        trackc()
            .args(["plan", "--format", "json"])
            .arg(dir.join("t.dt"))
            .args(["--to", &node.http, "--token", "author-token"])
            .output()
            .unwrap()
    };
    let out = plan(&group[1]);
    assert!(out.status.success(), "{}", text(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["tracks"][0]["change"], "unchanged", "{answer}");
    assert_eq!(answer["tracks"][0]["steps"][0]["due"], 0, "{answer}");
    let out = plan(&group[0]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not list under [databases]"),
        "{}",
        text(&out)
    );
    let log = |id: u64| std::fs::read_to_string(dir.join(format!("node{id}.log"))).unwrap();
    assert!(
        log(1).contains("cannot read source database `crm`: node.toml has no `crm`"),
        "{}",
        log(1)
    );
    assert!(
        log(3).contains("cannot read source database `crm`: connecting to the source database"),
        "{}",
        log(3)
    );
    assert!(
        !log(2).contains("cannot read source database"),
        "{}",
        log(2)
    );
}

/// `trackc serve --source-db crm=…`: a plan asked of the served database
/// (its API, with the printed admin token) reads the MariaDB source; a
/// `serve` without it says that the database is not given.
#[test]
fn serve_plans_with_a_mariadb_source() {
    use std::io::BufRead;
    let Some(mut crm) = MariaDb::new("serve") else {
        return;
    };
    crm.execute(PEOPLE);
    crm.execute("INSERT INTO people (id, email, active) VALUES (1, 'a', 1), (2, 'b', 0);\n");
    let state = Db::sqlite("serve-state");
    let dir = project(
        "serve",
        "",
        "track t {\n    source from crm key id { SELECT id, active FROM people }\n    \
         on every 1h\n    step s {\n        when active then end\n        else end\n    }\n}\n",
    );
    let serve = |source: Option<&str>| {
        let port = db::free_ports(1)[0];
        let mut cmd = trackc();
        cmd.args(["serve", "--db", &state.url, "--http"])
            .arg(format!("127.0.0.1:{port}"));
        if let Some(url) = source {
            cmd.args(["--source-db", &format!("crm={url}")]);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut token = None;
        while let Some(Ok(line)) = lines.next() {
            if let Some(t) = line.split("shown this once): ").nth(1) {
                token = Some(t.trim().to_string());
                break;
            }
        }
        let out = trackc()
            .args(["plan", "--format", "json"])
            .arg(dir.join("t.dt"))
            .args(["--to", &format!("http://127.0.0.1:{port}")])
            .args(["--token", &token.expect("the token")])
            .output()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        out
    };
    let out = serve(Some(&crm.url));
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["tracks"][0]["steps"][0]["due"], 2, "{plan}");
    assert_eq!(
        plan["tracks"][0]["steps"][0]["rules"][0]["fire"], 1,
        "{plan}"
    );
    let out = serve(None);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("database `crm`"), "{}", text(&out));
}

/// The owner of a track loses its source database (a partition between it
/// and MariaDB, cut by a relay) while a peer still reaches it: the owner
/// advertises that it cannot read it and hands the track back, the peer
/// owns it and decides the records that arrive meanwhile; when the
/// partition heals the track stays where it is. Every record once.
#[test]
fn a_track_moves_to_a_peer_when_its_owner_loses_the_source() {
    let Some(mut crm) = MariaDb::new("partition") else {
        return;
    };
    let Some(mut state) = Db::postgres("sources_partition") else {
        return;
    };
    crm.execute(PEOPLE);
    let insert = |crm: &mut MariaDb, from: i64, to: i64| {
        let values: Vec<String> = (from..=to)
            .map(|i| format!("({i}, 'p{i}@example.com', 1)"))
            .collect();
        crm.execute(&format!(
            "INSERT INTO people (id, email, active) VALUES {};\n",
            values.join(", ")
        ));
    };
    insert(&mut crm, 1, 500);
    let state_schema = "CREATE TABLE effects (person BIGINT NOT NULL, what TEXT NOT NULL);\n";
    state.execute(state_schema);
    let track =
        "track partitioned {\n    source from crm key id { SELECT id, active FROM people }\n    \
                 on every 1s\n    step s {\n        when active then sql { INSERT INTO effects \
                 (person, what) VALUES (:id, 'seen') }, end\n        else end\n    }\n}\n";
    let dir = project("partition", state_schema, track);
    let server = mariadb::admin_url()
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let relay = mariadb::CutRelay::start(&server);
    let through_relay = {
        let (scheme_user, _) = crm.url.rsplit_once('@').unwrap();
        format!("{scheme_user}@127.0.0.1:{}/{}", relay.port, crm.name)
    };
    let _group = start_group_and_deploy(
        &dir,
        &state.url,
        &[Some(through_relay), Some(crm.url.clone())],
    );
    let decided = |state: &mut Db| state.count("SELECT count(*) FROM effects");
    nodes::wait_for("the first records", Duration::from_secs(60), || {
        decided(&mut state) == 500
    });
    let owner =
        |state: &mut Db| state.count("SELECT node FROM trackc_owners WHERE track = 'partitioned'");
    assert_eq!(owner(&mut state), 1, "node 1 wins the track by arbitration");
    // The partition: node 1 no longer reaches MariaDB.
    relay.sever(true);
    insert(&mut crm, 501, 800);
    nodes::wait_for("node 2 owns the track", Duration::from_secs(60), || {
        owner(&mut state) == 2
    });
    nodes::wait_for(
        "the records of the partition",
        Duration::from_secs(60),
        || decided(&mut state) == 800,
    );
    // Healed: nothing moves back.
    relay.sever(false);
    std::thread::sleep(Duration::from_secs(6));
    insert(&mut crm, 801, 900);
    nodes::wait_for("the records after it", Duration::from_secs(60), || {
        decided(&mut state) == 900
    });
    assert_eq!(
        owner(&mut state),
        2,
        "the track moved back after the partition"
    );
    assert_eq!(done_twice(&mut state, "person"), 0);
    let log = std::fs::read_to_string(dir.join("node1.log")).unwrap();
    assert!(log.contains("cannot read source database `crm`"), "{log}");
    assert!(
        log.contains("source database `crm` is readable again"),
        "{log}"
    );
}
