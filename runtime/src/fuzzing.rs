//! The fuzz targets: each takes any bytes from outside and must return,
//! never panic, never allocate without bound. cargo-fuzz runs them with
//! libFuzzer (`fuzz/`, bench/fuzz.sh), and every `cargo test` replays the
//! corpus kept in `fuzz/corpus/<target>/` through them on stable Rust
//! (tests/fuzz_corpus.rs), so a crash found once, saved there, stays a
//! regression test.

use crate::group::wire::Opener;
use crate::node::api::DeployRequest;
use crate::node::config::NodeConfig;
use crate::node::work::BlockPayload;
use trackc_compiler::diagnostics::{render_human, render_json};
use trackc_compiler::{compile, Input, Options};

/// The group secret the frame target opens with.
pub const FUZZ_SECRET: &[u8] = b"the group secret of the fuzzer";
const SCHEMA: &str = include_str!("../../tracks/schema.sql");

/// A fuzz target: any bytes in, and it returns.
pub type Target = fn(&[u8]);

/// Every target by its name in `fuzz/fuzz_targets/`.
pub const TARGETS: [(&str, Target); 6] = [
    ("dt_check", dt_check),
    ("dt_test", dt_test),
    ("peer_frame", peer_frame),
    ("block_payload", block_payload),
    ("api_body", api_body),
    ("node_toml", node_toml),
];

/// A `.dt` file through the parser and the checker (with the examples'
/// schema); every diagnostic's span lies in the file on character
/// boundaries and renders in both formats.
pub fn dt_check(data: &[u8]) {
    let compilation = compile(
        vec![Input {
            name: "fuzz.dt".into(),
            bytes: data.to_vec(),
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
        for span in spans {
            assert!(
                span.start <= span.end && span.end <= text.len(),
                "{}: span {}..{} outside {} bytes",
                d.code,
                span.start,
                span.end,
                text.len()
            );
            assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
        }
        render_human(d, &compilation.files, false);
        render_json(d, &compilation.files);
    }
}

/// The example tracks, compiled once for [`dt_test`].
fn example_tracks() -> &'static trackc_compiler::Compilation {
    static EXAMPLES: std::sync::OnceLock<trackc_compiler::Compilation> = std::sync::OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let tracks = [
            include_str!("../../tracks/dunning.dt"),
            include_str!("../../tracks/lead_scoring.dt"),
            include_str!("../../tracks/onboarding.dt"),
            include_str!("../../tracks/order_followup.dt"),
            include_str!("../../tracks/qualified_handoff.dt"),
            include_str!("../../tracks/renewals.dt"),
            include_str!("../../tracks/winback.dt"),
        ];
        compile(
            tracks
                .iter()
                .enumerate()
                .map(|(i, t)| Input {
                    name: format!("{i}.dt"),
                    bytes: t.as_bytes().to_vec(),
                })
                .collect(),
            Options {
                schema: Some(Input {
                    name: "schema.sql".into(),
                    bytes: SCHEMA.as_bytes().to_vec(),
                }),
                ..Options::default()
            },
        )
    })
}

/// A test file (`*.dt.test`) through its parser and checker against the
/// example tracks, and every test that checks run through the JIT.
pub fn dt_test(data: &[u8]) {
    use trackc_compiler::testing::{check_test_file, run_test};
    static JIT: std::sync::OnceLock<trackc_compiler::jit::Jit> = std::sync::OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return; // `trackc test` refuses a file that is not UTF-8 first
    };
    let examples = example_tracks();
    let mut compilation = trackc_compiler::Compilation {
        files: examples.files.clone(),
        asts: examples.asts.clone(),
        program: examples.program.clone(),
        diagnostics: Vec::new(),
    };
    let (tests, diagnostics) = check_test_file(&mut compilation, "fuzz.dt.test", text);
    let files = &compilation.files;
    for d in &diagnostics {
        assert!(d.span.start <= d.span.end && d.span.end <= text.len());
        render_human(d, files, false);
        render_json(d, files);
    }
    let jit = JIT.get_or_init(|| trackc_compiler::jit::Jit::new().expect("a JIT"));
    for test in &tests {
        run_test(&compilation.program, jit, test).expect("a checked test runs");
    }
}

/// A peer frame as it arrives, and the same bytes behind a valid MAC
/// (what only a holder of the secret could send, so the decoders behind
/// the MAC are reached).
pub fn peer_frame(data: &[u8]) {
    let mut opener = Opener::new(FUZZ_SECRET, 2);
    let _ = opener.open(data);
    let _ = opener.open(&crate::group::wire::with_mac(FUZZ_SECRET, data));
}

/// A block's payload as a worker decodes it.
pub fn block_payload(data: &[u8]) {
    let _ = postcard::from_bytes::<BlockPayload>(data);
}

/// A body of `POST /emit` and of `POST /deploy`, with the bundle limits.
pub fn api_body(data: &[u8]) {
    let _ = crate::node::api::emit_events(data);
    if let Ok(request) = serde_json::from_slice::<DeployRequest>(data) {
        let files: Vec<(String, String)> = request
            .files
            .into_iter()
            .map(|f| (f.name, f.text))
            .collect();
        let schema = request.schema.map(|s| (s.name, s.text));
        let _ = crate::bundle::check_limits(&files, schema.as_ref());
    }
}

/// A node.toml (files it names are looked for in a folder that does not
/// exist).
pub fn node_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NodeConfig::parse(text, std::path::Path::new("/nonexistent/trackc-fuzz"));
    }
}
