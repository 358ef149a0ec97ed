//! Text → AST for test files (`*.dt.test`): tests of tracks, written in the
//! words and literals of the track language (grammar/tracks.pest, "tests").
//! Like the track parser, it goes one item at a time and recovers after a
//! syntax error at the next line that starts an item, so one run reports
//! every mistake.

use super::ast::{Ident, Literal, StringLit};
use super::parser::{Builder, FileParser, Rule};
use crate::diagnostics::{Code, Diagnostic};
use crate::span::{FileId, Span};
use pest::iterators::Pair;

/// One test file: its tests in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct TestFile {
    pub id: FileId,
    pub tests: Vec<Test>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    pub name: StringLit,
    /// From `test` to the closing `}`.
    pub span: Span,
    pub items: Vec<TestItem>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TestItem {
    /// `track NAME [step NAME]`: what the test decides.
    Target {
        track: Ident,
        step: Option<Ident>,
        span: Span,
    },
    /// `now TIMESTAMP`: the instant of `now()`; `None` if invalid (reported).
    Now {
        micros: Option<i64>,
        span: Span,
    },
    /// `record { field: literal, … }`.
    Record {
        fields: Vec<(Ident, Value)>,
        span: Span,
    },
    Expect(Expect),
}

/// A literal value of a record's field.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub literal: Literal,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    pub kind: ExpectKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExpectKind {
    /// `expect rule N` (1-based, as `trackc eval` numbers rules).
    Rule {
        number: i64,
        span: Span,
    },
    /// `expect rule else`: the step's `else` rule.
    RuleElse {
        span: Span,
    },
    /// `expect no rule`: no rule fires.
    NoRule,
    /// `expect no effects`.
    NoEffects,
    /// `expect effects …`: every effect, in order.
    Effects(Vec<ExpectedEffect>),
    Goto(Ident),
    Stay,
    End,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedEffect {
    pub kind: ExpectedEffectKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExpectedEffectKind {
    /// `email 'template' [to literal]`; without `to`, any recipient.
    Email {
        template: String,
        to: Option<Value>,
    },
    Webhook(String),
    Emit(String),
    /// `sql`: an action `sql`, whatever its statement.
    Sql,
}

/// Parses one test file. Always returns a file (possibly with fewer tests
/// or items than written) and every syntax error found.
pub fn parse_test_file(id: FileId, text: &str) -> (TestFile, Vec<Diagnostic>) {
    let mut parser = FileParser {
        id,
        text,
        diagnostics: Vec::new(),
    };
    if let Some(diagnostic) = parser.check_nesting() {
        let file = TestFile {
            id,
            tests: Vec::new(),
        };
        return (file, vec![diagnostic]);
    }
    let mut tests = Vec::new();
    let mut pos = parser.skip_gap(0);
    while pos < text.len() {
        match parser.run(Rule::test_head, pos) {
            Ok(head) => {
                let (test, next) = test(&mut parser, head, pos);
                tests.push(test);
                pos = parser.skip_gap(next);
            }
            Err(at) => {
                pos = resync(text, pos, at);
                while pos < text.len() && !parser.starts_with_word(pos, "test") {
                    pos = resync(text, pos, pos + 1);
                }
            }
        }
    }
    (TestFile { id, tests }, parser.diagnostics)
}

/// The items of a test after its head; the test and the offset after it.
fn test<'t>(parser: &mut FileParser<'t>, head: Pair<'t, Rule>, offset: usize) -> (Test, usize) {
    let head_span = {
        let b = Builder::new(parser, offset);
        b.span(&head)
    };
    let name_pair = head
        .into_inner()
        .find(|p| p.as_rule() == Rule::string)
        .expect("a test head has a name");
    let name = Builder::new(parser, offset).string(name_pair);
    let mut items = Vec::new();
    let mut pos = parser.skip_gap(head_span.end);
    loop {
        if pos >= parser.text.len() {
            parser
                .error(
                    Span::new(pos, pos),
                    format!("test '{}' is not closed, found end of file", name.value),
                )
                .set_span_label("expected `}`")
                .add_label(head_span, "the test opens here");
            break;
        }
        if parser.text[pos..].starts_with('}') {
            pos += 1;
            break;
        }
        match parser.run(Rule::test_item, pos) {
            Ok(item) => {
                let end = item.as_span().end() + pos;
                let built = ItemBuilder(Builder::new(parser, pos)).item(item);
                items.extend(built);
                pos = parser.skip_gap(end);
            }
            Err(at) => {
                pos = resync(parser.text, pos, at);
                if pos >= parser.text.len() || parser.starts_with_word(pos, "test") {
                    break;
                }
            }
        }
    }
    let span = head_span.to(Span::new(pos, pos));
    (Test { name, span, items }, pos)
}

