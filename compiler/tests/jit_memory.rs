//! Compiled steps free their machine code when dropped: compiling and
//! dropping thousands of them leaves the process's resident memory flat.
//! (Its own test binary, so no other test's allocations move the figure.)

use trackc_compiler::jit::Jit;
use trackc_compiler::types::Type;

/// Resident memory in KiB, from /proc (Linux; elsewhere the test is moot).
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn compiling_and_dropping_thousands_of_steps_keeps_memory_flat() {
    let source = "track t {
        source key id { SELECT id, score, name FROM c }
        fields { id: int, score: int?, name: text? }
        step s {
            when score > 10 and name like 'a%' then end
            when score % 7 = 3 or lower(name) in ('x', 'y', 'z', 'w') then end
            when coalesce(score, 0) * 2 between 5 and 50 then end
        }
    }";
    let compilation = trackc_compiler::compile_str("t.dt", source, None);
    assert_eq!(compilation.error_count(), 0);
    let track = &compilation.program.tracks[0];
    let fields: Vec<Type> = track.fields.iter().map(|f| f.ty).collect();
    let jit = Jit::new().unwrap();
    let round = |n: usize| {
        for _ in 0..n {
            let step = jit.compile_uncached(&fields, &track.steps[0]).unwrap();
            drop(step);
        }
    };
    round(300); // warm up allocator pools
    let Some(before) = resident_kib() else {
        eprintln!("no /proc/self/status: resident memory cannot be read here; skipping");
        return;
    };
    round(3000);
    let after = resident_kib().unwrap();
    // Each step maps at least one page of code and one of constants: 3,000
    // leaked steps would be 24 MiB or more.
    let grown = after.saturating_sub(before);
    assert!(
        grown < 4 * 1024,
        "resident memory grew by {grown} KiB over 3,000 compile-and-drop cycles"
    );
}
