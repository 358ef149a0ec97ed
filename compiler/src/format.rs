//! `trackc fmt`: one canonical layout for `.dt` files.
//!
//! The file is parsed first (a file with syntax errors is not formatted),
//! then printed again from its tokens, with the syntax tree deciding where
//! lines break: a track, each of its items, each rule, each field and a
//! step's `wait` start a line; the braces of tracks, steps and `fields`
//! open and close indented blocks (four spaces). Between tokens on a line
//! there is one space, except none before `,` `)` `:` `?`, after `(`,
//! after a unary minus, and between a function's name and its `(`.
//! Nothing is aligned. Every token is kept as written (literals, names,
//! strings), so only whitespace changes, with two exceptions that carry no
//! meaning: blank lines collapse to one (none after `{` or before `}`), and
//! SQL blocks are re-indented under their line, their text otherwise
//! untouched (a one-line block stays on its line as `{ … }`).
//!
//! Comments stay where they were: one on its own line stays on its own
//! line (indented as what follows it), one after code on the same line
//! stays there, and a line comment inside a rule continues the rule on the
//! next line, indented one level more.

use crate::diagnostics::Diagnostic;
use crate::span::{FileId, Span};
use crate::syntax::ast::{self, ActionKind, ExprKind, Literal, TrackItem, TriggerKind};
use crate::syntax::parser::parse_file;
use std::collections::{BTreeMap, BTreeSet};

/// One level of indentation.
pub const INDENT: &str = "    ";
/// A rule longer than this (with its indentation) is wrapped: before
/// `then`, and if that is not enough, after each action's comma. As
/// rustfmt's default width.
pub const MAX_WIDTH: usize = 100;

/// Words of the language: after one of these a `(` is not a call and a
/// `-` is a sign.
const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "between", "is", "null", "like", "true", "false", "when", "then",
    "else", "to", "track", "version", "source", "from", "key", "fields", "on", "every", "cron",
    "tz", "at", "event", "change", "step", "wait", "goto", "stay", "end", "sql", "email",
    "webhook", "emit",
];

/// `text` in the canonical layout, or the syntax errors that stop it from
/// being formatted.
pub fn format_source(text: &str) -> Result<String, Vec<Diagnostic>> {
    let (file, diagnostics) = parse_file(FileId(0), text);
    let errors: Vec<Diagnostic> = diagnostics.into_iter().filter(|d| d.is_error()).collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let atoms = atoms(&file);
    let tokens = lex(text, &atoms);
    let layout = Layout::of(&file, text, &tokens);
    Ok(Printer::new(text, &tokens, &layout).print())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Word,
    Punct,
    Str,
    /// A SQL block with its braces.
    Sql,
    /// A timestamp literal.
    Atom,
    LineComment,
    BlockComment,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// Line breaks in the source between the previous token and this one.
    newlines_before: usize,
}

/// The spans taken whole as one token: SQL blocks and timestamps.
fn atoms(file: &ast::File) -> BTreeMap<usize, (usize, Kind)> {
    let mut atoms = BTreeMap::new();
    let mut sql = |b: &ast::SqlBlock| {
        atoms.insert(b.span.start, (b.span.end, Kind::Sql));
    };
    let mut timestamps = Vec::new();
    for track in &file.tracks {
        for item in &track.items {
            match item {
                TrackItem::Source(s) => sql(&s.sql),
                TrackItem::Trigger(t) => match &t.kind {
                    TriggerKind::Change(b) => sql(b),
                    TriggerKind::At(ts) => timestamps.push(ts.span),
                    _ => {}
                },
                TrackItem::Step(step) => {
                    for rule in &step.rules {
                        if let Some(c) = &rule.condition {
                            expr_timestamps(c, &mut timestamps);
                        }
                        for action in &rule.actions {
                            match &action.kind {
                                ActionKind::Sql(b) => sql(b),
                                ActionKind::Email { to: Some(e), .. } => {
                                    expr_timestamps(e, &mut timestamps)
                                }
                                _ => {}
                            }
                        }
                    }
                }
                TrackItem::Fields(_) => {}
            }
        }
    }
    for span in timestamps {
        atoms.insert(span.start, (span.end, Kind::Atom));
    }
    atoms
}

