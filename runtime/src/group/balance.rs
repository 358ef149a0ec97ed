//! Rebalancing as a pure function: from what each node holds (the tracks
//! it owns and what each costs) to the moves that even out the cost per
//! node. Every node computes it from the same advertisements, so every
//! node reaches the same plan; only a move's giver acts on it.
//!
//! The rule (docs/group.md, "Rebalancing"): with `A` the average cost per
//! node and `θ` the threshold, a node over `A·(1+θ)` gives one track to
//! the least-loaded node that may take one, a track of cost
//! `c ≤ L_giver − L_taker − θ·A`, the one closest to half the gap. Each
//! such move lowers the sum of the squared loads by at least `2·c·θ·A`,
//! so with costs that stay put the moves stop; and a track moved can only
//! come straight back once the costs have changed by more than `2·θ·A`
//! together, which is what keeps measured (noisy) costs from flapping.

use super::protocol::NodeId;
use serde::Serialize;
use std::collections::BTreeSet;

/// What one node holds, as the plan sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Holding {
    pub node: NodeId,
    /// It may give or take a track now: it has not moved one for
    /// `rebalance_every` cycles and has no move under way.
    pub may_move: bool,
    /// Its tracks: name, cost, and whether the plan may move it (not
    /// pinned by an operator, past its cooldown, not being handed over).
    pub tracks: Vec<(String, u64, bool)>,
    /// Tracks it must not be given (it gave them up as stuck, or cannot
    /// read their source database).
    pub refuses: BTreeSet<String>,
}

impl Holding {
    pub fn load(&self) -> u64 {
        self.tracks.iter().map(|(_, c, _)| c).sum()
    }
}

/// One move of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedMove {
    pub track: String,
    pub from: NodeId,
    pub to: NodeId,
    pub cost: u64,
}

/// The moves that even out the load, at most one per node (each node
/// moves at most one track per `rebalance_every` cycles), in the order
/// they were chosen. `threshold` is in percent of the average load.
pub fn plan_moves(holdings: &[Holding], threshold: u32) -> Vec<PlannedMove> {
    if threshold == 0 {
        return Vec::new();
    }
    plan(holdings, Some(threshold))
}

/// A deliberately broken rule, for the simulator's test that its checks
/// catch a rebalancer without hysteresis: any node over the average gives
/// its largest track that narrows the gap at all.
pub fn plan_moves_without_hysteresis(holdings: &[Holding]) -> Vec<PlannedMove> {
    plan(holdings, None)
}

fn plan(holdings: &[Holding], threshold: Option<u32>) -> Vec<PlannedMove> {
    let n = holdings.len() as u128;
    if n < 2 {
        return Vec::new();
    }
    let hysteresis = threshold.is_some();
    let threshold = threshold.unwrap_or(0);
    let mut loads: Vec<u64> = holdings.iter().map(Holding::load).collect();
    let total: u128 = loads.iter().map(|&l| u128::from(l)).sum();
    let threshold = u128::from(threshold);
    // In units of 1/(100·n) so that the rule is exact in integers:
    // `L > A·(1+θ)` is `L·100·n > total·(100+θ)`, and `θ·A` is
    // `total·θ / (100·n)`.
    let scaled = |x: u64| u128::from(x) * 100 * n;
    let margin = total * threshold;
    let mut used = vec![false; holdings.len()];
    let mut moves = Vec::new();
    loop {
        let mut givers: Vec<usize> = (0..holdings.len())
            .filter(|&i| {
                holdings[i].may_move && !used[i] && scaled(loads[i]) > total * (100 + threshold)
            })
            .collect();
        // The most loaded first; then the one with most tracks; then the
        // lowest id.
        givers.sort_by_key(|&i| {
            (
                std::cmp::Reverse(loads[i]),
                std::cmp::Reverse(holdings[i].tracks.len()),
                holdings[i].node,
            )
        });
        let mut takers: Vec<usize> = (0..holdings.len())
            .filter(|&i| holdings[i].may_move && !used[i])
            .collect();
        // The least loaded first; then fewest tracks, then the lowest id
        // (the claim's tie-break).
        takers.sort_by_key(|&i| (loads[i], holdings[i].tracks.len(), holdings[i].node));
        let chosen = givers.iter().find_map(|&h| {
            takers.iter().filter(|&&l| l != h).find_map(|&l| {
                let gap = loads[h].checked_sub(loads[l])?;
                // c ≤ gap − θ·A, scaled (the mutant: c < gap).
                let fits = |c: u64| {
                    if hysteresis {
                        scaled(c) + margin <= scaled(gap)
                    } else {
                        c < gap
                    }
                };
                let half = u128::from(gap);
                let candidates = (holdings[h].tracks.iter()).filter(|(t, c, movable)| {
                    *movable && fits(*c) && !holdings[l].refuses.contains(t)
                });
                let chosen = if hysteresis {
                    // Closest to half the gap: |2c − gap|, then the name.
                    candidates
                        .min_by_key(|(t, c, _)| ((2 * u128::from(*c)).abs_diff(half), t.clone()))
                } else {
                    candidates.max_by_key(|(t, c, _)| (*c, t.clone()))
                };
                chosen.map(|(t, c, _)| (h, l, t.clone(), *c))
            })
        });
        let Some((h, l, track, cost)) = chosen else {
            break;
        };
        loads[h] -= cost;
        loads[l] += cost;
        used[h] = true;
        used[l] = true;
        moves.push(PlannedMove {
            track,
            from: holdings[h].node,
            to: holdings[l].node,
            cost,
        });
    }
    moves
}

