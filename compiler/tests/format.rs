//! `trackc fmt` keeps meaning and is idempotent: the example tracks are
//! formatted already, and the examples with whitespace, comments and
//! tokens inserted or cut (whatever still parses) format to a fixed point
//! whose IR equals the IR of the text before (SQL compared modulo
//! whitespace, which re-indentation changes) with the same diagnostics.
//! `PROPTEST_CASES=n` runs more.

use proptest::prelude::*;
use trackc_compiler::format::format_source;
use trackc_compiler::ir::{Effect, Program, Trigger};
use trackc_compiler::{compile, Input, Options};

const SCHEMA: &str = include_str!("../../tracks/schema.sql");
const EXAMPLES: &[(&str, &str)] = &[
    ("onboarding", include_str!("../../tracks/onboarding.dt")),
    ("renewals", include_str!("../../tracks/renewals.dt")),
    ("winback", include_str!("../../tracks/winback.dt")),
    ("lead_scoring", include_str!("../../tracks/lead_scoring.dt")),
    ("dunning", include_str!("../../tracks/dunning.dt")),
    (
        "order_followup",
        include_str!("../../tracks/order_followup.dt"),
    ),
    (
        "qualified_handoff",
        include_str!("../../tracks/qualified_handoff.dt"),
    ),
];
const INSERTS: &[&str] = &[
    " ",
    "\n",
    "\n\n\n",
    "\t",
    "// a comment\n",
    "/* c */",
    "(",
    ")",
    "not ",
    ",",
    "-",
    "1",
];

fn compiled(text: &str) -> (Program, Vec<String>) {
    let c = compile(
        vec![Input {
            name: "t.dt".into(),
            bytes: text.as_bytes().to_vec(),
        }],
        Options {
            schema: Some(Input {
                name: "schema.sql".into(),
                bytes: SCHEMA.as_bytes().to_vec(),
            }),
            ..Options::default()
        },
    );
    let mut program = c.program;
    let squash = |t: &mut String| *t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    for track in &mut program.tracks {
        squash(&mut track.source.text);
        for trigger in &mut track.triggers {
            if let Trigger::Change(sql) = trigger {
                squash(&mut sql.text);
            }
        }
        for step in &mut track.steps {
            for rule in &mut step.rules {
                for effect in &mut rule.effects {
                    if let Effect::Sql(sql) = effect {
                        squash(&mut sql.text);
                    }
                }
            }
        }
    }
    let mut codes: Vec<String> = c.diagnostics.iter().map(|d| d.code.to_string()).collect();
    codes.sort();
    (program, codes)
}

fn keeps_meaning(text: &str) -> Result<(), TestCaseError> {
    let Ok(formatted) = format_source(text) else {
        return Ok(());
    };
    let again = format_source(&formatted).ok();
    prop_assert_eq!(
        again.as_ref(),
        Some(&formatted),
        "not idempotent:\n{}",
        formatted
    );
    let (before, codes_before) = compiled(text);
    let (after, codes_after) = compiled(&formatted);
    prop_assert_eq!(
        codes_before,
        codes_after,
        "diagnostics differ:\n{}",
        formatted
    );
    prop_assert!(before == after, "the IR differs:\n{}", formatted);
    Ok(())
}

#[test]
fn the_example_tracks_are_formatted() {
    for (name, text) in EXAMPLES {
        let formatted = format_source(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(
            &formatted, text,
            "tracks/{name}.dt: run `trackc fmt tracks/`"
        );
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn edited_examples_format_to_the_same_meaning(
        example in 0..EXAMPLES.len(),
        edits in prop::collection::vec(
            (any::<usize>(), prop::sample::select(INSERTS), 0usize..3),
            1..8,
        ),
    ) {
        let mut text = EXAMPLES[example].1.to_string();
        for (at, insert, cut) in edits {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text.replace_range(at..end, insert);
        }
        keeps_meaning(&text)?;
    }
}

/// How many edited examples still parse, so the property above does not
/// pass by skipping everything.
#[test]
fn most_whitespace_edits_still_parse() {
    let text = EXAMPLES[0].1;
    let parsed = (0..text.len())
        .step_by(7)
        .filter(|&at| text.is_char_boundary(at))
        .filter(|&at| {
            let mut t = text.to_string();
            t.insert_str(at, "\n\n // c\n ");
            format_source(&t).is_ok()
        })
        .count();
    let tried = (0..text.len()).step_by(7).count();
    assert!(parsed * 2 > tried, "{parsed} of {tried} parse");
}

/// What `trackc fmt` makes of a file written in a hurry, pinned.
#[test]
fn a_messy_file_formatted() {
    let messy = include_str!("fixtures/fmt/messy.dt");
    let formatted = format_source(messy).unwrap();
    insta::assert_snapshot!(formatted);
    keeps_meaning(messy).unwrap();
}
