//! Bytes per advertisement and per cycle for simulated groups of 3, 10 and
//! 50 nodes (two tracks per node), sealed as on the wire (postcard +
//! sender, receiver, counter + HMAC-SHA256). Run:
//! `cargo run --release -p trackc-runtime --example advert_bytes`.

use trackc_runtime::group::protocol::Message;
use trackc_runtime::group::sim::{Sim, SimConfig};
use trackc_runtime::group::wire::{advert_bytes_at_most, Sealer, ADVERT_BYTES_MAX, BROADCAST};

fn main() {
    println!("| nodes | tracks | bytes per advert (mean) | bytes per cycle (group) |");
    println!("|---|---|---|---|");
    for nodes in [3usize, 10, 50] {
        let config = SimConfig {
            actives: nodes,
            standbys: 0,
            tracks: 2 * nodes,
            records_per_track: 4,
            ..SimConfig::default()
        };
        let mut sim = Sim::calm(config, 1);
        for _ in 0..200 {
            sim.step().expect("a calm group keeps its invariants");
            if sim.is_settled().is_ok() {
                break;
            }
        }
        sim.is_settled().expect("the group settles");
        let mut sealer = Sealer::new(b"a group secret for the benchmark", 1, 1 << 50);
        let sizes: Vec<usize> = (1..=nodes as u64)
            .map(|id| {
                let advert = sim.group(id).expect("running").advert();
                sealer.seal(BROADCAST, &Message::Advert(advert)).len()
            })
            .collect();
        let mean = sizes.iter().sum::<usize>() as f64 / nodes as f64;
        // Every node sends its advert to every other node each cycle.
        let per_cycle: usize = sizes.iter().map(|s| s * (nodes - 1)).sum();
        println!("| {nodes} | {} | {mean:.0} | {per_cycle} |", 2 * nodes);
    }
    // How many tracks a deploy to a group accepts: the widest advert of
    // the bundle must fit one datagram.
    println!();
    println!("| name length | tracks a group can run | widest advert of that many |");
    println!("|---|---|---|");
    for len in [10usize, 30, 60] {
        let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{i:0>len$}")).collect() };
        let fits = |n: usize| advert_bytes_at_most(&names(n)) <= ADVERT_BYTES_MAX;
        let (mut lo, mut hi) = (0usize, 10_000usize);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        println!("| {len} | {lo} | {} |", advert_bytes_at_most(&names(lo)));
    }
}
