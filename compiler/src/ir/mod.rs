//! The checked, typed form of tracks: per step an ordered decision table of
//! (condition, effects, transition). Every name is resolved (fields to
//! indices, steps to indices), every operator is typed, and implicit
//! conversions are explicit, so evaluators never look at the AST or decide
//! a type at run time.

mod fold;
mod print;

pub use fold::fold;
pub use print::print_program;

use crate::types::Type;
use crate::value::Value;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub tracks: Vec<Track>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub name: String,
    pub version: Option<i64>,
    /// The field that identifies a record.
    pub key: usize,
    pub fields: Vec<Field>,
    pub source: Sql,
    /// The named database the source reads (`source from NAME`); `None`:
    /// the state database.
    pub source_database: Option<String>,
    pub triggers: Vec<Trigger>,
    /// The first step is where records without state enter.
    pub steps: Vec<Step>,
}

impl Track {
    pub fn step(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    pub fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub ty: Type,
    pub nullable: bool,
}

/// A SQL statement and the `:parameters` it uses (distinct, in order of
/// first use). Values are bound by name at run time, never spliced.
#[derive(Clone, Debug, PartialEq)]
pub struct Sql {
    pub text: String,
    pub params: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Trigger {
    /// Microseconds between runs.
    Every(i64),
    Cron {
        expr: String,
        tz: Option<String>,
    },
    /// Microseconds since the epoch.
    At(i64),
    Event(String),
    Change(Sql),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: String,
    /// Microseconds a record waits after entering before rules apply.
    pub wait: Option<i64>,
    pub rules: Vec<Rule>,
}

impl Step {
    /// The fields (indices, ascending) that the conditions tried read when
    /// rule `fired` fires: those of the rules up to it, or of every rule
    /// when none fires. What a decision's record and history show.
    pub fn fields_tried(&self, fired: Option<usize>) -> Vec<usize> {
        fn walk(e: &Expr, out: &mut Vec<usize>) {
            if let ExprKind::Field(i) = e.kind {
                out.push(i);
            }
            for c in e.children() {
                walk(c, out);
            }
        }
        let tried = fired.map_or(self.rules.len(), |r| r + 1);
        let mut out = Vec::new();
        for rule in self.rules.iter().take(tried) {
            if let Some(c) = &rule.condition {
                walk(c, &mut out);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `None` is `else`: always fires.
    pub condition: Option<Expr>,
    /// Effects, in the order written.
    pub effects: Vec<Effect>,
    pub transition: Transition,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Stay in the step (written `stay`, or no transition at all).
    Stay,
    Goto(usize),
    End,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Sql(Sql),
    Email { template: String, to: Expr },
    Webhook { url: String },
    Emit { event: String },
}

/// A typed expression: `ty` is the type of its value (which may be NULL).
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub ty: Type,
    pub kind: ExprKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A constant of type `ty` (possibly NULL).
    Const(Value),
    Field(usize),
    /// The evaluation instant.
    Now,
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// Operand of type `ty` (int, float or duration).
    Neg(Box<Expr>),
    /// Both operands are floats (result float), or both are 64-bit integers
    /// in microseconds or units (int, timestamp, duration; the result type
    /// is `ty`). Overflow and division by zero are NULL.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// Both operands have the same type.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// An int operand used as a float.
    ToFloat(Box<Expr>),
    IsNull(Box<Expr>),
    /// All of the same type as the operand.
    InList(Box<Expr>, Vec<Expr>),
    Like(Box<Expr>, String),
    Lower(Box<Expr>),
    Upper(Box<Expr>),
    /// Characters, not bytes.
    Length(Box<Expr>),
    Abs(Box<Expr>),
    /// All of type `ty`.
    Coalesce(Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Expr {
    pub fn new(ty: Type, kind: ExprKind) -> Expr {
        Expr { ty, kind }
    }

    pub fn constant(ty: Type, value: Value) -> Expr {
        debug_assert!(
            value.ty().is_none_or(|t| t == ty),
            "constant {value:?} is not {ty}"
        );
        Expr::new(ty, ExprKind::Const(value))
    }

    pub fn null(ty: Type) -> Expr {
        Expr::constant(ty, Value::Null)
    }

    pub fn as_const(&self) -> Option<&Value> {
        match &self.kind {
            ExprKind::Const(v) => Some(v),
            _ => None,
        }
    }

    /// The direct subexpressions.
    pub fn children(&self) -> Vec<&Expr> {
        use ExprKind::*;
        match &self.kind {
            Const(_) | Field(_) | Now => vec![],
            Not(e)
            | Neg(e)
            | ToFloat(e)
            | IsNull(e)
            | Like(e, _)
            | Lower(e)
            | Upper(e)
            | Length(e)
            | Abs(e) => {
                vec![e]
            }
            And(a, b) | Or(a, b) | Arith(_, a, b) | Cmp(_, a, b) => vec![a, b],
            InList(e, list) => std::iter::once(e.as_ref()).chain(list.iter()).collect(),
            Coalesce(args) => args.iter().collect(),
        }
    }
}
