//! The trackc compiler: decision tracks from text to checked, typed decision
//! tables and their evaluators.
//!
//! Data flows one way: [`syntax`] (text → AST) → [`check`] (AST + schema →
//! IR and diagnostics) → [`ir`] → [`interp`] (the reference evaluator).
//! [`compile`] runs the whole pipeline over a set of files.

pub mod block;
pub mod check;
pub mod decision;
pub mod diagnostics;
pub mod format;
pub mod graph;
pub mod interp;
pub mod ir;
pub mod jit;
mod parallel;
pub mod schema;
pub mod span;
pub mod sql;
pub mod syntax;
pub mod testing;
pub mod types;
pub mod value;

use diagnostics::{Code, Diagnostic};
use schema::Schema;
use span::{FileId, SourceFile, Span};
pub use sql::SqlDialect;

/// A file to compile: its name as the user gave it, and its bytes.
pub struct Input {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
pub struct Options {
    pub dialect: SqlDialect,
    /// A file of `CREATE TABLE` statements to check the SQL against.
    pub schema: Option<Input>,
    /// The named source databases a track may read (`source from NAME`),
    /// each with its dialect and schema.
    pub databases: Vec<SourceDatabase>,
}

/// A named source database as the compiler checks against it.
pub struct SourceDatabase {
    pub name: String,
    pub dialect: SqlDialect,
    /// Its `CREATE TABLE` statements (none: its columns are unknown and the
    /// tracks that read it declare `fields`).
    pub schema: Option<Input>,
}

/// A named source database's parsed schema and dialect.
pub struct NamedSchema {
    pub name: String,
    pub dialect: SqlDialect,
    pub schema: Schema,
}

/// Everything one compilation produced. Diagnostics are sorted by file and
/// position; the program holds only tracks without errors.
pub struct Compilation {
    /// The track files, then the schema file if one was given.
    pub files: Vec<SourceFile>,
    pub asts: Vec<syntax::ast::File>,
    pub program: ir::Program,
    pub diagnostics: Vec<Diagnostic>,
}

impl Compilation {
    /// The diagnostics that are errors (not warnings).
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// Decodes a file as UTF-8; invalid bytes are an E001 at the first of them.
fn decode(id: FileId, input: Input) -> (SourceFile, Option<Diagnostic>) {
    match String::from_utf8(input.bytes) {
        Ok(text) => (SourceFile::new(input.name, text), None),
        Err(error) => {
            let at = error.utf8_error().valid_up_to();
            let byte = error.as_bytes()[at];
            let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
            let diagnostic = Diagnostic::new(
                Code::E001,
                id,
                Span::new(at, at + '\u{FFFD}'.len_utf8()),
                format!("the file is not valid UTF-8 (byte 0x{byte:02x})"),
            )
            .with_span_label("invalid byte")
            .with_help("save the file as UTF-8");
            (SourceFile::new(input.name, text), Some(diagnostic))
        }
    }
}

/// Parses one decoded file: its AST and syntax diagnostics (W005 for a file
/// without tracks).
fn parse_one(
    id: FileId,
    file: &SourceFile,
    invalid: Option<Diagnostic>,
) -> (syntax::ast::File, Vec<Diagnostic>) {
    if let Some(d) = invalid {
        return (
            syntax::ast::File {
                id,
                tracks: Vec::new(),
            },
            vec![d],
        );
    }
    let (ast, mut errors) = syntax::parser::parse_file_here(id, &file.text);
    if ast.tracks.is_empty() && errors.is_empty() {
        errors.push(
            Diagnostic::new(Code::W005, id, Span::new(0, 0), "this file has no track")
                .with_help("a file holds tracks: `track name { … }`"),
        );
    }
    (ast, errors)
}

/// Parses and checks track files (and the schema, if given).
pub fn compile(inputs: Vec<Input>, options: Options) -> Compilation {
    let decoded: Vec<(SourceFile, Option<Diagnostic>)> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| decode(FileId(i as u32), input))
        .collect();
    let indices: Vec<usize> = (0..decoded.len()).collect();
    let parsed = parallel::map(&indices, |&i| {
        parse_one(FileId(i as u32), &decoded[i].0, decoded[i].1.clone())
    });
    let mut files = Vec::new();
    let mut asts = Vec::new();
    let mut diagnostics = Vec::new();
    for ((file, _), (ast, mut errors)) in decoded.into_iter().zip(parsed) {
        files.push(file);
        asts.push(ast);
        diagnostics.append(&mut errors);
    }
    let mut parse_schema = |input: Option<Input>, dialect: SqlDialect| match input {
        Some(input) => {
            let id = FileId(files.len() as u32);
            let (file, invalid) = decode(id, input);
            let schema = match invalid {
                Some(d) => {
                    diagnostics.push(d);
                    Schema::default()
                }
                None => {
                    let (schema, mut errors) = Schema::parse(id, &file.text, dialect);
                    diagnostics.append(&mut errors);
                    schema
                }
            };
            files.push(file);
            schema
        }
        None => Schema::default(),
    };
    let schema = parse_schema(options.schema, options.dialect);
    let named: Vec<NamedSchema> = options
        .databases
        .into_iter()
        .map(|d| NamedSchema {
            schema: parse_schema(d.schema, d.dialect),
            name: d.name,
            dialect: d.dialect,
        })
        .collect();
    let (program, mut errors) = check::check_files(&asts, &schema, options.dialect, &named);
    diagnostics.append(&mut errors);
    diagnostics.sort_by_key(|d| (d.file, d.span.start, d.span.end));
    Compilation {
        files,
        asts,
        program,
        diagnostics,
    }
}

/// A rule as written, whitespace collapsed: its condition (`when …`, or
/// `else`), the whole rule with its actions, and its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleText {
    pub condition: String,
    pub whole: String,
    pub line: usize,
}

