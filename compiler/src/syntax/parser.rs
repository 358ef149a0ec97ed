//! Text → AST. pest does the matching (grammar/tracks.pest); this module
//! drives it one track item at a time so that after a syntax error it can
//! skip to the next item and go on, builds the AST with spans, and turns
//! pest's errors into E001 diagnostics a user can act on.

use super::ast::*;
use super::expected::expected_sentence;
use super::literals::{parse_duration, parse_timestamp};
use crate::diagnostics::{Code, Diagnostic};
use crate::span::{FileId, Span};
use pest::iterators::Pair;
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/tracks.pest"]
pub(crate) struct TrackParser;

/// Parentheses nest at most this deep (in expressions and SQL alike). Deeper
/// input is refused before pest runs, so that no input can exhaust the stack.
pub const MAX_PAREN_DEPTH: usize = 64;
/// An expression tree is at most this deep (long operator chains nest too).
pub const MAX_EXPR_DEPTH: usize = 256;

/// The stack the parser runs on. Recursive descent in pest costs a few
/// kilobytes per nesting level in debug builds; a thread of our own makes the
/// nesting limits above independent of the caller's stack (test threads and
/// editor workers have small ones). The memory is reserved, not committed.
pub const PARSER_STACK_BYTES: usize = 64 << 20;

/// Parses one file. Always returns a file (possibly with fewer tracks or
/// items than written) and the syntax errors found, every one of them.
pub fn parse_file(id: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("trackc-parser".into())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || parse_file_here(id, text))
            .expect("spawning the parser thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// [`parse_file`] on the calling thread, which must have a stack of at
/// least [`PARSER_STACK_BYTES`].
pub fn parse_file_here(id: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    let mut parser = FileParser {
        id,
        text,
        diagnostics: Vec::new(),
    };
    if let Some(diagnostic) = parser.check_nesting() {
        return (
            File {
                id,
                tracks: Vec::new(),
            },
            vec![diagnostic],
        );
    }
    let tracks = parser.tracks();
    (File { id, tracks }, parser.diagnostics)
}

pub(super) struct FileParser<'t> {
    pub(super) id: FileId,
    pub(super) text: &'t str,
    pub(super) diagnostics: Vec<Diagnostic>,
}

/// What was found at a position, for "found `x`".
fn found_at(text: &str, pos: usize) -> (String, Span) {
    let rest = &text[pos..];
    let Some(first) = rest.chars().next() else {
        return ("end of file".to_string(), Span::new(pos, pos));
    };
    let len = if first.is_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    let word = &rest[..len];
    (format!("`{word}`"), Span::new(pos, pos + len))
}

