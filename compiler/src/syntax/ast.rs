//! The syntax tree of a `.dt` file, exactly as written: every node keeps the
//! span it came from, so that every later error can point at it. Nothing here
//! is checked yet (names may be unknown, types may disagree).

use crate::span::{FileId, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub id: FileId,
    pub tracks: Vec<Track>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub name: Ident,
    pub version: Option<(i64, Span)>,
    pub items: Vec<TrackItem>,
    /// Items that failed to parse (already reported as E001), by kind and
    /// name where known: the checker stays quiet about what they would have
    /// declared instead of reporting follow-on errors.
    pub broken: Vec<BrokenItem>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum BrokenItem {
    Source,
    Fields,
    Trigger,
    Step(Option<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum TrackItem {
    Source(Source),
    Fields(FieldsBlock),
    Trigger(Trigger),
    Step(Step),
}

/// A block of SQL text, as written between its braces.
#[derive(Clone, Debug, PartialEq)]
pub struct SqlBlock {
    pub text: String,
    /// The span of the text between the braces (what sqlparser sees).
    pub text_span: Span,
    /// The span including the braces.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// `source from NAME`: a named source database (none: the state
    /// database).
    pub database: Option<Ident>,
    pub key: Ident,
    pub sql: SqlBlock,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldsBlock {
    pub fields: Vec<FieldDecl>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldDecl {
    pub name: Ident,
    pub ty: TypeName,
    pub ty_span: Span,
    pub nullable: bool,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeName {
    Int,
    Float,
    Bool,
    Text,
    Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub kind: TriggerKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TriggerKind {
    Every(Duration),
    Cron {
        expr: StringLit,
        tz: Option<StringLit>,
    },
    At(Timestamp),
    Event(Ident),
    Change(SqlBlock),
}

#[derive(Clone, Debug, PartialEq)]
pub struct StringLit {
    pub value: String,
    pub span: Span,
}

/// A duration literal; `micros` is `None` when it overflows (reported).
#[derive(Clone, Debug, PartialEq)]
pub struct Duration {
    pub micros: Option<i64>,
    pub span: Span,
}

/// A timestamp literal; `micros` since the Unix epoch (UTC), `None` when the
/// text is not a valid instant (reported).
#[derive(Clone, Debug, PartialEq)]
pub struct Timestamp {
    pub micros: Option<i64>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: Ident,
    pub wait: Option<Duration>,
    pub rules: Vec<Rule>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `None` for `else`.
    pub condition: Option<Expr>,
    pub actions: Vec<Action>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub kind: ActionKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ActionKind {
    Goto(Ident),
    Stay,
    End,
    Sql(SqlBlock),
    Email {
        template: StringLit,
        to: Option<Expr>,
    },
    Webhook(StringLit),
    Emit(Ident),
}

impl ActionKind {
    pub fn is_transition(&self) -> bool {
        matches!(
            self,
            ActionKind::Goto(_) | ActionKind::Stay | ActionKind::End
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    Field(Ident),
    Call {
        name: Ident,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        op_span: Span,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    InList {
        operand: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        operand: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    IsNull {
        operand: Box<Expr>,
        negated: bool,
    },
    Like {
        operand: Box<Expr>,
        pattern: StringLit,
        negated: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Int(i64),
    Float(f64),
    String(String),
    /// Microseconds; `None` if invalid (already reported).
    Duration(Option<i64>),
    /// Microseconds since the epoch; `None` if invalid (already reported).
    Timestamp(Option<i64>),
    Bool(bool),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
        )
    }
}