fn expr_timestamps(e: &ast::Expr, out: &mut Vec<Span>) {
    match &e.kind {
        ExprKind::Literal(Literal::Timestamp(_)) => out.push(e.span),
        ExprKind::Literal(_) | ExprKind::Field(_) => {}
        ExprKind::Call { args, .. } => args.iter().for_each(|a| expr_timestamps(a, out)),
        ExprKind::Unary { operand, .. }
        | ExprKind::IsNull { operand, .. }
        | ExprKind::Like { operand, .. } => expr_timestamps(operand, out),
        ExprKind::Binary { lhs, rhs, .. } => {
            expr_timestamps(lhs, out);
            expr_timestamps(rhs, out);
        }
        ExprKind::InList { operand, list, .. } => {
            expr_timestamps(operand, out);
            list.iter().for_each(|a| expr_timestamps(a, out));
        }
        ExprKind::Between {
            operand, low, high, ..
        } => {
            for x in [operand, low, high] {
                expr_timestamps(x, out);
            }
        }
    }
}

/// The tokens of a file that parsed.
fn lex(text: &str, atoms: &BTreeMap<usize, (usize, Kind)>) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let (mut at, mut newlines) = (0, 0);
    while at < bytes.len() {
        let start = at;
        let c = bytes[at];
        let kind = if let Some(&(end, kind)) = atoms.get(&at) {
            at = end;
            kind
        } else if c.is_ascii_whitespace() {
            newlines += usize::from(c == b'\n');
            at += 1;
            continue;
        } else if text[at..].starts_with("//") {
            at = text[at..].find('\n').map_or(bytes.len(), |n| at + n);
            Kind::LineComment
        } else if text[at..].starts_with("/*") {
            at = text[at + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| at + 2 + n + 2);
            Kind::BlockComment
        } else if c == b'\'' {
            at += 1;
            while at < bytes.len() {
                if bytes[at] == b'\'' {
                    if bytes.get(at + 1) == Some(&b'\'') {
                        at += 2;
                        continue;
                    }
                    at += 1;
                    break;
                }
                at += 1;
            }
            Kind::Str
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let number = c.is_ascii_digit();
            while at < bytes.len() {
                let b = bytes[at];
                let exponent_sign = number
                    && matches!(b, b'+' | b'-')
                    && matches!(bytes[at - 1], b'e' | b'E')
                    && bytes.get(at + 1).is_some_and(u8::is_ascii_digit);
                if b.is_ascii_alphanumeric() || b == b'_' || (number && b == b'.') || exponent_sign
                {
                    at += 1;
                } else {
                    break;
                }
            }
            Kind::Word
        } else {
            let two = text.get(at..at + 2).unwrap_or("");
            at += if matches!(two, "<=" | ">=" | "<>" | "!=") {
                2
            } else {
                text[at..].chars().next().map_or(1, char::len_utf8)
            };
            Kind::Punct
        };
        tokens.push(Token {
            kind,
            start,
            end: at,
            newlines_before: newlines,
        });
        newlines = 0;
    }
    tokens
}

/// Where the syntax tree says lines break and blocks open and close, by
/// the byte offset of the token.
struct Layout {
    line_starts: BTreeSet<usize>,
    opens: BTreeSet<usize>,
    closes: BTreeSet<usize>,
    /// Each rule by its first token: where it may be wrapped.
    rules: BTreeMap<usize, RuleMarks>,
}

/// The places a long rule is wrapped at (token offsets).
struct RuleMarks {
    /// The `then` of a `when` rule.
    then: Option<usize>,
    /// The first token of each action after the first.
    actions: Vec<usize>,
    end: usize,
}

