//! `trackc test [DIR|FILES]`: runs the tests of tracks (`*.dt.test` files,
//! compiler/src/testing.rs) and reports each test, what failed with the
//! values the conditions read, and `N passed, N failed`.
//!
//! Which files: a directory stands for its `*.dt` and `*.dt.test` files
//! (and its `schema.sql`); a test file brings the `*.dt` files of its
//! folder; a track file brings its test file (`x.dt` → `x.dt.test`) when
//! there is one. Exit codes: 0 all passed, 1 a test failed or a file has
//! errors, 2 usage.

use crate::{compile_files, report_human, usage, CompileArgs, Format, UsageError};
use serde_json::{json, Value as Json};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use trackc_compiler::decision::value_json;
use trackc_compiler::diagnostics::render_json;
use trackc_compiler::ir::{Program, Transition};
use trackc_compiler::jit::Jit;
use trackc_compiler::span::FileId;
use trackc_compiler::testing::{check_test_file, rule_text, run_test, CheckedTest, TestOutcome};
use trackc_compiler::Compilation;

/// The most test files one run reads: far more than a project has, and a
/// bound on what a mistaken path (`/`) makes trackc read.
pub const TEST_FILES_MAX: usize = 1_000;
/// The longest test file: 1 MiB, like a track file (bundle.rs).
pub const TEST_FILE_BYTES_MAX: u64 = 1 << 20;

#[derive(clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    compile: CompileArgs,
    /// `human` for people, `json` for tools (one object).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Test files (`*.dt.test`), track files, or directories of them [default: `.`].
    #[arg(value_name = "DIR|FILES")]
    paths: Vec<PathBuf>,
}

/// What a run reads: track files, test files, and the first `schema.sql`
/// found in the folders of the paths, if there is one.
struct Gathered {
    tracks: Vec<PathBuf>,
    tests: Vec<PathBuf>,
    schema: Option<PathBuf>,
}

