//! `trackc lsp`: a language server over stdio.
//!
//! Built on lsp-server, the synchronous scaffold of rust-analyzer: a
//! message loop over channels, no async runtime. Every answer here is one
//! compile of one file (milliseconds), so a loop that handles messages in
//! order is both simplest and fast enough; lsp-types gives the messages'
//! types.
//!
//! Each open document is compiled on open and on every change, with the
//! schema and dialect of its project (`trackc.toml` found by walking up
//! from the file, else `schema.sql` beside it; docs/editors.md), and its
//! diagnostics are published: the same codes, messages, spans and help as
//! `trackc check`. Positions are UTF-16 code units, as LSP counts them.

use crate::{usage, UsageError};
use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{
    CodeActionRequest, Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest,
    References, Rename, Request as _,
};
use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams,
    CodeActionProviderCapability, CompletionItem, CompletionItemKind, CompletionOptions,
    CompletionParams, CompletionResponse, Diagnostic as LspDiagnostic,
    DiagnosticRelatedInformation, DiagnosticSeverity, DidChangeTextDocumentParams,
    DidCloseTextDocumentParams, DidOpenTextDocumentParams, DocumentFormattingParams,
    DocumentSymbol, DocumentSymbolParams, DocumentSymbolResponse, GotoDefinitionParams,
    GotoDefinitionResponse, Hover, HoverContents, HoverParams, HoverProviderCapability, Location,
    MarkupContent, MarkupKind, NumberOrString, OneOf, Position, PublishDiagnosticsParams, Range,
    ReferenceParams, RenameParams, ServerCapabilities, SymbolKind, TextDocumentSyncCapability,
    TextDocumentSyncKind, TextEdit, Url, WorkspaceEdit,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use trackc_compiler::diagnostics::{Diagnostic, Severity};
use trackc_compiler::span::{FileId, Span};
use trackc_compiler::syntax::ast::{self, ActionKind, ExprKind, TrackItem};
use trackc_compiler::testing::check_test_file;
use trackc_compiler::{compile, Compilation, Input, Options, SqlDialect};

/// The most track files of a project read for definitions and event
/// names across files: a project is a folder of tracks, not a disk.
const PROJECT_FILES_MAX: usize = 2_000;

/// The functions of the language with their signatures (LANGUAGE.md).
const FUNCTIONS: &[(&str, &str)] = &[
    ("now", "now() -> timestamp: the evaluation instant"),
    ("lower", "lower(text) -> text"),
    ("upper", "upper(text) -> text"),
    ("length", "length(text) -> int: characters"),
    ("abs", "abs(int | float | duration) -> the same type"),
    (
        "coalesce",
        "coalesce(x, y, …) -> the first value that is not null",
    ),
];

/// Keywords, with what each means, for completion and hover.
const KEYWORDS: &[(&str, &str)] = &[
    ("track", "a decision track: its records, triggers and steps"),
    (
        "source",
        "`source key FIELD { SELECT … }`: the records the track works on",
    ),
    ("fields", "declares field types the schema cannot give"),
    (
        "on",
        "a trigger: `every`, `cron`, `at`, `event` or `change`",
    ),
    ("every", "`on every 15m`: runs at this interval"),
    (
        "cron",
        "`on cron '0 9 * * 1-5' tz 'Europe/Berlin'`: runs on a schedule",
    ),
    (
        "event",
        "`on event NAME`: runs for the keys of raised events",
    ),
    (
        "change",
        "`on change { SELECT … }`: runs when the query's result changes",
    ),
    (
        "step",
        "a step: ordered rules; the first step is where records enter",
    ),
    (
        "wait",
        "`wait 2d`: a record waits this long in the step before its rules apply",
    ),
    (
        "when",
        "`when CONDITION then ACTIONS`: the first rule whose condition holds fires",
    ),
    ("else", "`else ACTIONS`: fires when no rule above did"),
    ("then", "separates a rule's condition from its actions"),
    ("goto", "`goto STEP`: moves the record to that step"),
    ("stay", "keeps the record in its step"),
    ("end", "the record leaves the track"),
    (
        "sql",
        "`sql { … }`: runs a statement in the record's transaction",
    ),
    (
        "email",
        "`email 'template' [to EXPR]`: sends an e-mail through the outbox",
    ),
    (
        "webhook",
        "`webhook 'https://…'`: posts the record through the outbox",
    ),
    (
        "emit",
        "`emit EVENT`: raises an event for this record's key",
    ),
    ("and", "both hold"),
    ("or", "either holds"),
    ("not", "negation"),
    ("in", "`x in (a, b)`: equals one of the list"),
    ("between", "`x between a and b`: both bounds included"),
    ("is", "`x is [not] null`"),
    ("like", "`x like 'a%'`: SQL pattern"),
    ("null", "no value"),
    ("true", "the boolean true"),
    ("false", "the boolean false"),
];

