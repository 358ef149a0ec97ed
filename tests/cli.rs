//! End-to-end tests of the `trackc` binary: what users and CI see — output,
//! formats and exit codes (0 clean or warnings, 1 errors, 2 usage or I/O).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn trackc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trackc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running trackc")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch file unique to this test process.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trackc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn examples() -> Vec<String> {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tracks"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dt"))
            .map(|p| format!("tracks/{}", p.file_name().unwrap().to_str().unwrap()))
            .collect();
    files.sort();
    files
}

#[test]
fn examples_check_clean() {
    let mut args = vec!["check", "--schema", "tracks/schema.sql"];
    let files = examples();
    args.extend(files.iter().map(String::as_str));
    let out = trackc(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).ends_with("0 errors, 0 warnings\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn errors_exit_1_with_file_line_col() {
    let out = trackc(&[
        "check",
        "--schema",
        "tracks/schema.sql",
        "compiler/tests/fixtures/diagnostics/E003_unknown_step.dt",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("[E003] Error: no step `nurtur` in track `routing`"),
        "{err}"
    );
    assert!(err.contains("E003_unknown_step.dt:3:46"), "{err}");
    assert!(err.contains("did you mean `nurture`?"), "{err}");
    assert!(!err.contains('\u{1b}'), "no colour when not on a terminal");
}

#[test]
fn warnings_alone_exit_0() {
    let out = trackc(&[
        "check",
        "compiler/tests/fixtures/diagnostics/W005_empty_file.dt",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("W005"));
}

#[test]
fn json_is_one_object_per_line() {
    let out = trackc(&[
        "check",
        "--format",
        "json",
        "--schema",
        "tracks/schema.sql",
        "compiler/tests/fixtures/diagnostics/E001_syntax.dt",
        "compiler/tests/fixtures/diagnostics/E005_type_mismatch.dt",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 4, "{lines:?}");
    for d in &lines {
        for key in [
            "severity", "code", "message", "file", "span", "labels", "help",
        ] {
            assert!(d.get(key).is_some(), "{key} missing in {d}");
        }
        for end in ["start", "end"] {
            for part in ["line", "col", "offset"] {
                assert!(d["span"][end][part].is_u64(), "{d}");
            }
        }
    }
    let files: Vec<&str> = lines.iter().map(|d| d["file"].as_str().unwrap()).collect();
    assert!(
        files.iter().any(|f| f.ends_with("E001_syntax.dt"))
            && files.iter().any(|f| f.ends_with("E005_type_mismatch.dt"))
    );
}

#[test]
fn usage_and_io_problems_exit_2() {
    let missing = trackc(&["check", "no/such/file.dt"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("cannot read `no/such/file.dt`"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(trackc(&["check"]).status.code(), Some(2));
    assert_eq!(
        trackc(&["check", "--format", "xml", "tracks/onboarding.dt"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn bad_bytes_and_deep_nesting_are_diagnostics_not_crashes() {
    let binary = scratch("binary.dt", &[b't', b'r', 0xff, 0xfe, b'\n']);
    let out = trackc(&["check", binary.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not valid UTF-8 (byte 0xff)"),
        "{}",
        stderr(&out)
    );

    let deep = format!(
        "track t {{ step s {{ when {}1{} then end }} }}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let deep = scratch("deep.dt", deep.as_bytes());
    let out = trackc(&["check", deep.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("parentheses are nested more than 64 deep"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn build_emits_ir_and_ast() {
    let build = |emit: &str| {
        trackc(&[
            "build",
            "--schema",
            "tracks/schema.sql",
            "--emit",
            emit,
            "tracks/onboarding.dt",
        ])
    };
    let out = build("ir");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("track onboarding\n  key id\n"));
    let out = build("ast");
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("name: \"onboarding\""));
    let out = build("clif");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("; track onboarding, step welcome\n"));
    assert!(stdout(&out).contains("function %step(i64)"));
    let out = trackc(&[
        "build",
        "--emit",
        "ir",
        "compiler/tests/fixtures/diagnostics/E003_unknown_step.dt",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

const RECORDS: &str = r#"{"id": 1, "email": "a@x.io", "plan": "trial", "score": 70, "country": "FR", "signup_at": "2026-11-20T10:00:00Z", "last_seen_at": null}
{"id": 2, "email": "b@x.io", "plan": "free", "score": 10, "country": "DE", "signup_at": "2026-11-20T10:00:00Z", "last_seen_at": null}
{"id": 3, "email": "c@x.io", "plan": "free", "score": 10, "country": null, "signup_at": "2026-11-20T10:00:00Z", "last_seen_at": "2026-11-21T08:00:00Z"}
"#;

#[test]
fn eval_prints_one_decision_per_record() {
    let records = scratch("records.jsonl", RECORDS.as_bytes());
    let out = trackc(&[
        "eval",
        "tracks/onboarding.dt",
        "--schema",
        "tracks/schema.sql",
        "--track",
        "onboarding",
        "--step",
        "welcome",
        "--records",
        records.to_str().unwrap(),
        "--engine",
        "interp",
        "--now",
        "2026-11-23T09:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let decisions: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(i64, i64, &str)> = decisions
        .iter()
        .map(|d| {
            (
                d["key"].as_i64().unwrap(),
                d["rule"].as_i64().unwrap(),
                d["next"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(1, 1, "qualify"), (2, 2, "nurture"), (3, 3, "nurture")]
    );
    assert_eq!(
        decisions[0]["actions"],
        serde_json::json!([
            {"action": "email", "template": "welcome-hot", "to": "a@x.io"},
            {"action": "goto", "step": "qualify"}
        ])
    );
}

#[test]
fn eval_explains_bad_records_and_names() {
    let records = scratch("bad.jsonl", b"{\"id\": 1, \"email\": \"a@x.io\"}\n");
    let base = [
        "eval",
        "tracks/onboarding.dt",
        "--schema",
        "tracks/schema.sql",
        "--track",
        "onboarding",
    ];
    let out = trackc(
        &[
            &base[..],
            &["--step", "welcome", "--records", records.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(":1: missing field `plan`"),
        "{}",
        stderr(&out)
    );
    let out = trackc(
        &[
            &base[..],
            &["--step", "welcom", "--records", records.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no step `welcom`"),
        "{}",
        stderr(&out)
    );
}

/// The JIT (the default engine) and the interpreter print the same
/// decisions, across several blocks and with NULLs in every column.
#[test]
fn eval_engines_agree_across_blocks() {
    let plans = ["trial", "free", "pro", "enterprise"];
    let mut records = String::new();
    for i in 0..2500 {
        let null = |v: String| if i % 7 == 3 { "null".to_string() } else { v };
        records.push_str(&format!(
            "{{\"id\": {i}, \"email\": {}, \"plan\": {}, \"score\": {}, \"country\": {}, \
             \"signup_at\": {}, \"last_seen_at\": {}}}\n",
            null(format!("\"u{i}@x.io\"")),
            null(format!("\"{}\"", plans[i % 4])),
            null(format!("{}", i % 101)),
            null(format!("\"{}\"", ["PT", "DE", "FR"][i % 3])),
            null(format!("\"2026-11-{:02}T10:00:00Z\"", 1 + i % 22)),
            null(format!("\"2026-11-{:02}T08:00:00Z\"", 1 + i % 21)),
        ));
    }
    let records = scratch("many.jsonl", records.as_bytes());
    let run = |engine: &str| {
        let mut args = vec![
            "eval",
            "tracks/onboarding.dt",
            "--schema",
            "tracks/schema.sql",
            "--track",
            "onboarding",
            "--records",
            records.to_str().unwrap(),
            "--now",
            "2026-11-23T09:00:00Z",
            "--step",
            "welcome",
        ];
        if !engine.is_empty() {
            args.extend(["--engine", engine]);
        }
        let out = trackc(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
    };
    let jit = run("");
    assert_eq!(jit.lines().count(), 2500);
    assert_eq!(jit, run("interp"));
    let rules: std::collections::BTreeSet<String> = jit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["rule"].to_string())
        .collect();
    assert!(
        rules.len() >= 3,
        "the records exercise several rules: {rules:?}"
    );
}

/// `trackc token new` prints a fresh token once and the `[[users]]` entry
/// that admits it, ready to paste into a node.toml.
#[test]
fn token_new_prints_a_token_and_the_entry_that_admits_it() {
    let out = trackc(&["token", "new", "--name", "ci", "--role", "author"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (token, entry) = stdout.split_once('\n').unwrap();
    assert!(token.starts_with("trackc_") && token.len() == 71, "{token}");
    let config = format!(
        "id = 1\nlisten = \"127.0.0.1:7100\"\nhttp = \"127.0.0.1:8100\"\n\
         database = \"sqlite:x.db\"\nsecret = \"a group secret of some length\"\n{entry}"
    );
    let config = trackc_runtime::node::config::NodeConfig::parse(&config, Path::new(".")).unwrap();
    let user = config.user(token).expect("the entry admits the token");
    assert_eq!(user.name, "ci");
    assert_eq!(user.role, trackc_runtime::node::config::UserRole::Author);
    let again = trackc(&["token", "new", "--name", "ci", "--role", "author"]);
    assert_ne!(String::from_utf8(again.stdout).unwrap(), stdout);
    let bad = trackc(&["token", "new", "--name", "ci", "--role", "root"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `trackc fmt --check` shows a diff and exits 1 without touching the
/// file; `trackc fmt` rewrites it, after which `--check` passes; a file
/// with a syntax error is reported, exits 1 and stays as it was; the
/// example tracks are formatted (CI fails otherwise).
#[test]
fn fmt_checks_rewrites_and_leaves_broken_files_alone() {
    let messy = "track t { source key id { SELECT id, score FROM contacts }\n\
                 step s { when score>=50 then end } }\n";
    let file = scratch("messy.dt", messy.as_bytes());
    let path = file.to_str().unwrap();
    let o = trackc(&["fmt", "--check", path]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("+        when score >= 50 then end"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("1 of 1 file would be reformatted"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), messy);

    let o = trackc(&["fmt", path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let formatted = std::fs::read_to_string(&file).unwrap();
    assert!(formatted.contains("\n    step s {\n        when score >= 50 then end\n    }\n"));
    assert_eq!(trackc(&["fmt", "--check", path]).status.code(), Some(0));

    let broken = "track t { step s { when then } }\n";
    let bad = scratch("broken.dt", broken.as_bytes());
    let o = trackc(&["fmt", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("E001"), "{}", stderr(&o));
    assert!(stderr(&o).contains("left as they are"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), broken);

    let o = trackc(&["fmt", "--check", "tracks/"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// `trackc check` takes its schema and dialect from the files'
/// `trackc.toml` (found in a parent folder); `--schema` wins over it, and
/// a bad project file is a usage error naming it.
/// `source from crm`: declared by `--schema crm=FILE` or by trackc.toml's
/// `[databases.crm]`, the source is checked against crm's schema; not
/// declared, it is E019; and `trackc run` refuses such a bundle (the
/// runtime reads no named database yet) with nothing deployed.
#[test]
fn a_source_database_is_declared_on_the_command_line_or_in_the_project() {
    let dir = std::env::temp_dir().join(format!("trackc-cli-crm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let crm = dir.join("crm.sql");
    std::fs::write(
        &crm,
        "CREATE TABLE people (id BIGINT PRIMARY KEY, vip BOOLEAN);\n",
    )
    .unwrap();
    let file = dir.join("t.dt");
    std::fs::write(
        &file,
        "track t {\n    source from crm key id { SELECT id, vip FROM people }\n    \
         step s {\n        when vip then end\n    }\n}\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let o = trackc(&["check", path]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("E019"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no source database is declared"),
        "{}",
        stderr(&o)
    );
    let named = format!("crm={}", crm.display());
    let o = trackc(&["check", "--schema", &named, path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::write(
        dir.join("trackc.toml"),
        "[databases.crm]\nschema = \"crm.sql\"\n",
    )
    .unwrap();
    let o = trackc(&["check", path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let db = format!("sqlite:{}", dir.join("state.db").display());
    let o = trackc(&["run", "--once", "--db", &db, path]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("E019"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nothing was deployed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_reads_the_project_file() {
    let dir = std::env::temp_dir().join(format!("trackc-cli-project-{}", std::process::id()));
    let tracks = dir.join("tracks");
    std::fs::create_dir_all(&tracks).unwrap();
    std::fs::write(
        dir.join("schema.sql"),
        "CREATE TABLE contacts (id BIGINT PRIMARY KEY, score INT NOT NULL);",
    )
    .unwrap();
    std::fs::write(dir.join("trackc.toml"), "schema = \"schema.sql\"\n").unwrap();
    let file = tracks.join("t.dt");
    std::fs::write(
        &file,
        "track t {\n    source key id { SELECT id, score FROM contacts }\n    step s {\n        \
         when score > 1 then end\n    }\n}\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let o = trackc(&["check", path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // `run` takes the schema from it too (the database is empty: the run
    // itself finds no table, but the tracks compile and deploy).
    let db = format!("sqlite:{}", dir.join("state.db").display());
    let o = trackc(&["run", "--db", &db, "--once", path]);
    assert!(stderr(&o).contains("deploy 1: changed t"), "{}", stderr(&o));
    // Without the project file the field types are unknown (E013).
    std::fs::rename(dir.join("trackc.toml"), dir.join("off.toml")).unwrap();
    let o = trackc(&["check", path]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("E013"), "{}", stderr(&o));
    let o = trackc(&["run", "--db", &db, "--once", path]);
    assert!(
        stderr(&o).contains("nothing was deployed"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("E013"), "{}", stderr(&o));
    std::fs::write(dir.join("trackc.toml"), "dialect = \"oracle\"\n").unwrap();
    let o = trackc(&["check", path]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("trackc.toml: `dialect` = \"oracle\""),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `trackc test` on the example tracks: every test passes (CI runs them).
#[test]
fn the_example_tracks_pass_their_tests() {
    let out = trackc(&["test", "tracks"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // Every example track has tests.
    for track in examples() {
        let stem = track.trim_end_matches(".dt");
        assert!(
            stdout(&out).contains(&format!("{stem}.dt.test:")),
            "{track} has no tests"
        );
    }
    insta::assert_snapshot!("test_examples_pass", stdout(&out));
}

/// A suite with failures: each failure shows expected against actual and
/// the values the conditions read; the exit code is 1.
#[test]
fn a_failing_suite_says_what_differs() {
    let out = trackc(&["test", "tests/fixtures/track_tests"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).ends_with("\n2 passed, 3 failed\n"));
    insta::assert_snapshot!("test_failing_human", stdout(&out));

    let out = trackc(&["test", "--format", "json", "tests/fixtures/track_tests"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(report["passed"], 2);
    assert_eq!(report["failed"], 3);
    insta::assert_snapshot!(
        "test_failing_json",
        serde_json::to_string_pretty(&report).unwrap()
    );

    // A track file brings the tests beside it.
    let out = trackc(&["test", "tests/fixtures/track_tests/abandoned_cart.dt"]);
    assert!(stdout(&out).ends_with("\n2 passed, 3 failed\n"));
}

#[test]
fn test_files_with_mistakes_run_nothing_and_say_where() {
    let dir = scratch("carts", b"").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/track_tests");
    for f in ["abandoned_cart.dt", "schema.sql"] {
        std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("abandoned_cart.dt.test"),
        "test 'x' {\n  track abandoned_cart step chsed\n  record { id: 1 }\n  expect end\n}\n\
         test 'y' {\n  track abandoned_cart\n  record { id: 1, email: 'a@b.c' }\n}\n\
         test 'z' {\n  expect maybe\n}\n",
    )
    .unwrap();
    let out = trackc(&["test", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(stdout(&out), "");
    for expected in [
        "[E016] Error: track `abandoned_cart` has no step `chsed`",
        "Help: did you mean `chased`?",
        "[E017] Error: this record misses `total`, `items`, `updated_at`",
        "[E018] Error: this test expects nothing, so it cannot fail",
        "[E001] Error: expected `goto`, `stay`, `end`, `rule`, `no` or `effects`, found `maybe`",
        "abandoned_cart.dt.test:2:",
        "no test ran: fix the errors first",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
    let out = trackc(&["test", "--format", "json", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    let codes: Vec<&str> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    // In the order of the file: 'x', then 'y' (its name, then its record), then 'z'.
    assert_eq!(codes, ["E016", "E018", "E018", "E017", "E016", "E001"]);

    // No test file at all is a usage error, not a pass.
    let empty = scratch("no-tests", b"").with_extension("d");
    std::fs::create_dir_all(&empty).unwrap();
    let out = trackc(&["test", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no test files (`*.dt.test`)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn graph_draws_a_track_or_names_the_ones_there_are() {
    let out = trackc(&[
        "graph",
        "--schema",
        "tracks/schema.sql",
        "tracks/onboarding.dt",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("digraph tracks {"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains(
        "\"onboarding.welcome\" -> \"onboarding.qualify\" [label=\"1: plan = 'trial' and score >= 50\"];"
    ));
    let all: Vec<String> = examples();
    let mut args = vec!["graph", "--format", "mermaid", "--track", "dunning"];
    args.extend(all.iter().map(String::as_str));
    let out = trackc(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("flowchart LR\n    subgraph t0[\"dunning\"]"));
    assert_eq!(stdout(&out).matches("subgraph").count(), 1);
    let out = trackc(&["graph", "--track", "onbording", "tracks/onboarding.dt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no track `onbording` in the files given (tracks: onboarding); did you mean `onboarding`?"),
        "{}",
        stderr(&out)
    );
}
