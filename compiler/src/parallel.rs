//! A small fork-join map over a slice: one worker per core, each with a
//! stack large enough for the parser, results in input order. Compiling
//! many files (or tracks) is embarrassingly parallel; this keeps `trackc
//! check tracks/*.dt` fast without a thread-pool dependency.

use crate::syntax::parser::PARSER_STACK_BYTES;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many workers to use: `TRACKC_THREADS` if set (at least 1), else
/// one per core.
fn workers_wanted() -> usize {
    std::env::var("TRACKC_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// `items.iter().map(f).collect()`, spread over the machine's cores.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = workers_wanted();
    let workers = cores.min(items.len()).max(1);
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                std::thread::Builder::new()
                    .name("trackc-worker".into())
                    .stack_size(PARSER_STACK_BYTES)
                    .spawn_scoped(scope, || {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(item) = items.get(i) else { break };
                            done.push((i, f(item)));
                        }
                        done
                    })
                    .expect("spawning a compiler worker")
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    debug_assert_eq!(results.len(), items.len());
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(
            super::map(&items, |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert!(super::map(&[] as &[u32], |x| *x).is_empty());
    }
}