pub fn run() -> Result<ExitCode, UsageError> {
    let (connection, io) = Connection::stdio();
    serve(&connection).map_err(|e| usage(format!("lsp: {e}")))?;
    drop(connection);
    io.join()
        .map_err(|e| usage(format!("lsp: the stdio threads: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Runs the server on `connection` until the client shuts it down.
pub fn serve(connection: &Connection) -> Result<(), Failure> {
    let capabilities = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        references_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![" ".into()]),
            ..CompletionOptions::default()
        }),
        ..ServerCapabilities::default()
    };
    connection.initialize(serde_json::to_value(capabilities)?)?;
    let mut server = Server::default();
    for message in &connection.receiver {
        match message {
            Message::Request(request) => {
                if connection.handle_shutdown(&request)? {
                    return Ok(());
                }
                let response = server.answer(request);
                connection.sender.send(Message::Response(response))?;
            }
            Message::Notification(notification) => {
                if let Some(publish) = server.notice(notification) {
                    connection.sender.send(Message::Notification(publish))?;
                }
            }
            Message::Response(_) => {}
        }
    }
    Ok(())
}

#[derive(Default)]
struct Server {
    documents: HashMap<Url, Document>,
    /// Open test files (`*.dt.test`): their text; they get diagnostics,
    /// and empty answers to the requests about tracks.
    tests: HashMap<Url, String>,
}

/// A test file of `trackc test`, not a track file.
fn is_test_file(uri: &Url) -> bool {
    uri.path().ends_with(".dt.test")
}

/// An open document and what its last compile found.
struct Document {
    text: String,
    lines: LineIndex,
    compilation: Compilation,
}

impl Document {
    fn new(uri: &Url, text: String) -> Document {
        let project = Project::of(uri);
        let compilation = compile(
            vec![Input {
                name: uri.path().to_string(),
                bytes: text.as_bytes().to_vec(),
            }],
            Options {
                dialect: project.dialect,
                schema: project.schema,
                databases: project.databases,
            },
        );
        Document {
            lines: LineIndex::new(&text),
            text,
            compilation,
        }
    }

    fn ast(&self) -> &ast::File {
        &self.compilation.asts[0]
    }

    fn range(&self, span: Span) -> Range {
        Range::new(
            self.lines.position(&self.text, span.start),
            self.lines.position(&self.text, span.end),
        )
    }

    /// The identifier under `position`, with its span.
    fn word_at(&self, position: Position) -> Option<(&str, Span)> {
        let at = self.lines.offset(&self.text, position);
        let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let start = self.text[..at]
            .rfind(|c: char| !is_word(c))
            .map_or(0, |i| i + 1);
        let end = self.text[at..]
            .find(|c: char| !is_word(c))
            .map_or(self.text.len(), |i| at + i);
        (start < end).then(|| (&self.text[start..end], Span::new(start, end)))
    }

    /// The track whose span holds `offset`.
    fn track_at(&self, offset: usize) -> Option<&ast::Track> {
        self.ast()
            .tracks
            .iter()
            .find(|t| t.span.start <= offset && offset <= t.span.end)
    }
}

/// Where a file's schema and dialect come from.
struct Project {
    schema: Option<Input>,
    dialect: SqlDialect,
    databases: Vec<trackc_compiler::SourceDatabase>,
}

impl Project {
    /// `trackc.toml` in the file's folder or a parent (`schema`, `dialect`),
    /// else `schema.sql` beside the file.
    fn of(uri: &Url) -> Project {
        let none = Project {
            schema: None,
            dialect: SqlDialect::Postgres,
            databases: Vec::new(),
        };
        let Ok(path) = uri.to_file_path() else {
            return none;
        };
        let read = |p: PathBuf| {
            std::fs::read(&p).ok().map(|bytes| Input {
                name: p.display().to_string(),
                bytes,
            })
        };
        // A project file that cannot be read counts as none: the editor
        // still gets the diagnostics of the file itself.
        if let Ok(Some(project)) = crate::project::Project::find(&path) {
            let dialect = project.dialect.unwrap_or(SqlDialect::Postgres);
            return Project {
                databases: crate::project::Project::databases(Some(&project), &[], dialect)
                    .unwrap_or_default(),
                schema: project.schema.clone().and_then(read),
                dialect,
            };
        }
        let beside = path.parent().map(|d| d.join("schema.sql"));
        Project {
            schema: beside.and_then(read),
            ..none
        }
    }
}

