//! The stable harness of the fuzz targets: every input kept in
//! `fuzz/corpus/<target>/` (the seeds, what libFuzzer found worth keeping,
//! and any crash it found, saved there as a regression) goes through the
//! target's code in trackc-runtime's `fuzzing` module. cargo-fuzz needs
//! nightly flags; this runs the same code on the stable toolchain in every
//! `cargo test` (docs/security.md).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use trackc_runtime::fuzzing::TARGETS;

/// Fewer inputs than this in a target's corpus means it was lost.
const SEEDS_MIN: usize = 3;

#[test]
fn every_corpus_input_of_every_target_returns() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut crashed = Vec::new();
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            inputs.len() >= SEEDS_MIN,
            "{}: {} inputs, expected at least {SEEDS_MIN}",
            dir.display(),
            inputs.len()
        );
        for path in inputs {
            let bytes = std::fs::read(&path).unwrap();
            if catch_unwind(AssertUnwindSafe(|| run(&bytes))).is_err() {
                crashed.push(path.display().to_string());
            }
        }
    }
    assert!(crashed.is_empty(), "inputs that panic: {crashed:#?}");
}
