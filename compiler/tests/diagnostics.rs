//! One fixture per diagnostic code (tests/fixtures/diagnostics/CODE_*.dt),
//! rendered for people and for tools and pinned by snapshots. Each fixture
//! must produce its own code, so none can silently stop exercising it.

use std::path::Path;
use trackc_compiler::diagnostics::{render_human, render_json};
use trackc_compiler::{compile, Compilation, Input, Options};

const SCHEMA: &str = include_str!("../../tracks/schema.sql");

/// A source database of the fixtures (`source from crm`), PostgreSQL.
const CRM_SCHEMA: &str = "CREATE TABLE people (id BIGINT PRIMARY KEY, email TEXT, vip BOOLEAN);\n";

/// Compiles one fixture against the example schema, with one source
/// database, `crm`.
fn check_diagnostics(name: &str, text: &str) -> Compilation {
    compile(
        vec![Input {
            name: name.to_string(),
            bytes: text.as_bytes().to_vec(),
        }],
        Options {
            schema: Some(Input {
                name: "schema.sql".to_string(),
                bytes: SCHEMA.as_bytes().to_vec(),
            }),
            databases: vec![trackc_compiler::SourceDatabase {
                name: "crm".into(),
                dialect: trackc_compiler::SqlDialect::Postgres,
                schema: Some(Input {
                    name: "crm.sql".into(),
                    bytes: CRM_SCHEMA.as_bytes().to_vec(),
                }),
            }],
            ..Options::default()
        },
    )
}

/// A source in a named database is checked against that database's
/// schema, not the state database's: its columns type the fields, and an
/// unknown table is reported at its span.
#[test]
fn a_source_database_is_checked_against_its_own_schema() {
    let ok = check_diagnostics(
        "crm.dt",
        "track t {\n    source from crm key id { SELECT id, email, vip FROM people }\n    \
         step s {\n        when vip then end\n    }\n}\n",
    );
    assert_eq!(ok.error_count(), 0, "{:?}", ok.diagnostics);
    let track = &ok.program.tracks[0];
    assert_eq!(track.source_database.as_deref(), Some("crm"));
    let names: Vec<&str> = track.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["id", "email", "vip"]);
    // `contacts` is a table of the state database, not of crm.
    let text = "track t {\n    source from crm key id { SELECT id FROM contacts }\n    \
                step s {\n        else end\n    }\n}\n";
    let wrong = check_diagnostics("crm.dt", text);
    let d = wrong
        .diagnostics
        .iter()
        .find(|d| d.code.to_string() == "E015")
        .expect("E015");
    assert_eq!(&text[d.span.start..d.span.end], "contacts");
    // Without `from`, the state database's schema as before.
    let state = check_diagnostics(
        "state.dt",
        "track t {\n    source key id { SELECT id FROM people }\n    step s {\n        else end\n    }\n}\n",
    );
    assert!(state
        .diagnostics
        .iter()
        .any(|d| d.code.to_string() == "E015"));
}

#[test]
fn every_code_has_a_fixture_in_both_formats() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diagnostics");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dt"))
        .collect();
    paths.sort();
    assert_eq!(
        paths.len(),
        22,
        "one fixture per code: E001–E015, E019, E020, W001–W005"
    );
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let code = &name[..4];
        let compilation = check_diagnostics(&name, &std::fs::read_to_string(&path).unwrap());
        let codes: Vec<String> = compilation
            .diagnostics
            .iter()
            .map(|d| d.code.to_string())
            .collect();
        assert!(
            codes.iter().any(|c| c == code),
            "{name} does not produce {code}: {codes:?}"
        );

        let human: String = compilation
            .diagnostics
            .iter()
            .map(|d| render_human(d, &compilation.files, false))
            .collect();
        let json: String = compilation
            .diagnostics
            .iter()
            .map(|d| render_json(d, &compilation.files) + "\n")
            .collect();
        let stem = name.trim_end_matches(".dt");
        insta::assert_snapshot!(format!("{stem}.human"), human);
        insta::assert_snapshot!(format!("{stem}.json"), json);
    }
}

/// The codes of test files (`*.dt.test`), each checked against the
/// example track `onboarding`.
#[test]
fn every_test_code_has_a_fixture_in_both_formats() {
    use trackc_compiler::testing::check_test_file;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diagnostics");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(".dt.test"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 3, "one fixture per code: E016–E018");
    let track = include_str!("../../tracks/onboarding.dt");
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let code = &name[..4];
        let mut compilation = check_diagnostics("onboarding.dt", track);
        assert_eq!(compilation.diagnostics, vec![]);
        let text = std::fs::read_to_string(&path).unwrap();
        let (_, diagnostics) = check_test_file(&mut compilation, &name, &text);
        assert!(
            diagnostics.iter().any(|d| d.code.to_string() == code),
            "{name} does not produce {code}: {diagnostics:?}"
        );
        let human: String = diagnostics
            .iter()
            .map(|d| render_human(d, &compilation.files, false))
            .collect();
        let json: String = diagnostics
            .iter()
            .map(|d| render_json(d, &compilation.files) + "\n")
            .collect();
        let stem = name.trim_end_matches(".dt.test");
        insta::assert_snapshot!(format!("{stem}.human"), human);
        insta::assert_snapshot!(format!("{stem}.json"), json);
    }
}

#[test]
fn json_spans_are_exact_and_one_based() {
    let text = "track t {\n  source key id { SELECT id FROM contacts }\n  step s { when idd > 1 then end }\n}\n";
    let compilation = check_diagnostics("t.dt", text);
    let d = &compilation.diagnostics[0];
    let json: serde_json::Value =
        serde_json::from_str(&render_json(d, &compilation.files)).unwrap();
    assert_eq!(json["code"], "E004");
    let start = &json["span"]["start"];
    let end = &json["span"]["end"];
    assert_eq!(
        (start["line"].as_u64(), start["col"].as_u64()),
        (Some(3), Some(17))
    );
    assert_eq!(
        (end["line"].as_u64(), end["col"].as_u64()),
        (Some(3), Some(20))
    );
    let offset = start["offset"].as_u64().unwrap() as usize;
    assert_eq!(
        &text[offset..end["offset"].as_u64().unwrap() as usize],
        "idd"
    );
    assert_eq!(json["help"], "did you mean `id`?");
}
