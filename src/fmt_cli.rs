//! `trackc fmt [--check] FILES…`: rewrites track files in the canonical
//! layout (compiler/src/format.rs), or with `--check` shows what would
//! change and exits 1. A file with syntax errors is reported and left as
//! it is; a rewritten file is replaced whole (written beside it, then
//! renamed), never half-written.

use crate::operate::failed;
use crate::{usage, UsageError};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use trackc_compiler::diagnostics::render_human;
use trackc_compiler::format::format_source;
use trackc_compiler::span::SourceFile;

#[derive(clap::Args)]
pub struct FmtArgs {
    /// Change nothing: show the difference and exit 1 if a file is not formatted.
    #[arg(long)]
    check: bool,
    /// Track files, or directories of them.
    #[arg(required = true, value_name = "DIR|FILES")]
    paths: Vec<PathBuf>,
}

/// What became of one file.
enum Outcome {
    Unchanged,
    Changed,
    Broken,
}

pub fn fmt(args: &FmtArgs) -> Result<ExitCode, UsageError> {
    let (files, _) = trackc_runtime::bundle::track_files(&args.paths, None).map_err(failed)?;
    let (mut changed, mut broken) = (0usize, 0usize);
    for path in &files {
        match fmt_file(path, args.check)? {
            Outcome::Unchanged => {}
            Outcome::Changed => changed += 1,
            Outcome::Broken => broken += 1,
        }
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let n = files.len();
    if args.check {
        eprintln!(
            "{changed} of {n} file{} would be reformatted{}",
            plural(n),
            if broken > 0 {
                format!(", {broken} with syntax errors")
            } else {
                String::new()
            }
        );
    } else {
        eprintln!(
            "formatted {changed} of {n} file{}{}",
            plural(n),
            if broken > 0 {
                format!("; {broken} left as they are: syntax errors")
            } else {
                String::new()
            }
        );
    }
    let failed = broken > 0 || (args.check && changed > 0);
    Ok(ExitCode::from(u8::from(failed)))
}

fn fmt_file(path: &Path, check: bool) -> Result<Outcome, UsageError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| usage(format!("cannot read `{name}`: {e}")))?;
    let Ok(text) = String::from_utf8(bytes) else {
        eprintln!("error: {name}: not valid UTF-8; left as it is");
        return Ok(Outcome::Broken);
    };
    let formatted = match format_source(&text) {
        Ok(f) => f,
        Err(errors) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let files = [SourceFile::new(name.clone(), text)];
            for d in &errors {
                eprint!("{}", render_human(d, &files, color));
            }
            return Ok(Outcome::Broken);
        }
    };
    if formatted == text {
        return Ok(Outcome::Unchanged);
    }
    if check {
        let diff = similar::TextDiff::from_lines(&text, &formatted);
        let mut out = std::io::stdout().lock();
        write!(
            out,
            "{}",
            diff.unified_diff()
                .context_radius(2)
                .header(&name, &format!("{name} (formatted)"))
        )?;
        return Ok(Outcome::Changed);
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".trackc-fmt");
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, &formatted)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            usage(format!("cannot write `{name}`: {e}"))
        })?;
    eprintln!("formatted {name}");
    Ok(Outcome::Changed)
}
