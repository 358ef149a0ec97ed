//! AST + schema → typed IR and diagnostics. The checker resolves every name
//! (fields, steps, functions, SQL tables, columns and parameters), types
//! every expression, and looks at the shape of each track (missing parts,
//! unreachable rules and steps, instant `goto` cycles).
//!
//! It reports every problem it can find in one pass, and stays quiet about
//! consequences of a problem it already reported.

mod expr;
mod graph;

use crate::diagnostics::{closest, did_you_mean, Code, Diagnostic};
use crate::ir;
use crate::schema::Schema;
use crate::span::{FileId, Span};
use crate::sql::{self, Columns, SqlDialect, SqlText};
use crate::syntax::ast::{self, ActionKind, BrokenItem, TrackItem, TriggerKind};
use crate::types::Type;
use crate::value::Value;
use expr::{ExprChecker, Scope};
use sqlparser::ast::{Spanned, Statement};
use std::collections::HashMap;

/// Checks all tracks of all files together (track names are unique across
/// files). Returns the IR of every track that has no error, and all
/// diagnostics.
pub fn check_files(
    files: &[ast::File],
    schema: &Schema,
    dialect: SqlDialect,
    named: &[crate::NamedSchema],
) -> (ir::Program, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut seen: HashMap<&str, (FileId, Span)> = HashMap::new();
    let mut all: Vec<(FileId, &ast::Track)> = Vec::new();
    for file in files {
        for track in &file.tracks {
            all.push((file.id, track));
            if let Some(&(first_file, first_span)) = seen.get(track.name.name.as_str()) {
                let mut d = Diagnostic::new(
                    Code::E002,
                    file.id,
                    track.name.span,
                    format!("duplicate track name `{}`", track.name.name),
                )
                .with_span_label("defined again here");
                if first_file == file.id {
                    d = d.with_label(first_span, "first defined here");
                } else {
                    d = d
                        .with_help("another file given to this check defines a track by this name");
                }
                diagnostics.push(d);
            } else {
                seen.insert(&track.name.name, (file.id, track.name.span));
            }
        }
    }
    // Tracks are checked independently of each other, on every core.
    let checked = crate::parallel::map(&all, |&(file, track)| {
        let mut checker = TrackChecker {
            file,
            schema,
            dialect,
            named,
            diagnostics: Vec::new(),
        };
        let ir = checker.track(track);
        (ir, checker.diagnostics)
    });
    let mut tracks = Vec::new();
    for (ir, mut found) in checked {
        let has_errors = found.iter().any(Diagnostic::is_error);
        diagnostics.append(&mut found);
        if let (Some(track), false) = (ir, has_errors) {
            tracks.push(track);
        }
    }
    (ir::Program { tracks }, diagnostics)
}

struct TrackChecker<'a> {
    file: FileId,
    /// The schema and dialect SQL is checked against now: the state
    /// database's, or while a track's source and `change` queries are
    /// checked, its source database's.
    schema: &'a Schema,
    dialect: SqlDialect,
    /// The named source databases.
    named: &'a [crate::NamedSchema],
    diagnostics: Vec<Diagnostic>,
}

/// What one SQL block turned out to be.
struct ParsedSql {
    statement: Statement,
    sql: ir::Sql,
}

