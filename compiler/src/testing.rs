//! Tests of tracks (`*.dt.test`, `trackc test`): checked against the
//! compiled tracks (names, field types, rule numbers), then run through the
//! JIT, the evaluator the runtime uses, with the reference interpreter as a
//! cross-check. docs/language-decisions.md ("Tests") is the contract.

use crate::block::{key_text, BlockBuilder};
use crate::diagnostics::{did_you_mean, Code, Diagnostic};
use crate::interp::{eval, eval_step, Env};
use crate::ir::{Effect, Expr, ExprKind, Program, Track, Transition};
use crate::jit::Jit;
use crate::span::{FileId, SourceFile, Span};
use crate::syntax::ast::{self, Literal};
use crate::syntax::test_file::{ExpectKind, ExpectedEffectKind, Test, TestFile, TestItem};
use crate::types::Type;
use crate::value::Value;
use std::fmt;

/// A test file holds at most this many tests, and a test this many
/// records: tests are written by hand, and a file past these is a mistake
/// (or generated data that belongs in `trackc eval`).
pub const MAX_TESTS_PER_FILE: usize = 10_000;
pub const MAX_RECORDS_PER_TEST: usize = 1_000;

/// A test whose names, values and expectations are all valid.
#[derive(Clone, Debug)]
pub struct CheckedTest {
    pub file: FileId,
    pub name: String,
    /// The test's `test` keyword, for its line.
    pub span: Span,
    pub track: usize,
    pub step: usize,
    pub now: i64,
    /// Values by field index.
    pub records: Vec<Vec<Value>>,
    pub expect: Expectations,
    /// Each rule of the step as written (`when …` or `else`), for reports.
    pub rule_texts: Vec<String>,
}

/// What a test expects; `None` where it says nothing.
#[derive(Clone, Debug, Default)]
pub struct Expectations {
    /// `Some(None)`: no rule fires.
    pub rule: Option<Option<usize>>,
    pub next: Option<Transition>,
    pub effects: Option<Vec<EffectPattern>>,
}

/// An expected effect; an e-mail without `to` matches any recipient.
#[derive(Clone, Debug, PartialEq)]
pub enum EffectPattern {
    Email { template: String, to: Option<Value> },
    Webhook(String),
    Emit(String),
    Sql,
}

/// An effect a decision produced, with the recipient evaluated.
#[derive(Clone, Debug, PartialEq)]
pub enum ActualEffect {
    Email { template: String, to: Value },
    Webhook(String),
    Emit(String),
    Sql(String),
}

impl EffectPattern {
    fn matches(&self, actual: &ActualEffect) -> bool {
        match (self, actual) {
            (
                EffectPattern::Email { template, to },
                ActualEffect::Email {
                    template: t,
                    to: actual_to,
                },
            ) => template == t && to.as_ref().is_none_or(|to| to == actual_to),
            (EffectPattern::Webhook(a), ActualEffect::Webhook(b)) => a == b,
            (EffectPattern::Emit(a), ActualEffect::Emit(b)) => a == b,
            (EffectPattern::Sql, ActualEffect::Sql(_)) => true,
            _ => false,
        }
    }
}

/// Effects as a test would write them.
impl fmt::Display for EffectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EffectPattern::Email { template, to } => {
                write!(f, "email {}", Value::Text(template.clone()))?;
                match to {
                    Some(to) => write!(f, " to {to}"),
                    None => Ok(()),
                }
            }
            EffectPattern::Webhook(url) => write!(f, "webhook {}", Value::Text(url.clone())),
            EffectPattern::Emit(event) => write!(f, "emit {event}"),
            EffectPattern::Sql => f.write_str("sql"),
        }
    }
}

impl fmt::Display for ActualEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActualEffect::Email { template, to } => {
                write!(f, "email {} to {to}", Value::Text(template.clone()))
            }
            ActualEffect::Webhook(url) => write!(f, "webhook {}", Value::Text(url.clone())),
            ActualEffect::Emit(event) => write!(f, "emit {event}"),
            ActualEffect::Sql(_) => f.write_str("sql"),
        }
    }
}

/// `goto s`, `end` or `stay`.
pub fn transition_text(track: &Track, transition: Transition) -> String {
    match transition {
        Transition::Goto(s) => format!("goto {}", track.steps[s].name),
        Transition::End => "end".to_string(),
        Transition::Stay => "stay".to_string(),
    }
}

