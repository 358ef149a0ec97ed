//! No input makes the compiler panic, and every diagnostic it reports has a
//! span inside its file, on character boundaries, that renders in both
//! formats. Inputs: arbitrary bytes, soups of the language's own tokens, and
//! the example tracks with random edits. `PROPTEST_CASES=n` runs more.

use proptest::prelude::*;
use trackc_compiler::diagnostics::{render_human, render_json};
use trackc_compiler::span::Span;
use trackc_compiler::{compile, Input, Options};

const SCHEMA: &str = include_str!("../../tracks/schema.sql");
const EXAMPLES: &[&str] = &[
    include_str!("../../tracks/onboarding.dt"),
    include_str!("../../tracks/renewals.dt"),
    include_str!("../../tracks/winback.dt"),
    include_str!("../../tracks/lead_scoring.dt"),
    include_str!("../../tracks/dunning.dt"),
    include_str!("../../tracks/order_followup.dt"),
];

const TOKENS: &[&str] = &[
    "track",
    "t",
    "version",
    "1",
    "{",
    "}",
    "source",
    "key",
    "id",
    "fields",
    ":",
    "int",
    "text?",
    ",",
    "on",
    "every",
    "15m",
    "cron",
    "'0 9 * * *'",
    "tz",
    "'UTC'",
    "at",
    "2026-12-01T09:00:00Z",
    "event",
    "change",
    "step",
    "s",
    "wait",
    "2d",
    "when",
    "then",
    "else",
    "goto",
    "stay",
    "end",
    "sql",
    "email",
    "'x'",
    "to",
    "webhook",
    "emit",
    "and",
    "or",
    "not",
    "in",
    "between",
    "is",
    "null",
    "like",
    "true",
    "false",
    "(",
    ")",
    "=",
    "!=",
    "<",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "1.5",
    "1e-3",
    "now()",
    "coalesce",
    "'it''s'",
    "//c\n",
    "/* c */",
    "\n",
    "{ SELECT id FROM contacts }",
    "{ UPDATE contacts SET stage = 'x' WHERE id = :id }",
    "{ SELECT",
    "'",
    "\u{e9}",
    "\u{1F600}",
];

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

/// Compiles `bytes` (with the example schema) and checks every span.
fn compiles_without_panic(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let compilation = compile(
        vec![Input {
            name: "fuzz.dt".into(),
            bytes,
        }],
        Options {
            schema: Some(Input {
                name: "schema.sql".into(),
                bytes: SCHEMA.as_bytes().to_vec(),
            }),
            ..Options::default()
        },
    );
    for d in &compilation.diagnostics {
        let text = &compilation.files[d.file.0 as usize].text;
        let spans = std::iter::once(d.span).chain(d.labels.iter().map(|l| l.span));
        for Span { start, end } in spans {
            prop_assert!(
                start <= end && end <= text.len(),
                "{} span {start}..{end} outside {} bytes",
                d.code,
                text.len()
            );
            prop_assert!(
                text.is_char_boundary(start) && text.is_char_boundary(end),
                "{} span not on char boundaries",
                d.code
            );
        }
        render_human(d, &compilation.files, true);
        render_json(d, &compilation.files);
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete(at, len)),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), 1usize..80).prop_map(|(at, len)| Edit::Duplicate(at, len)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len().max(1);
        match *e {
            Edit::Delete(at, len) => {
                let at = at % n;
                let end = (at + len).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            Edit::Insert(at, token) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, format!(" {token} ").into_bytes());
            }
            Edit::Duplicate(at, len) => {
                let at = at % n;
                let end = (at + len).min(bytes.len());
                let slice = bytes[at.min(end)..end].to_vec();
                bytes.splice(at..at, slice);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        compiles_without_panic(bytes)?;
    }

    #[test]
    fn token_soup(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..120)) {
        compiles_without_panic(tokens.join(" ").into_bytes())?;
    }

    #[test]
    fn edited_examples(example in 0..EXAMPLES.len(), edits in prop::collection::vec(edit(), 1..6)) {
        compiles_without_panic(apply(EXAMPLES[example].as_bytes().to_vec(), &edits))?;
    }
}

#[test]
fn pathological_inputs_are_clear_errors() {
    let deep = format!(
        "track t {{ step s {{ when {}1{} then end }} }}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let negs = format!(
        "track t {{ step s {{ when 1 = {}1 then end }} }}",
        "-".repeat(100_000)
    );
    let long_sql = format!(
        "track t {{ source key id {{ SELECT id FROM contacts WHERE {} }} step s {{ else end }} }}",
        "(".repeat(60) + "1" + &")".repeat(60)
    );
    for input in [
        deep,
        negs,
        long_sql,
        String::new(),
        "\u{feff}".into(),
        "}}}}".into(),
        "track".into(),
    ] {
        compiles_without_panic(input.into_bytes()).unwrap();
    }
    compiles_without_panic(vec![0xff, 0xfe, b't']).unwrap();
}
