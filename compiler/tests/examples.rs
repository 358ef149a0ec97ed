//! The example tracks in tracks/: all check without a single diagnostic,
//! and the IR and the generated Cranelift IR of each are pinned by snapshots.

use std::path::{Path, PathBuf};
use trackc_compiler::{compile, ir, Input, Options};

fn tracks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracks")
}

fn example_inputs() -> Vec<(String, Input)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(tracks_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dt"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            let input = Input {
                name: format!("tracks/{stem}.dt"),
                bytes: std::fs::read(&p).unwrap(),
            };
            (stem, input)
        })
        .collect()
}

fn schema() -> Input {
    Input {
        name: "tracks/schema.sql".to_string(),
        bytes: std::fs::read(tracks_dir().join("schema.sql")).unwrap(),
    }
}

/// One example compiled against the schema, which must give no error.
fn compile_clean(stem: &str, input: Input) -> trackc_compiler::Compilation {
    let compilation = compile(
        vec![input],
        Options {
            schema: Some(schema()),
            ..Options::default()
        },
    );
    assert_eq!(compilation.error_count(), 0, "{stem}");
    compilation
}

#[test]
fn examples_check_clean_together() {
    let inputs: Vec<Input> = example_inputs().into_iter().map(|(_, i)| i).collect();
    assert!(inputs.len() >= 6, "at least six example tracks");
    let compilation = compile(
        inputs,
        Options {
            schema: Some(schema()),
            ..Options::default()
        },
    );
    let messages: Vec<String> = compilation
        .diagnostics
        .iter()
        .map(|d| format!("{} {}", d.code, d.message))
        .collect();
    assert!(messages.is_empty(), "{messages:#?}");
    let names: Vec<&str> = compilation
        .program
        .tracks
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    for expected in [
        "onboarding",
        "renewals",
        "winback",
        "lead_scoring",
        "dunning",
        "order_followup",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn ir_of_every_example_track() {
    for (stem, input) in example_inputs() {
        let compilation = compile_clean(&stem, input);
        insta::assert_snapshot!(
            format!("ir_{stem}"),
            ir::print_program(&compilation.program)
        );
    }
}

/// The Cranelift IR the JIT generates for every step of every example,
/// pinned: a change in code generation shows up in review.
#[test]
fn clif_of_every_example_step() {
    let jit = trackc_compiler::jit::Jit::new().unwrap();
    for (stem, input) in example_inputs() {
        let compilation = compile_clean(&stem, input);
        let clif = trackc_compiler::jit::clif_program(&jit, &compilation.program).unwrap();
        insta::assert_snapshot!(format!("clif_{stem}"), clif);
    }
}

/// `trackc graph` of every example, in both formats.
#[test]
fn graph_of_every_example_track() {
    use trackc_compiler::graph::{of_compilation, render, GraphFormat};
    for (stem, input) in example_inputs() {
        let compilation = compile_clean(&stem, input);
        let graphs = of_compilation(&compilation);
        insta::assert_snapshot!(
            format!("graph_{stem}.dot"),
            render(&graphs, GraphFormat::Dot)
        );
        insta::assert_snapshot!(
            format!("graph_{stem}.mermaid"),
            render(&graphs, GraphFormat::Mermaid)
        );
    }
}