/// The steps of track `track` in one parsed file (`ast`, from `source`),
/// each with its rules as written, in order.
pub fn rules_as_written(
    ast: &syntax::ast::File,
    source: &SourceFile,
    track: &str,
) -> Vec<(String, Vec<RuleText>)> {
    use syntax::ast::TrackItem;
    let collapse = |span: Span| {
        let words: Vec<&str> = source.text[span.range()].split_whitespace().collect();
        words.join(" ")
    };
    ast.tracks
        .iter()
        .filter(|t| t.name.name == track)
        .flat_map(|t| t.items.iter())
        .filter_map(|i| match i {
            TrackItem::Step(s) => Some(s),
            _ => None,
        })
        .map(|step| {
            let rules = step
                .rules
                .iter()
                .map(|r| RuleText {
                    condition: match &r.condition {
                        None => "else".to_string(),
                        Some(c) => format!("when {}", collapse(c.span)),
                    },
                    whole: collapse(r.span),
                    line: source.line_col(r.span.start).line,
                })
                .collect();
            (step.name.name.clone(), rules)
        })
        .collect()
}

/// Each rule's condition as written (`when …` or `else`) of step `step`
/// of track `track`, from the syntax trees and their texts; empty if there
/// is no such step.
pub fn rule_texts(
    asts: &[syntax::ast::File],
    sources: &[SourceFile],
    track: &str,
    step: &str,
) -> Vec<String> {
    asts.iter()
        .flat_map(|f| rules_as_written(f, &sources[f.id.0 as usize], track))
        .find(|(name, _)| name == step)
        .map(|(_, rules)| rules.into_iter().map(|r| r.condition).collect())
        .unwrap_or_default()
}

/// Compiles one track file given as text; for tests and tools.
pub fn compile_str(name: &str, text: &str, schema: Option<&str>) -> Compilation {
    compile(
        vec![Input {
            name: name.to_string(),
            bytes: text.as_bytes().to_vec(),
        }],
        Options {
            dialect: SqlDialect::Postgres,
            schema: schema.map(|s| Input {
                name: "schema.sql".to_string(),
                bytes: s.as_bytes().to_vec(),
            }),
            databases: Vec::new(),
        },
    )
}
