//! A track's steps as a picture (`trackc graph`): steps are nodes (with
//! their `wait`), and each rule that moves a record is an edge labelled by
//! its number and a short form of its condition: `goto` to the step, `end`
//! to the track's end. Printed as Graphviz DOT or as a Mermaid flowchart,
//! both laid out by their own tools.

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
