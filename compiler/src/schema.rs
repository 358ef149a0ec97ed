//! The database schema tracks are checked against: the tables and columns of
//! a file of `CREATE TABLE` statements, read with sqlparser.

use crate::diagnostics::Diagnostic;
use crate::span::FileId;
use crate::sql::{self, SqlDialect, SqlText};
use crate::types::{from_sql_type, Type};
use sqlparser::ast::{ColumnOption, Statement, TableConstraint};

#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub tables: Vec<Table>,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
}

#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    /// `None` when the SQL type has no language counterpart.
    pub ty: Option<Type>,
    pub sql_type: String,
    pub nullable: bool,
}

impl Schema {
    /// Reads the `CREATE TABLE` statements of a schema file; other statements
    /// (indexes, inserts, …) are skipped. SQL errors are reported in the file.
    pub fn parse(file: FileId, text: &str, dialect: SqlDialect) -> (Schema, Vec<Diagnostic>) {
        let sql = SqlText::new(file, text, 0);
        let statements = match sql::parse_statements(&sql, dialect) {
            Ok(statements) => statements,
            Err(diagnostic) => return (Schema::default(), vec![diagnostic]),
        };
        let mut schema = Schema::default();
        for statement in statements {
            let Statement::CreateTable(create) = statement else {
                continue;
            };
            let primary_key: Vec<String> = create
                .constraints
                .iter()
                .filter_map(|c| match c {
                    TableConstraint::PrimaryKey(pk) => {
                        Some(pk.columns.iter().map(|c| c.to_string().to_lowercase()))
                    }
                    _ => None,
                })
                .flatten()
                .collect();
            let columns = create
                .columns
                .iter()
                .map(|c| {
                    let not_null = c.options.iter().any(|o| {
                        matches!(
                            o.option,
                            ColumnOption::NotNull | ColumnOption::PrimaryKey(_)
                        )
                    }) || primary_key.contains(&c.name.value.to_lowercase());
                    let sql_type = c.data_type.to_string();
                    // MySQL spells a boolean column TINYINT(1) (BOOLEAN is
                    // an alias of it there).
                    let mysql_bool =
                        dialect == SqlDialect::MySql && sql_type.eq_ignore_ascii_case("tinyint(1)");
                    Column {
                        name: c.name.value.clone(),
                        ty: if mysql_bool {
                            Some(Type::Bool)
                        } else {
                            from_sql_type(&sql_type)
                        },
                        sql_type,
                        nullable: !not_null,
                    }
                })
                .collect();
            let name = create
                .name
                .0
                .last()
                .map(|p| p.to_string())
                .unwrap_or_default();
            schema.tables.push(Table {
                name: name.trim_matches(['"', '`']).to_string(),
                columns,
            });
        }
        (schema, Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Table names compare case-insensitively, as unquoted SQL names do.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tables_types_and_nullability() {
        let (schema, errors) = Schema::parse(
            FileId(0),
            "CREATE TABLE contacts (id BIGINT PRIMARY KEY, email TEXT NOT NULL, score INTEGER, tags TEXT[]);
             CREATE INDEX ix ON contacts (email);
             CREATE TABLE t (a INT, b INT, PRIMARY KEY (a, b));",
            SqlDialect::Postgres,
        );
        assert!(errors.is_empty());
        let contacts = schema.table("CONTACTS").unwrap();
        let id = contacts.column("id").unwrap();
        assert_eq!((id.ty, id.nullable), (Some(Type::Int), false));
        assert!(contacts.column("score").unwrap().nullable);
        assert_eq!(contacts.column("tags").unwrap().ty, None);
        assert!(!schema.table("t").unwrap().column("b").unwrap().nullable);
    }

    #[test]
    fn reads_mysql_types() {
        let (schema, errors) = Schema::parse(
            FileId(0),
            "CREATE TABLE `people` (
               `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
               active TINYINT(1) NOT NULL DEFAULT 1,
               level TINYINT,
               balance DECIMAL(12,2),
               seen DATETIME(6),
               stamped TIMESTAMP NULL,
               kind ENUM('a', 'b'),
               notes LONGTEXT,
               PRIMARY KEY (`id`)
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;",
            SqlDialect::MySql,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let people = schema.table("people").unwrap();
        let ty = |name: &str| people.column(name).unwrap().ty;
        assert_eq!(ty("id"), Some(Type::Int));
        assert!(!people.column("id").unwrap().nullable);
        assert_eq!(ty("active"), Some(Type::Bool));
        assert_eq!(ty("level"), Some(Type::Int));
        assert_eq!(ty("balance"), Some(Type::Float));
        assert_eq!(ty("seen"), Some(Type::Timestamp));
        assert_eq!(ty("stamped"), Some(Type::Timestamp));
        assert_eq!(ty("kind"), Some(Type::Text));
        assert_eq!(ty("notes"), Some(Type::Text));
    }
}
