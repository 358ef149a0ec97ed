//! `trackc.toml`, the project file: the schema and the SQL dialect that
//! track files are checked against, found in a file's folder or the
//! nearest parent. `check`, `build`, `eval`, `test`, `run`, `deploy` and
//! the language server read it; a command-line `--schema` or `--dialect`
//! wins over it. (`run` and `deploy` take the dialect of the database.)
//!
//! ```toml
//! schema = "db/schema.sql"   # relative to trackc.toml
//! dialect = "postgres"       # or "sqlite"
//! ```

use serde::Deserialize;
use std::path::{Path, PathBuf};
use trackc_compiler::SqlDialect;

pub const PROJECT_FILE: &str = "trackc.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    schema: Option<String>,
    dialect: Option<String>,
}

/// A checked `trackc.toml`.
#[derive(Debug, PartialEq)]
pub struct Project {
    pub file: PathBuf,
    /// The schema's path, resolved against the project file's folder.
    pub schema: Option<PathBuf>,
    pub dialect: Option<SqlDialect>,
}

impl Project {
    /// The project file of `path` (a file or a folder): the first
    /// `trackc.toml` in its folder or a parent, read and checked. `Ok(None)`
    /// when there is none; an error names the file and what is wrong.
    pub fn find(path: &Path) -> Result<Option<Project>, String> {
        let start = if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let start = std::path::absolute(&start).unwrap_or(start);
        let Some(dir) = start.ancestors().find(|d| d.join(PROJECT_FILE).is_file()) else {
            return Ok(None);
        };
        let file = dir.join(PROJECT_FILE);
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        Project::parse(&text, file).map(Some)
    }

    fn parse(text: &str, file: PathBuf) -> Result<Project, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| format!("{}: {e}", file.display()))?;
        let dialect = match raw.dialect.as_deref() {
            None => None,
            Some("postgres") => Some(SqlDialect::Postgres),
            Some("sqlite") => Some(SqlDialect::Sqlite),
            Some(other) => {
                return Err(format!(
                    "{}: `dialect` = \"{other}\": write \"postgres\" or \"sqlite\"",
                    file.display()
                ))
            }
        };
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Project {
            schema: raw.schema.map(|s| dir.join(s)),
            dialect,
            file,
        })
    }
}

/// The schema of a command over `paths`: the one given on the command
/// line, else the `schema` of the first path's trackc.toml (`None`: the
/// caller's own default, such as `schema.sql` in a directory given).
pub fn schema_for(given: Option<&Path>, paths: &[PathBuf]) -> Result<Option<PathBuf>, String> {
    if let Some(given) = given {
        return Ok(Some(given.to_path_buf()));
    }
    match paths.first() {
        Some(first) => Ok(Project::find(first)?.and_then(|p| p.schema)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_and_mistakes_named() {
        let file = PathBuf::from("/p/trackc.toml");
        let p = Project::parse(
            "schema = \"db/s.sql\"\ndialect = \"sqlite\"\n",
            file.clone(),
        )
        .unwrap();
        assert_eq!(p.schema, Some(PathBuf::from("/p/db/s.sql")));
        assert_eq!(p.dialect, Some(SqlDialect::Sqlite));
        let e = Project::parse("dialect = \"mysql\"", file.clone()).unwrap_err();
        assert!(e.contains("`dialect` = \"mysql\""), "{e}");
        let e = Project::parse("schemas = \"x\"", file).unwrap_err();
        assert!(e.contains("unknown field `schemas`"), "{e}");
    }
}
