//! Analyses of the step graph of a track: steps no record can reach (W002)
//! and `goto` cycles through steps without `wait` (E010), which would let a
//! record loop forever within one run. Both iterate with explicit stacks, so
//! a track with any number of steps cannot exhaust the call stack.

/// One `goto`: from a step to a step, with the index of the rule it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    /// Opaque to the analysis: lets the caller find the `goto`'s span.
    pub site: usize,
}

/// Steps reachable from the first step.
pub fn reachable(steps: usize, edges: &[Edge]) -> Vec<bool> {
    let mut seen = vec![false; steps];
    if steps == 0 {
        return seen;
    }
    let adjacency = adjacency(steps, edges.iter());
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(step) = stack.pop() {
        for edge in &adjacency[step] {
            if !seen[edge.to] {
                seen[edge.to] = true;
                stack.push(edge.to);
            }
        }
    }
    seen
}

/// The out-edges of each step.
fn adjacency<'e>(steps: usize, edges: impl Iterator<Item = &'e Edge>) -> Vec<Vec<&'e Edge>> {
    let mut out = vec![Vec::new(); steps];
    for edge in edges {
        out[edge.from].push(edge);
    }
    out
}

/// A cycle found: the edge that closes it and the steps on it, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    pub closing: Edge,
    pub steps: Vec<usize>,
}

/// Cycles among steps without `wait` (`waits[s]` says whether step `s` has
/// one). Reports each back edge of a depth-first search once, so every
/// cycle is covered by at least one report and none is reported twice.
pub fn instant_cycles(waits: &[bool], edges: &[Edge]) -> Vec<Cycle> {
    let n = waits.len();
    let adjacency = adjacency(n, edges.iter().filter(|e| !waits[e.from] && !waits[e.to]));
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; n];
    let mut cycles = Vec::new();
    for root in 0..n {
        if color[root] != Color::White || waits[root] {
            continue;
        }
        // (step, index of the next out-edge to look at)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = Color::Grey;
        while let Some(&mut (step, ref mut next)) = path.last_mut() {
            let edge = adjacency[step].get(*next).copied();
            *next += 1;
            match edge {
                None => {
                    color[step] = Color::Black;
                    path.pop();
                }
                Some(edge) => match color[edge.to] {
                    Color::White => {
                        color[edge.to] = Color::Grey;
                        path.push((edge.to, 0));
                    }
                    Color::Grey => {
                        let start = path
                            .iter()
                            .position(|(s, _)| *s == edge.to)
                            .expect("grey steps are on the path");
                        cycles.push(Cycle {
                            closing: *edge,
                            steps: path[start..].iter().map(|(s, _)| *s).collect(),
                        });
                    }
                    Color::Black => {}
                },
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: usize, to: usize) -> Edge {
        Edge { from, to, site: 0 }
    }

    #[test]
    fn reachability_follows_gotos_from_the_first_step() {
        assert_eq!(
            reachable(4, &[edge(0, 1), edge(1, 0), edge(3, 2)]),
            [true, true, false, false]
        );
    }

    #[test]
    fn cycles_need_every_step_without_wait() {
        let edges = [edge(0, 1), edge(1, 2), edge(2, 0)];
        let cycles = instant_cycles(&[false, false, false], &edges);
        assert_eq!(
            cycles,
            vec![Cycle {
                closing: edge(2, 0),
                steps: vec![0, 1, 2]
            }]
        );
        assert!(instant_cycles(&[false, true, false], &edges).is_empty());
        assert_eq!(instant_cycles(&[false], &[edge(0, 0)]).len(), 1);
    }

    #[test]
    fn long_chains_do_not_recurse() {
        let n = 100_000;
        let edges: Vec<Edge> = (0..n - 1).map(|i| edge(i, i + 1)).collect();
        assert!(instant_cycles(&vec![false; n], &edges).is_empty());
        assert!(reachable(n, &edges).iter().all(|r| *r));
    }
}
