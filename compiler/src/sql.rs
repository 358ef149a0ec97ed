//! The SQL embedded in tracks: parsed with sqlparser, its errors and names
//! mapped back to exact spans in the `.dt` file, its `:parameters` found, and
//! the columns a `source` query yields resolved against the schema.

use crate::diagnostics::{closest, did_you_mean, Code, Diagnostic};
use crate::schema::Schema;
use crate::span::{FileId, Span};
use crate::types::{from_sql_type, Type};
use sqlparser::ast::{
    Expr, FromTable, JoinOperator, ObjectName, Query, Select, SelectItem, SetExpr, Spanned,
    Statement, TableFactor, TableObject, TableWithJoins, Value,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

/// Which SQL the embedded blocks are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SqlDialect {
    #[default]
    Postgres,
    Sqlite,
    /// MariaDB and MySQL (a source database only: trackc keeps its own
    /// tables in PostgreSQL or SQLite).
    MySql,
}

impl SqlDialect {
    fn dialect(self) -> Box<dyn Dialect> {
        match self {
            SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
            SqlDialect::Sqlite => Box::new(SQLiteDialect {}),
            SqlDialect::MySql => Box::new(MySqlDialect {}),
        }
    }

    /// The name trackc.toml and `--dialect` use.
    pub fn name(self) -> &'static str {
        match self {
            SqlDialect::Postgres => "postgres",
            SqlDialect::Sqlite => "sqlite",
            SqlDialect::MySql => "mysql",
        }
    }

    /// The dialect named `name` (`mariadb` is `mysql`).
    pub fn from_name(name: &str) -> Option<SqlDialect> {
        match name {
            "postgres" | "postgresql" => Some(SqlDialect::Postgres),
            "sqlite" => Some(SqlDialect::Sqlite),
            "mysql" | "mariadb" => Some(SqlDialect::MySql),
            _ => None,
        }
    }
}

/// A piece of SQL text and where it sits in its file, to turn sqlparser's
/// line/column locations into file spans.
pub struct SqlText<'a> {
    pub file: FileId,
    pub text: &'a str,
    /// File offset of the first byte of `text`.
    pub offset: usize,
    line_starts: Vec<usize>,
}

impl<'a> SqlText<'a> {
    pub fn new(file: FileId, text: &'a str, offset: usize) -> SqlText<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SqlText {
            file,
            text,
            offset,
            line_starts,
        }
    }

    /// File offset of a sqlparser location (1-based line, column in chars).
    pub fn offset_of(&self, location: Location) -> usize {
        if location.line == 0 {
            return self.offset;
        }
        let line = (location.line as usize - 1).min(self.line_starts.len() - 1);
        let start = self.line_starts[line];
        let in_line = self.text[start..]
            .char_indices()
            .nth(location.column.saturating_sub(1) as usize)
            .map_or(self.text.len() - start, |(i, _)| i);
        self.offset + start + in_line
    }

    /// File span of a sqlparser span; the whole text if it has none.
    pub fn span_of(&self, span: sqlparser::tokenizer::Span) -> Span {
        if span.start.line == 0 {
            return self.whole();
        }
        let start = self.offset_of(span.start);
        let end = self.offset_of(span.end).max(start);
        Span::new(start, end)
    }

    pub fn whole(&self) -> Span {
        let trimmed_start = self.text.len() - self.text.trim_start().len();
        let trimmed_end = self.text.trim_end().len().max(trimmed_start);
        Span::new(self.offset + trimmed_start, self.offset + trimmed_end)
    }

    fn error(&self, code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, self.file, span, message)
    }
}