/// The track files and test files `paths` stand for, each once, in order.
fn gather(paths: &[PathBuf]) -> Result<Gathered, UsageError> {
    let mut tracks: Vec<PathBuf> = Vec::new();
    let mut tests: Vec<PathBuf> = Vec::new();
    let mut schema = None;
    let is_test = |p: &Path| p.to_string_lossy().ends_with(".dt.test");
    let is_track = |p: &Path| p.extension().is_some_and(|x| x == "dt");
    let dir_files = |dir: &Path| -> Result<Vec<PathBuf>, UsageError> {
        let mut here: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| usage(format!("cannot read `{}`: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && (is_track(f) || is_test(f)))
            .collect();
        here.sort();
        Ok(here)
    };
    let add = |list: &mut Vec<PathBuf>, p: PathBuf| {
        if !list.contains(&p) {
            list.push(p);
        }
    };
    let defaults = [PathBuf::from(".")];
    let paths = if paths.is_empty() {
        &defaults[..]
    } else {
        paths
    };
    for p in paths {
        let folder = if p.is_dir() {
            p.clone()
        } else {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        if p.is_dir() {
            for f in dir_files(p)? {
                if is_test(&f) {
                    add(&mut tests, f);
                } else {
                    add(&mut tracks, f);
                }
            }
        } else if is_test(p) {
            add(&mut tests, p.clone());
            for f in dir_files(&folder)?.into_iter().filter(|f| is_track(f)) {
                add(&mut tracks, f);
            }
        } else if is_track(p) {
            add(&mut tracks, p.clone());
            let beside = PathBuf::from(format!("{}.test", p.display()));
            if beside.is_file() {
                add(&mut tests, beside);
            }
        } else if !p.exists() {
            return Err(usage(format!("`{}` does not exist", p.display())));
        } else {
            return Err(usage(format!(
                "`{}` is neither a test file (`*.dt.test`) nor a track file (`*.dt`)",
                p.display()
            )));
        }
        if schema.is_none() && folder.join("schema.sql").is_file() {
            schema = Some(folder.join("schema.sql"));
        }
    }
    if tests.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
        return Err(usage(format!(
            "no test files (`*.dt.test`) in {}",
            names.join(", ")
        )));
    }
    if tests.len() > TEST_FILES_MAX {
        return Err(usage(format!(
            "{} test files: at most {TEST_FILES_MAX} in one run",
            tests.len()
        )));
    }
    Ok(Gathered {
        tracks,
        tests,
        schema,
    })
}

/// One test file's tests, checked, and where they came from.
struct Suite {
    file: FileId,
    tests: Vec<CheckedTest>,
}

pub fn test(args: &TestArgs) -> Result<ExitCode, UsageError> {
    let Gathered {
        tracks,
        tests: test_files,
        schema: schema_beside,
    } = gather(&args.paths)?;
    // `schema.sql` beside the files is the schema when neither the command
    // line nor a trackc.toml names one, as for the language server.
    let project = match tracks.first().or(test_files.first()) {
        Some(f) => crate::project::Project::find(f).map_err(usage)?,
        None => None,
    };
    // The state database's schema: the command line's, else the project
    // file's, else the one beside the files; named ones pass through.
    let mut schema = args.compile.schema.clone();
    let (given, _) = crate::project::split_schemas(&schema).map_err(usage)?;
    if given.is_none() {
        if let Some(found) = project.and_then(|p| p.schema).or(schema_beside) {
            schema.push(found.display().to_string());
        }
    }
    let compile_args = CompileArgs {
        schema,
        dialect: args.compile.dialect,
    };
    let mut compilation = compile_files(&compile_args, &tracks)?;
    let mut suites = Vec::new();
    for path in &test_files {
        let size = std::fs::metadata(path)
            .map_err(|e| usage(format!("cannot read `{}`: {e}", path.display())))?
            .len();
        if size > TEST_FILE_BYTES_MAX {
            return Err(usage(format!(
                "`{}` is {size} bytes: a test file is at most {TEST_FILE_BYTES_MAX}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read `{}`: {e}", path.display())))?;
        let id = FileId(compilation.files.len() as u32);
        let name = path.display().to_string();
        let (tests, diagnostics) = check_test_file(&mut compilation, &name, &text);
        compilation.diagnostics.extend(diagnostics);
        suites.push(Suite { file: id, tests });
    }
    if compilation.error_count() > 0 {
        // Tests of tracks that do not compile, or tests that do not check,
        // would say nothing true: none runs, as with a compiler's tests.
        match args.format {
            Format::Human => {
                report_human(&compilation);
                eprintln!("no test ran: fix the errors first");
            }
            Format::Json => {
                let report = json!({
                    "diagnostics": diagnostics_json(&compilation),
                    "tests": [],
                    "passed": 0,
                    "failed": 0,
                });
                println!("{report}");
            }
        }
        return Ok(ExitCode::from(1));
    }
    if compilation.warning_count() > 0 && matches!(args.format, Format::Human) {
        report_human(&compilation);
    }
    let jit = Jit::new().map_err(|e| usage(e.to_string()))?;
    let mut results = Vec::new();
    for suite in &suites {
        for test in &suite.tests {
            let outcome = run_test(&compilation.program, &jit, test).map_err(|e| {
                usage(format!(
                    "{}: test '{}' could not run: {e}",
                    compilation.files[suite.file.0 as usize].name, test.name
                ))
            })?;
            results.push((test, outcome));
        }
    }
    let failed = results.iter().filter(|(_, o)| !o.passed()).count();
    let passed = results.len() - failed;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Human => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let text = human_report(&compilation, &results, color);
            write!(out, "{text}")?;
        }
        Format::Json => {
            let tests: Vec<Json> = results
                .iter()
                .map(|(t, o)| test_json(&compilation, t, o))
                .collect();
            let report = json!({
                "diagnostics": diagnostics_json(&compilation),
                "tests": tests,
                "passed": passed,
                "failed": failed,
            });
            writeln!(out, "{report}")?;
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn diagnostics_json(compilation: &Compilation) -> Vec<Json> {
    compilation
        .diagnostics
        .iter()
        .filter_map(|d| serde_json::from_str(&render_json(d, &compilation.files)).ok())
        .collect()
}

fn location(compilation: &Compilation, test: &CheckedTest) -> (String, usize) {
    let file = &compilation.files[test.file.0 as usize];
    (file.name.clone(), file.line_col(test.span.start).line)
}

/// `goto s`, `end` or `stay` as JSON: the step name, `"end"` or `"stay"`.
fn next_json(program: &Program, test: &CheckedTest, next: Transition) -> Json {
    match next {
        Transition::Goto(s) => json!(program.tracks[test.track].steps[s].name),
        Transition::End => json!("end"),
        Transition::Stay => json!("stay"),
    }
}

fn test_json(compilation: &Compilation, test: &CheckedTest, outcome: &TestOutcome) -> Json {
    let (file, line) = location(compilation, test);
    let track = &compilation.program.tracks[test.track];
    let records: Vec<Json> = outcome
        .records
        .iter()
        .map(|r| {
            let values: serde_json::Map<String, Json> = r
                .values
                .iter()
                .map(|(name, v)| (name.clone(), value_json(v)))
                .collect();
            json!({
                "key": value_json(&r.key),
                "passed": r.failures.is_empty(),
                "rule": r.rule.map(|i| i + 1),
                "next": next_json(&compilation.program, test, r.next),
                "effects": r.effects.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "values": values,
                "failures": r.failures.iter().map(|f| json!({
                    "expect": f.what,
                    "expected": f.expected,
                    "actual": f.actual,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "file": file,
        "line": line,
        "name": test.name,
        "track": track.name,
        "step": track.steps[test.step].name,
        "passed": outcome.passed(),
        "records": records,
    })
}

/// One line per test (`ok` or `FAIL`, where, name); under a failure, per
/// record that failed, each expectation against what happened and the
/// values the conditions read; then the summary.
fn human_report(
    compilation: &Compilation,
    results: &[(&CheckedTest, TestOutcome)],
    color: bool,
) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    for (test, outcome) in results {
        let (file, line) = location(compilation, test);
        let track = &compilation.program.tracks[test.track];
        if outcome.passed() {
            out += &format!("{}   {file}:{line} {}\n", paint("32", "ok"), test.name);
            continue;
        }
        out += &format!("{} {file}:{line} {}\n", paint("1;31", "FAIL"), test.name);
        for record in outcome.records.iter().filter(|r| !r.failures.is_empty()) {
            out += &format!(
                "    record {} = {}, in step `{}`\n",
                track.fields[track.key].name, record.key, track.steps[test.step].name
            );
            for f in &record.failures {
                let what = format!("{}:", f.what);
                out += &format!("      {what:<9}expected {}\n", f.expected);
                out += &format!("      {:<9}actual   {}\n", "", f.actual);
            }
            if !record.values.is_empty() {
                let read: Vec<String> = record
                    .values
                    .iter()
                    .map(|(name, v)| format!("{name} = {v}"))
                    .collect();
                out += &format!("      {:<9}{}\n", "read:", read.join(", "));
            }
            if record.rule.is_some() && !record.failures.iter().any(|f| f.what == "rule") {
                out += &format!("      {:<9}{}\n", "fired:", rule_text(test, record.rule));
            }
        }
    }
    let failed = results.iter().filter(|(_, o)| !o.passed()).count();
    let passed = results.len() - failed;
    let summary = format!("{passed} passed, {failed} failed");
    out += &format!(
        "\n{}\n",
        if failed > 0 {
            paint("1;31", &summary)
        } else {
            paint("32", &summary)
        }
    );
    out
}
