//! `trackc.toml`, the project file: the schema and the SQL dialect that
//! track files are checked against, found in a file's folder or the
//! nearest parent. `check`, `build`, `eval`, `test`, `run`, `deploy` and
//! the language server read it; a command-line `--schema` or `--dialect`
//! wins over it. (`run` and `deploy` take the dialect of the database.)
//!
//! ```toml
//! schema = "db/schema.sql"   # relative to trackc.toml
//! dialect = "postgres"       # or "sqlite"
//!
//! [databases.crm]            # a source database (`source from crm key …`)
//! schema = "db/crm.sql"
//! dialect = "mysql"          # "postgres", "sqlite" or "mysql" (MariaDB too)
//!                            # [default: the project's]
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
    #[serde(default)]
    databases: std::collections::BTreeMap<String, RawDatabase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
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
    /// The named source databases, by name.
    pub databases: Vec<ProjectDatabase>,
}

/// A source database of `[databases.NAME]`.
#[derive(Debug, PartialEq)]
pub struct ProjectDatabase {
    pub name: String,
    pub schema: Option<PathBuf>,
    pub dialect: Option<SqlDialect>,
}

/// A dialect's name in trackc.toml, or what is wrong with it.
/// `source`: a source database's, which may also be MariaDB/MySQL.
fn dialect_of(
    value: Option<&str>,
    key: &str,
    file: &Path,
    source: bool,
) -> Result<Option<SqlDialect>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    match SqlDialect::from_name(value) {
        Some(SqlDialect::MySql) if !source => Err(format!(
            "{}: `{key}` = \"{value}\": trackc keeps its own tables in PostgreSQL or \
             SQLite; a MariaDB/MySQL database can be a source database \
             ([databases.NAME] dialect = \"mysql\")",
            file.display()
        )),
        Some(d) => Ok(Some(d)),
        None if source => Err(format!(
            "{}: `{key}` = \"{value}\": write \"postgres\", \"sqlite\" or \"mysql\"",
            file.display()
        )),
        None => Err(format!(
            "{}: `{key}` = \"{value}\": write \"postgres\" or \"sqlite\"",
            file.display()
        )),
    }
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
        let dialect = dialect_of(raw.dialect.as_deref(), "dialect", &file, false)?;
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let databases = raw
            .databases
            .into_iter()
            .map(|(name, d)| {
                let key = format!("databases.{name}.dialect");
                Ok(ProjectDatabase {
                    dialect: dialect_of(d.dialect.as_deref(), &key, &file, true)?,
                    schema: d.schema.map(|s| dir.join(s)),
                    name,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Project {
            schema: raw.schema.map(|s| dir.join(s)),
            dialect,
            databases,
            file,
        })
    }
}

impl Project {
    /// The named source databases for the compiler: the project's, with
    /// `given` (`--schema NAME=FILE`) replacing a schema or adding a
    /// database; each dialect is the database's own, else `dialect`.
    pub fn databases(
        project: Option<&Project>,
        given: &[(String, PathBuf)],
        dialect: SqlDialect,
    ) -> Result<Vec<trackc_compiler::SourceDatabase>, String> {
        let mut out: Vec<(String, Option<PathBuf>, SqlDialect)> = project
            .map(|p| {
                p.databases
                    .iter()
                    .map(|d| {
                        (
                            d.name.clone(),
                            d.schema.clone(),
                            d.dialect.unwrap_or(dialect),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (name, file) in given {
            match out.iter_mut().find(|d| d.0 == *name) {
                Some(d) => d.1 = Some(file.clone()),
                None => out.push((name.clone(), Some(file.clone()), dialect)),
            }
        }
        out.into_iter()
            .map(|(name, schema, dialect)| {
                let schema = schema
                    .map(|p| {
                        std::fs::read(&p)
                            .map(|bytes| trackc_compiler::Input {
                                name: p.display().to_string(),
                                bytes,
                            })
                            .map_err(|e| {
                                format!("the schema of database `{name}`, {}: {e}", p.display())
                            })
                    })
                    .transpose()?;
                Ok(trackc_compiler::SourceDatabase {
                    name,
                    dialect,
                    schema,
                })
            })
            .collect()
    }
}

/// The schemas of `--schema`: the state database's, and each named
/// source database's.
pub type Schemas = (Option<PathBuf>, Vec<(String, PathBuf)>);

/// `--schema` values: one `FILE.sql` for the state database, and any
/// number of `NAME=FILE.sql` for named source databases.
pub fn split_schemas(values: &[String]) -> Result<Schemas, String> {
    let mut state = None;
    let mut named = Vec::new();
    for v in values {
        let name_file = v.split_once('=').filter(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        });
        match name_file {
            Some((name, file)) => named.push((name.to_string(), PathBuf::from(file))),
            None if state.is_none() => state = Some(PathBuf::from(v)),
            None => {
                return Err(format!(
                    "--schema {v}: the state database's schema is given twice; a source \
                     database's is `--schema NAME=FILE.sql`"
                ))
            }
        }
    }
    Ok((state, named))
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
        assert!(e.contains("can be a source database"), "{e}");
        let e = Project::parse("dialect = \"oracle\"", file.clone()).unwrap_err();
        assert!(e.contains("write \"postgres\" or \"sqlite\""), "{e}");
        let p = Project::parse("[databases.crm]\ndialect = \"mariadb\"\n", file.clone()).unwrap();
        assert_eq!(p.databases[0].dialect, Some(SqlDialect::MySql));
        let e = Project::parse("[databases.crm]\ndialect = \"db2\"\n", file.clone()).unwrap_err();
        assert!(e.contains("\"postgres\", \"sqlite\" or \"mysql\""), "{e}");
        let e = Project::parse("schemas = \"x\"", file.clone()).unwrap_err();
        assert!(e.contains("unknown field `schemas`"), "{e}");
        let p = Project::parse(
            "[databases.crm]\nschema = \"crm.sql\"\ndialect = \"sqlite\"\n[databases.shop]\n",
            file.clone(),
        )
        .unwrap();
        assert_eq!(
            p.databases,
            [
                ProjectDatabase {
                    name: "crm".into(),
                    schema: Some(PathBuf::from("/p/crm.sql")),
                    dialect: Some(SqlDialect::Sqlite),
                },
                ProjectDatabase {
                    name: "shop".into(),
                    schema: None,
                    dialect: None,
                },
            ]
        );
        let e = Project::parse("[databases.crm]\ndialect = \"oracle\"", file).unwrap_err();
        assert!(e.contains("`databases.crm.dialect` = \"oracle\""), "{e}");
    }
}