fn list_text<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "no effects".to_string();
    }
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the tests of one file against the compiled `program` (and the
/// track ASTs, for names and rule texts). Tests with errors are left out.
pub fn check_tests(
    file: &TestFile,
    program: &Program,
    asts: &[ast::File],
    sources: &[SourceFile],
) -> (Vec<CheckedTest>, Vec<Diagnostic>) {
    let mut checker = Checker {
        file: file.id,
        program,
        asts,
        sources,
        diagnostics: Vec::new(),
    };
    let mut checked = Vec::new();
    let mut seen: Vec<&ast::StringLit> = Vec::new();
    for (n, test) in file.tests.iter().enumerate() {
        if n == MAX_TESTS_PER_FILE {
            checker
                .error(
                    Code::E018,
                    test.name.span,
                    format!("a test file holds at most {MAX_TESTS_PER_FILE} tests"),
                )
                .set_span_label("one test too many")
                .set_help("split the tests into more files");
            break;
        }
        if let Some(first) = seen.iter().find(|s| s.value == test.name.value) {
            checker
                .error(
                    Code::E002,
                    test.name.span,
                    format!("a second test named '{}'", test.name.value),
                )
                .add_label(first.span, "first defined here");
        }
        seen.push(&test.name);
        if let Some(test) = checker.test(test) {
            checked.push(test);
        }
    }
    (checked, checker.diagnostics)
}

/// Parses test file `name` (its `text`) and checks it against the tracks
/// of `compilation`, to which it is added as a file (so that diagnostics
/// render with it): the tests that can run, and every diagnostic of the
/// file, in the order of the file.
pub fn check_test_file(
    compilation: &mut crate::Compilation,
    name: &str,
    text: &str,
) -> (Vec<CheckedTest>, Vec<Diagnostic>) {
    let id = FileId(compilation.files.len() as u32);
    let (file, mut diagnostics) = crate::syntax::test_file::parse_test_file(id, text);
    compilation.files.push(SourceFile::new(name, text));
    let (tests, more) = check_tests(
        &file,
        &compilation.program,
        &compilation.asts,
        &compilation.files,
    );
    diagnostics.extend(more);
    diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
    (tests, diagnostics)
}

struct Checker<'a> {
    file: FileId,
    program: &'a Program,
    asts: &'a [ast::File],
    sources: &'a [SourceFile],
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, code: Code, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::new(code, self.file, span, message));
        self.diagnostics.last_mut().expect("just pushed")
    }

    /// A name not found, with the closest of `candidates` as help.
    fn unknown<'c>(
        &mut self,
        code: Code,
        name: &ast::Ident,
        message: String,
        label: &str,
        candidates: impl IntoIterator<Item = &'c str>,
    ) {
        let help = did_you_mean(&name.name, candidates);
        let d = self.error(code, name.span, message);
        d.set_span_label(label);
        if let Some(help) = help {
            d.set_help(help);
        }
    }

    /// The checked test, or `None` after reporting why it cannot run.
    fn test(&mut self, test: &Test) -> Option<CheckedTest> {
        let errors_before = self.diagnostics.len();
        let (track_index, step_index) = self.target(test)?;
        let track = &self.program.tracks[track_index];
        let mut now = None;
        let mut records = Vec::new();
        let mut expect = Expectations::default();
        let mut expect_spans: [Option<Span>; 3] = [None; 3];
        for item in &test.items {
            match item {
                TestItem::Target { .. } => {}
                TestItem::Now { micros, span } => {
                    if now.is_some() {
                        self.error(Code::E018, *span, "a second `now` in this test")
                            .set_span_label("second `now`")
                            .set_help("a test decides at one instant");
                    }
                    now = Some(*micros);
                }
                TestItem::Record { fields, span } => {
                    if records.len() == MAX_RECORDS_PER_TEST {
                        self.error(
                            Code::E017,
                            *span,
                            format!("a test gives at most {MAX_RECORDS_PER_TEST} records"),
                        )
                        .set_span_label("one record too many")
                        .set_help("split the records into more tests");
                        continue;
                    }
                    if let Some(record) = self.record(track, fields, *span) {
                        records.push(record);
                    }
                }
                TestItem::Expect(e) => {
                    let slot = match &e.kind {
                        ExpectKind::Rule { .. }
                        | ExpectKind::RuleElse { .. }
                        | ExpectKind::NoRule => 0,
                        ExpectKind::Goto(_) | ExpectKind::Stay | ExpectKind::End => 1,
                        ExpectKind::Effects(_) | ExpectKind::NoEffects => 2,
                    };
                    if let Some(first) = expect_spans[slot] {
                        let what = ["the rule", "the next step", "the effects"][slot];
                        self.error(
                            Code::E018,
                            e.span,
                            format!("a second expectation of {what}"),
                        )
                        .set_span_label("expected again")
                        .add_label(first, "first expected here");
                        continue;
                    }
                    expect_spans[slot] = Some(e.span);
                    self.expectation(track, step_index, &e.kind, &mut expect);
                }
            }
        }
        if records.is_empty()
            && !test
                .items
                .iter()
                .any(|i| matches!(i, TestItem::Record { .. }))
        {
            self.error(Code::E017, test.name.span, "this test gives no record")
                .set_span_label("this test")
                .set_help("add `record { field: value, … }` with the fields the step reads");
        }
        if expect_spans.iter().all(Option::is_none) {
            self.error(
                Code::E018,
                test.name.span,
                "this test expects nothing, so it cannot fail",
            )
            .set_span_label("this test")
            .set_help("add `expect rule N`, `expect goto STEP` or `expect effects …`");
        }
        let step = &track.steps[step_index];
        let reads_now = step.rules.iter().any(|r| {
            r.condition.as_ref().is_some_and(reads_now)
                || r.effects
                    .iter()
                    .any(|e| matches!(e, Effect::Email { to, .. } if reads_now(to)))
        });
        let now = match now {
            Some(Some(micros)) => micros,
            Some(None) => return None, // an invalid timestamp, reported
            None if reads_now => {
                self.error(
                    Code::E018,
                    test.name.span,
                    format!(
                        "step `{}` reads `now()`, and this test gives no `now`",
                        step.name
                    ),
                )
                .set_span_label("this test")
                .set_help("add `now 2026-01-01T09:00:00Z` so the test decides the same every day");
                return None;
            }
            None => 0,
        };
        if self.diagnostics.len() > errors_before {
            return None;
        }
        Some(CheckedTest {
            file: self.file,
            name: test.name.value.clone(),
            span: test.span,
            track: track_index,
            step: step_index,
            now,
            records,
            expect,
            rule_texts: crate::rule_texts(self.asts, self.sources, &track.name, &step.name),
        })
    }

    /// The track and step a test names (the step defaults to the first).
    fn target(&mut self, test: &Test) -> Option<(usize, usize)> {
        let mut targets = test.items.iter().filter_map(|i| match i {
            TestItem::Target { track, step, span } => Some((track, step, *span)),
            _ => None,
        });
        let Some((track, step, first_span)) = targets.next() else {
            self.error(Code::E016, test.name.span, "this test names no track")
                .set_span_label("this test")
                .set_help("add `track NAME step NAME`");
            return None;
        };
        if let Some((_, _, span)) = targets.next() {
            self.error(Code::E016, span, "a second `track` in this test")
                .set_span_label("second track")
                .add_label(first_span, "the test decides this track")
                .set_help("write a test per track");
            return None;
        }
        let names = self.program.tracks.iter().map(|t| t.name.as_str());
        let Some(track_index) = self
            .program
            .tracks
            .iter()
            .position(|t| t.name == track.name)
        else {
            let written = self
                .asts
                .iter()
                .flat_map(|f| &f.tracks)
                .any(|t| t.name.name == track.name);
            let help = if written {
                Some("the track has errors, reported with it".to_string())
            } else {
                did_you_mean(&track.name, names)
            };
            let d = self.error(Code::E016, track.span, format!("no track `{}`", track.name));
            d.set_span_label("not among the tracks given");
            if let Some(help) = help {
                d.set_help(help);
            }
            return None;
        };
        let compiled = &self.program.tracks[track_index];
        let step_index = match step {
            None => 0,
            Some(step) => match compiled.step(&step.name) {
                Some(i) => i,
                None => {
                    let message = format!("track `{}` has no step `{}`", track.name, step.name);
                    let steps = compiled.steps.iter().map(|s| s.name.as_str());
                    self.unknown(Code::E016, step, message, "no such step", steps);
                    return None;
                }
            },
        };
        Some((track_index, step_index))
    }

    /// One record's values by field index, or `None` after reporting.
    fn record(
        &mut self,
        track: &Track,
        fields: &[(ast::Ident, crate::syntax::test_file::Value)],
        span: Span,
    ) -> Option<Vec<Value>> {
        let mut values: Vec<Option<Value>> = vec![None; track.fields.len()];
        let mut given = vec![false; track.fields.len()];
        let mut ok = true;
        for (name, value) in fields {
            let Some(i) = track.field(&name.name) else {
                let message = format!("track `{}` has no field `{}`", track.name, name.name);
                let fields = track.fields.iter().map(|f| f.name.as_str());
                self.unknown(Code::E017, name, message, "no such field", fields);
                ok = false;
                continue;
            };
            if std::mem::replace(&mut given[i], true) {
                self.error(
                    Code::E017,
                    name.span,
                    format!("field `{}` is given twice", name.name),
                )
                .set_span_label("given again");
                ok = false;
                continue;
            }
            let field = &track.fields[i];
            match literal_value(&value.literal, field.ty) {
                Ok(Value::Null) if !field.nullable => {
                    self.error(
                        Code::E017,
                        value.span,
                        format!(
                            "field `{}` cannot be null (its column is NOT NULL)",
                            field.name
                        ),
                    );
                    ok = false;
                }
                Ok(v) => values[i] = Some(v),
                Err(found) => {
                    self.error(
                        Code::E017,
                        value.span,
                        format!("field `{}` is {}, not {found}", field.name, field.ty),
                    )
                    .set_span_label(format!("expected {}", field.ty));
                    ok = false;
                }
            }
        }
        let missing: Vec<&str> = track
            .fields
            .iter()
            .zip(&given)
            .filter(|(f, given)| !**given && !f.nullable)
            .map(|(f, _)| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            self.error(Code::E017, span, format!("this record misses {list}"))
                .set_span_label("this record")
                .set_help(
                    "a field that is NOT NULL needs a value; a nullable one left out is null",
                );
            ok = false;
        }
        ok.then(|| {
            values
                .into_iter()
                .map(|v| v.unwrap_or(Value::Null))
                .collect()
        })
    }

    fn expectation(
        &mut self,
        track: &Track,
        step_index: usize,
        kind: &ExpectKind,
        expect: &mut Expectations,
    ) {
        let step = &track.steps[step_index];
        match kind {
            ExpectKind::Rule { number, span } => {
                let count = step.rules.len();
                if *number < 1 || *number as u64 > count as u64 {
                    self.error(
                        Code::E018,
                        *span,
                        format!("step `{}` has no rule {number}", step.name),
                    )
                    .set_span_label(format!("rules are numbered 1 to {count}"));
                } else {
                    expect.rule = Some(Some(*number as usize - 1));
                }
            }
            ExpectKind::RuleElse { span } => {
                match step.rules.iter().position(|r| r.condition.is_none()) {
                    Some(i) => expect.rule = Some(Some(i)),
                    None => {
                        self.error(
                            Code::E018,
                            *span,
                            format!("step `{}` has no `else` rule", step.name),
                        )
                        .set_help("name the rule by its number: `expect rule 2`");
                    }
                }
            }
            ExpectKind::NoRule => expect.rule = Some(None),
            ExpectKind::Goto(name) => match track.step(&name.name) {
                Some(i) => expect.next = Some(Transition::Goto(i)),
                None => {
                    let message = format!("track `{}` has no step `{}`", track.name, name.name);
                    let steps = track.steps.iter().map(|s| s.name.as_str());
                    self.unknown(Code::E003, name, message, "no such step", steps);
                }
            },
            ExpectKind::Stay => expect.next = Some(Transition::Stay),
            ExpectKind::End => expect.next = Some(Transition::End),
            ExpectKind::NoEffects => expect.effects = Some(Vec::new()),
            ExpectKind::Effects(effects) => {
                let mut patterns = Vec::new();
                for effect in effects {
                    patterns.push(match &effect.kind {
                        ExpectedEffectKind::Email { template, to } => {
                            let to = match to {
                                None => None,
                                Some(v) => match literal_value(&v.literal, Type::Text) {
                                    Ok(v) => Some(v),
                                    Err(found) => {
                                        self.error(
                                            Code::E018,
                                            v.span,
                                            format!("a recipient is text, not {found}"),
                                        );
                                        continue;
                                    }
                                },
                            };
                            EffectPattern::Email {
                                template: template.clone(),
                                to,
                            }
                        }
                        ExpectedEffectKind::Webhook(url) => EffectPattern::Webhook(url.clone()),
                        ExpectedEffectKind::Emit(event) => EffectPattern::Emit(event.clone()),
                        ExpectedEffectKind::Sql => EffectPattern::Sql,
                    });
                }
                expect.effects = Some(patterns);
            }
        }
    }
}