/// Parses the statements of a SQL text; a syntax error is E006 at its exact
/// place.
pub fn parse_statements(
    sql: &SqlText<'_>,
    dialect: SqlDialect,
) -> Result<Vec<Statement>, Diagnostic> {
    let dialect = dialect.dialect();
    Parser::new(dialect.as_ref())
        .try_with_sql(sql.text)
        .and_then(|mut p| p.parse_statements())
        .map_err(|error| {
            let text = error.to_string();
            let text = text.strip_prefix("sql parser error: ").unwrap_or(&text);
            let (message, location) = split_location(text);
            let span = match location {
                // The end of the text has no location of its own: point at
                // its last word, where the statement stops short.
                _ if message.ends_with("found: EOF") => {
                    let end = sql.whole().end;
                    let text = &sql.text[..end - sql.offset];
                    let start = text
                        .trim_end()
                        .rfind(char::is_whitespace)
                        .map_or(0, |i| i + 1);
                    Span::new(sql.offset + start, end)
                }
                Some(location) => {
                    let start = sql.offset_of(location);
                    let len = sql.text[start - sql.offset..]
                        .find(|c: char| c.is_whitespace())
                        .unwrap_or(sql.text.len() - (start - sql.offset));
                    Span::new(
                        start,
                        start + len.max(usize::from(start - sql.offset < sql.text.len())),
                    )
                }
                None => sql.whole(),
            };
            let label = if message.ends_with("found: EOF") {
                "the statement ends too early"
            } else {
                "unexpected here"
            };
            sql.error(Code::E006, span, format!("SQL syntax error: {message}"))
                .with_span_label(label)
        })
}

/// Splits "Expected: x, found: y at Line: 2, Column: 5" into the message and
/// the location.
fn split_location(text: &str) -> (&str, Option<Location>) {
    let Some(at) = text.rfind(" at Line: ") else {
        return (text, None);
    };
    let rest = &text[at + " at Line: ".len()..];
    let mut numbers = rest.split(", Column: ").map(|n| n.trim().parse::<u64>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(line)), Some(Ok(column))) => (&text[..at], Some(Location { line, column })),
        _ => (text, None),
    }
}

/// A `:name` parameter as written in SQL.
#[derive(Clone, Debug, PartialEq)]
pub struct Placeholder {
    pub name: String,
    pub span: Span,
}