impl Server {
    fn notice(&mut self, n: Notification) -> Option<Notification> {
        let uri = match n.method.as_str() {
            DidOpenTextDocument::METHOD => {
                let p: DidOpenTextDocumentParams = serde_json::from_value(n.params).ok()?;
                let uri = p.text_document.uri;
                if is_test_file(&uri) {
                    let diagnostics = self.test_file_diagnostics(&uri, &p.text_document.text);
                    self.tests.insert(uri.clone(), p.text_document.text);
                    return Some(publish(uri, diagnostics));
                }
                self.documents
                    .insert(uri.clone(), Document::new(&uri, p.text_document.text));
                uri
            }
            DidChangeTextDocument::METHOD => {
                let p: DidChangeTextDocumentParams = serde_json::from_value(n.params).ok()?;
                let uri = p.text_document.uri;
                // Full sync: the last change holds the whole text.
                let text = p.content_changes.into_iter().last()?.text;
                if is_test_file(&uri) {
                    let diagnostics = self.test_file_diagnostics(&uri, &text);
                    self.tests.insert(uri.clone(), text);
                    return Some(publish(uri, diagnostics));
                }
                self.documents
                    .insert(uri.clone(), Document::new(&uri, text));
                uri
            }
            DidCloseTextDocument::METHOD => {
                let p: DidCloseTextDocumentParams = serde_json::from_value(n.params).ok()?;
                self.documents.remove(&p.text_document.uri);
                self.tests.remove(&p.text_document.uri);
                return Some(publish(p.text_document.uri, Vec::new()));
            }
            _ => return None,
        };
        let document = self.documents.get(&uri)?;
        let diagnostics = document
            .compilation
            .diagnostics
            .iter()
            .filter(|d| d.file == FileId(0))
            .map(|d| lsp_diagnostic(&uri, &document.text, &document.lines, d))
            .collect();
        Some(publish(uri, diagnostics))
    }

    fn answer(&mut self, request: Request) -> Response {
        let id = request.id.clone();
        let result = match request.method.as_str() {
            Formatting::METHOD => {
                self.with(request, |d, _: DocumentFormattingParams| formatting(d))
            }
            DocumentSymbolRequest::METHOD => {
                self.with(request, |d, _: DocumentSymbolParams| symbols(d))
            }
            GotoDefinition::METHOD => self.with(request, |d, p: GotoDefinitionParams| {
                let uri = p.text_document_position_params.text_document.uri.clone();
                let position = p.text_document_position_params.position;
                definition(d, &uri, position).or_else(|| {
                    let (word, span) = d.word_at(position)?;
                    let emitted = d.track_at(span.start).is_some_and(|t| {
                        emits(t).any(|e| e.span.start <= span.start && span.end <= e.span.end)
                    });
                    emitted.then(|| GotoDefinitionResponse::Array(self.listeners(&uri, word)))
                })
            }),
            References::METHOD => self.with(request, |d, p: ReferenceParams| {
                let uri = p.text_document_position.text_document.uri.clone();
                let spans = occurrences(d, p.text_document_position.position)?;
                Some(
                    spans
                        .into_iter()
                        .map(|s| Location::new(uri.clone(), d.range(s)))
                        .collect::<Vec<_>>(),
                )
            }),
            Rename::METHOD => self
                .with(request, |d, p: RenameParams| rename(d, &p))
                .and_then(|answer| {
                    // A refused rename is an error answer, not a result.
                    match serde_json::from_value::<Result<WorkspaceEdit, String>>(answer) {
                        Ok(Ok(edit)) => serde_json::to_value(edit).map_err(|e| e.to_string()),
                        Ok(Err(refusal)) => Err(refusal),
                        Err(e) => Err(e.to_string()),
                    }
                }),
            HoverRequest::METHOD => self.with(request, |d, p: HoverParams| {
                hover(d, p.text_document_position_params.position)
            }),
            Completion::METHOD => self.with(request, |d, p: CompletionParams| {
                let uri = p.text_document_position.text_document.uri.clone();
                completion(
                    d,
                    p.text_document_position.position,
                    || self.event_names(&uri),
                    || template_names(&uri),
                )
            }),
            CodeActionRequest::METHOD => {
                self.with(request, |d, p: CodeActionParams| code_actions(d, &p))
            }
            _ => Err(format!("`{}` is not supported", request.method)),
        };
        match result {
            Ok(value) => Response::new_ok(id, value),
            Err(message) => {
                Response::new_err(id, lsp_server::ErrorCode::InvalidRequest as i32, message)
            }
        }
    }