impl<'t> FileParser<'t> {
    pub(super) fn error(&mut self, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::new(Code::E001, self.id, span, message));
        self.diagnostics.last_mut().expect("just pushed")
    }

    /// Refuses parentheses nested deeper than [`MAX_PAREN_DEPTH`], outside
    /// strings and comments. Returns the diagnostic for the first offender.
    pub(super) fn check_nesting(&self) -> Option<Diagnostic> {
        let bytes = self.text.as_bytes();
        let mut depth = 0usize;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\'' | b'"' => {
                    let quote = bytes[i];
                    i += 1;
                    while i < bytes.len() && bytes[i] != quote {
                        i += 1;
                    }
                }
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/'))
                    {
                        i += 1;
                    }
                    i += 1;
                }
                b'(' => {
                    depth += 1;
                    if depth > MAX_PAREN_DEPTH {
                        return Some(
                            Diagnostic::new(
                                Code::E001,
                                self.id,
                                Span::new(i, i + 1),
                                format!("parentheses are nested more than {MAX_PAREN_DEPTH} deep"),
                            )
                            .with_span_label("too deep")
                            .with_help("split the condition into simpler parts"),
                        );
                    }
                }
                b')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// The offset of the next token after whitespace and comments.
    pub(super) fn skip_gap(&self, pos: usize) -> usize {
        match TrackParser::parse(Rule::gap, &self.text[pos..]) {
            Ok(mut pairs) => pos + pairs.next().map_or(0, |p| p.as_span().end()),
            Err(_) => pos,
        }
    }

    /// Runs one grammar rule at `pos`. On failure, reports the E001 and
    /// returns the offset of the error.
    pub(super) fn run(&mut self, grammar_rule: Rule, pos: usize) -> Result<Pair<'t, Rule>, usize> {
        match TrackParser::parse(grammar_rule, &self.text[pos..]) {
            Ok(mut pairs) => Ok(pairs.next().expect("a successful parse yields its rule")),
            Err(error) => {
                let at = pos
                    + match error.location {
                        pest::error::InputLocation::Pos(p) => p,
                        pest::error::InputLocation::Span((s, _)) => s,
                    };
                self.report_syntax(&error.variant, at);
                Err(at)
            }
        }
    }

    fn report_syntax(&mut self, variant: &pest::error::ErrorVariant<Rule>, at: usize) {
        let text = self.text;
        let rest = &text[at..];
        // Three openers that never close deserve their own words.
        if rest.starts_with("/*") && !rest.contains("*/") {
            self.error(Span::new(at, at + 2), "comment never closes")
                .set_span_label("this `/*` has no `*/`");
            return;
        }
        if rest.starts_with('\'') && !rest[1..].contains('\'') {
            let line_end = rest.find('\n').unwrap_or(rest.len());
            self.error(Span::new(at, at + line_end), "string never closes")
                .set_span_label("this `'` has no closing `'`")
                .set_help("write `''` for a quote inside a string");
            return;
        }
        let message = match variant {
            pest::error::ErrorVariant::ParsingError { positives, .. } => {
                if positives.contains(&Rule::sql_end) {
                    let open = self.sql_block_opening(at).unwrap_or(at);
                    self.error(Span::new(open, open + 1), "SQL block never closes")
                        .set_span_label("no `}` balances this `{`")
                        .set_help("braces inside SQL strings, quoted names and `--` comments do not count");
                    return;
                }
                expected_sentence(positives)
            }
            pest::error::ErrorVariant::CustomError { message } => message.clone(),
        };
        let (found, span) = found_at(text, at);
        self.error(span, format!("{message}, found {found}"))
            .set_span_label(message);
    }

    /// The `{` of the last SQL block that opens before `at`: one that follows
    /// `sql`, `change`, or `key <name>`.
    fn sql_block_opening(&self, at: usize) -> Option<usize> {
        let text = &self.text[..at];
        text.match_indices('{').map(|(i, _)| i).rev().find(|&i| {
            let words: Vec<&str> = text[..i].split_whitespace().rev().take(2).collect();
            matches!(words.as_slice(), ["sql" | "change", ..] | [_, "key"])
        })
    }

    /// The next place to resume after an error at `error_at` in an item that
    /// started at `item_start`: the first token at the start of a line that
    /// opens a track or a track item. Returns the end of the text if none.
    fn resync(&self, item_start: usize, error_at: usize) -> usize {
        let mut line_start = 0;
        for line in self.text.split_inclusive('\n') {
            let token = line_start + (line.len() - line.trim_start().len());
            line_start += line.len();
            if token < error_at.max(item_start + 1) {
                continue;
            }
            let words: Vec<&str> = self.text[token..]
                .split(|c: char| c.is_whitespace() || c == '{')
                .filter(|w| !w.is_empty())
                .take(2)
                .collect();
            let opens_item = match words.as_slice() {
                ["track" | "step" | "source" | "fields", ..] => true,
                ["on", kind] => matches!(*kind, "every" | "cron" | "at" | "event" | "change"),
                _ => false,
            };
            if opens_item {
                return token;
            }
        }
        self.text.len()
    }

    pub(super) fn starts_with_word(&self, pos: usize, word: &str) -> bool {
        let rest = &self.text[pos..];
        rest.starts_with(word)
            && !rest[word.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn tracks(&mut self) -> Vec<Track> {
        let mut tracks = Vec::new();
        let mut pos = self.skip_gap(0);
        while pos < self.text.len() {
            match self.run(Rule::track_head, pos) {
                Ok(head) => {
                    let (track, next) = self.track(head, pos);
                    tracks.push(track);
                    pos = self.skip_gap(next);
                }
                Err(at) => {
                    pos = self.resync(pos, at);
                    // At top level only a track can start again.
                    while pos < self.text.len() && !self.starts_with_word(pos, "track") {
                        pos = self.resync(pos, pos + 1);
                    }
                }
            }
        }
        tracks
    }

    /// Parses the items of a track after its head; returns the track and the
    /// offset after it.
    fn track(&mut self, head: Pair<'t, Rule>, offset: usize) -> (Track, usize) {
        let shift = |s: Span| Span::new(s.start + offset, s.end + offset);
        let head_span = shift(span_of(&head));
        let mut inner = head
            .into_inner()
            .filter(|p| p.as_rule() == Rule::ident || p.as_rule() == Rule::int);
        let name_pair = inner.next().expect("a track head has a name");
        let name = Ident {
            name: name_pair.as_str().to_string(),
            span: shift(span_of(&name_pair)),
        };
        let version = inner.next().map(|p| {
            let span = shift(span_of(&p));
            let value = p.as_str().parse::<i64>().unwrap_or_else(|_| {
                self.error(span, "version number is too large");
                0
            });
            (value, span)
        });
        let mut track = Track {
            name,
            version,
            items: Vec::new(),
            broken: Vec::new(),
            span: head_span,
        };
        let mut pos = self.skip_gap(head_span.end);
        loop {
            if pos >= self.text.len() {
                self.error(
                    Span::new(pos, pos),
                    format!(
                        "track `{}` is not closed, found end of file",
                        track.name.name
                    ),
                )
                .set_span_label("expected `}`")
                .add_label(head_span, "the track opens here");
                break;
            }
            if self.text[pos..].starts_with('}') {
                pos += 1;
                break;
            }
            match self.run(Rule::track_item, pos) {
                Ok(item) => {
                    let end = item.as_span().end() + pos;
                    let offset = pos;
                    let item = Builder::new(self, offset).track_item(item);
                    if let Some(item) = item {
                        track.items.push(item);
                    }
                    pos = self.skip_gap(end);
                }
                Err(at) => {
                    track.broken.push(self.broken_item(pos));
                    pos = self.resync(pos, at);
                    if pos >= self.text.len() || self.starts_with_word(pos, "track") {
                        break;
                    }
                }
            }
        }
        track.span = head_span.to(Span::new(pos, pos));
        (track, pos)
    }

    fn broken_item(&self, pos: usize) -> BrokenItem {
        let mut words = self.text[pos..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty());
        match words.next() {
            Some("source") => BrokenItem::Source,
            Some("fields") => BrokenItem::Fields,
            Some("step") => BrokenItem::Step(words.next().map(str::to_string)),
            _ => BrokenItem::Trigger,
        }
    }
}

/// Keywords and punctuation: rules that only mark structure.
fn is_token(r: Rule) -> bool {
    matches!(
        r,
        Rule::lbrace
            | Rule::rbrace
            | Rule::lparen
            | Rule::rparen
            | Rule::comma
            | Rule::colon
            | Rule::kw_track
            | Rule::kw_version
            | Rule::kw_source
            | Rule::kw_key
            | Rule::kw_from
            | Rule::kw_fields
            | Rule::kw_on
            | Rule::kw_every
            | Rule::kw_cron
            | Rule::kw_tz
            | Rule::kw_at
            | Rule::kw_event
            | Rule::kw_change
            | Rule::kw_step
            | Rule::kw_wait
            | Rule::kw_when
            | Rule::kw_then
            | Rule::kw_else
            | Rule::kw_goto
            | Rule::kw_stay
            | Rule::kw_end
            | Rule::kw_sql
            | Rule::kw_email
            | Rule::kw_to
            | Rule::kw_webhook
            | Rule::kw_emit
            | Rule::kw_and
            | Rule::kw_or
            | Rule::kw_not
            | Rule::kw_in
            | Rule::kw_between
            | Rule::kw_is
            | Rule::kw_like
    )
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

/// Builds AST nodes from the pairs of one item. Pest's offsets are relative
/// to where the item's parse started; `offset` makes them file offsets.
pub(super) struct Builder<'p, 't> {
    parser: &'p mut FileParser<'t>,
    offset: usize,
}

impl<'p, 't> Builder<'p, 't> {
    pub(super) fn new(parser: &'p mut FileParser<'t>, offset: usize) -> Self {
        Builder { parser, offset }
    }

    /// The span of a node: from its first token to the end of its last
    /// token. (pest's own span of a rule that ends in a repetition also
    /// covers the whitespace and comments after it.)
    pub(super) fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let start = pair.as_span().start();
        let mut last = pair.clone();
        while let Some(inner) = last.clone().into_inner().last() {
            last = inner;
        }
        let end = last.as_span().end().max(start);
        Span::new(start + self.offset, end + self.offset)
    }

    pub(super) fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        debug_assert_eq!(pair.as_rule(), Rule::ident);
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    pub(super) fn error(
        &mut self,
        code: Code,
        span: Span,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let id = self.parser.id;
        self.parser
            .diagnostics
            .push(Diagnostic::new(code, id, span, message));
        self.parser.diagnostics.last_mut().expect("just pushed")
    }

    /// The meaningful children of a pair: keywords and punctuation dropped.
    fn children<'a>(pair: Pair<'a, Rule>) -> impl Iterator<Item = Pair<'a, Rule>> {
        pair.into_inner().filter(|p| !is_token(p.as_rule()))
    }

    fn track_item(&mut self, pair: Pair<'_, Rule>) -> Option<TrackItem> {
        let item = pair
            .into_inner()
            .next()
            .expect("a track item has one child");
        let span = self.span(&item);
        Some(match item.as_rule() {
            Rule::source => {
                let parts: Vec<_> = Self::children(item).collect();
                let (database, rest) = match parts.len() {
                    3 => (Some(self.ident(parts[0].clone())), &parts[1..]),
                    _ => (None, &parts[..]),
                };
                let key = self.ident(rest.first()?.clone());
                let sql = self.sql_block(rest.get(1)?.clone());
                TrackItem::Source(Source {
                    database,
                    key,
                    sql,
                    span,
                })
            }
            Rule::fields => {
                let fields = Self::children(item).map(|f| self.field(f)).collect();
                TrackItem::Fields(FieldsBlock { fields, span })
            }
            Rule::trigger => TrackItem::Trigger(self.trigger(item)),
            Rule::step => TrackItem::Step(self.step(item)),
            other => unreachable!("track_item has no alternative {other:?}"),
        })
    }

    fn field(&mut self, pair: Pair<'_, Rule>) -> FieldDecl {
        let span = self.span(&pair);
        let mut parts = pair.into_inner();
        let name = self.ident(parts.next().expect("field name"));
        let ty_pair = parts
            .find(|p| p.as_rule() == Rule::type_name)
            .expect("field type");
        let ty = match ty_pair.as_str() {
            "int" => TypeName::Int,
            "float" => TypeName::Float,
            "bool" => TypeName::Bool,
            "text" => TypeName::Text,
            _ => TypeName::Timestamp,
        };
        let ty_span = self.span(&ty_pair);
        let nullable = parts.any(|p| p.as_rule() == Rule::question);
        FieldDecl {
            name,
            ty,
            ty_span,
            nullable,
            span,
        }
    }

    fn sql_block(&self, pair: Pair<'_, Rule>) -> SqlBlock {
        let span = self.span(&pair);
        let text = pair
            .into_inner()
            .find(|p| p.as_rule() == Rule::sql_text)
            .expect("a SQL block has its text");
        SqlBlock {
            text: text.as_str().to_string(),
            text_span: self.span(&text),
            span,
        }
    }

    pub(super) fn string(&self, pair: Pair<'_, Rule>) -> StringLit {
        let raw = pair.as_str();
        StringLit {
            value: raw[1..raw.len() - 1].replace("''", "'"),
            span: self.span(&pair),
        }
    }

    fn duration(&mut self, pair: Pair<'_, Rule>) -> Duration {
        let span = self.span(&pair);
        let micros = parse_duration(pair.as_str());
        if micros.is_none() {
            self.error(
                Code::E009,
                span,
                format!("duration `{}` is too long", pair.as_str()),
            )
            .set_span_label("does not fit in 64 bits of microseconds");
        }
        Duration { micros, span }
    }

    pub(super) fn timestamp(&mut self, pair: Pair<'_, Rule>) -> Timestamp {
        let span = self.span(&pair);
        let micros = match parse_timestamp(pair.as_str()) {
            Ok(m) => Some(m),
            Err(message) => {
                self.error(Code::E009, span, message)
                    .set_span_label("not a valid instant")
                    .set_help("write RFC 3339 with a zone, like `2026-12-01T09:00:00Z`");
                None
            }
        };
        Timestamp { micros, span }
    }

    fn trigger(&mut self, pair: Pair<'_, Rule>) -> Trigger {
        let span = self.span(&pair);
        let kind_pair = Self::children(pair).next().expect("a trigger has a kind");
        let mut parts = Self::children(kind_pair.clone());
        let kind = match kind_pair.as_rule() {
            Rule::every => TriggerKind::Every(self.duration(parts.next().expect("duration"))),
            Rule::cron => {
                let expr = self.string(parts.next().expect("cron expression"));
                let tz = parts.next().map(|p| self.string(p));
                TriggerKind::Cron { expr, tz }
            }
            Rule::at => TriggerKind::At(self.timestamp(parts.next().expect("timestamp"))),
            Rule::on_event => TriggerKind::Event(self.ident(parts.next().expect("event name"))),
            Rule::change => TriggerKind::Change(self.sql_block(parts.next().expect("SQL block"))),
            other => unreachable!("trigger has no alternative {other:?}"),
        };
        Trigger { kind, span }
    }

    fn step(&mut self, pair: Pair<'_, Rule>) -> Step {
        let span = self.span(&pair);
        let mut parts = Self::children(pair);
        let name = self.ident(parts.next().expect("step name"));
        let mut wait = None;
        let mut rules = Vec::new();
        for part in parts {
            match part.as_rule() {
                Rule::wait => {
                    let d = Self::children(part).next().expect("wait duration");
                    wait = Some(self.duration(d));
                }
                Rule::rule => rules.push(self.rule(part)),
                other => unreachable!("step has no part {other:?}"),
            }
        }
        Step {
            name,
            wait,
            rules,
            span,
        }
    }

    fn rule(&mut self, pair: Pair<'_, Rule>) -> Rule_ {
        let span = self.span(&pair);
        let inner = pair
            .into_inner()
            .next()
            .expect("a rule is `when` or `else`");
        let mut condition = None;
        let mut actions = Vec::new();
        for part in Self::children(inner) {
            match part.as_rule() {
                Rule::expr => condition = Some(self.expr(part).0),
                Rule::actions => {
                    actions = Self::children(part).map(|a| self.action(a)).collect();
                }
                other => unreachable!("rule has no part {other:?}"),
            }
        }
        Rule_ {
            condition,
            actions,
            span,
        }
    }

    fn action(&mut self, pair: Pair<'_, Rule>) -> Action {
        let span = self.span(&pair);
        let inner = pair.into_inner().next().expect("an action has a kind");
        let which = inner.as_rule();
        let mut parts = Self::children(inner);
        let kind = match which {
            Rule::goto => ActionKind::Goto(self.ident(parts.next().expect("step name"))),
            Rule::stay => ActionKind::Stay,
            Rule::end => ActionKind::End,
            Rule::sql_action => {
                let mut part = parts.next().expect("SQL block");
                if part.as_rule() == Rule::ident {
                    let name = self.ident(part);
                    let diagnostic = self.error(
                        Code::E020,
                        Span::new(span.start, name.span.end),
                        format!(
                            "`sql on {}`: action SQL cannot write to a source database",
                            name.name
                        ),
                    );
                    diagnostic.span_label = Some("a source database is only read".into());
                    diagnostic.help = Some(
                        "trackc only reads source databases: action SQL runs in the state \
                         database, in the transaction that records the decision, and a write \
                         elsewhere could not be made exactly once with it. Keep the table in \
                         the state database, or have a `webhook` (delivered once per \
                         idempotency key) ask your service to write it"
                            .into(),
                    );
                    part = parts.next().expect("SQL block");
                }
                ActionKind::Sql(self.sql_block(part))
            }
            Rule::email => {
                let template = self.string(parts.next().expect("template"));
                let to = parts.next().map(|p| self.expr(p).0);
                ActionKind::Email { template, to }
            }
            Rule::webhook => ActionKind::Webhook(self.string(parts.next().expect("URL"))),
            Rule::emit => ActionKind::Emit(self.ident(parts.next().expect("event name"))),
            other => unreachable!("action has no alternative {other:?}"),
        };
        Action { kind, span }
    }

    // ------------------------------------------------------------ expressions
    // Each function returns the expression and the depth of its tree.

    fn too_deep(&mut self, span: Span) -> (Expr, usize) {
        self.error(
            Code::E001,
            span,
            format!("expression is nested more than {MAX_EXPR_DEPTH} deep"),
        )
        .set_help("split the condition into simpler parts");
        (
            Expr {
                kind: ExprKind::Literal(Literal::Null),
                span,
            },
            1,
        )
    }

    fn expr(&mut self, pair: Pair<'_, Rule>) -> (Expr, usize) {
        match pair.as_rule() {
            Rule::expr => self.expr(pair.into_inner().next().expect("expr has a body")),
            Rule::or_expr | Rule::and_expr | Rule::sum | Rule::product => self.chain(pair),
            Rule::not_expr => {
                let span = self.span(&pair);
                let mut parts: Vec<_> = pair.into_inner().collect();
                let operand = parts.pop().expect("not_expr ends with cmp");
                let (mut expr, mut depth) = self.expr(operand);
                for not in parts.iter().rev() {
                    depth += 1;
                    if depth > MAX_EXPR_DEPTH {
                        return self.too_deep(span);
                    }
                    let op_start = self.span(not).start;
                    expr = Expr {
                        span: Span::new(op_start, expr.span.end),
                        kind: ExprKind::Unary {
                            op: UnaryOp::Not,
                            operand: Box::new(expr),
                        },
                    };
                }
                (expr, depth)
            }
            Rule::unary => {
                let span = self.span(&pair);
                let mut parts: Vec<_> = pair.into_inner().collect();
                let operand = parts.pop().expect("unary ends with a primary");
                let (mut expr, mut depth) = self.primary(operand, !parts.is_empty());
                let mut negs = parts.iter().rev().peekable();
                // `-9223372036854775808` is the one integer literal whose
                // magnitude does not fit: `primary` folded the sign into it,
                // so one minus is already accounted for.
                if let (Some(_), ExprKind::Literal(Literal::Int(i64::MIN))) =
                    (negs.peek(), &expr.kind)
                {
                    let neg = negs.next().expect("peeked");
                    expr.span = Span::new(self.span(neg).start, expr.span.end);
                }
                for neg in negs {
                    depth += 1;
                    if depth > MAX_EXPR_DEPTH {
                        return self.too_deep(span);
                    }
                    expr = Expr {
                        span: Span::new(self.span(neg).start, expr.span.end),
                        kind: ExprKind::Unary {
                            op: UnaryOp::Neg,
                            operand: Box::new(expr),
                        },
                    };
                }
                (expr, depth)
            }
            Rule::cmp => self.cmp(pair),
            _ => self.primary(pair, false),
        }
    }

    /// Left-associative chains: `a or b or c`, `a + b - c`, `a * b / c`.
    fn chain(&mut self, pair: Pair<'_, Rule>) -> (Expr, usize) {
        let span = self.span(&pair);
        let mut parts = pair.into_inner();
        let (mut expr, mut depth) = self.expr(parts.next().expect("a chain has a first operand"));
        while let Some(op_pair) = parts.next() {
            let op = match op_pair.as_str() {
                "or" => BinaryOp::Or,
                "and" => BinaryOp::And,
                "+" => BinaryOp::Add,
                "-" => BinaryOp::Sub,
                "*" => BinaryOp::Mul,
                "/" => BinaryOp::Div,
                _ => BinaryOp::Rem,
            };
            let op_span = self.span(&op_pair);
            let (rhs, rhs_depth) =
                self.expr(parts.next().expect("an operator has a right operand"));
            depth = depth.max(rhs_depth) + 1;
            if depth > MAX_EXPR_DEPTH {
                return self.too_deep(span);
            }
            expr = Expr {
                span: expr.span.to(rhs.span),
                kind: ExprKind::Binary {
                    op,
                    op_span,
                    lhs: Box::new(expr),
                    rhs: Box::new(rhs),
                },
            };
        }
        (expr, depth)
    }

    fn cmp(&mut self, pair: Pair<'_, Rule>) -> (Expr, usize) {
        let span = self.span(&pair);
        let mut parts = pair.into_inner();
        let (lhs, mut depth) = self.expr(parts.next().expect("cmp has an operand"));
        let Some(tail) = parts.next() else {
            return (lhs, depth);
        };
        let negated = tail
            .clone()
            .into_inner()
            .any(|p| p.as_rule() == Rule::kw_not);
        let operand = Box::new(lhs);
        let kind = match tail.as_rule() {
            Rule::cmp_binary => {
                let mut inner = tail.into_inner();
                let op_pair = inner.next().expect("operator");
                let op = match op_pair.as_str() {
                    "=" => BinaryOp::Eq,
                    "!=" | "<>" => BinaryOp::NotEq,
                    "<" => BinaryOp::Lt,
                    "<=" => BinaryOp::LtEq,
                    ">" => BinaryOp::Gt,
                    _ => BinaryOp::GtEq,
                };
                let (rhs, d) = self.expr(inner.next().expect("right operand"));
                depth = depth.max(d);
                ExprKind::Binary {
                    op,
                    op_span: self.span(&op_pair),
                    lhs: operand,
                    rhs: Box::new(rhs),
                }
            }
            Rule::in_list => {
                let mut list = Vec::new();
                for p in Self::children(tail) {
                    let (e, d) = self.expr(p);
                    depth = depth.max(d);
                    list.push(e);
                }
                ExprKind::InList {
                    operand,
                    list,
                    negated,
                }
            }
            Rule::between => {
                let mut bounds = Self::children(tail);
                let (low, d1) = self.expr(bounds.next().expect("low bound"));
                let (high, d2) = self.expr(bounds.next().expect("high bound"));
                depth = depth.max(d1).max(d2);
                ExprKind::Between {
                    operand,
                    low: Box::new(low),
                    high: Box::new(high),
                    negated,
                }
            }
            Rule::is_null => ExprKind::IsNull { operand, negated },
            Rule::like => {
                let pattern = self.string(Self::children(tail).next().expect("pattern"));
                ExprKind::Like {
                    operand,
                    pattern,
                    negated,
                }
            }
            other => unreachable!("cmp has no tail {other:?}"),
        };
        depth += 1;
        if depth > MAX_EXPR_DEPTH {
            return self.too_deep(span);
        }
        (Expr { kind, span }, depth)
    }

    /// `negated`: a unary minus stands before this primary (so that the
    /// literal 9223372036854775808 is allowed there).
    fn primary(&mut self, pair: Pair<'_, Rule>, negated: bool) -> (Expr, usize) {
        let span = self.span(&pair);
        let literal = |kind| {
            (
                Expr {
                    kind: ExprKind::Literal(kind),
                    span,
                },
                1,
            )
        };
        match pair.as_rule() {
            Rule::int => match pair.as_str().parse::<i64>() {
                Ok(v) => literal(Literal::Int(v)),
                Err(_)
                    if negated
                        && pair.as_str().trim_start_matches('0') == "9223372036854775808" =>
                {
                    literal(Literal::Int(i64::MIN))
                }
                Err(_) => {
                    self.error(Code::E001, span, "integer literal is too large")
                        .set_span_label("does not fit in a 64-bit signed integer")
                        .set_help("write it as a float, like `1e20`");
                    literal(Literal::Null)
                }
            },
            Rule::float => {
                let value: f64 = pair.as_str().parse().unwrap_or(f64::INFINITY);
                if !value.is_finite() {
                    self.error(Code::E001, span, "number is too large for a 64-bit float");
                    return literal(Literal::Null);
                }
                literal(Literal::Float(value))
            }
            Rule::string => literal(Literal::String(self.string(pair).value)),
            Rule::duration => literal(Literal::Duration(self.duration(pair).micros)),
            Rule::timestamp => literal(Literal::Timestamp(self.timestamp(pair).micros)),
            Rule::kw_true => literal(Literal::Bool(true)),
            Rule::kw_false => literal(Literal::Bool(false)),
            Rule::kw_null => literal(Literal::Null),
            Rule::field_ref => {
                let name = self.ident(
                    pair.into_inner()
                        .next()
                        .expect("a field reference is a name"),
                );
                (
                    Expr {
                        kind: ExprKind::Field(name),
                        span,
                    },
                    1,
                )
            }
            Rule::call => {
                let mut parts = Self::children(pair);
                let name = self.ident(parts.next().expect("function name"));
                let mut depth = 1;
                let mut args = Vec::new();
                for p in parts {
                    let (e, d) = self.expr(p);
                    depth = depth.max(d + 1);
                    args.push(e);
                }
                if depth > MAX_EXPR_DEPTH {
                    return self.too_deep(span);
                }
                (
                    Expr {
                        kind: ExprKind::Call { name, args },
                        span,
                    },
                    depth,
                )
            }
            Rule::paren => {
                let inner = Self::children(pair)
                    .next()
                    .expect("parenthesised expression");
                let (mut e, d) = self.expr(inner);
                e.span = span;
                (e, d)
            }
            other => unreachable!("primary has no alternative {other:?}"),
        }
    }
}