fn reads_now(expr: &Expr) -> bool {
    matches!(expr.kind, ExprKind::Now) || expr.children().into_iter().any(reads_now)
}

/// A literal as a value of a field of type `ty` (an integer is a float
/// where a float is wanted); `Err` names what was found instead.
fn literal_value(literal: &Literal, ty: Type) -> Result<Value, &'static str> {
    Ok(match (literal, ty) {
        (Literal::Null, _) => Value::Null,
        // An invalid timestamp was reported by the parser already.
        (Literal::Timestamp(None), _) => Value::Null,
        (Literal::Int(v), Type::Int) => Value::Int(*v),
        (Literal::Int(v), Type::Float) => Value::Float(*v as f64),
        (Literal::Float(v), Type::Float) => Value::Float(*v),
        (Literal::String(s), Type::Text) => Value::Text(s.clone()),
        (Literal::Bool(b), Type::Bool) => Value::Bool(*b),
        (Literal::Timestamp(Some(t)), Type::Timestamp) => Value::Timestamp(*t),
        (Literal::Int(_), _) => return Err("an integer"),
        (Literal::Float(_), _) => return Err("a number"),
        (Literal::String(_), _) => return Err("a string"),
        (Literal::Bool(_), _) => return Err("a boolean"),
        (Literal::Timestamp(_), _) => return Err("a timestamp"),
        (Literal::Duration(_), _) => return Err("a duration"),
    })
}