/// Whether `loads` (cost per node) are balanced by the rule above, given
/// the costs of the tracks each node holds: the most loaded node is within
/// the threshold of the average, or none of its tracks fits the gap to the
/// least loaded. The simulator's check, written apart from `plan_moves`.
pub fn balanced(holdings: &[Holding], threshold: u32) -> Result<(), String> {
    if holdings.len() < 2 {
        return Ok(());
    }
    let total: f64 = holdings.iter().map(|h| h.load() as f64).sum();
    let average = total / holdings.len() as f64;
    let theta = f64::from(threshold) / 100.0;
    let max = holdings
        .iter()
        .max_by_key(|h| h.load())
        .expect("two or more");
    let min = holdings
        .iter()
        .min_by_key(|h| h.load())
        .expect("two or more");
    let (hi, lo) = (max.load() as f64, min.load() as f64);
    if hi <= average * (1.0 + theta) {
        return Ok(());
    }
    match max
        .tracks
        .iter()
        .find(|(t, c, _)| (*c as f64) <= hi - lo - theta * average && !min.refuses.contains(t))
    {
        None => Ok(()),
        Some((t, c, _)) => Err(format!(
            "node {} carries {hi} against an average of {average:.0}: its track {t} (cost {c}) \
             would fit on node {} (load {lo})",
            max.node, min.node
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn holding(node: NodeId, costs: &[u64]) -> Holding {
        Holding {
            node,
            may_move: true,
            tracks: costs
                .iter()
                .enumerate()
                .map(|(i, &c)| (format!("n{node}t{i}"), c, true))
                .collect(),
            refuses: BTreeSet::new(),
        }
    }

    /// Applies plans until none is left (each round is what the group
    /// does every `rebalance_every` cycles); the number of rounds.
    fn settle(holdings: &mut [Holding], threshold: u32) -> usize {
        for round in 0..1000 {
            let moves = plan_moves(holdings, threshold);
            if moves.is_empty() {
                return round;
            }
            for m in moves {
                let from = holdings.iter().position(|h| h.node == m.from).unwrap();
                let i = holdings[from]
                    .tracks
                    .iter()
                    .position(|(t, _, _)| *t == m.track)
                    .unwrap();
                let t = holdings[from].tracks.remove(i);
                let to = holdings.iter().position(|h| h.node == m.to).unwrap();
                holdings[to].tracks.push(t);
            }
        }
        panic!("no fixed point in 1000 rounds");
    }

    #[test]
    fn one_node_of_six_equal_tracks_shares_them_with_two_newcomers() {
        let mut h = vec![
            holding(1, &[1, 1, 1, 1, 1, 1]),
            holding(2, &[]),
            holding(3, &[]),
        ];
        let first = plan_moves(&h, 25);
        // One move per node per round: node 1 gives one track, to node 2
        // (least loaded, then lowest id).
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].from, first[0].to), (1, 2));
        settle(&mut h, 25);
        let loads: Vec<u64> = h.iter().map(Holding::load).collect();
        assert_eq!(loads, vec![2, 2, 2]);
    }

    #[test]
    fn a_balance_within_the_threshold_is_left_alone() {
        // Average 10, threshold 25 %: 12 is within it.
        let h = vec![
            holding(1, &[6, 3, 3]),
            holding(2, &[4, 4]),
            holding(3, &[5, 5]),
        ];
        assert!(plan_moves(&h, 25).is_empty());
        // Without hysteresis the same group moves a track.
        assert!(!plan_moves(&h, 1).is_empty());
    }

    #[test]
    fn a_track_bigger_than_the_gap_stays_where_it_is() {
        // One huge track: nothing can be evened out.
        let h = vec![holding(1, &[100]), holding(2, &[1, 1]), holding(3, &[])];
        let moves = plan_moves(&h, 25);
        assert!(moves.iter().all(|m| m.track != "n1t0"), "{moves:?}");
    }

    #[test]
    fn weighted_by_cost_not_by_count() {
        // Node 1 has one track of 90, node 2 nine of 10: by count node 2
        // is the loaded one; by cost they are even.
        let h = vec![holding(1, &[90]), holding(2, &[10; 9])];
        assert!(plan_moves(&h, 25).is_empty());
        let h = vec![holding(1, &[90, 60]), holding(2, &[10; 3])];
        let moves = plan_moves(&h, 25);
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].from, moves[0].cost), (1, 60));
    }

    #[test]
    fn pinned_cooling_refused_and_resting_nodes_are_respected() {
        let mut h = vec![holding(1, &[5, 5, 5, 5]), holding(2, &[]), holding(3, &[])];
        for t in &mut h[0].tracks {
            t.2 = false;
        }
        assert!(plan_moves(&h, 25).is_empty(), "no movable track");
        h[0].tracks[3].2 = true;
        h[1].refuses.insert("n1t3".into());
        let moves = plan_moves(&h, 25);
        assert_eq!((moves[0].to, moves.len()), (3, 1), "node 2 refuses it");
        h[2].may_move = false;
        assert!(plan_moves(&h, 25).is_empty(), "node 3 moved a moment ago");
    }

    proptest! {
        /// Whatever the start, the plans reach a fixed point that the
        /// separate check calls balanced, and no track moves twice
        /// (costs held still).
        #[test]
        fn plans_converge_to_a_balanced_group(
            costs in prop::collection::vec(prop::collection::vec(1u64..1000, 0..8), 2..6),
            threshold in 5u32..60,
        ) {
            let mut h: Vec<Holding> = costs
                .iter()
                .enumerate()
                .map(|(i, c)| holding(i as NodeId + 1, c))
                .collect();
            let tracks: usize = costs.iter().map(Vec::len).sum();
            let mut moved: std::collections::BTreeMap<String, u32> = Default::default();
            for _ in 0..(tracks * tracks + 2) {
                let moves = plan_moves(&h, threshold);
                if moves.is_empty() {
                    break;
                }
                let squares = |h: &[Holding]| h.iter().map(|x| u128::from(x.load()).pow(2)).sum::<u128>();
                let before = squares(&h);
                for m in moves {
                    *moved.entry(m.track.clone()).or_default() += 1;
                    let from = h.iter().position(|x| x.node == m.from).unwrap();
                    let i = h[from].tracks.iter().position(|(t, _, _)| *t == m.track).unwrap();
                    let t = h[from].tracks.remove(i);
                    let to = h.iter().position(|x| x.node == m.to).unwrap();
                    h[to].tracks.push(t);
                }
                prop_assert!(squares(&h) < before, "a round that does not lower the spread");
            }
            prop_assert!(plan_moves(&h, threshold).is_empty(), "no fixed point");
            prop_assert!(balanced(&h, threshold).is_ok(), "{:?}", balanced(&h, threshold));
            let total: u64 = h.iter().map(Holding::load).sum();
            prop_assert_eq!(total, costs.iter().flatten().sum::<u64>());
            // Each move lowers the sum of squares, so moves are finite;
            // a track going straight back would need a cost change.
            prop_assert!(moved.values().all(|&n| n <= tracks as u32), "{:?}", moved);
        }
    }
}