/// Where to go on after an error at `error_at` in an item that started at
/// `item_start`: the first token at the start of a line that opens an item
/// or a test, or closes the test. The end of the text if none.
fn resync(text: &str, item_start: usize, error_at: usize) -> usize {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let token = line_start + (line.len() - line.trim_start().len());
        line_start += line.len();
        if token < error_at.max(item_start + 1) {
            continue;
        }
        let word = text[token..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if matches!(word, "test" | "track" | "now" | "record" | "expect")
            || text[token..].starts_with('}')
        {
            return token;
        }
    }
    text.len()
}

struct ItemBuilder<'p, 't>(Builder<'p, 't>);

impl ItemBuilder<'_, '_> {
    /// The children that carry meaning (not keywords or punctuation).
    fn parts(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
        pair.into_inner().filter(|p| {
            !matches!(
                p.as_rule(),
                Rule::lbrace | Rule::rbrace | Rule::comma | Rule::colon
            ) && !p.as_str().is_empty()
        })
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Option<TestItem> {
        let item = pair.into_inner().next().expect("a test item has one child");
        let span = self.0.span(&item);
        Some(match item.as_rule() {
            Rule::test_target => {
                let mut names = item.into_inner().filter(|p| p.as_rule() == Rule::ident);
                let track = self.0.ident(names.next().expect("a track name"));
                let step = names.next().map(|p| self.0.ident(p));
                TestItem::Target { track, step, span }
            }
            Rule::test_now => {
                let stamp = item
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::timestamp)
                    .expect("a timestamp");
                let micros = self.0.timestamp(stamp).micros;
                TestItem::Now { micros, span }
            }
            Rule::test_record => {
                let fields = Self::parts(item)
                    .filter(|p| p.as_rule() == Rule::field_value)
                    .map(|p| {
                        let mut parts = Self::parts(p);
                        let name = self.0.ident(parts.next().expect("a field name"));
                        let value = self.value(parts.next().expect("a value"));
                        (name, value)
                    })
                    .collect();
                TestItem::Record { fields, span }
            }
            Rule::expect => TestItem::Expect(self.expect(item, span)),
            other => unreachable!("the grammar has no test item {other:?}"),
        })
    }

    /// A `literal`: its value; a malformed number is reported (E001) and
    /// read as NULL so that checking goes on.
    fn value(&mut self, pair: Pair<'_, Rule>) -> Value {
        let span = self.0.span(&pair);
        let mut parts = pair.into_inner();
        let first = parts.next().expect("a literal has a token");
        let (negated, token) = match first.as_rule() {
            Rule::neg => (true, parts.next().expect("a number after `-`")),
            _ => (false, first),
        };
        let literal = match token.as_rule() {
            Rule::int => {
                let text = format!("{}{}", if negated { "-" } else { "" }, token.as_str());
                match text.parse::<i64>() {
                    Ok(v) => Literal::Int(v),
                    Err(_) => {
                        self.0
                            .error(Code::E001, span, "integer literal is too large")
                            .set_span_label("does not fit in a 64-bit signed integer");
                        Literal::Null
                    }
                }
            }
            Rule::float => {
                let value: f64 = token.as_str().parse().unwrap_or(f64::INFINITY);
                if value.is_finite() {
                    Literal::Float(if negated { -value } else { value })
                } else {
                    self.0
                        .error(Code::E001, span, "number is too large for a 64-bit float");
                    Literal::Null
                }
            }
            Rule::string => Literal::String(self.0.string(token).value),
            Rule::timestamp => Literal::Timestamp(self.0.timestamp(token).micros),
            Rule::kw_true => Literal::Bool(true),
            Rule::kw_false => Literal::Bool(false),
            Rule::kw_null => Literal::Null,
            other => unreachable!("the grammar has no literal {other:?}"),
        };
        Value { literal, span }
    }

    fn expect(&mut self, pair: Pair<'_, Rule>, span: Span) -> Expect {
        let what = pair
            .into_inner()
            .find(|p| p.as_rule() != Rule::kw_expect)
            .expect("an expectation");
        let kind = match what.as_rule() {
            Rule::expect_rule => {
                let which = what
                    .into_inner()
                    .find(|p| p.as_rule() != Rule::kw_rule)
                    .expect("a rule number or `else`");
                let at = self.0.span(&which);
                match which.as_rule() {
                    Rule::kw_else => ExpectKind::RuleElse { span: at },
                    _ => ExpectKind::Rule {
                        // Too large a number is out of range when checked.
                        number: which.as_str().parse().unwrap_or(i64::MAX),
                        span: at,
                    },
                }
            }
            Rule::expect_no => {
                let effects = what.into_inner().any(|p| p.as_rule() == Rule::kw_effects);
                if effects {
                    ExpectKind::NoEffects
                } else {
                    ExpectKind::NoRule
                }
            }
            Rule::expect_effects => ExpectKind::Effects(
                what.into_inner()
                    .filter(|p| p.as_rule() == Rule::expected_effect)
                    .map(|p| self.effect(p))
                    .collect(),
            ),
            Rule::goto => ExpectKind::Goto(
                self.0.ident(
                    what.into_inner()
                        .find(|p| p.as_rule() == Rule::ident)
                        .expect("a step name"),
                ),
            ),
            Rule::stay => ExpectKind::Stay,
            Rule::end => ExpectKind::End,
            other => unreachable!("the grammar has no expectation {other:?}"),
        };
        Expect { kind, span }
    }

