//! A track's steps as a picture (`trackc graph`): steps are nodes (with
//! their `wait`), and each rule that moves a record is an edge labelled by
//! its number and a short form of its condition: `goto` to the step, `end`
//! to the track's end. Printed as Graphviz DOT or as a Mermaid flowchart,
//! both laid out by their own tools, or drawn here as SVG (`svg`, laid out
//! in layers: the web console's picture).

use crate::ir::{Track, Transition};
use crate::syntax::literals::format_duration;

/// A condition longer than this is cut (with `…`) in an edge's label: a
/// label is for recognising the rule, its text is in the track.
pub const LABEL_CHARS_MAX: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// One track and the text of each rule of each step (`when …` or `else`,
/// as [`crate::rule_texts`] gives them).
pub struct TrackGraph<'a> {
    pub track: &'a Track,
    pub rule_texts: Vec<Vec<String>>,
}

/// The graph of every track of a compilation, in order.
pub fn of_compilation(c: &crate::Compilation) -> Vec<TrackGraph<'_>> {
    c.program
        .tracks
        .iter()
        .map(|track| TrackGraph {
            track,
            rule_texts: track
                .steps
                .iter()
                .map(|s| crate::rule_texts(&c.asts, &c.files, &track.name, &s.name))
                .collect(),
        })
        .collect()
}

struct Edge {
    from: usize,
    /// `None`: the track's end.
    to: Option<usize>,
    /// The rule's index in its step.
    rule: usize,
    label: String,
}