impl Layout {
    fn of(file: &ast::File, text: &str, tokens: &[Token]) -> Layout {
        let mut layout = Layout {
            line_starts: BTreeSet::new(),
            opens: BTreeSet::new(),
            closes: BTreeSet::new(),
            rules: BTreeMap::new(),
        };
        let brace = |t: &&Token, b: &str| t.kind == Kind::Punct && &text[t.start..t.end] == b;
        // A block's braces: the first `{` after `from`, the last `}` of `span`.
        let block = |span: Span, from: usize, layout: &mut Layout| {
            let open = tokens
                .iter()
                .find(|t| t.start >= from && t.end <= span.end && brace(t, "{"));
            let close = tokens
                .iter()
                .rev()
                .find(|t| t.start >= span.start && t.end <= span.end && brace(t, "}"));
            if let (Some(open), Some(close)) = (open, close) {
                layout.opens.insert(open.start);
                layout.closes.insert(close.start);
            }
        };
        for track in &file.tracks {
            layout.line_starts.insert(track.span.start);
            let head_end = track
                .version
                .map_or(track.name.span.end, |(_, span)| span.end);
            block(track.span, head_end, &mut layout);
            for item in &track.items {
                match item {
                    TrackItem::Source(s) => {
                        layout.line_starts.insert(s.span.start);
                    }
                    TrackItem::Trigger(t) => {
                        layout.line_starts.insert(t.span.start);
                    }
                    TrackItem::Fields(f) => {
                        layout.line_starts.insert(f.span.start);
                        block(f.span, f.span.start, &mut layout);
                        for field in &f.fields {
                            layout.line_starts.insert(field.span.start);
                        }
                    }
                    TrackItem::Step(step) => {
                        layout.line_starts.insert(step.span.start);
                        block(step.span, step.name.span.end, &mut layout);
                        if let Some(wait) = &step.wait {
                            // The `wait` keyword: the token before its duration.
                            if let Some(i) = tokens.iter().position(|t| t.start == wait.span.start)
                            {
                                if let Some(keyword) = i.checked_sub(1).map(|k| tokens[k]) {
                                    layout.line_starts.insert(keyword.start);
                                }
                            }
                        }
                        for rule in &step.rules {
                            layout.line_starts.insert(rule.span.start);
                            let then = rule.condition.as_ref().and_then(|c| {
                                tokens
                                    .iter()
                                    .find(|t| t.start >= c.span.end && t.kind == Kind::Word)
                                    .map(|t| t.start)
                            });
                            let marks = RuleMarks {
                                then,
                                actions: rule
                                    .actions
                                    .iter()
                                    .skip(1)
                                    .map(|a| a.span.start)
                                    .collect(),
                                end: rule.span.end,
                            };
                            layout.rules.insert(rule.span.start, marks);
                        }
                    }
                }
            }
        }
        layout
    }

    fn breaks_before(&self, t: &Token) -> bool {
        self.line_starts.contains(&t.start) || self.closes.contains(&t.start)
    }
}

struct Printer<'a> {
    text: &'a str,
    tokens: &'a [Token],
    layout: &'a Layout,
    out: String,
    depth: usize,
    /// The indentation of the line being written.
    line_depth: usize,
    /// The next token starts a line (after an opening brace, a closing
    /// one, or a line comment).
    newline_pending: bool,
    /// Tokens that start a continuation line of the rule being printed.
    wraps: BTreeSet<usize>,
}