    fn effect(&mut self, pair: Pair<'_, Rule>) -> ExpectedEffect {
        let span = self.0.span(&pair);
        let inner = pair.into_inner().next().expect("an effect");
        let kind = match inner.as_rule() {
            Rule::expected_email => {
                let mut parts = inner
                    .into_inner()
                    .filter(|p| matches!(p.as_rule(), Rule::string | Rule::literal));
                let template = self.0.string(parts.next().expect("a template")).value;
                let to = parts.next().map(|p| self.value(p));
                ExpectedEffectKind::Email { template, to }
            }
            Rule::webhook => {
                let url = inner
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::string)
                    .expect("a URL");
                ExpectedEffectKind::Webhook(self.0.string(url).value)
            }
            Rule::emit => {
                let event = inner
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::ident)
                    .expect("an event name");
                ExpectedEffectKind::Emit(event.as_str().to_string())
            }
            Rule::kw_sql => ExpectedEffectKind::Sql,
            other => unreachable!("the grammar has no expected effect {other:?}"),
        };
        ExpectedEffect { kind, span }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (TestFile, Vec<Diagnostic>) {
        parse_test_file(FileId(0), text)
    }

    #[test]
    fn a_test_is_read_item_by_item() {
        let (file, errors) = parse(
            "// a comment\n\
             test 'hot lead' {\n\
                 track onboarding step welcome\n\
                 now 2026-03-02T09:00:00Z\n\
                 record { id: 1, score: -72, ratio: 0.5, plan: 'it''s', seen: null, ok: true }\n\
                 expect rule 1\n\
                 expect effects email 'welcome-hot' to 'a@b.c', emit qualified, sql, webhook 'u'\n\
                 expect goto qualify\n\
                 expect no rule\n\
                 expect rule else\n\
             }\n",
        );
        assert_eq!(errors, vec![]);
        let test = &file.tests[0];
        assert_eq!(test.name.value, "hot lead");
        assert_eq!(test.items.len(), 8);
        let TestItem::Record { fields, .. } = &test.items[2] else {
            panic!("a record: {:?}", test.items[2]);
        };
        let values: Vec<&Literal> = fields.iter().map(|(_, v)| &v.literal).collect();
        assert_eq!(
            values,
            [
                &Literal::Int(1),
                &Literal::Int(-72),
                &Literal::Float(0.5),
                &Literal::String("it's".into()),
                &Literal::Null,
                &Literal::Bool(true)
            ]
        );
        let TestItem::Expect(Expect {
            kind: ExpectKind::Effects(effects),
            ..
        }) = &test.items[4]
        else {
            panic!("effects: {:?}", test.items[4]);
        };
        assert_eq!(effects.len(), 4);
        assert!(matches!(
            &effects[0].kind,
            ExpectedEffectKind::Email { template, to: Some(_) } if template == "welcome-hot"
        ));
    }

    #[test]
    fn every_mistake_is_reported_and_the_next_items_still_read() {
        let (file, errors) = parse(
            "test 'a' {\n\
                 track t step s\n\
                 record { id 1 }\n\
                 expect rule 1\n\
                 expect maybe\n\
             }\n\
             test 'b' {\n\
                 now 2026-13-40T00:00:00Z\n\
                 expect end\n\
             }\n",
        );
        let messages: Vec<String> = errors
            .iter()
            .map(|d| format!("{} {}", d.code, d.message))
            .collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("E001 expected `:`"), "{messages:?}");
        assert!(messages[1].starts_with("E001 expected"), "{messages:?}");
        assert!(messages[2].starts_with("E009"), "{messages:?}");
        assert_eq!(file.tests.len(), 2);
        // The target and `expect rule 1` of the first test survive.
        assert_eq!(file.tests[0].items.len(), 2);
        assert_eq!(file.tests[1].items.len(), 2);
    }

    #[test]
    fn an_unclosed_test_is_named() {
        let (_, errors) = parse("test 'open' {\n  expect end\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].message,
            "test 'open' is not closed, found end of file"
        );
    }
}