impl<'a> TrackChecker<'a> {
    fn error(&mut self, code: Code, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::new(code, self.file, span, message));
        self.diagnostics.last_mut().expect("just pushed")
    }

    fn track(&mut self, track: &ast::Track) -> Option<ir::Track> {
        let mut sources = Vec::new();
        let mut declared: Vec<&ast::FieldDecl> = Vec::new();
        let mut triggers = Vec::new();
        let mut steps: Vec<&ast::Step> = Vec::new();
        for item in &track.items {
            match item {
                TrackItem::Source(s) => sources.push(s),
                TrackItem::Fields(f) => declared.extend(&f.fields),
                TrackItem::Trigger(t) => triggers.push(t),
                TrackItem::Step(s) => steps.push(s),
            }
        }
        let broken_source = track.broken.contains(&BrokenItem::Source);
        let broken_fields = track.broken.contains(&BrokenItem::Fields);
        let broken_steps: Vec<&str> = track
            .broken
            .iter()
            .filter_map(|b| match b {
                BrokenItem::Step(name) => Some(name.as_deref().unwrap_or("")),
                _ => None,
            })
            .collect();

        if sources.is_empty() && !broken_source {
            self.error(
                Code::E014,
                track.name.span,
                format!("track `{}` has no `source`", track.name.name),
            )
            .set_span_label("no source")
            .set_help("say which records it works on: `source key id { SELECT id, … FROM … }`");
        }
        if let [first, second, ..] = sources.as_slice() {
            self.error(
                Code::E014,
                second.span,
                "a track has one `source`, this is a second one",
            )
            .set_span_label("second source")
            .add_label(first.span, "first source");
        }
        if steps.is_empty() && broken_steps.is_empty() {
            self.error(
                Code::E014,
                track.name.span,
                format!("track `{}` has no step", track.name.name),
            )
            .set_span_label("no step")
            .set_help("add at least one `step name { … }`");
        }

        self.duplicates(declared.iter().map(|d| &d.name), "field");
        self.duplicates(steps.iter().map(|s| &s.name), "step");

        let source = sources.first();
        // A source in a named database is checked against its schema and
        // dialect, and so are the track's `change` queries (they read it).
        let source_db = match source.and_then(|s| s.database.as_ref()) {
            None => Some((self.schema, self.dialect)),
            Some(name) => self.database(name),
        };
        let state_db = (self.schema, self.dialect);
        let checked = match source_db {
            Some((schema, dialect)) => {
                (self.schema, self.dialect) = (schema, dialect);
                let checked = source.and_then(|s| self.source(s));
                (self.schema, self.dialect) = state_db;
                checked
            }
            None => None,
        };
        let (columns, source_sql) = match checked {
            Some((columns, sql)) => (Some(columns), Some(sql)),
            None => (None, None),
        };
        let fields = if broken_fields {
            None
        } else {
            self.fields(
                columns,
                &declared,
                source.map_or(track.name.span, |s| s.sql.span),
            )
        };
        let key = match (source, &fields) {
            (Some(source), Some(set)) => {
                let fields = &set.fields;
                let key = fields.iter().position(|f| f.name == source.key.name);
                if key.is_none() && !set.poisoned.contains(&source.key.name) {
                    let help =
                        did_you_mean(&source.key.name, fields.iter().map(|f| f.name.as_str()));
                    let d = self
                        .error(
                            Code::E008,
                            source.key.span,
                            format!("key `{}` is not a column of the source", source.key.name),
                        )
                        .set_span_label("not selected by the query")
                        .add_label(source.sql.span, "the source query");
                    d.help = help
                        .or_else(|| Some(format!("add `{}` to the SELECT list", source.key.name)));
                }
                key
            }
            _ => None,
        };

        let triggers: Vec<Option<ir::Trigger>> = triggers
            .iter()
            .map(|t| {
                let (schema, dialect) = source_db.unwrap_or(state_db);
                (self.schema, self.dialect) = (schema, dialect);
                let trigger = self.trigger(t);
                (self.schema, self.dialect) = state_db;
                trigger
            })
            .collect();

        let step_index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .rev()
            .map(|(i, s)| (s.name.name.as_str(), i))
            .collect();
        let scope = match &fields {
            Some(set) => Scope::Known {
                fields: &set.fields,
                poisoned: &set.poisoned,
            },
            None => Scope::Unknown,
        };
        let mut goto_spans = Vec::new();
        let mut edges = Vec::new();
        let mut ir_steps = Vec::new();
        for (s, step) in steps.iter().enumerate() {
            let mut rules = Vec::new();
            let mut always_fires: Option<Span> = None;
            for rule in &step.rules {
                if let Some(earlier) = always_fires {
                    self.error(Code::W001, rule.span, "this rule is never tried")
                        .set_span_label("unreachable")
                        .add_label(earlier, "this earlier rule always fires")
                        .set_help("remove it, or move it before the rule that always fires");
                }
                // The step graph comes from what is written, whether or not
                // the rule's condition checks.
                for action in &rule.actions {
                    if let ActionKind::Goto(target) = &action.kind {
                        if let Some(&to) = step_index.get(target.name.as_str()) {
                            edges.push(graph::Edge {
                                from: s,
                                to,
                                site: goto_spans.len(),
                            });
                            goto_spans.push(action.span);
                        }
                    }
                }
                let lowered = self.rule(rule, &scope, &step_index, &broken_steps, &track.name.name);
                if let Some(lowered) = &lowered {
                    let is_true = lowered
                        .condition
                        .as_ref()
                        .is_none_or(|c| c.as_const() == Some(&Value::Bool(true)));
                    if is_true && always_fires.is_none() {
                        always_fires = Some(rule.span);
                    }
                } else if rule.condition.is_none() && always_fires.is_none() {
                    always_fires = Some(rule.span);
                }
                rules.push(lowered);
            }
            let wait = step.wait.as_ref().map(|w| w.micros);
            ir_steps.push((step.name.name.clone(), wait, rules));
        }

        // The shape of the step graph. Reachability is only worth a warning
        // when every `goto` resolved: a misspelt one would hide the edge.
        let all_gotos_resolve = steps
            .iter()
            .flat_map(|s| &s.rules)
            .flat_map(|r| &r.actions)
            .all(|a| match &a.kind {
                ActionKind::Goto(target) => step_index.contains_key(target.name.as_str()),
                _ => true,
            });
        if broken_steps.is_empty() && all_gotos_resolve {
            let reached = graph::reachable(steps.len(), &edges);
            for (i, (step, reached)) in steps.iter().zip(&reached).enumerate().skip(1) {
                // A duplicate step (E002) is not a step of its own.
                if !reached && step_index.get(step.name.name.as_str()) == Some(&i) {
                    self.error(
                        Code::W002,
                        step.name.span,
                        format!("step `{}` is never reached", step.name.name),
                    )
                    .set_span_label("unreachable")
                    .set_help(format!(
                        "no `goto` leads here from the first step, `{}`",
                        steps[0].name.name
                    ));
                }
            }
        }
        let waits: Vec<bool> = steps.iter().map(|s| s.wait.is_some()).collect();
        for cycle in graph::instant_cycles(&waits, &edges) {
            let path: Vec<&str> = cycle
                .steps
                .iter()
                .chain(std::iter::once(&cycle.closing.to))
                .map(|&s| steps[s].name.name.as_str())
                .collect();
            let mut d = Diagnostic::new(
                Code::E010,
                self.file,
                goto_spans[cycle.closing.site],
                format!(
                    "`goto` cycle through steps without `wait`: {}",
                    path.join(" → ")
                ),
            )
            .with_span_label("closes the cycle")
            .with_help(
                "a record could loop forever within one run: give one of these steps a `wait`",
            );
            for &s in &cycle.steps {
                d = d.with_label(steps[s].name.span, "no `wait`");
            }
            self.diagnostics.push(d);
        }

        // The IR, if everything lowered.
        let steps = ir_steps
            .into_iter()
            .map(|(name, wait, rules)| {
                Some(ir::Step {
                    name,
                    wait: wait.map(|w| w.unwrap_or(0)),
                    rules: rules.into_iter().collect::<Option<_>>()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ir::Track {
            name: track.name.name.clone(),
            version: track.version.map(|(v, _)| v),
            key: key?,
            fields: fields.filter(|set| set.poisoned.is_empty())?.fields,
            source: source_sql?,
            source_database: source
                .and_then(|s| s.database.as_ref())
                .map(|d| d.name.clone()),
            triggers: triggers.into_iter().collect::<Option<_>>()?,
            steps,
        })
    }

    /// E002 for every name that repeats one before it.
    fn duplicates<'n>(&mut self, names: impl Iterator<Item = &'n ast::Ident>, what: &str) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for name in names {
            match seen.get(name.name.as_str()) {
                Some(&first) => {
                    self.error(
                        Code::E002,
                        name.span,
                        format!("duplicate {what} name `{}`", name.name),
                    )
                    .set_span_label("defined again here")
                    .add_label(first, "first defined here");
                }
                None => {
                    seen.insert(&name.name, name.span);
                }
            }
        }
    }

    /// Parses one SQL block; E006 on a syntax error, E011 on unknown
    /// parameters. Returns the statements.
    fn parse_sql(
        &mut self,
        block: &ast::SqlBlock,
        params: Option<&[&str]>,
    ) -> Option<(Vec<Statement>, Vec<String>)> {
        let sql = SqlText::new(self.file, &block.text, block.text_span.start);
        let statements = match sql::parse_statements(&sql, self.dialect) {
            Ok(s) => s,
            Err(d) => {
                self.diagnostics.push(d);
                return None;
            }
        };
        // Parameter errors are reported but do not stop the checks that
        // follow (columns, tables): they do not change what the SQL means.
        let (found, mut errors) = sql::placeholders(&sql, self.dialect);
        if let Some(params) = params {
            errors.extend(sql::check_placeholders(&sql, &found, params));
        }
        self.diagnostics.extend(errors);
        let mut names: Vec<String> = Vec::new();
        for p in found {
            if !names.contains(&p.name) {
                names.push(p.name);
            }
        }
        Some((statements, names))
    }

    /// The one statement of a block, which `is_kind` must accept (E007).
    fn one_statement(
        &mut self,
        block: &ast::SqlBlock,
        params: Option<&[&str]>,
        is_kind: fn(&Statement) -> bool,
        wanted: &str,
    ) -> Option<ParsedSql> {
        let (statements, params) = self.parse_sql(block, params)?;
        let sql = SqlText::new(self.file, &block.text, block.text_span.start);
        match <[Statement; 1]>::try_from(statements) {
            Ok([statement]) if is_kind(&statement) => Some(ParsedSql {
                statement,
                sql: ir::Sql {
                    text: block.text.trim().to_string(),
                    params,
                },
            }),
            Ok([statement]) => {
                let kind = statement_kind(&statement);
                self.error(
                    Code::E007,
                    sql.span_of(statement.span()),
                    format!("expected {wanted}, found `{kind}`"),
                )
                .set_span_label(format!("{} `{kind}` statement", article(&kind)));
                None
            }
            Err(statements) if statements.is_empty() => {
                self.error(
                    Code::E007,
                    block.span,
                    format!("expected {wanted}, found no statement"),
                )
                .set_span_label("empty SQL block");
                None
            }
            Err(statements) => {
                self.error(
                    Code::E007,
                    sql.span_of(statements[1].span()),
                    format!("expected {wanted}, found {} statements", statements.len()),
                )
                .set_span_label("a second statement");
                None
            }
        }
    }

    /// The schema and dialect of named source database `name`; E019 when
    /// no database has that name.
    fn database(&mut self, name: &ast::Ident) -> Option<(&'a Schema, SqlDialect)> {
        let named = self.named;
        if let Some(db) = named.iter().find(|d| d.name == name.name) {
            return Some((&db.schema, db.dialect));
        }
        let help =
            did_you_mean(&name.name, named.iter().map(|d| d.name.as_str())).unwrap_or_else(|| {
                format!(
                    "declare it: `[databases.{0}]` in trackc.toml, or `--schema {0}=FILE.sql`; \
                     `trackc run` reads it with `--source-db {0}=URL`",
                    name.name
                )
            });
        let known = if named.is_empty() {
            "no source database is declared".to_string()
        } else {
            let names: Vec<&str> = named.iter().map(|d| d.name.as_str()).collect();
            format!("the databases are {}", names.join(", "))
        };
        self.error(
            Code::E019,
            name.span,
            format!("unknown database `{}`: {known}", name.name),
        )
        .set_span_label("no database by this name")
        .set_help(help);
        None
    }

    /// Checks the source query; returns its columns as far as known.
    fn source(&mut self, source: &ast::Source) -> Option<(Columns, ir::Sql)> {
        let parsed =
            self.one_statement(&source.sql, Some(SOURCE_PARAMS), is_query, "one `SELECT`")?;
        let Statement::Query(query) = &parsed.statement else {
            return None;
        };
        let sql = SqlText::new(self.file, &source.sql.text, source.sql.text_span.start);
        let mut resolver = sql::Resolver::new(&sql, self.schema);
        let columns = resolver.query(query, &[]);
        self.diagnostics.append(&mut resolver.diagnostics);
        Some((columns, parsed.sql))
    }

    /// The track's fields: the source's columns, typed by the schema or the
    /// `fields` block, which must agree.
    fn fields(
        &mut self,
        columns: Option<Columns>,
        declared: &[&ast::FieldDecl],
        source_span: Span,
    ) -> Option<FieldSet> {
        let declared_field = |d: &ast::FieldDecl| ir::Field {
            name: d.name.name.clone(),
            ty: d.ty.into(),
            nullable: d.nullable,
        };
        let columns = match columns? {
            Columns::Known(columns) => columns,
            Columns::Unknown if !declared.is_empty() => {
                return Some(FieldSet {
                    fields: declared.iter().map(|d| declared_field(d)).collect(),
                    poisoned: Vec::new(),
                })
            }
            Columns::Unknown => {
                self.error(Code::E013, source_span, "the fields of this source cannot be known")
                    .set_span_label("columns unknown")
                    .set_help("give the schema (`--schema schema.sql`) or declare them: `fields { id: int, … }`");
                return None;
            }
        };
        let mut fields = Vec::new();
        let mut poisoned = Vec::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for column in &columns {
            if let Some(&first) = seen.get(column.name.as_str()) {
                self.error(
                    Code::E002,
                    column.span,
                    format!("duplicate field name `{}`", column.name),
                )
                .set_span_label("selected again here")
                .add_label(first, "first selected here")
                .set_help("give one of them another name with `AS`");
                poisoned.push(column.name.clone());
                continue;
            }
            seen.insert(&column.name, column.span);
            let decl = declared.iter().find(|d| d.name.name == column.name);
            let ty = match (column.ty, decl) {
                (Some(ty), Some(decl)) if Type::from(decl.ty) != ty => {
                    self.error(
                        Code::E005,
                        decl.ty_span,
                        format!(
                            "type mismatch: field `{}` is `{ty}` in the schema but declared `{}`",
                            column.name,
                            Type::from(decl.ty)
                        ),
                    )
                    .set_span_label(format!("declared `{}`", Type::from(decl.ty)))
                    .add_label(column.span, format!("`{ty}` from the schema"));
                    poisoned.push(column.name.clone());
                    continue;
                }
                (Some(ty), _) => ty,
                (None, Some(decl)) => decl.ty.into(),
                (None, None) if column.reported => {
                    poisoned.push(column.name.clone());
                    continue;
                }
                (None, None) => {
                    self.error(
                        Code::E013,
                        column.span,
                        format!("the type of field `{}` cannot be known", column.name),
                    )
                    .set_span_label("type unknown")
                    .set_help(format!(
                        "declare it: `fields {{ {}: <type> }}`, or give the schema with `--schema`",
                        column.name
                    ));
                    poisoned.push(column.name.clone());
                    continue;
                }
            };
            fields.push(ir::Field {
                name: column.name.clone(),
                ty,
                nullable: decl.map_or(column.nullable, |d| d.nullable),
            });
        }
        for decl in declared {
            if !columns.iter().any(|c| c.name == decl.name.name) {
                let help = did_you_mean(&decl.name.name, columns.iter().map(|c| c.name.as_str()));
                let d = self
                    .error(
                        Code::E004,
                        decl.name.span,
                        format!("field `{}` is not a column of the source", decl.name.name),
                    )
                    .set_span_label("declared but not selected")
                    .add_label(source_span, "the source query");
                d.help = help;
            }
        }
        Some(FieldSet { fields, poisoned })
    }

    fn trigger(&mut self, trigger: &ast::Trigger) -> Option<ir::Trigger> {
        Some(match &trigger.kind {
            TriggerKind::Every(d) => {
                let micros = d.micros?;
                if micros <= 0 {
                    self.error(
                        Code::E009,
                        d.span,
                        "`every` needs a duration longer than zero",
                    )
                    .set_span_label("zero");
                    return None;
                }
                ir::Trigger::Every(micros)
            }
            TriggerKind::Cron { expr, tz } => {
                let cron_ok = self.cron(expr);
                let tz_ok = tz.as_ref().is_none_or(|tz| self.time_zone(tz));
                if !(cron_ok && tz_ok) {
                    return None;
                }
                ir::Trigger::Cron {
                    expr: expr.value.clone(),
                    tz: tz.as_ref().map(|t| t.value.clone()),
                }
            }
            TriggerKind::At(t) => ir::Trigger::At(t.micros?),
            TriggerKind::Event(name) => ir::Trigger::Event(name.name.clone()),
            TriggerKind::Change(block) => {
                let parsed =
                    self.one_statement(block, Some(SOURCE_PARAMS), is_query, "one `SELECT`")?;
                ir::Trigger::Change(parsed.sql)
            }
        })
    }

    fn cron(&mut self, expr: &ast::StringLit) -> bool {
        let fields = expr.value.split_whitespace().count();
        let problem = if fields != 5 {
            Some(format!(
                "a cron expression has five fields (minute hour day-of-month month day-of-week), this has {fields}"
            ))
        } else {
            croner::parser::CronParser::new()
                .parse(&expr.value)
                .err()
                .map(|e| format!("invalid cron expression: {e}"))
        };
        match problem {
            None => true,
            Some(message) => {
                self.error(Code::E009, expr.span, message)
                    .set_span_label("not a valid schedule")
                    .set_help("for example `'0 9 * * 1-5'`: 09:00 on weekdays");
                false
            }
        }
    }

    fn time_zone(&mut self, tz: &ast::StringLit) -> bool {
        if tz.value.parse::<chrono_tz::Tz>().is_ok() {
            return true;
        }
        let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
        let suggestion = closest(&tz.value, names);
        self.error(
            Code::E009,
            tz.span,
            format!("unknown time zone `{}`", tz.value),
        )
        .set_span_label("not an IANA time zone")
        .set_help(match suggestion {
            Some(s) => format!("did you mean `{s}`?"),
            None => "write an IANA name such as `Europe/Berlin` or `UTC`".to_string(),
        });
        false
    }

    fn rule(
        &mut self,
        rule: &ast::Rule,
        scope: &Scope<'_>,
        steps: &HashMap<&str, usize>,
        broken_steps: &[&str],
        track_name: &str,
    ) -> Option<ir::Rule> {
        let mut checker = ExprChecker {
            file: self.file,
            scope: *scope,
            diagnostics: &mut self.diagnostics,
        };
        let condition = rule.condition.as_ref().map(|c| checker.condition(c));
        let mut ok = condition.as_ref().is_none_or(Option::is_some);
        let mut transition: Option<(ir::Transition, Span)> = None;
        let mut effects = Vec::new();
        for action in &rule.actions {
            if action.kind.is_transition() {
                if let Some((_, first)) = transition {
                    self.error(
                        Code::E014,
                        action.span,
                        "a rule has at most one transition, this is a second",
                    )
                    .set_span_label("second transition")
                    .add_label(first, "first transition");
                    ok = false;
                    continue;
                }
            }
            match &action.kind {
                ActionKind::Goto(target) => match steps.get(target.name.as_str()) {
                    Some(&index) => transition = Some((ir::Transition::Goto(index), action.span)),
                    None => {
                        ok = false;
                        if broken_steps.contains(&target.name.as_str()) {
                            continue;
                        }
                        let help = did_you_mean(&target.name, steps.keys().copied());
                        let d = self
                            .error(
                                Code::E003,
                                target.span,
                                format!("no step `{}` in track `{track_name}`", target.name),
                            )
                            .set_span_label("unknown step");
                        d.help = help;
                    }
                },
                ActionKind::Stay => transition = Some((ir::Transition::Stay, action.span)),
                ActionKind::End => transition = Some((ir::Transition::End, action.span)),
                ActionKind::Sql(block) => {
                    // Fields are parameters too; poisoned ones included, so
                    // that an error about them is not followed by E011.
                    let params: Option<Vec<&str>> = match scope {
                        Scope::Known { fields, poisoned } => Some(
                            SOURCE_PARAMS
                                .iter()
                                .copied()
                                .chain(fields.iter().map(|f| f.name.as_str()))
                                .chain(poisoned.iter().map(String::as_str))
                                .collect(),
                        ),
                        Scope::Unknown => None,
                    };
                    let kinds = "one `INSERT`, `UPDATE` or `DELETE`";
                    match self.one_statement(
                        block,
                        params.as_deref(),
                        sql::is_action_statement,
                        kinds,
                    ) {
                        Some(parsed) => {
                            let sql = SqlText::new(self.file, &block.text, block.text_span.start);
                            let errors =
                                sql::check_action_targets(&sql, &parsed.statement, self.schema);
                            ok &= errors.is_empty() && params.is_some();
                            self.diagnostics.extend(errors);
                            effects.push(ir::Effect::Sql(parsed.sql));
                        }
                        None => ok = false,
                    }
                }
                ActionKind::Email { template, to } => {
                    let to = match to {
                        Some(to) => {
                            let mut checker = ExprChecker {
                                file: self.file,
                                scope: *scope,
                                diagnostics: &mut self.diagnostics,
                            };
                            checker.expect(to, Type::Text)
                        }
                        None => self.default_recipient(scope, action.span),
                    };
                    match to {
                        Some(to) => effects.push(ir::Effect::Email {
                            template: template.value.clone(),
                            to,
                        }),
                        None => ok = false,
                    }
                }
                ActionKind::Webhook(url) => effects.push(ir::Effect::Webhook {
                    url: url.value.clone(),
                }),
                ActionKind::Emit(event) => effects.push(ir::Effect::Emit {
                    event: event.name.clone(),
                }),
            }
        }
        if !effects.is_empty() && transition.is_none() && ok {
            self.error(
                Code::W003,
                rule.span,
                "this rule has effects but no transition",
            )
            .set_span_label("its effects repeat on every run")
            .set_help("add `goto <step>` or `end`; write `stay` if repeating is intended");
        }
        if !ok {
            return None;
        }
        Some(ir::Rule {
            condition: condition.flatten(),
            effects,
            transition: transition.map_or(ir::Transition::Stay, |(t, _)| t),
        })
    }

    /// `email 'x'` without `to` sends to the `email` field.
    fn default_recipient(&mut self, scope: &Scope<'_>, span: Span) -> Option<ir::Expr> {
        let Scope::Known { fields, poisoned } = scope else {
            return None;
        };
        if poisoned.iter().any(|p| p == "email") {
            return None;
        }
        match fields.iter().position(|f| f.name == "email") {
            Some(i) if fields[i].ty == Type::Text => {
                Some(ir::Expr::new(Type::Text, ir::ExprKind::Field(i)))
            }
            Some(i) => {
                self.error(
                    Code::E005,
                    span,
                    format!(
                        "type mismatch: the `email` field is `{}`, an address must be `text`",
                        fields[i].ty
                    ),
                )
                .set_span_label("sends to the `email` field")
                .set_help("say where to send it: `email 'template' to <text expression>`");
                None
            }
            None => {
                self.error(Code::E004, span, "this track has no `email` field to send to")
                    .set_span_label("no recipient")
                    .set_help("say where to send it: `email 'template' to <text expression>`, or select an `email` column");
                None
            }
        }
    }
}

/// The fields of a track, and the names of columns that are fields but
/// whose type is unknown because of an error already reported.
struct FieldSet {
    fields: Vec<ir::Field>,
    poisoned: Vec<String>,
}

/// The parameters every SQL block may use.
const SOURCE_PARAMS: &[&str] = &["now", "last_run"];

fn is_query(statement: &Statement) -> bool {
    matches!(statement, Statement::Query(_))
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

/// The leading keyword of a statement (`UPDATE`, `CREATE`, …).
fn statement_kind(statement: &Statement) -> String {
    statement
        .to_string()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_ascii_uppercase()
}