/// `2: score > 80`, the condition cut to [`LABEL_CHARS_MAX`] characters.
fn edge_label(number: usize, text: &str) -> String {
    let condition = text.strip_prefix("when ").unwrap_or(text);
    let short: String = if condition.chars().count() > LABEL_CHARS_MAX {
        let cut: String = condition.chars().take(LABEL_CHARS_MAX - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        condition.to_string()
    };
    format!("{number}: {short}")
}

fn edges(graph: &TrackGraph<'_>) -> Vec<Edge> {
    let mut out = Vec::new();
    for (s, step) in graph.track.steps.iter().enumerate() {
        for (r, rule) in step.rules.iter().enumerate() {
            let to = match rule.transition {
                Transition::Goto(target) => Some(target),
                Transition::End => None,
                Transition::Stay => continue,
            };
            let text = graph.rule_texts.get(s).and_then(|t| t.get(r)).map_or(
                if rule.condition.is_none() {
                    "else"
                } else {
                    "…"
                },
                |t| t.as_str(),
            );
            out.push(Edge {
                from: s,
                to,
                rule: r,
                label: edge_label(r + 1, text),
            });
        }
    }
    out
}

/// The graphs of `tracks` in `format`: one cluster (DOT) or subgraph
/// (Mermaid) per track.
pub fn render(tracks: &[TrackGraph<'_>], format: GraphFormat) -> String {
    match format {
        GraphFormat::Dot => dot(tracks),
        GraphFormat::Mermaid => mermaid(tracks),
    }
}

/// A DOT string: quotes and backslashes escaped, line breaks as `\n`.
fn dot_quote(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

fn dot(tracks: &[TrackGraph<'_>]) -> String {
    let mut out = String::from(
        "digraph tracks {\n    rankdir=LR;\n    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n    edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    for (t, graph) in tracks.iter().enumerate() {
        let track = graph.track;
        let id = |s: Option<usize>| match s {
            Some(s) => dot_quote(&format!("{}.{}", track.name, track.steps[s].name)),
            None => dot_quote(&format!("{}.end", track.name)),
        };
        out += &format!("    subgraph cluster_{t} {{\n");
        out += &format!("        label={};\n", dot_quote(&track.name));
        let start = dot_quote(&format!("{}.start", track.name));
        out += &format!("        {start} [shape=point];\n");
        for (s, step) in track.steps.iter().enumerate() {
            let label = match step.wait {
                Some(w) => format!("{}\nwait {}", step.name, format_duration(w)),
                None => step.name.clone(),
            };
            out += &format!("        {} [label={}];\n", id(Some(s)), dot_quote(&label));
        }
        out += &format!(
            "        {} [label=\"end\", shape=doublecircle];\n",
            id(None)
        );
        if !track.steps.is_empty() {
            out += &format!("        {start} -> {};\n", id(Some(0)));
        }
        for e in edges(graph) {
            out += &format!(
                "        {} -> {} [label={}];\n",
                id(Some(e.from)),
                id(e.to),
                dot_quote(&e.label)
            );
        }
        out += "    }\n";
    }
    out += "}\n";
    out
}

/// A Mermaid label: in double quotes, where `"` is written `#quot;`.
fn mermaid_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "#quot;"))
}

fn mermaid(tracks: &[TrackGraph<'_>]) -> String {
    let mut out = String::from("flowchart LR\n");
    for (t, graph) in tracks.iter().enumerate() {
        let track = graph.track;
        // Ids of our own: step names may be Mermaid's words (`end`).
        let id = |s: Option<usize>| match s {
            Some(s) => format!("t{t}s{s}"),
            None => format!("t{t}end"),
        };
        out += &format!("    subgraph t{t}[{}]\n", mermaid_quote(&track.name));
        out += &format!("        t{t}start(( ))\n");
        for (s, step) in track.steps.iter().enumerate() {
            let label = match step.wait {
                Some(w) => format!("{}<br/>wait {}", step.name, format_duration(w)),
                None => step.name.clone(),
            };
            out += &format!("        {}({})\n", id(Some(s)), mermaid_quote(&label));
        }
        out += &format!("        {}((\"end\"))\n", id(None));
        if !track.steps.is_empty() {
            out += &format!("        t{t}start --> {}\n", id(Some(0)));
        }
        for e in edges(graph) {
            out += &format!(
                "        {} -->|{}| {}\n",
                id(Some(e.from)),
                mermaid_quote(&e.label),
                id(e.to)
            );
        }
        out += "    end\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile_str;

    fn graph_of(text: &str, format: GraphFormat) -> String {
        let c = compile_str(
            "t.dt",
            text,
            Some("CREATE TABLE c (id INT PRIMARY KEY, note TEXT, score INT);"),
        );
        assert_eq!(c.error_count(), 0, "{:?}", c.diagnostics);
        render(&of_compilation(&c), format)
    }

    #[test]
    fn quotes_are_escaped_and_long_conditions_cut() {
        let text = "track t {\n source key id { SELECT id, note, score FROM c }\n\
            step a {\n when note = 'say \"hi\"' then goto b\n\
            when note like 'a very long pattern that goes on and on%' and score > 1 then end\n\
            else stay\n }\n step b { wait 1h30m\n else end }\n}\n";
        let dot = graph_of(text, GraphFormat::Dot);
        assert!(dot.contains(r#"[label="1: note = 'say \"hi\"'"]"#), "{dot}");
        assert!(dot.contains("[label=\"b\\nwait 1h30m\"]"), "{dot}");
        assert!(
            dot.contains(
                "\"t.a\" -> \"t.end\" [label=\"2: note like 'a very long pattern that goe…\"]"
            ),
            "{dot}"
        );
        // `stay` moves nothing: no edge.
        assert_eq!(dot.matches(" -> ").count(), 4, "{dot}");
        let mermaid = graph_of(text, GraphFormat::Mermaid);
        assert!(
            mermaid.contains("-->|\"1: note = 'say #quot;hi#quot;'\"| t0s1"),
            "{mermaid}"
        );
        assert!(mermaid.contains("t0s1(\"b<br/>wait 1h30m\")"), "{mermaid}");
    }
}

/// What the console draws over a track's graph: per step the records in
/// it, per rule how often it fired (in the last hour and day).
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// By step index.
    pub records: Vec<i64>,
    /// By step and rule index: (last hour, last day).
    pub fired: Vec<Vec<(u64, u64)>>,
}

/// Width and height of a step's box, and the gaps between layers and rows
/// (SVG user units).
const BOX_W: usize = 180;
const BOX_H: usize = 56;
const LAYER_GAP: usize = 300;
const ROW_GAP: usize = 50;

/// Each step's layer: its distance in `goto`s from the first step
/// (breadth first); steps no `goto` reaches go one layer past the rest.
/// The track's end is the last layer.
fn layers(graph: &TrackGraph<'_>) -> Vec<usize> {
    let steps = &graph.track.steps;
    let mut layer = vec![usize::MAX; steps.len()];
    let mut queue = std::collections::VecDeque::new();
    if !steps.is_empty() {
        layer[0] = 0;
        queue.push_back(0);
    }
    while let Some(s) = queue.pop_front() {
        for rule in &steps[s].rules {
            if let Transition::Goto(to) = rule.transition {
                if layer[to] == usize::MAX {
                    layer[to] = layer[s] + 1;
                    queue.push_back(to);
                }
            }
        }
    }
    let reached = layer
        .iter()
        .filter(|&&l| l != usize::MAX)
        .max()
        .map_or(0, |m| m + 1);
    layer
        .into_iter()
        .map(|l| if l == usize::MAX { reached } else { l })
        .collect()
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The track as an SVG picture, laid out in layers from left to right
/// (`layers`), steps in a layer in their written order: a box per step
/// with its name, its `wait` and, with an overlay, the records in it; an
/// arrow per rule that moves a record, labelled by its number, its short
/// condition and, with an overlay, how often it fired in the last hour
/// and day. Self-contained (no script, no outside reference).
pub fn svg(graph: &TrackGraph<'_>, overlay: Option<&Overlay>) -> String {
    use std::fmt::Write;
    let track = graph.track;
    let layer = layers(graph);
    let end_layer = layer.iter().max().map_or(0, |m| m + 1);
    let mut rows = vec![0usize; end_layer + 1];
    let mut at: Vec<(usize, usize)> = Vec::with_capacity(track.steps.len());
    for &l in &layer {
        at.push((l, rows[l]));
        rows[l] += 1;
    }
    let tallest = rows.iter().copied().max().unwrap_or(1).max(1);
    let x = |l: usize| 20 + l * (BOX_W + LAYER_GAP);
    let y = |r: usize| 40 + r * (BOX_H + ROW_GAP);
    let width = x(end_layer) + 80;
    let all = edges(graph);
    let target_layer = |e: &Edge| e.to.map_or(end_layer, |t| at[t].0);
    // An edge that skips a layer runs in a lane of its own below the
    // boxes, so that it crosses none.
    let skips = all
        .iter()
        .filter(|e| target_layer(e) > at[e.from].0 + 1)
        .count();
    let lanes_top = y(tallest);
    let height = lanes_top + 24 * skips + 20;
    let end = (x(end_layer) + 30, y(0) + BOX_H / 2);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"track-graph\" viewBox=\"0 0 {width} \
         {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"steps of \
         track {}\">\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L \
         10 5 L 0 10 z\"/></marker></defs>\n",
        xml(&track.name)
    );
    // Rules between the same two steps: each its own curve and label.
    let mut seen: std::collections::HashMap<(usize, Option<usize>), usize> = Default::default();
    let mut lane = 0;
    for (e, edge) in all.iter().enumerate() {
        let nth = {
            let n = seen.entry((edge.from, edge.to)).or_insert(0);
            *n += 1;
            *n - 1
        };
        let bend = nth * 26;
        let (fl, fr) = at[edge.from];
        let (sx, sy) = (x(fl) + BOX_W, y(fr) + BOX_H / 2);
        let (tx, ty) = match edge.to {
            Some(t) if at[t].0 <= fl => {
                // Back or same layer: leave and enter from the top.
                let (tl, tr) = at[t];
                (x(tl) + BOX_W / 2, y(tr))
            }
            Some(t) => (x(at[t].0), y(at[t].1) + BOX_H / 2),
            None => (end.0 - 14, end.1),
        };
        let back = edge.to.is_some_and(|t| at[t].0 <= fl);
        let skip = !back && target_layer(edge) > fl + 1;
        let lane_y = lanes_top + 24 * lane;
        if skip {
            lane += 1;
        }
        let path = if skip {
            format!(
                "M {sx} {sy} Q {} {lane_y} {} {lane_y} L {} {lane_y} Q {} {lane_y} {tx} {ty}",
                sx + 40,
                sx + 80,
                tx - 80,
                tx - 40
            )
        } else if back {
            let lift = y(fr).min(ty).saturating_sub(30 + 8 * (e % 3));
            format!(
                "M {} {} C {} {lift}, {tx} {lift}, {tx} {ty}",
                x(fl) + BOX_W / 2,
                y(fr),
                x(fl) + BOX_W / 2
            )
        } else {
            let mid = (sx + tx) / 2;
            let (c1, c2) = (sy + bend, ty + bend);
            format!("M {sx} {sy} C {mid} {c1}, {mid} {c2}, {tx} {ty}")
        };
        let (step, rule) = (edge.from, edge.rule);
        let fired = overlay
            .and_then(|o| o.fired.get(step)?.get(rule).copied())
            .map(|(hour, day)| format!(" · {hour}/h {day}/d"))
            .unwrap_or_default();
        let (lx, ly) = if skip {
            (sx + 80 + LAYER_GAP / 2, lane_y - 4)
        } else if back {
            (
                (x(fl) + BOX_W / 2 + tx) / 2,
                y(fr).min(ty).saturating_sub(36 + 8 * (e % 3)),
            )
        } else {
            ((sx + tx) / 2, (sy + ty) / 2 + bend * 3 / 4 - 6)
        };
        let _ = writeln!(
            out,
            "<g class=\"edge\" data-step=\"{}\" data-rule=\"{}\"><path d=\"{path}\" fill=\"none\" \
             marker-end=\"url(#arrow)\"/><text x=\"{lx}\" y=\"{ly}\" text-anchor=\"middle\">{}{}</text></g>",
            xml(&track.steps[step].name),
            rule + 1,
            xml(&edge.label),
            xml(&fired)
        );
    }
    for (s, step) in track.steps.iter().enumerate() {
        let (l, r) = at[s];
        let (bx, by) = (x(l), y(r));
        let wait = step
            .wait
            .map(|w| format!("wait {}", format_duration(w)))
            .unwrap_or_default();
        let records = overlay
            .and_then(|o| o.records.get(s))
            .map(|n| format!("<text class=\"records\" x=\"{}\" y=\"{}\" text-anchor=\"end\" data-records=\"{n}\">{n} waiting</text>", bx + BOX_W - 8, by + BOX_H - 10))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<g class=\"step\" data-step=\"{}\"><rect x=\"{bx}\" y=\"{by}\" width=\"{BOX_W}\" \
             height=\"{BOX_H}\" rx=\"10\"/><text class=\"name\" x=\"{}\" y=\"{}\">{}</text><text \
             class=\"wait\" x=\"{}\" y=\"{}\">{}</text>{records}</g>",
            xml(&step.name),
            bx + 10,
            by + 22,
            xml(&step.name),
            bx + 10,
            by + BOX_H - 10,
            xml(&wait)
        );
    }
    let _ = writeln!(
        out,
        "<g class=\"end\"><circle cx=\"{}\" cy=\"{}\" r=\"14\"/><text x=\"{}\" y=\"{}\" \
         text-anchor=\"middle\">end</text></g>\n</svg>",
        end.0,
        end.1,
        end.0,
        end.1 + 32
    );
    out
}