impl<'a> Printer<'a> {
    fn new(text: &'a str, tokens: &'a [Token], layout: &'a Layout) -> Printer<'a> {
        Printer {
            text,
            tokens,
            layout,
            out: String::with_capacity(text.len() + text.len() / 8),
            depth: 0,
            line_depth: 0,
            newline_pending: false,
            wraps: BTreeSet::new(),
        }
    }

    /// The width of the widest line the tokens from offset `from` up to
    /// offset `to` take on one line each side of their multi-line SQL
    /// blocks (which break the line themselves); a line comment counts as
    /// too wide (the rule is wrapped around it).
    fn width(&self, from: usize, to: usize) -> usize {
        let (mut widest, mut line) = (0, 0);
        for (i, t) in self.tokens.iter().enumerate() {
            if t.start < from || t.start >= to {
                continue;
            }
            let text = self.text_of(t);
            let space = usize::from(t.start > from && self.spaced(i));
            if t.kind == Kind::LineComment {
                return usize::MAX / 2;
            }
            if text.contains('\n') {
                // `{` ends this line; the block's `}` starts the next.
                widest = widest.max(line + space + 1);
                line = 1;
                continue;
            }
            line += space + text.chars().count();
        }
        widest.max(line)
    }

    /// Where the rule starting at `start` is wrapped, if it is too long.
    fn plan_wraps(&mut self, start: usize) {
        self.wraps.clear();
        let Some(marks) = self.layout.rules.get(&start) else {
            return;
        };
        let indent = INDENT.len() * self.depth;
        if indent + self.width(start, marks.end) <= MAX_WIDTH {
            return;
        }
        let tail_from = match marks.then {
            Some(then) => {
                self.wraps.insert(then);
                then
            }
            None => start,
        };
        let tail_indent = INDENT.len() * (self.depth + usize::from(marks.then.is_some()));
        if marks.then.is_none() || tail_indent + self.width(tail_from, marks.end) > MAX_WIDTH {
            self.wraps.extend(marks.actions.iter().copied());
        }
    }

    fn text_of(&self, t: &Token) -> &'a str {
        &self.text[t.start..t.end]
    }

    fn is(&self, t: &Token, s: &str) -> bool {
        self.text_of(t) == s
    }

    fn is_keyword(&self, t: &Token) -> bool {
        t.kind == Kind::Word && KEYWORDS.contains(&self.text_of(t))
    }

    /// Ends the line and starts one at `depth`, with one blank line before
    /// it if the source had any (never right after an opening brace or at
    /// the start of the file).
    fn start_line(&mut self, depth: usize, blank: bool) {
        while self.out.ends_with(' ') {
            self.out.pop();
        }
        if !self.out.is_empty() {
            self.out.push('\n');
            if blank && !self.out.ends_with("{\n") && !self.out.ends_with("\n\n") {
                self.out.push('\n');
            }
        }
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
        self.line_depth = depth;
        self.newline_pending = false;
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty()
            || self.out.ends_with('\n')
            || self.out.ends_with(INDENT) && self.out.trim_end_matches(' ').ends_with('\n')
    }

    /// Whether a space goes between `prev` and `t` on one line.
    fn spaced(&self, i: usize) -> bool {
        let t = &self.tokens[i];
        let Some(prev) = self.tokens[..i]
            .iter()
            .rev()
            .find(|p| !matches!(p.kind, Kind::LineComment | Kind::BlockComment))
        else {
            return false;
        };
        if t.kind == Kind::Punct && [",", ")", ":", "?"].contains(&self.text_of(t)) {
            return false;
        }
        if self.is(prev, "(") {
            return false;
        }
        if self.is(t, "(") && prev.kind == Kind::Word && !self.is_keyword(prev) {
            return false;
        }
        if self.is(prev, "-") && self.is_unary_minus(prev) {
            return false;
        }
        true
    }

    /// A `-` is a sign when nothing that ends an operand comes before it.
    fn is_unary_minus(&self, minus: &Token) -> bool {
        let i = self
            .tokens
            .iter()
            .position(|t| t.start == minus.start)
            .expect("the token is in the file");
        match self.tokens[..i]
            .iter()
            .rev()
            .find(|p| !matches!(p.kind, Kind::LineComment | Kind::BlockComment))
        {
            None => true,
            Some(p) if self.is_keyword(p) => true,
            Some(p) if p.kind == Kind::Punct => !self.is(p, ")"),
            Some(_) => false,
        }
    }

    /// Whether the next code token after `i` begins a new line of the
    /// layout (so a comment before it belongs to that line, not to a
    /// statement being continued).
    fn next_code_breaks(&self, i: usize) -> bool {
        self.tokens[i + 1..]
            .iter()
            .find(|p| !matches!(p.kind, Kind::LineComment | Kind::BlockComment))
            .is_none_or(|n| self.layout.breaks_before(n))
    }

