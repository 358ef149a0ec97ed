//! What encrypting peer frames costs: seal and open of a block frame of
//! 1,000 records (about 60 KB), protocol 2 (HMAC only) against protocol 3
//! (HMAC and ChaCha20-Poly1305 under a per-life HKDF key), in the same run.
//! Run: `cargo run --release -p trackc-runtime --example frame_cost`.

use std::time::Instant;
use trackc_compiler::value::Value;
use trackc_runtime::db::RunInfo;
use trackc_runtime::group::protocol::{Block, BlockId, Message};
use trackc_runtime::group::wire::{Opener, Sealer};
use trackc_runtime::node::work::BlockPayload;

const FRAMES: u64 = 2_000;
const REPEATS: usize = 5;

fn main() {
    let rows = (0..1000)
        .map(|i| {
            vec![
                Value::Int(i),
                Value::Text(format!("contact{i}@example.com")),
                Value::Float(i as f64 * 1.5),
                Value::Text("trial".into()),
            ]
        })
        .collect();
    let payload = postcard::to_allocvec(&BlockPayload {
        run: RunInfo {
            id: 1,
            track: "welcome".into(),
            now: 0,
            last_run: 0,
            resumed: false,
            event: None,
        },
        rows,
    })
    .expect("a payload encodes");
    let block = Message::Block(Block {
        id: BlockId {
            owner: 1,
            incarnation: 1,
            seq: 1,
        },
        track: "welcome".into(),
        epoch: 1,
        payload,
    });
    let secret = b"a group secret for the benchmark";
    println!("| protocol | frame bytes | seal+open µs per frame (median of {REPEATS}) | MB/s |");
    println!("|---|---:|---:|---:|");
    let mut medians = Vec::new();
    for version in [2u8, 3] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for r in 0..REPEATS {
            let mut sealer = Sealer::new(secret, 1, (r as u64 + 1) << 40).speaking(version);
            let mut opener = Opener::new(secret, 2);
            let start = Instant::now();
            for _ in 0..FRAMES {
                let frame = sealer.seal(2, &block);
                bytes = frame.len();
                opener.open(&frame).expect("a sealed frame opens");
            }
            times.push(start.elapsed().as_secs_f64() * 1e6 / FRAMES as f64);
        }
        times.sort_by(f64::total_cmp);
        let median = times[REPEATS / 2];
        medians.push(median);
        println!(
            "| {version} | {bytes} | {median:.1} | {:.0} |",
            bytes as f64 / median
        );
    }
    println!("\nprotocol 3 / protocol 2: {:.2}", medians[1] / medians[0]);
}