/// The `:name` parameters of a SQL text, in order, and E011 for positional
/// ones (`$1`, `?`), which tracks cannot bind.
pub fn placeholders(sql: &SqlText<'_>, dialect: SqlDialect) -> (Vec<Placeholder>, Vec<Diagnostic>) {
    let dialect = dialect.dialect();
    let Ok(tokens) = Tokenizer::new(dialect.as_ref(), sql.text).tokenize_with_location() else {
        return (Vec::new(), Vec::new());
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for pair in tokens.windows(2) {
        match (&pair[0].token, &pair[1].token) {
            (Token::Colon, Token::Word(word)) if word.quote_style.is_none() => {
                let start = sql.offset_of(pair[0].span.start);
                let end = sql.offset_of(pair[1].span.end);
                found.push(Placeholder {
                    name: word.value.clone(),
                    span: Span::new(start, end),
                });
            }
            _ => {}
        }
    }
    for token in &tokens {
        if let Token::Placeholder(p) = &token.token {
            if p.starts_with('$') || p.starts_with('?') {
                errors.push(
                    sql.error(
                        Code::E011,
                        sql.span_of(token.span),
                        format!("positional parameter `{p}` cannot be bound"),
                    )
                    .with_help("name the value instead, like `:id` or `:now`"),
                );
            }
        }
    }
    (found, errors)
}

/// Checks that every placeholder is one of `allowed` (E011).
pub fn check_placeholders(
    sql: &SqlText<'_>,
    found: &[Placeholder],
    allowed: &[&str],
) -> Vec<Diagnostic> {
    found
        .iter()
        .filter(|p| !allowed.contains(&p.name.as_str()))
        .map(|p| {
            let mut d = sql
                .error(
                    Code::E011,
                    p.span,
                    format!("unknown parameter `:{}`", p.name),
                )
                .with_span_label("not a parameter of this SQL block");
            d.help = Some(match closest(&p.name, allowed.iter().copied()) {
                Some(suggestion) => format!("did you mean `:{suggestion}`?"),
                None => format!(
                    "parameters here: {}",
                    allowed
                        .iter()
                        .map(|a| format!(":{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            d
        })
        .collect()
}

/// A column of a query's result, as far as it can be known.
#[derive(Clone, Debug, PartialEq)]
pub struct OutColumn {
    pub name: String,
    /// `None` when the type cannot be known from the schema.
    pub ty: Option<Type>,
    pub nullable: bool,
    /// Where the column is named (the select item) in the file.
    pub span: Span,
    /// Its type is unknown because of an error already reported (unknown
    /// table or column): say nothing more about it.
    pub reported: bool,
}

/// The columns of a query: known by name (types perhaps unknown), or not
/// known at all (`SELECT *` over a table the schema does not describe).
#[derive(Clone, Debug, PartialEq)]
pub enum Columns {
    Known(Vec<OutColumn>),
    Unknown,
}

/// Resolves the output columns of a `source` query against the schema.
pub struct Resolver<'a> {
    pub sql: &'a SqlText<'a>,
    pub schema: &'a Schema,
    pub diagnostics: Vec<Diagnostic>,
}

/// A table in scope of a SELECT: its name or alias and its columns.
struct ScopeTable {
    name: String,
    columns: Option<Vec<OutColumn>>,
    /// The table is unknown and that was reported.
    reported: bool,
}

impl<'a> Resolver<'a> {
    pub fn new(sql: &'a SqlText<'a>, schema: &'a Schema) -> Self {
        Resolver {
            sql,
            schema,
            diagnostics: Vec::new(),
        }
    }

    pub fn query(&mut self, query: &Query, ctes: &[(String, Columns)]) -> Columns {
        let mut ctes = ctes.to_vec();
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let columns = self.query(&cte.query, &ctes);
                ctes.push((cte.alias.name.value.to_lowercase(), columns));
            }
        }
        self.set_expr(&query.body, &ctes)
    }

    fn set_expr(&mut self, body: &SetExpr, ctes: &[(String, Columns)]) -> Columns {
        match body {
            SetExpr::Select(select) => self.select(select, ctes),
            SetExpr::Query(query) => self.query(query, ctes),
            // A set operation's columns are named by its first operand.
            SetExpr::SetOperation { left, right, .. } => {
                let columns = self.set_expr(left, ctes);
                let _ = self.set_expr(right, ctes);
                columns
            }
            _ => Columns::Unknown,
        }
    }

    fn table_columns(
        &mut self,
        name: &ObjectName,
        ctes: &[(String, Columns)],
    ) -> Option<Vec<OutColumn>> {
        let table_name = name.0.last()?.to_string().trim_matches('"').to_string();
        if let Some((_, columns)) = ctes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&table_name))
        {
            return match columns {
                Columns::Known(c) => Some(c.clone()),
                Columns::Unknown => None,
            };
        }
        if self.schema.is_empty() {
            return None;
        }
        let span = self.sql.span_of(name.span());
        match self.schema.table(&table_name) {
            Some(table) => Some(
                table
                    .columns
                    .iter()
                    .map(|c| OutColumn {
                        name: c.name.clone(),
                        ty: c.ty,
                        nullable: c.nullable,
                        span,
                        reported: false,
                    })
                    .collect(),
            ),
            None => {
                let mut d = self
                    .sql
                    .error(Code::E015, span, format!("unknown table `{table_name}`"))
                    .with_span_label("not in the schema");
                d.help = did_you_mean(
                    &table_name,
                    self.schema.tables.iter().map(|t| t.name.as_str()),
                );
                self.diagnostics.push(d);
                None
            }
        }
    }

    fn factor(
        &mut self,
        factor: &TableFactor,
        ctes: &[(String, Columns)],
        nullable: bool,
    ) -> Option<ScopeTable> {
        let errors_before = self.diagnostics.len();
        let (name, columns) = match factor {
            TableFactor::Table { name, alias, .. } => {
                let columns = self.table_columns(name, ctes);
                let scope_name = match alias {
                    Some(alias) => alias.name.value.clone(),
                    None => name.0.last()?.to_string().trim_matches('"').to_string(),
                };
                (scope_name, columns)
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                let columns = match self.query(subquery, ctes) {
                    Columns::Known(c) => Some(c),
                    Columns::Unknown => None,
                };
                (
                    alias
                        .as_ref()
                        .map(|a| a.name.value.clone())
                        .unwrap_or_default(),
                    columns,
                )
            }
            _ => {
                return Some(ScopeTable {
                    name: String::new(),
                    columns: None,
                    reported: false,
                })
            }
        };
        let reported = self.diagnostics.len() > errors_before;
        let columns = columns.map(|cs| {
            cs.into_iter()
                .map(|c| OutColumn {
                    nullable: c.nullable || nullable,
                    ..c
                })
                .collect()
        });
        Some(ScopeTable {
            name,
            columns,
            reported,
        })
    }

    fn scope(&mut self, from: &[TableWithJoins], ctes: &[(String, Columns)]) -> Vec<ScopeTable> {
        let mut scope = Vec::new();
        for table in from {
            let first = scope.len();
            scope.extend(self.factor(&table.relation, ctes, false));
            for join in &table.joins {
                let (left_nullable, right_nullable) = match &join.join_operator {
                    JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => (false, true),
                    JoinOperator::Right(_) | JoinOperator::RightOuter(_) => (true, false),
                    JoinOperator::FullOuter(_) => (true, true),
                    _ => (false, false),
                };
                if left_nullable {
                    for t in &mut scope[first..] {
                        if let Some(cs) = &mut t.columns {
                            cs.iter_mut().for_each(|c| c.nullable = true);
                        }
                    }
                }
                scope.extend(self.factor(&join.relation, ctes, right_nullable));
            }
        }
        scope
    }

    fn select(&mut self, select: &Select, ctes: &[(String, Columns)]) -> Columns {
        let scope = self.scope(&select.from, ctes);
        let mut out = Vec::new();
        for item in &select.projection {
            let span = self.sql.span_of(item.span());
            match item {
                SelectItem::UnnamedExpr(expr) => {
                    let ColType {
                        ty,
                        nullable,
                        reported,
                    } = self.expr_type(expr, &scope);
                    let name = match expr {
                        Expr::Identifier(ident) => ident.value.clone(),
                        Expr::CompoundIdentifier(parts) => {
                            parts.last().map(|p| p.value.clone()).unwrap_or_default()
                        }
                        _ => expr.to_string(),
                    };
                    out.push(OutColumn {
                        name,
                        ty,
                        nullable,
                        span,
                        reported,
                    });
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let ColType {
                        ty,
                        nullable,
                        reported,
                    } = self.expr_type(expr, &scope);
                    out.push(OutColumn {
                        name: alias.value.clone(),
                        ty,
                        nullable,
                        span,
                        reported,
                    });
                }
                SelectItem::Wildcard(_) => {
                    for table in &scope {
                        let Some(columns) = &table.columns else {
                            return Columns::Unknown;
                        };
                        out.extend(columns.iter().map(|c| OutColumn { span, ..c.clone() }));
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let qualifier = match kind {
                        sqlparser::ast::SelectItemQualifiedWildcardKind::ObjectName(name) => {
                            name.0.last().map(|p| p.to_string()).unwrap_or_default()
                        }
                        sqlparser::ast::SelectItemQualifiedWildcardKind::Expr(_) => {
                            return Columns::Unknown
                        }
                    };
                    let table = scope
                        .iter()
                        .find(|t| t.name.eq_ignore_ascii_case(qualifier.trim_matches('"')));
                    match table.and_then(|t| t.columns.as_ref()) {
                        Some(columns) => {
                            out.extend(columns.iter().map(|c| OutColumn { span, ..c.clone() }))
                        }
                        None => return Columns::Unknown,
                    }
                }
                SelectItem::ExprWithAliases { .. } => return Columns::Unknown,
            }
        }
        Columns::Known(out)
    }

    /// Looks a column up in scope. Reports E004 when every table in scope is
    /// known and none has it.
    fn column(
        &mut self,
        qualifier: Option<&str>,
        name: &str,
        span: Span,
        scope: &[ScopeTable],
    ) -> ColType {
        let candidates: Vec<&ScopeTable> = scope
            .iter()
            .filter(|t| qualifier.is_none_or(|q| t.name.eq_ignore_ascii_case(q)))
            .collect();
        for table in &candidates {
            if let Some(c) = table
                .columns
                .as_ref()
                .and_then(|cs| cs.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
            {
                return ColType {
                    ty: c.ty,
                    nullable: c.nullable,
                    reported: c.reported,
                };
            }
        }
        let reported = candidates.iter().any(|t| t.reported);
        let all_known = !candidates.is_empty() && candidates.iter().all(|t| t.columns.is_some());
        if all_known {
            let names: Vec<&str> = candidates
                .iter()
                .flat_map(|t| t.columns.iter().flatten().map(|c| c.name.as_str()))
                .collect();
            let mut d = self
                .sql
                .error(Code::E004, span, format!("unknown column `{name}`"))
                .with_span_label("no table in this query has it");
            d.help = did_you_mean(name, names.iter().copied());
            self.diagnostics.push(d);
        }
        ColType {
            ty: None,
            nullable: true,
            reported: reported || all_known,
        }
    }

    /// The language type of a select expression, as far as it can be told
    /// without running it, and whether it may be NULL.
    fn expr_type(&mut self, expr: &Expr, scope: &[ScopeTable]) -> ColType {
        let known = |ty: Type, nullable: bool| ColType {
            ty: Some(ty),
            nullable,
            reported: false,
        };
        match expr {
            Expr::Identifier(ident) => {
                let span = self.sql.span_of(ident.span);
                self.column(None, &ident.value, span, scope)
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let name = &parts[parts.len() - 1];
                let qualifier = &parts[parts.len() - 2];
                let span = self.sql.span_of(name.span);
                self.column(Some(&qualifier.value), &name.value, span, scope)
            }
            Expr::Nested(inner) => self.expr_type(inner, scope),
            Expr::Cast {
                expr, data_type, ..
            } => {
                let inner = self.expr_type(expr, scope);
                ColType {
                    ty: from_sql_type(&data_type.to_string()),
                    ..inner
                }
            }
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) if n.contains(['.', 'e', 'E']) => known(Type::Float, false),
                Value::Number(..) => known(Type::Int, false),
                Value::SingleQuotedString(_) => known(Type::Text, false),
                Value::Boolean(_) => known(Type::Bool, false),
                _ => ColType::UNKNOWN,
            },
            Expr::IsNull(_) | Expr::IsNotNull(_) => known(Type::Bool, false),
            Expr::Function(f) => match f.name.to_string().to_ascii_lowercase().as_str() {
                "count" => known(Type::Int, false),
                "lower" | "upper" | "trim" | "concat" => known(Type::Text, true),
                "length" | "char_length" => known(Type::Int, true),
                "now" | "current_timestamp" => known(Type::Timestamp, false),
                _ => ColType::UNKNOWN,
            },
            _ => ColType::UNKNOWN,
        }
    }
}

/// What is known of a select expression's type.
#[derive(Clone, Copy, Debug)]
struct ColType {
    ty: Option<Type>,
    nullable: bool,
    /// Unknown because of an error already reported.
    reported: bool,
}

impl ColType {
    const UNKNOWN: ColType = ColType {
        ty: None,
        nullable: true,
        reported: false,
    };
}

/// The statement kinds an action's `sql` may be.
pub fn is_action_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    )
}