    fn print(mut self) -> String {
        for i in 0..self.tokens.len() {
            let t = self.tokens[i];
            let blank = t.newlines_before >= 2;
            match t.kind {
                Kind::LineComment | Kind::BlockComment
                    if t.newlines_before > 0 || self.out.is_empty() =>
                {
                    let depth = if self.next_code_breaks(i) {
                        self.depth
                    } else {
                        self.depth + 1
                    };
                    self.start_line(depth, blank);
                    self.out.push_str(self.text_of(&t).trim_end());
                    let next_on_new_line =
                        self.tokens.get(i + 1).is_none_or(|n| n.newlines_before > 0);
                    self.newline_pending = t.kind == Kind::LineComment || next_on_new_line;
                    continue;
                }
                Kind::LineComment | Kind::BlockComment => {
                    self.out.push(' ');
                    self.out.push_str(self.text_of(&t).trim_end());
                    let next_on_new_line =
                        self.tokens.get(i + 1).is_none_or(|n| n.newlines_before > 0);
                    if t.kind == Kind::LineComment || next_on_new_line {
                        self.newline_pending = true;
                    }
                    continue;
                }
                _ => {}
            }
            if self.layout.closes.contains(&t.start) {
                self.depth = self.depth.saturating_sub(1);
                self.start_line(self.depth, false);
                self.out.push('}');
                self.newline_pending = true;
                continue;
            }
            if self.layout.line_starts.contains(&t.start) {
                self.start_line(self.depth, blank);
                self.plan_wraps(t.start);
            } else if self.newline_pending || self.wraps.contains(&t.start) {
                // A statement continued after a comment.
                self.start_line(self.depth + 1, false);
            } else if !self.at_line_start() && self.spaced(i) {
                self.out.push(' ');
            }
            if self.layout.opens.contains(&t.start) {
                self.out.push('{');
                self.depth += 1;
                self.newline_pending = true;
                continue;
            }
            if t.kind == Kind::Sql {
                let block = sql_block(self.text_of(&t), self.line_depth);
                self.out.push_str(&block);
            } else {
                self.out.push_str(self.text_of(&t));
            }
        }
        while self.out.ends_with(' ') || self.out.ends_with('\n') {
            self.out.pop();
        }
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.out
    }
}