/// `Rule` is pest's name for grammar rules; the AST's rule is `Rule_` here.
use super::ast::Rule as Rule_;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (File, Vec<Diagnostic>) {
        parse_file(FileId(0), text)
    }

    fn messages(text: &str) -> Vec<String> {
        parse(text).1.into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn contextual_keywords_are_field_names() {
        let (file, errors) = parse(
            "track t { source key key { SELECT key, email, text, \"end\" FROM c }
               step s { when email = text and end > 1 and key is not null then goto s } }",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(file.tracks.len(), 1);
    }

    #[test]
    fn sql_blocks_balance_braces_outside_strings_and_comments() {
        let (file, errors) = parse(
            "track t { source key id { SELECT id, '}' AS a, \"x}\" -- }
             FROM c WHERE x = '{' } step s { else end } }",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let TrackItem::Source(source) = &file.tracks[0].items[0] else {
            panic!()
        };
        assert!(source.sql.text.contains("FROM c WHERE x = '{'"));
    }

    #[test]
    fn missing_then_is_named() {
        let m = messages("track t { step s { when a = 1 goto s } }");
        assert_eq!(m, vec!["expected `then`, found `goto`"]);
    }

    #[test]
    fn several_errors_are_all_reported() {
        let m = messages(
            "track t {\n  step a { when x = then end }\n  step b { when y then }\n  step c { else end }\n}\ntrack u { bogus }\n",
        );
        assert_eq!(m.len(), 3, "{m:?}");
    }

    #[test]
    fn deep_parentheses_are_refused_without_overflow() {
        let text = format!(
            "track t {{ step s {{ when {}1{} then end }} }}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        let m = messages(&text);
        assert_eq!(
            m,
            vec![format!(
                "parentheses are nested more than {MAX_PAREN_DEPTH} deep"
            )]
        );
    }

    #[test]
    fn long_operator_chains_and_prefix_runs_are_bounded() {
        let chain = format!(
            "track t {{ step s {{ when 1{} = 1 then end }} }}",
            " + 1".repeat(50_000)
        );
        assert_eq!(
            messages(&chain),
            vec![format!(
                "expression is nested more than {MAX_EXPR_DEPTH} deep"
            )]
        );
        let nots = format!(
            "track t {{ step s {{ when {} true then end }} }}",
            "not ".repeat(50_000)
        );
        assert_eq!(
            messages(&nots),
            vec![format!(
                "expression is nested more than {MAX_EXPR_DEPTH} deep"
            )]
        );
    }

    #[test]
    fn parentheses_at_the_limit_parse() {
        let text = format!(
            "track t {{ step s {{ when {}1{} = 1 then end }} }}",
            "(".repeat(MAX_PAREN_DEPTH),
            ")".repeat(MAX_PAREN_DEPTH)
        );
        // Run on a small stack, as test threads and editors' workers have.
        let errors = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || parse(&text).1)
            .unwrap()
            .join()
            .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn most_negative_integer_is_a_literal() {
        let (file, errors) = parse("track t { step s { when x = -9223372036854775808 then end } }");
        assert!(errors.is_empty(), "{errors:?}");
        let TrackItem::Step(step) = &file.tracks[0].items[0] else {
            panic!()
        };
        let ExprKind::Binary { rhs, .. } = &step.rules[0].condition.as_ref().unwrap().kind else {
            panic!()
        };
        assert_eq!(rhs.kind, ExprKind::Literal(Literal::Int(i64::MIN)));
        assert_eq!(
            messages("track t { step s { when x = 9223372036854775808 then end } }"),
            vec!["integer literal is too large"]
        );
    }

    #[test]
    fn unclosed_things_say_so() {
        assert_eq!(
            messages("track t { step s { when x = 'abc then end } }"),
            vec!["string never closes"]
        );
        assert_eq!(
            messages("track t { /* step s { else end } }"),
            vec!["comment never closes"]
        );
        assert_eq!(
            messages("track t { source key id { SELECT 1 "),
            vec!["SQL block never closes"]
        );
        assert_eq!(
            messages("track t { step s { else end }"),
            vec!["track `t` is not closed, found end of file"]
        );
    }
}