/// Checks the tables and columns an action statement writes (E015, E004),
/// when the schema knows them.
pub fn check_action_targets(
    sql: &SqlText<'_>,
    statement: &Statement,
    schema: &Schema,
) -> Vec<Diagnostic> {
    if schema.is_empty() {
        return Vec::new();
    }
    let mut diagnostics = Vec::new();
    let mut check = |name: &ObjectName, columns: Vec<(String, Span)>| {
        let table_name = name.0.last().map(|p| p.to_string()).unwrap_or_default();
        let table_name = table_name.trim_matches('"');
        match schema.table(table_name) {
            None => {
                let mut d = sql
                    .error(
                        Code::E015,
                        sql.span_of(name.span()),
                        format!("unknown table `{table_name}`"),
                    )
                    .with_span_label("not in the schema");
                d.help = did_you_mean(table_name, schema.tables.iter().map(|t| t.name.as_str()));
                diagnostics.push(d);
            }
            Some(table) => {
                for (column, span) in columns {
                    if table.column(&column).is_none() {
                        let mut d = sql
                            .error(
                                Code::E004,
                                span,
                                format!("table `{}` has no column `{column}`", table.name),
                            )
                            .with_span_label("unknown column");
                        d.help =
                            did_you_mean(&column, table.columns.iter().map(|c| c.name.as_str()));
                        diagnostics.push(d);
                    }
                }
            }
        }
    };
    let object_column = |name: &ObjectName| {
        let last = name.0.last().map(|p| p.to_string()).unwrap_or_default();
        (last.trim_matches('"').to_string(), sql.span_of(name.span()))
    };
    match statement {
        Statement::Insert(insert) => {
            if let TableObject::TableName(name) = &insert.table {
                check(name, insert.columns.iter().map(object_column).collect());
            }
        }
        Statement::Update(update) => {
            if let TableFactor::Table { name, .. } = &update.table.relation {
                let columns = update
                    .assignments
                    .iter()
                    .flat_map(|a| match &a.target {
                        sqlparser::ast::AssignmentTarget::ColumnName(n) => vec![object_column(n)],
                        sqlparser::ast::AssignmentTarget::Tuple(ns) => {
                            ns.iter().map(object_column).collect()
                        }
                    })
                    .collect();
                check(name, columns);
            }
        }
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) =
                &delete.from;
            for table in tables {
                if let TableFactor::Table { name, .. } = &table.relation {
                    check(name, Vec::new());
                }
            }
        }
        _ => {}
    }
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sql: &str) -> SqlText<'_> {
        SqlText::new(FileId(0), sql, 100)
    }

    #[test]
    fn syntax_errors_point_into_the_block() {
        let sql = text("SELECT id\nFROM contacts WHERE");
        let d = parse_statements(&sql, SqlDialect::Postgres).unwrap_err();
        assert_eq!(d.code, Code::E006);
        assert!(
            d.message
                .starts_with("SQL syntax error: Expected: an expression"),
            "{}",
            d.message
        );
        // The end has no location of its own: the last word is underlined.
        assert_eq!(&sql.text[d.span.start - 100..d.span.end - 100], "WHERE");
        let sql = text("SELEC id FROM c");
        let d = parse_statements(&sql, SqlDialect::Postgres).unwrap_err();
        assert_eq!(d.span, Span::new(100, 105));
    }

    #[test]
    fn placeholders_are_found_with_spans_and_casts_are_not() {
        let sql = text("SELECT x::int FROM c WHERE a > :last_run AND b = :id");
        let (found, errors) = placeholders(&sql, SqlDialect::Postgres);
        assert!(errors.is_empty());
        let names: Vec<_> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["last_run", "id"]);
        assert_eq!(
            &sql.text[found[0].span.start - 100..found[0].span.end - 100],
            ":last_run"
        );
        let (_, errors) = placeholders(&text("SELECT $1"), SqlDialect::Postgres);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn source_columns_resolve_aliases_stars_and_joins() {
        let (schema, _) = Schema::parse(
            FileId(1),
            "CREATE TABLE contacts (id INT PRIMARY KEY, email TEXT NOT NULL, score INT);
             CREATE TABLE orders (id INT PRIMARY KEY, contact_id INT NOT NULL, total NUMERIC NOT NULL);",
            SqlDialect::Postgres,
        );
        let sql = text("SELECT c.*, o.total AS amount, CAST(c.score AS FLOAT) AS s FROM contacts c LEFT JOIN orders o ON o.contact_id = c.id");
        let statements = parse_statements(&sql, SqlDialect::Postgres).unwrap();
        let Statement::Query(query) = &statements[0] else {
            panic!()
        };
        let mut resolver = Resolver::new(&sql, &schema);
        let Columns::Known(columns) = resolver.query(query, &[]) else {
            panic!()
        };
        let summary: Vec<_> = columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty, c.nullable))
            .collect();
        assert_eq!(
            summary,
            [
                ("id", Some(Type::Int), false),
                ("email", Some(Type::Text), false),
                ("score", Some(Type::Int), true),
                ("amount", Some(Type::Float), true),
                ("s", Some(Type::Float), true),
            ]
        );
        assert!(resolver.diagnostics.is_empty());
    }

    #[test]
    fn unknown_tables_and_columns_are_reported_with_suggestions() {
        let (schema, _) = Schema::parse(
            FileId(1),
            "CREATE TABLE contacts (id INT, email TEXT);",
            SqlDialect::Postgres,
        );
        let sql = text("SELECT id, emial FROM contacts");
        let statements = parse_statements(&sql, SqlDialect::Postgres).unwrap();
        let Statement::Query(query) = &statements[0] else {
            panic!()
        };
        let mut resolver = Resolver::new(&sql, &schema);
        resolver.query(query, &[]);
        let d = &resolver.diagnostics[0];
        assert_eq!(
            (d.code, d.help.as_deref()),
            (Code::E004, Some("did you mean `email`?"))
        );
        assert_eq!(&sql.text[d.span.start - 100..d.span.end - 100], "emial");

        let sql = text("SELECT * FROM contact");
        let statements = parse_statements(&sql, SqlDialect::Postgres).unwrap();
        let Statement::Query(query) = &statements[0] else {
            panic!()
        };
        let mut resolver = Resolver::new(&sql, &schema);
        assert_eq!(resolver.query(query, &[]), Columns::Unknown);
        assert_eq!(resolver.diagnostics[0].code, Code::E015);
    }
}