/// A SQL block (with its braces) on a line indented `depth` levels: on one
/// line as `{ text }` if it was on one, else its lines re-indented one
/// level deeper than the line, keeping their indentation relative to one
/// another, and the closing brace under the line's start.
fn sql_block(block: &str, depth: usize) -> String {
    let inner = &block[1..block.len() - 1];
    if !inner.contains('\n') {
        let text = inner.trim();
        return if text.is_empty() {
            "{ }".to_string()
        } else {
            format!("{{ {text} }}")
        };
    }
    let mut lines = inner.split('\n');
    let first = lines.next().unwrap_or("").trim();
    let rest: Vec<&str> = lines.map(str::trim_end).collect();
    let common = rest
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut body: Vec<&str> = Vec::new();
    if !first.is_empty() {
        body.push(first);
    }
    body.extend(
        rest.iter()
            .map(|l| if l.is_empty() { "" } else { &l[common..] }),
    );
    while body.first().is_some_and(|l| l.is_empty()) {
        body.remove(0);
    }
    while body.last().is_some_and(|l| l.is_empty()) {
        body.pop();
    }
    let mut out = String::from("{\n");
    for line in body {
        if !line.is_empty() {
            for _ in 0..=depth {
                out.push_str(INDENT);
            }
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 0..depth {
        out.push_str(INDENT);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(text: &str) -> String {
        let once = format_source(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let twice = format_source(&once).unwrap();
        assert_eq!(once, twice, "not idempotent");
        once
    }

    #[test]
    fn a_source_in_a_named_database_keeps_its_from() {
        assert_eq!(
            fmt("track t{source   from  crm key id{SELECT id FROM people} step s{else end}}"),
            "track t {\n    source from crm key id { SELECT id FROM people }\n    step s {\n        \
             else end\n    }\n}\n"
        );
    }

    #[test]
    fn one_item_per_line_one_rule_per_line_spaces_around_operators() {
        let text = "track t{source key id{SELECT id, score FROM contacts}\n\
                    on every 15m on event signup\n\
                    step s{wait 2d when score>=50 and(score+1)*2<-(-3)then goto u,emit e \
                    else end}step u{else stay}}";
        assert_eq!(
            fmt(text),
            "track t {\n    source key id { SELECT id, score FROM contacts }\n    on every 15m\n    \
             on event signup\n    step s {\n        wait 2d\n        when score >= 50 and \
             (score + 1) * 2 < -(-3) then goto u, emit e\n        else end\n    }\n    \
             step u {\n        else stay\n    }\n}\n"
        );
    }

    #[test]
    fn calls_signs_lists_fields_and_literals_as_written() {
        let text = "track t { fields { a : int , b:text ? } source key a { SELECT a, b FROM x }\n\
                    step s { when coalesce( b , 'x' ) in ( 'a','b' ) and not a between - 1 and 2 \
                    and b is not null and b not like 'a%' and now() - 1h30m > \
                    2026-12-01T09:00:00Z then email 'w' to b, end } }";
        assert_eq!(
            fmt(text),
            "track t {\n    fields {\n        a: int,\n        b: text?\n    }\n    \
             source key a { SELECT a, b FROM x }\n    step s {\n        when coalesce(b, 'x') \
             in ('a', 'b') and not a between -1 and 2 and b is not null\n            \
             then email 'w' to b, end\n    }\n}\n"
                .replace(
                    "and b is not null\n            then",
                    "and b is not null and b not like 'a%' and now() - 1h30m > \
                     2026-12-01T09:00:00Z\n            then"
                )
        );
    }

    #[test]
    fn comments_stay_where_they_were() {
        let text =
            "// about the file\n\ntrack t { // trailing the head\n  /* before the source */\n\
                    source key id { SELECT id FROM x } // after it\n\n\n  // a step\n\
                    step s {\n when id > 1 // why\n and id < 9 then end\n  else /* inline */ stay\n\
                    // last in the step\n }\n}\n";
        assert_eq!(
            fmt(text),
            "// about the file\n\ntrack t { // trailing the head\n    /* before the source */\n    \
             source key id { SELECT id FROM x } // after it\n\n    // a step\n    step s {\n        \
             when id > 1 // why\n            and id < 9\n            then end\n        else /* inline */ stay\n        \
             // last in the step\n    }\n}\n"
        );
    }

    #[test]
    fn sql_is_reindented_under_its_line_and_otherwise_untouched() {
        let text = "track t {\nsource key id {\n        SELECT id,\n          score   -- the score {\n        \
                    FROM contacts\n\n        WHERE id > 0 }\nstep s { else sql {  UPDATE x SET a = '  b' }, end }\n}";
        assert_eq!(
            fmt(text),
            "track t {\n    source key id {\n        SELECT id,\n          score   -- the score {\n        \
             FROM contacts\n\n        WHERE id > 0\n    }\n    step s {\n        \
             else sql { UPDATE x SET a = '  b' }, end\n    }\n}\n"
        );
    }

    #[test]
    fn long_rules_wrap_before_then_and_after_each_action() {
        let long = "x".repeat(60);
        let text = format!(
            "track t {{ source key id {{ SELECT id FROM c }} step s {{\n\
             when id > 1 and id < 100000 and id != 5 then webhook 'https://{long}', end\n\
             else webhook 'https://{long}', webhook 'https://{long}', end }} }}"
        );
        let out = fmt(&text);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[3], "        when id > 1 and id < 100000 and id != 5");
        assert_eq!(
            lines[4],
            format!("            then webhook 'https://{long}', end")
        );
        assert_eq!(lines[5], format!("        else webhook 'https://{long}',"));
        assert_eq!(lines[6], format!("            webhook 'https://{long}',"));
        assert_eq!(lines[7], "            end");
    }

    #[test]
    fn a_file_with_syntax_errors_is_not_formatted() {
        let errors = format_source("track t { step s { when then } }").unwrap_err();
        assert!(errors.iter().all(|d| d.is_error()) && !errors.is_empty());
    }
}