/// What one record of a test did, and how that differs from the test.
#[derive(Clone, Debug)]
pub struct RecordOutcome {
    pub key: Value,
    pub rule: Option<usize>,
    pub next: Transition,
    pub effects: Vec<ActualEffect>,
    /// The fields the conditions tried read, with their values (and
    /// `now()` first, when one of them reads it).
    pub values: Vec<(String, Value)>,
    pub failures: Vec<Failure>,
}

/// One expectation not met: what the test said against what happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// `rule`, `next`, `effects`, or `engines` (the JIT and the
    /// interpreter disagree: a trackc bug).
    pub what: &'static str,
    pub expected: String,
    pub actual: String,
}

#[derive(Clone, Debug)]
pub struct TestOutcome {
    pub records: Vec<RecordOutcome>,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        self.records.iter().all(|r| r.failures.is_empty())
    }
}

/// `rule 2 (when score > 80)`, or `no rule`.
pub fn rule_text(test: &CheckedTest, rule: Option<usize>) -> String {
    match rule {
        None => "no rule".to_string(),
        Some(i) => match test.rule_texts.get(i) {
            Some(text) => format!("rule {} ({text})", i + 1),
            None => format!("rule {}", i + 1),
        },
    }
}

/// Runs one checked test: its records as one block through the JIT, each
/// also through the interpreter.
pub fn run_test(program: &Program, jit: &Jit, test: &CheckedTest) -> Result<TestOutcome, String> {
    let track = &program.tracks[test.track];
    let step = &track.steps[test.step];
    let types: Vec<Type> = track.fields.iter().map(|f| f.ty).collect();
    let env = Env { now: test.now };
    let mut builder = BlockBuilder::new(&types);
    for record in &test.records {
        let key = key_text(&record[track.key]).unwrap_or_default();
        builder.push(&key, record).map_err(|e| e.0)?;
    }
    let compiled = jit.compile(&types, step).map_err(|e| e.to_string())?;
    let fired = compiled
        .eval(&builder.finish(), env)
        .map_err(|e| e.to_string())?;
    let records = test
        .records
        .iter()
        .zip(fired)
        .map(|(record, rule)| outcome(track, test, record, rule, eval_step(step, record, env)))
        .collect();
    Ok(TestOutcome { records })
}