    /// Decodes a request's parameters, finds its document (named by
    /// `textDocument.uri`) and answers with `f`.
    fn with<P, R>(
        &self,
        request: Request,
        f: impl FnOnce(&Document, P) -> R,
    ) -> Result<serde_json::Value, String>
    where
        P: serde::de::DeserializeOwned,
        R: serde::Serialize,
    {
        let uri: Url = request
            .params
            .pointer("/textDocument/uri")
            .and_then(|u| serde_json::from_value(u.clone()).ok())
            .ok_or("no textDocument.uri")?;
        let params: P = serde_json::from_value(request.params)
            .map_err(|e| format!("`{}`: {e}", request.method))?;
        if self.tests.contains_key(&uri) {
            // Hover, definitions and the like are about tracks.
            return Ok(serde_json::Value::Null);
        }
        let document = self
            .documents
            .get(&uri)
            .ok_or_else(|| format!("{uri} is not open"))?;
        serde_json::to_value(f(document, params)).map_err(|e| e.to_string())
    }
}

impl Server {
    /// The track files of `uri`'s project (the folder of its trackc.toml,
    /// else its own folder), open ones as the editor holds them, with
    /// their syntax trees.
    fn project_files(&self, uri: &Url) -> Vec<(Url, String, ast::File)> {
        let mut files: Vec<(Url, String)> = Vec::new();
        if let Some(root) = uri.to_file_path().ok().and_then(|p| project_root(&p)) {
            let mut stack = vec![root];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if files.len() >= PROJECT_FILES_MAX {
                        break;
                    }
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|e| e == "dt") {
                        let (Ok(u), Ok(text)) =
                            (Url::from_file_path(&path), std::fs::read_to_string(&path))
                        else {
                            continue;
                        };
                        files.push((u, text));
                    }
                }
            }
        }
        for (u, doc) in &self.documents {
            match files.iter_mut().find(|(f, _)| f == u) {
                Some(f) => f.1.clone_from(&doc.text),
                None => files.push((u.clone(), doc.text.clone())),
            }
        }
        files
            .into_iter()
            .map(|(u, text)| {
                let (ast, _) = trackc_compiler::syntax::parser::parse_file(FileId(0), &text);
                (u, text, ast)
            })
            .collect()
    }

    /// The diagnostics of a test file: its syntax, and its tests checked
    /// against the track files of its folder (open ones as the editor
    /// holds them), as `trackc test` checks them.
    fn test_file_diagnostics(&self, uri: &Url, text: &str) -> Vec<LspDiagnostic> {
        let folder = uri
            .to_file_path()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from));
        let mut inputs: Vec<(Url, String)> = folder
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "dt"))
            .take(PROJECT_FILES_MAX)
            .filter_map(|p| {
                Some((
                    Url::from_file_path(&p).ok()?,
                    std::fs::read_to_string(&p).ok()?,
                ))
            })
            .collect();
        for (u, text) in &mut inputs {
            if let Some(open) = self.documents.get(u) {
                text.clone_from(&open.text);
            }
        }
        let project = Project::of(uri);
        let mut compilation = compile(
            inputs
                .into_iter()
                .map(|(u, text)| Input {
                    name: u.path().to_string(),
                    bytes: text.into_bytes(),
                })
                .collect(),
            Options {
                dialect: project.dialect,
                schema: project.schema,
                databases: project.databases,
            },
        );
        let (_, diagnostics) = check_test_file(&mut compilation, uri.path(), text);
        let lines = LineIndex::new(text);
        diagnostics
            .iter()
            .map(|d| lsp_diagnostic(uri, text, &lines, d))
            .collect()
    }

    /// Where tracks of the project listen for `event` (`on event NAME`).
    fn listeners(&self, uri: &Url, event: &str) -> Vec<Location> {
        let mut found = Vec::new();
        for (u, text, ast) in self.project_files(uri) {
            let lines = LineIndex::new(&text);
            for track in &ast.tracks {
                for item in &track.items {
                    if let TrackItem::Trigger(ast::Trigger {
                        kind: ast::TriggerKind::Event(name),
                        ..
                    }) = item
                    {
                        if name.name == event {
                            let range = Range::new(
                                lines.position(&text, name.span.start),
                                lines.position(&text, name.span.end),
                            );
                            found.push(Location::new(u.clone(), range));
                        }
                    }
                }
            }
        }
        found
    }

    /// Every event name the project's tracks listen for or emit.
    fn event_names(&self, uri: &Url) -> Vec<String> {
        let mut names: Vec<String> = self
            .project_files(uri)
            .iter()
            .flat_map(|(_, _, ast)| ast.tracks.iter())
            .flat_map(|t| {
                let on = t.items.iter().filter_map(|i| match i {
                    TrackItem::Trigger(ast::Trigger {
                        kind: ast::TriggerKind::Event(n),
                        ..
                    }) => Some(n.name.clone()),
                    _ => None,
                });
                on.chain(emits(t).map(|e| e.name.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The folder of the nearest trackc.toml above `path`, else its folder.
fn project_root(path: &std::path::Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|d| d.join(crate::project::PROJECT_FILE).is_file())
        .or(path.parent())
        .map(PathBuf::from)
}

/// The `emit` actions of a track: the event names.
fn emits(track: &ast::Track) -> impl Iterator<Item = &ast::Ident> {
    steps(track).flat_map(|s| {
        s.rules.iter().flat_map(|r| {
            r.actions.iter().filter_map(|a| match &a.kind {
                ActionKind::Emit(name) => Some(name),
                _ => None,
            })
        })
    })
}

/// The spans of the step or field under `position` in its track: its
/// declaration first, then its uses.
fn occurrences(d: &Document, position: Position) -> Option<Vec<Span>> {
    let (word, span) = d.word_at(position)?;
    let track = d.track_at(span.start)?;
    let contains = |s: Span| s.start <= span.start && span.end <= s.end;
    let is_step =
        steps(track).any(|s| contains(s.name.span)) || gotos(track).any(|(_, g)| contains(g.span));
    if is_step {
        let step = steps(track).find(|s| s.name.name == word)?;
        let mut spans = vec![step.name.span];
        spans.extend(
            gotos(track)
                .filter(|(_, g)| g.name == word)
                .map(|(_, g)| g.span),
        );
        return Some(spans);
    }
    let refs = field_refs(track);
    let declared = field_declaration(&d.text, track, word);
    let is_field = refs.iter().any(|f| contains(f.span)) || declared.is_some_and(contains);
    if !is_field {
        return None;
    }
    let mut spans: Vec<Span> = declared.into_iter().collect();
    spans.extend(refs.iter().filter(|f| f.name == word).map(|f| f.span));
    Some(spans)
}

/// Renames a step, or a field: its uses, its `fields` declaration, and in
/// the `source` query its alias (`x AS old` becomes `x AS new`) or, for a
/// bare column, an alias added (`old` becomes `old AS new`), so the query
/// still reads the same column.
fn rename(d: &Document, p: &RenameParams) -> Result<WorkspaceEdit, String> {
    let new = &p.new_name;
    let valid = new
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && new.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{new}` is not a name: letters, digits and `_`, not first a digit"
        ));
    }
    let position = p.text_document_position.position;
    let spans = occurrences(d, position).ok_or("only a step or a field can be renamed")?;
    let (old, _) = d.word_at(position).ok_or("no name here")?;
    let track = d.track_at(spans[0].start).ok_or("no track here")?;
    let in_query = track.items.iter().any(|i| match i {
        TrackItem::Source(s) => {
            s.sql.text_span.start <= spans[0].start && spans[0].end <= s.sql.text_span.end
        }
        _ => false,
    });
    let edits = spans
        .iter()
        .enumerate()
        .map(|(i, &span)| {
            let before = d.text[..span.start].trim_end();
            let aliased =
                before.len() >= 2 && before[before.len() - 2..].eq_ignore_ascii_case("as");
            let text = if i == 0 && in_query && !aliased {
                format!("{old} AS {new}")
            } else {
                new.clone()
            };
            TextEdit::new(d.range(span), text)
        })
        .collect();
    Ok(WorkspaceEdit {
        changes: Some(HashMap::from([(
            p.text_document_position.text_document.uri.clone(),
            edits,
        )])),
        ..WorkspaceEdit::default()
    })
}

fn publish(uri: Url, diagnostics: Vec<LspDiagnostic>) -> Notification {
    Notification::new(
        PublishDiagnostics::METHOD.to_string(),
        PublishDiagnosticsParams {
            uri,
            diagnostics,
            version: None,
        },
    )
}

fn lsp_diagnostic(uri: &Url, text: &str, lines: &LineIndex, d: &Diagnostic) -> LspDiagnostic {
    let range = |span: Span| {
        Range::new(
            lines.position(text, span.start),
            lines.position(text, span.end),
        )
    };
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    LspDiagnostic {
        range: range(d.span),
        severity: Some(match d.severity() {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(d.code.to_string())),
        source: Some("trackc".into()),
        message,
        related_information: (!d.labels.is_empty()).then(|| {
            d.labels
                .iter()
                .map(|l| DiagnosticRelatedInformation {
                    location: Location::new(uri.clone(), range(l.span)),
                    message: l.message.clone(),
                })
                .collect()
        }),
        ..LspDiagnostic::default()
    }
}

fn formatting(d: &Document) -> Option<Vec<TextEdit>> {
    let formatted = trackc_compiler::format::format_source(&d.text).ok()?;
    let end = d.lines.position(&d.text, d.text.len());
    Some(vec![TextEdit::new(
        Range::new(Position::new(0, 0), end),
        formatted,
    )])
}

#[allow(deprecated)] // DocumentSymbol's `deprecated` field must be given.
fn symbols(d: &Document) -> DocumentSymbolResponse {
    let symbol =
        |name: &str, detail: Option<String>, kind, span, name_span, children| DocumentSymbol {
            name: name.to_string(),
            detail,
            kind,
            tags: None,
            deprecated: None,
            range: d.range(span),
            selection_range: d.range(name_span),
            children,
        };
    let tracks = d
        .ast()
        .tracks
        .iter()
        .map(|t| {
            let steps = t
                .items
                .iter()
                .filter_map(|item| match item {
                    TrackItem::Step(s) => Some(symbol(
                        &s.name.name,
                        Some(format!("{} rules", s.rules.len())),
                        SymbolKind::FUNCTION,
                        s.span,
                        s.name.span,
                        None,
                    )),
                    _ => None,
                })
                .collect();
            symbol(
                &t.name.name,
                Some("track".into()),
                SymbolKind::MODULE,
                t.span,
                t.name.span,
                Some(steps),
            )
        })
        .collect();
    DocumentSymbolResponse::Nested(tracks)
}

fn steps(track: &ast::Track) -> impl Iterator<Item = &ast::Step> {
    track.items.iter().filter_map(|i| match i {
        TrackItem::Step(s) => Some(s),
        _ => None,
    })
}

/// The `goto` actions of a track, with the step each is in.
fn gotos(track: &ast::Track) -> impl Iterator<Item = (&ast::Step, &ast::Ident)> {
    steps(track).flat_map(|s| {
        s.rules.iter().flat_map(move |r| {
            r.actions.iter().filter_map(move |a| match &a.kind {
                ActionKind::Goto(target) => Some((s, target)),
                _ => None,
            })
        })
    })
}

/// Every field reference of a track's conditions and e-mail addresses.
fn field_refs(track: &ast::Track) -> Vec<&ast::Ident> {
    fn walk<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Ident>) {
        match &e.kind {
            ExprKind::Field(name) => out.push(name),
            ExprKind::Literal(_) => {}
            ExprKind::Call { args, .. } => args.iter().for_each(|a| walk(a, out)),
            ExprKind::Unary { operand, .. }
            | ExprKind::IsNull { operand, .. }
            | ExprKind::Like { operand, .. } => walk(operand, out),
            ExprKind::Binary { lhs, rhs, .. } => {
                walk(lhs, out);
                walk(rhs, out);
            }
            ExprKind::InList { operand, list, .. } => {
                walk(operand, out);
                list.iter().for_each(|a| walk(a, out));
            }
            ExprKind::Between {
                operand, low, high, ..
            } => {
                walk(operand, out);
                walk(low, out);
                walk(high, out);
            }
        }
    }
    let mut out = Vec::new();
    for step in steps(track) {
        for rule in &step.rules {
            if let Some(c) = &rule.condition {
                walk(c, &mut out);
            }
            for a in &rule.actions {
                if let ActionKind::Email { to: Some(e), .. } = &a.kind {
                    walk(e, &mut out);
                }
            }
        }
    }
    out
}

/// Where a field is declared: in `fields { … }`, else the first whole-word
/// mention of it in the source query.
fn field_declaration(text: &str, track: &ast::Track, name: &str) -> Option<Span> {
    for item in &track.items {
        if let TrackItem::Fields(f) = item {
            if let Some(decl) = f.fields.iter().find(|d| d.name.name == name) {
                return Some(decl.name.span);
            }
        }
    }
    let source = track.items.iter().find_map(|i| match i {
        TrackItem::Source(s) => Some(s),
        _ => None,
    })?;
    let sql = &text[source.sql.text_span.start..source.sql.text_span.end];
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = sql[from..].find(name) {
        let start = from + i;
        let end = start + name.len();
        let before = sql[..start].chars().next_back().is_none_or(|c| !is_word(c));
        let after = sql[end..].chars().next().is_none_or(|c| !is_word(c));
        if before && after {
            let base = source.sql.text_span.start;
            return Some(Span::new(base + start, base + end));
        }
        from = end;
    }
    None
}

fn definition(d: &Document, uri: &Url, position: Position) -> Option<GotoDefinitionResponse> {
    let (word, span) = d.word_at(position)?;
    let track = d.track_at(span.start)?;
    let contains = |s: Span| s.start <= span.start && span.end <= s.end;
    let target = if gotos(track).any(|(_, g)| contains(g.span)) {
        steps(track).find(|s| s.name.name == word)?.name.span
    } else if field_refs(track).iter().any(|f| contains(f.span)) {
        field_declaration(&d.text, track, word)?
    } else {
        // An e-mail's template: its file under the project's templates/.
        let template = steps(track)
            .flat_map(|s| s.rules.iter().flat_map(|r| r.actions.iter()))
            .find_map(|a| match &a.kind {
                ActionKind::Email { template, .. } if contains(template.span) => Some(template),
                _ => None,
            })?;
        let dir = project_root(&uri.to_file_path().ok()?)?.join("templates");
        let file = ["txt", "html"]
            .iter()
            .map(|ext| dir.join(format!("{}.{ext}", template.value)))
            .find(|f| f.is_file())?;
        let start = Position::new(0, 0);
        return Some(GotoDefinitionResponse::Scalar(Location::new(
            Url::from_file_path(file).ok()?,
            Range::new(start, start),
        )));
    };
    Some(GotoDefinitionResponse::Scalar(Location::new(
        uri.clone(),
        d.range(target),
    )))
}

/// The template names of the project: `templates/NAME.txt` or `.html`.
fn template_names(uri: &Url) -> Vec<String> {
    let Some(dir) = uri
        .to_file_path()
        .ok()
        .and_then(|p| project_root(&p))
        .map(|r| r.join("templates"))
    else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let ext = path.extension()?.to_str()?;
            matches!(ext, "txt" | "html").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .take(PROJECT_FILES_MAX)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn markdown(text: String) -> Hover {
    Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value: text,
        }),
        range: None,
    }
}

fn hover(d: &Document, position: Position) -> Option<Hover> {
    let (word, span) = d.word_at(position)?;
    let track = d.track_at(span.start)?;
    let contains = |s: Span| s.start <= span.start && span.end <= s.end;
    if field_refs(track).iter().any(|f| contains(f.span)) {
        let ir = d
            .compilation
            .program
            .tracks
            .iter()
            .find(|t| t.name == track.name.name)?;
        let field = ir.fields.iter().find(|f| f.name == word)?;
        let from = if field_declaration(&d.text, track, word).is_some() {
            "from the track's `source` query"
        } else {
            "declared in `fields`"
        };
        return Some(markdown(format!(
            "`{word}`: {}{}, {from}",
            field.ty,
            if field.nullable { " (may be null)" } else { "" }
        )));
    }
    let is_step =
        steps(track).any(|s| contains(s.name.span)) || gotos(track).any(|(_, g)| contains(g.span));
    if is_step {
        let step = steps(track).find(|s| s.name.name == word)?;
        let mut from: Vec<&str> = gotos(track)
            .filter(|(_, g)| g.name == word)
            .map(|(s, _)| s.name.name.as_str())
            .collect();
        from.dedup();
        let first = steps(track).next().is_some_and(|s| s.name.name == word);
        return Some(markdown(format!(
            "step `{word}`: {} rule{}{}; {}{}",
            step.rules.len(),
            if step.rules.len() == 1 { "" } else { "s" },
            step.wait
                .as_ref()
                .map(|w| format!(", waits {}", &d.text[w.span.start..w.span.end]))
                .unwrap_or_default(),
            if first { "records enter here" } else { "" },
            if from.is_empty() {
                String::new()
            } else {
                format!(
                    "{}entered from {}",
                    if first { ", and " } else { "" },
                    from.iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )));
    }
    if let Some((_, signature)) = FUNCTIONS.iter().find(|(name, _)| *name == word) {
        return Some(markdown(format!("`{signature}`")));
    }
    if let Some((_, meaning)) = KEYWORDS.iter().find(|(name, _)| *name == word) {
        return Some(markdown(format!("`{word}`: {meaning}")));
    }
    if word.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        let micros = trackc_compiler::syntax::literals::parse_duration(word)?;
        return Some(markdown(format!("`{word}` = {} s", micros as f64 / 1e6)));
    }
    None
}

fn completion(
    d: &Document,
    position: Position,
    events: impl FnOnce() -> Vec<String>,
    templates: impl FnOnce() -> Vec<String>,
) -> CompletionResponse {
    let at = d.lines.offset(&d.text, position);
    // The word being typed (a template name may hold `-`, after a quote).
    let before =
        d.text[..at].trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let quoted = before.ends_with('\'');
    let before = before.trim_end_matches('\'');
    let previous = before
        .trim_end()
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("");
    let item = |label: &str, kind, detail: Option<String>| CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail,
        ..CompletionItem::default()
    };
    let Some(track) = d.track_at(at) else {
        return CompletionResponse::Array(vec![item("track", CompletionItemKind::KEYWORD, None)]);
    };
    // `email` as an action (after `then`, `else` or a comma), not a field.
    let action_email = previous == "email" && {
        let head = before
            .trim_end()
            .strip_suffix("email")
            .unwrap_or("")
            .trim_end();
        head.ends_with(',') || head.ends_with("then") || head.ends_with("else")
    };
    if action_email {
        return CompletionResponse::Array(
            templates()
                .iter()
                .map(|t| {
                    let label = if quoted { t.clone() } else { format!("'{t}'") };
                    item(&label, CompletionItemKind::FILE, Some("template".into()))
                })
                .collect(),
        );
    }
    if previous == "emit" || previous == "event" {
        return CompletionResponse::Array(
            events()
                .iter()
                .map(|e| item(e, CompletionItemKind::EVENT, Some("event".into())))
                .collect(),
        );
    }
    if previous == "goto" {
        // Steps that do not parse while being typed are still offered:
        // the names after the word `step` in the track's text.
        let text = &d.text[track.span.start..track.span.end.min(d.text.len())];
        let words: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let mut names: Vec<&str> = steps(track)
            .map(|s| s.name.name.as_str())
            .chain(words.windows(2).filter(|w| w[0] == "step").map(|w| w[1]))
            .collect();
        names.sort_unstable();
        names.dedup();
        return CompletionResponse::Array(
            names
                .into_iter()
                .map(|s| item(s, CompletionItemKind::FUNCTION, Some("step".into())))
                .collect(),
        );
    }
    let mut items = Vec::new();
    if let Some(ir) = d
        .compilation
        .program
        .tracks
        .iter()
        .find(|t| t.name == track.name.name)
    {
        items.extend(ir.fields.iter().map(|f| {
            item(
                &f.name,
                CompletionItemKind::FIELD,
                Some(format!("{}{}", f.ty, if f.nullable { "?" } else { "" })),
            )
        }));
    }
    items.extend(
        FUNCTIONS
            .iter()
            .map(|(name, sig)| item(name, CompletionItemKind::FUNCTION, Some(sig.to_string()))),
    );
    items.extend(
        KEYWORDS.iter().map(|(name, meaning)| {
            item(name, CompletionItemKind::KEYWORD, Some(meaning.to_string()))
        }),
    );
    CompletionResponse::Array(items)
}

/// A quick fix for each diagnostic whose help names a replacement: "did
/// you mean `score`?" replaces the diagnostic's span with `score`.
fn code_actions(d: &Document, params: &CodeActionParams) -> Vec<CodeActionOrCommand> {
    let uri = &params.text_document.uri;
    d.compilation
        .diagnostics
        .iter()
        .filter(|diag| diag.file == FileId(0))
        .filter(|diag| {
            let r = d.range(diag.span);
            r.start <= params.range.end && params.range.start <= r.end
        })
        .filter_map(|diag| {
            let help = diag.help.as_deref()?;
            let suggestion = help.strip_prefix("did you mean `")?.split('`').next()?;
            let edit = TextEdit::new(d.range(diag.span), suggestion.to_string());
            Some(CodeActionOrCommand::CodeAction(CodeAction {
                title: format!("replace with `{suggestion}`"),
                kind: Some(CodeActionKind::QUICKFIX),
                diagnostics: Some(vec![lsp_diagnostic(uri, &d.text, &d.lines, diag)]),
                edit: Some(WorkspaceEdit {
                    changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
                    ..WorkspaceEdit::default()
                }),
                is_preferred: Some(true),
                ..CodeAction::default()
            }))
        })
        .collect()
}

/// Byte offsets of line starts, to turn offsets into LSP positions (line,
/// UTF-16 code units) and back.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn position(&self, text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column: usize = text
            .get(start..offset)
            .unwrap_or("")
            .chars()
            .map(char::len_utf16)
            .sum();
        Position::new(line as u32, column as u32)
    }

    fn offset(&self, text: &str, position: Position) -> usize {
        let Some(&start) = self.starts.get(position.line as usize) else {
            return text.len();
        };
        let mut units = 0;
        for (i, c) in text[start..].char_indices() {
            if units >= position.character as usize || c == '\n' {
                return start + i;
            }
            units += c.len_utf16();
        }
        text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units_both_ways() {
        let text = "a\n\u{e9}\u{1F600}x\n";
        let lines = LineIndex::new(text);
        // é is one UTF-16 unit, 😀 two.
        let x = text.find('x').unwrap();
        assert_eq!(lines.position(text, x), Position::new(1, 3));
        assert_eq!(lines.offset(text, Position::new(1, 3)), x);
        assert_eq!(lines.position(text, text.len()), Position::new(2, 0));
        assert_eq!(lines.offset(text, Position::new(9, 0)), text.len());
    }

    #[test]
    fn a_field_is_declared_by_its_whole_word_in_the_query() {
        let text = "track t { source key id { SELECT id, scoreboard, score FROM c } \
                    step s { when score > 1 then end } }";
        let c = trackc_compiler::compile_str("t.dt", text, None);
        let span = field_declaration(text, &c.asts[0].tracks[0], "score").unwrap();
        assert_eq!(&text[span.start..span.end], "score");
        assert!(text[..span.start].ends_with("scoreboard, "));
    }
}
