//! The `trackc` command line. Parsing arguments, reading files and choosing
//! exit codes live here; everything else is in the libraries.
//!
//! Exit codes: 0 clean (or warnings only), 1 errors in the tracks, 2 usage or
//! I/O problems (a file that cannot be read, records that are not JSON).

mod audit_cli;
mod balance_cli;
mod fmt_cli;
mod group_cli;
mod lsp;
mod operate;
mod plan_cli;
mod project;
mod serve_cli;
mod test_cli;
mod versions_cli;
mod why_cli;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use trackc_compiler::block::{key_text, BlockBuilder, DEFAULT_BLOCK_RECORDS};
use trackc_compiler::diagnostics::{render_human, render_json};
use trackc_compiler::interp::{eval_block, Env};
use trackc_compiler::jit::{clif_program, CompiledStep, Jit};
use trackc_compiler::{compile, decision, ir, syntax, Compilation, Input, Options, SqlDialect};

#[derive(Parser)]
#[command(
    name = "trackc",
    version,
    about = "Compiler and runtime for decision tracks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct CompileArgs {
    /// A file of `CREATE TABLE` statements to check SQL and field types against
    /// [default: `schema` of the files' trackc.toml]; `NAME=FILE.sql` (repeatable) gives a
    /// source database's (`source from NAME`).
    #[arg(long, value_name = "[NAME=]FILE.sql")]
    schema: Vec<String>,
    /// The SQL dialect of embedded SQL blocks and the schema [default: `dialect` of the
    /// files' trackc.toml, else postgres].
    #[arg(long, value_enum)]
    dialect: Option<Dialect>,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check tracks; report every problem found.
    Check {
        #[command(flatten)]
        compile: CompileArgs,
        /// `human` for people (ariadne reports), `json` for tools (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        #[arg(required = true, value_name = "FILES")]
        files: Vec<PathBuf>,
    },
    /// Print compiled output in a stable text form.
    Build {
        #[command(flatten)]
        compile: CompileArgs,
        /// What to print: the syntax tree, the typed IR, or Cranelift IR.
        #[arg(long, value_enum)]
        emit: Emit,
        #[arg(required = true, value_name = "FILES")]
        files: Vec<PathBuf>,
    },
    /// Evaluate one step of a track over records (JSON lines in, decisions out).
    Eval {
        #[command(flatten)]
        compile: CompileArgs,
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        track: String,
        #[arg(long)]
        step: String,
        /// JSON lines, one object per record with a member per field (`-` for stdin).
        #[arg(long, value_name = "R.jsonl")]
        records: PathBuf,
        /// `jit`: the step compiled to native code; `interp`: the reference interpreter.
        #[arg(long, value_enum, default_value_t = Engine::Jit)]
        engine: Engine,
        /// The evaluation instant for `now()` (RFC 3339); default: the current time.
        #[arg(long, value_name = "TS")]
        now: Option<String>,
    },
    /// Draw tracks' steps as a graph: Graphviz DOT or a Mermaid flowchart on stdout.
    Graph {
        #[command(flatten)]
        compile: CompileArgs,
        /// Only this track [default: every track of the files].
        #[arg(long)]
        track: Option<String>,
        #[arg(long, value_enum, default_value_t = GraphFormatArg::Dot)]
        format: GraphFormatArg,
        #[arg(required = true, value_name = "FILES")]
        files: Vec<PathBuf>,
    },
    /// A language server over stdio (diagnostics, hover, definitions, completion, symbols,
    /// formatting, quick fixes), for editors.
    Lsp,
    /// Rewrite track files in the one canonical layout (`--check`: show the difference,
    /// exit 1).
    Fmt(fmt_cli::FmtArgs),
    /// Run the tests of tracks (`*.dt.test`): each test's records through its step, the
    /// fired rule, effects and next step against what the test expects.
    Test(test_cli::TestArgs),
    /// Run tracks on one node against a database, by their triggers.
    Run(operate::RunArgs),
    /// What deploying tracks now would do: differences, records per step, how many due
    /// records each rule would fire for, stranded records. Writes nothing.
    Plan(plan_cli::PlanArgs),
    /// A record's path through a track: each decision, the rule and the values it read, the
    /// effects and their delivery, and where the record waits now.
    Why(why_cli::WhyArgs),
    /// The outbox of e-mails and webhooks: list it, deliver it, re-queue parked rows.
    #[command(subcommand)]
    Outbox(operate::OutboxCommand),
    /// The web console and the API of one database, without a group.
    Serve(serve_cli::ServeArgs),
    /// The zero-set-up tour: synthetic contacts in SQLite, the example tracks run over them.
    Demo(operate::DemoArgs),
    /// One peer of a group, as its node.toml says.
    Node(group_cli::NodeArgs),
    /// Check tracks and deploy them to a running group.
    Deploy(group_cli::DeployArgs),
    /// The group as a node sees it: nodes, master, tracks, owners.
    Status(group_cli::StatusArgs),
    /// Make a node hand its tracks over, finish its blocks and leave.
    Drain(group_cli::DrainArgs),
    /// Hand a track to a chosen node at the end of its current run; it stays there.
    Move(balance_cli::MoveArgs),
    /// The moves the group would make to even out the load, and each node's load.
    Rebalance(balance_cli::RebalanceArgs),
    /// Raise an event for a record.
    Emit(group_cli::EmitArgs),
    /// The deploys kept in the deploy history: number, when, who, what changed, files.
    Versions(versions_cli::VersionsArgs),
    /// Ship an earlier deploy's files and schema again, with the checks of any deploy.
    Rollback(versions_cli::RollbackArgs),
    /// The audit log: deploys, rollbacks, drains, emits, outbox retries, refused requests.
    Audit(audit_cli::AuditArgs),
    /// Bearer tokens for the group's API.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A fresh random token and the node.toml entry that admits it.
    New(group_cli::TokenNewArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormatArg {
    Dot,
    Mermaid,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Ast,
    Ir,
    Clif,
}

#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    Jit,
    Interp,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dialect {
    Postgres,
    Sqlite,
}

/// A failure that is not about the tracks themselves: exit code 2.
pub(crate) struct UsageError(String, Option<std::io::ErrorKind>);

impl From<std::io::Error> for UsageError {
    fn from(e: std::io::Error) -> Self {
        UsageError(e.to_string(), Some(e.kind()))
    }
}

pub(crate) fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into(), None)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            compile,
            format,
            files,
        } => check(&compile, format, &files),
        Command::Build {
            compile,
            emit,
            files,
        } => build(&compile, emit, &files),
        Command::Eval {
            compile,
            file,
            track,
            step,
            records,
            engine,
            now,
        } => eval(
            &compile,
            &file,
            &track,
            &step,
            &records,
            engine,
            now.as_deref(),
        ),
        Command::Graph {
            compile,
            track,
            format,
            files,
        } => graph(&compile, track.as_deref(), format, &files),
        Command::Fmt(args) => fmt_cli::fmt(&args),
        Command::Test(args) => test_cli::test(&args),
        Command::Lsp => lsp::run(),
        Command::Run(args) => operate::run(&args),
        Command::Why(args) => why_cli::why(&args),
        Command::Plan(args) => plan_cli::plan(&args),
        Command::Demo(args) => operate::demo(&args),
        Command::Serve(args) => serve_cli::serve(&args),
        Command::Outbox(command) => operate::outbox(&command),
        Command::Node(args) => group_cli::node(&args),
        Command::Deploy(args) => group_cli::deploy(&args),
        Command::Status(args) => group_cli::status(&args),
        Command::Drain(args) => group_cli::drain(&args),
        Command::Move(args) => balance_cli::move_track(&args),
        Command::Rebalance(args) => balance_cli::rebalance(&args),
        Command::Emit(args) => group_cli::emit(&args),
        Command::Versions(args) => versions_cli::versions(&args),
        Command::Rollback(args) => versions_cli::rollback(&args),
        Command::Audit(args) => audit_cli::audit(&args),
        Command::Token(TokenCommand::New(args)) => group_cli::token_new(&args),
    };
    match result {
        Ok(code) => code,
        // A reader that went away (`trackc … | head`) is not worth a message.
        Err(UsageError(_, Some(std::io::ErrorKind::BrokenPipe))) => ExitCode::SUCCESS,
        Err(UsageError(message, _)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> Result<Input, UsageError> {
    let bytes =
        std::fs::read(path).map_err(|e| usage(format!("cannot read `{}`: {e}", path.display())))?;
    Ok(Input {
        name: path.display().to_string(),
        bytes,
    })
}

fn compile_files(args: &CompileArgs, files: &[PathBuf]) -> Result<Compilation, UsageError> {
    let inputs = files
        .iter()
        .map(|f| read(f))
        .collect::<Result<Vec<_>, _>>()?;
    // The project file of the first file fills in what the command line
    // does not say.
    let project = match files.first() {
        Some(f) => project::Project::find(f).map_err(usage)?,
        None => None,
    };
    let (given, named) = project::split_schemas(&args.schema).map_err(usage)?;
    let schema_path = given.or_else(|| project.as_ref().and_then(|p| p.schema.clone()));
    let schema = schema_path.as_deref().map(read).transpose()?;
    let dialect = match args.dialect {
        Some(Dialect::Postgres) => SqlDialect::Postgres,
        Some(Dialect::Sqlite) => SqlDialect::Sqlite,
        None => project
            .as_ref()
            .and_then(|p| p.dialect)
            .unwrap_or(SqlDialect::Postgres),
    };
    let databases =
        project::Project::databases(project.as_ref(), &named, dialect).map_err(usage)?;
    Ok(compile(
        inputs,
        Options {
            dialect,
            schema,
            databases,
        },
    ))
}

/// Prints diagnostics for people on stderr (colour only on a terminal), and
/// a summary line.
fn report_human(compilation: &Compilation) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut err = std::io::stderr().lock();
    for d in &compilation.diagnostics {
        let _ = write!(err, "{}", render_human(d, &compilation.files, color));
    }
    let (errors, warnings) = (compilation.error_count(), compilation.warning_count());
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let tracks: usize = compilation.asts.iter().map(|f| f.tracks.len()).sum();
    let _ = writeln!(
        err,
        "checked {} and {}: {}, {}",
        plural(compilation.asts.len(), "file"),
        plural(tracks, "track"),
        plural(errors, "error"),
        plural(warnings, "warning"),
    );
}

fn check(args: &CompileArgs, format: Format, files: &[PathBuf]) -> Result<ExitCode, UsageError> {
    let compilation = compile_files(args, files)?;
    match format {
        Format::Human => report_human(&compilation),
        Format::Json => {
            let mut out = std::io::stdout().lock();
            for d in &compilation.diagnostics {
                writeln!(out, "{}", render_json(d, &compilation.files))?;
            }
        }
    }
    Ok(exit_for(&compilation))
}

fn exit_for(compilation: &Compilation) -> ExitCode {
    if compilation.error_count() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn build(args: &CompileArgs, emit: Emit, files: &[PathBuf]) -> Result<ExitCode, UsageError> {
    let compilation = compile_files(args, files)?;
    if compilation.error_count() > 0 {
        report_human(&compilation);
        return Ok(ExitCode::from(1));
    }
    let text = match emit {
        Emit::Ast => compilation
            .asts
            .iter()
            .map(print_ast)
            .collect::<Vec<_>>()
            .join("\n"),
        Emit::Ir => ir::print_program(&compilation.program),
        Emit::Clif => {
            let jit = Jit::new().map_err(|e| usage(e.to_string()))?;
            clif_program(&jit, &compilation.program).map_err(|e| usage(e.to_string()))?
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn graph(
    args: &CompileArgs,
    track: Option<&str>,
    format: GraphFormatArg,
    files: &[PathBuf],
) -> Result<ExitCode, UsageError> {
    use trackc_compiler::graph::{of_compilation, render, GraphFormat};
    let compilation = compile_files(args, files)?;
    if compilation.error_count() > 0 {
        report_human(&compilation);
        return Ok(ExitCode::from(1));
    }
    let mut graphs = of_compilation(&compilation);
    if let Some(name) = track {
        graphs.retain(|g| g.track.name == name);
        if graphs.is_empty() {
            let names: Vec<&str> = compilation
                .program
                .tracks
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            let hint = trackc_compiler::diagnostics::did_you_mean(name, names.iter().copied())
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Err(usage(format!(
                "no track `{name}` in the files given (tracks: {}){hint}",
                names.join(", ")
            )));
        }
    }
    let format = match format {
        GraphFormatArg::Dot => GraphFormat::Dot,
        GraphFormatArg::Mermaid => GraphFormat::Mermaid,
    };
    print!("{}", render(&graphs, format));
    Ok(ExitCode::SUCCESS)
}

/// The rule that fires for each record of `block`, by the JIT when a
/// compiled step is given, else by the interpreter.
fn decide(
    compiled: Option<&CompiledStep>,
    step: &ir::Step,
    block: &trackc_compiler::block::Block,
    env: Env,
) -> Result<Vec<Option<usize>>, UsageError> {
    match compiled {
        Some(c) => c.eval(block, env).map_err(|e| usage(e.to_string())),
        None => Ok(eval_block(step, block, env)),
    }
}

fn print_ast(file: &syntax::ast::File) -> String {
    format!("{:#?}\n", file.tracks)
}

fn eval(
    args: &CompileArgs,
    file: &Path,
    track_name: &str,
    step_name: &str,
    records: &Path,
    engine: Engine,
    now: Option<&str>,
) -> Result<ExitCode, UsageError> {
    let now = match now {
        Some(text) => {
            syntax::literals::parse_timestamp(text).map_err(|e| usage(format!("--now: {e}")))?
        }
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0),
    };
    let compilation = compile_files(args, std::slice::from_ref(&file.to_path_buf()))?;
    if compilation.error_count() > 0 {
        report_human(&compilation);
        return Ok(ExitCode::from(1));
    }
    let program = &compilation.program;
    let track = program
        .tracks
        .iter()
        .find(|t| t.name == track_name)
        .ok_or_else(|| {
            let names: Vec<&str> = program.tracks.iter().map(|t| t.name.as_str()).collect();
            usage(format!(
                "no track `{track_name}` in `{}` (tracks: {})",
                file.display(),
                names.join(", ")
            ))
        })?;
    let step = track
        .step(step_name)
        .map(|i| &track.steps[i])
        .ok_or_else(|| {
            let names: Vec<&str> = track.steps.iter().map(|s| s.name.as_str()).collect();
            usage(format!(
                "no step `{step_name}` in track `{track_name}` (steps: {})",
                names.join(", ")
            ))
        })?;
    let reader: Box<dyn BufRead> = if records == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(records)
            .map_err(|e| usage(format!("cannot read `{}`: {e}", records.display())))?;
        Box::new(std::io::BufReader::new(f))
    };
    let env = Env { now };
    let types: Vec<_> = track.fields.iter().map(|f| f.ty).collect();
    let compiled = match engine {
        Engine::Jit => {
            let jit = Jit::new().map_err(|e| usage(e.to_string()))?;
            Some(
                jit.compile(&types, step)
                    .map_err(|e| usage(e.to_string()))?,
            )
        }
        Engine::Interp => None,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Records are decided a block at a time, so memory stays bounded by the
    // block size however many records come in.
    let mut records_in_block: Vec<Vec<trackc_compiler::value::Value>> = Vec::new();
    let mut lines = reader.lines().enumerate();
    loop {
        let mut builder = BlockBuilder::new(&types);
        records_in_block.clear();
        for (n, line) in lines.by_ref() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let at = |e: String| usage(format!("{}:{}: {e}", records.display(), n + 1));
            let record = decision::parse_record(track, &line).map_err(at)?;
            let key = key_text(&record[track.key]).unwrap_or_default();
            builder.push(&key, &record).map_err(|e| at(e.to_string()))?;
            records_in_block.push(record);
            if builder.len() == DEFAULT_BLOCK_RECORDS {
                break;
            }
        }
        if builder.is_empty() {
            break;
        }
        let block = builder.finish();
        let fired = decide(compiled.as_deref(), step, &block, env)?;
        for (record, fired) in records_in_block.iter().zip(fired) {
            writeln!(
                out,
                "{}",
                decision::decision(track, step, record, fired, env)
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