fn outcome(
    track: &Track,
    test: &CheckedTest,
    record: &[Value],
    rule: Option<usize>,
    reference: Option<usize>,
) -> RecordOutcome {
    let step = &track.steps[test.step];
    let env = Env { now: test.now };
    let (effects, next) = match rule.map(|r| &step.rules[r]) {
        None => (Vec::new(), Transition::Stay),
        Some(r) => {
            let effects = r
                .effects
                .iter()
                .map(|e| match e {
                    Effect::Email { template, to } => ActualEffect::Email {
                        template: template.clone(),
                        to: eval(to, record, env),
                    },
                    Effect::Webhook { url } => ActualEffect::Webhook(url.clone()),
                    Effect::Emit { event } => ActualEffect::Emit(event.clone()),
                    Effect::Sql(sql) => ActualEffect::Sql(sql.text.clone()),
                })
                .collect();
            (effects, r.transition)
        }
    };
    let mut failures = Vec::new();
    if rule != reference {
        failures.push(Failure {
            what: "engines",
            expected: format!("{} (interpreter)", rule_text(test, reference)),
            actual: format!("{} (JIT)", rule_text(test, rule)),
        });
    }
    if let Some(expected) = test.expect.rule {
        if expected != rule {
            failures.push(Failure {
                what: "rule",
                expected: rule_text(test, expected),
                actual: rule_text(test, rule),
            });
        }
    }
    if let Some(expected) = test.expect.next {
        if expected != next {
            failures.push(Failure {
                what: "next",
                expected: transition_text(track, expected),
                actual: transition_text(track, next),
            });
        }
    }
    if let Some(expected) = &test.expect.effects {
        let same = expected.len() == effects.len()
            && expected.iter().zip(&effects).all(|(p, a)| p.matches(a));
        if !same {
            failures.push(Failure {
                what: "effects",
                expected: list_text(expected),
                actual: list_text(&effects),
            });
        }
    }
    // The conditions tried: up to the one that fired and the one expected
    // (all of them when none fired or none should).
    let last = match (rule, test.expect.rule) {
        (Some(a), Some(Some(b))) => a.max(b),
        (Some(a), None) => a,
        _ => step.rules.len().saturating_sub(1),
    };
    let read = step.fields_tried(Some(last));
    let now_read = step
        .rules
        .iter()
        .take(last + 1)
        .any(|r| r.condition.as_ref().is_some_and(reads_now));
    // `now()` is read like a field, and shown first.
    let now = now_read.then(|| ("now()".to_string(), Value::Timestamp(test.now)));
    RecordOutcome {
        key: record[track.key].clone(),
        rule,
        next,
        effects,
        values: now
            .into_iter()
            .chain(
                read.into_iter()
                    .map(|i| (track.fields[i].name.clone(), record[i].clone())),
            )
            .collect(),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile_str;
    use crate::syntax::literals::parse_timestamp;
    use crate::syntax::test_file::parse_test_file;

    const TRACK: &str = "track t {\n\
        source key id { SELECT id, score, note FROM c }\n\
        step first {\n\
            when score >= 50 then email 'hot' to note, goto later\n\
            when score < 0 and now() > 2026-01-01T00:00:00Z then end\n\
            else emit cold\n\
        }\n\
        step later { else end }\n\
    }\n";
    const SCHEMA: &str = "CREATE TABLE c (id BIGINT PRIMARY KEY, score INT NOT NULL, note TEXT);";

    /// Checks and runs `tests` against TRACK: diagnostics as `CODE message`,
    /// and per test its failures.
    fn run(tests: &str) -> (Vec<String>, Vec<Vec<Failure>>) {
        let compilation = compile_str("t.dt", TRACK, Some(SCHEMA));
        assert_eq!(
            compilation.error_count(),
            0,
            "{:?}",
            compilation.diagnostics
        );
        let (file, mut diagnostics) = parse_test_file(FileId(9), tests);
        let (checked, more) = check_tests(
            &file,
            &compilation.program,
            &compilation.asts,
            &compilation.files,
        );
        diagnostics.extend(more);
        let jit = Jit::new().expect("a JIT");
        let failures = checked
            .iter()
            .map(|t| {
                run_test(&compilation.program, &jit, t)
                    .expect("runs")
                    .records
                    .into_iter()
                    .flat_map(|r| r.failures)
                    .collect()
            })
            .collect();
        (
            diagnostics
                .iter()
                .map(|d| format!("{} {}", d.code, d.message))
                .collect(),
            failures,
        )
    }

    #[test]
    fn a_met_expectation_passes_and_a_wrong_one_says_both_sides() {
        let (errors, failures) = run(
            "test 'hot' {\n track t step first\n now 2026-01-02T00:00:00Z\n record { id: 1, score: 60, note: 'a@b.c' }\n\
               expect rule 1\n expect effects email 'hot' to 'a@b.c'\n expect goto later\n}\n\
             test 'wrong' {\n track t\n now 2026-01-02T00:00:00Z\n record { id: 2, score: 10 }\n\
               expect rule 1\n expect goto later\n expect no effects\n}\n",
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(failures[0], vec![]);
        assert_eq!(
            failures[1],
            vec![
                Failure {
                    what: "rule",
                    expected: "rule 1 (when score >= 50)".into(),
                    actual: "rule 3 (else)".into()
                },
                Failure {
                    what: "next",
                    expected: "goto later".into(),
                    actual: "stay".into()
                },
                Failure {
                    what: "effects",
                    expected: "no effects".into(),
                    actual: "emit cold".into()
                },
            ]
        );
    }

    #[test]
    fn every_mistake_in_a_test_has_its_code() {
        let (errors, failures) = run(
            "test 'a' {\n track tt\n record { id: 1, score: 1 }\n expect end\n}\n\
             test 'b' {\n track t step frist\n record { id: 1, score: 1 }\n expect end\n}\n\
             test 'c' {\n track t\n record { id: 'x', scor: 1 }\n expect rule 4\n expect goto latr\n}\n\
             test 'd' {\n track t\n record { id: 1, score: null }\n}\n\
             test 'e' {\n track t\n record { id: 1, score: -5 }\n expect end\n}\n\
             test 'e' {\n track t step later\n expect rule else\n expect rule 1\n}\n",
        );
        assert_eq!(
            errors,
            [
                "E016 no track `tt`",
                "E016 track `t` has no step `frist`",
                "E017 field `id` is int, not a string",
                "E017 track `t` has no field `scor`",
                "E017 this record misses `score`",
                "E018 step `first` has no rule 4",
                "E003 track `t` has no step `latr`",
                "E018 step `first` reads `now()`, and this test gives no `now`",
                "E017 field `score` cannot be null (its column is NOT NULL)",
                "E018 this test expects nothing, so it cannot fail",
                "E018 step `first` reads `now()`, and this test gives no `now`",
                "E018 step `first` reads `now()`, and this test gives no `now`",
                "E002 a second test named 'e'",
                "E018 a second expectation of the rule",
                "E017 this test gives no record",
            ]
        );
        assert!(failures.is_empty());
    }

    #[test]
    fn now_is_the_tests_instant_and_values_read_are_reported() {
        let tests = "test 'later' {\n track t\n now 2026-06-01T00:00:00Z\n\
               record { id: 1, score: -5 }\n record { id: 2, score: -5 }\n expect rule 2\n expect end\n}\n\
             test 'earlier' {\n track t\n now 2025-06-01T00:00:00Z\n record { id: 1, score: -5 }\n expect rule 2\n}\n";
        let (errors, failures) = run(tests);
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(failures[0], vec![]);
        assert_eq!(failures[1].len(), 1);
        assert_eq!(failures[1][0].actual, "rule 3 (else)");
        let compilation = compile_str("t.dt", TRACK, Some(SCHEMA));
        let (file, _) = parse_test_file(FileId(9), tests);
        let (checked, _) = check_tests(
            &file,
            &compilation.program,
            &compilation.asts,
            &compilation.files,
        );
        let outcome = run_test(&compilation.program, &Jit::new().unwrap(), &checked[1]).unwrap();
        assert_eq!(
            outcome.records[0].values,
            vec![
                (
                    "now()".to_string(),
                    Value::Timestamp(parse_timestamp("2025-06-01T00:00:00Z").unwrap())
                ),
                ("score".to_string(), Value::Int(-5))
            ]
        );
    }
}
