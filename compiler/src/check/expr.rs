//! Types and lowers expressions: AST → typed IR, reporting unknown fields
//! (E004), type mismatches (E005), unknown functions and wrong arities
//! (E012), and `= null` (W004).
//!
//! An expression that already produced an error lowers to `None` and its
//! parents stay quiet, so one mistake is reported once.

use crate::diagnostics::{did_you_mean, Code, Diagnostic};
use crate::ir::{self, ArithOp, CmpOp, ExprKind as K};
use crate::span::{FileId, Span};
use crate::syntax::ast::{self, BinaryOp, ExprKind, Literal, UnaryOp};
use crate::types::Type;
use crate::value::Value;

/// The fields an expression may name.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    Known {
        fields: &'a [ir::Field],
        /// Names whose type is unknown because of an error already
        /// reported: references to them lower to nothing, silently.
        poisoned: &'a [String],
    },
    /// The track's fields could not be determined (an error was already
    /// reported): field references lower to nothing, silently.
    Unknown,
}

/// The functions of LANGUAGE.md: name, minimum and maximum arity.
const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("now", 0, 0),
    ("lower", 1, 1),
    ("upper", 1, 1),
    ("length", 1, 1),
    ("abs", 1, 1),
    ("coalesce", 1, usize::MAX),
];

/// A lowered expression. `ty` is `None` for an expression that is NULL
/// whatever the record (the literal `null`, `-null`, …): its type comes from
/// where it is used.
#[derive(Clone)]
struct Typed {
    ty: Option<Type>,
    expr: ir::Expr,
    span: Span,
}

impl Typed {
    /// The expression as type `ty`: a NULL of unknown type becomes a NULL of
    /// that type, an int becomes a float where a float is wanted.
    fn into_type(self, ty: Type) -> ir::Expr {
        match self.ty {
            None => ir::Expr::null(ty),
            Some(Type::Int) if ty == Type::Float => {
                ir::Expr::new(Type::Float, K::ToFloat(Box::new(self.expr)))
            }
            Some(_) => self.expr,
        }
    }
}

pub struct ExprChecker<'a> {
    pub file: FileId,
    pub scope: Scope<'a>,
    pub diagnostics: &'a mut Vec<Diagnostic>,
}

fn type_name(ty: Option<Type>) -> String {
    ty.map_or("null".to_string(), |t| format!("`{t}`"))
}

impl ExprChecker<'_> {
    fn report(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn mismatch(&mut self, span: Span, message: String, operands: &[&Typed]) {
        let mut d = Diagnostic::new(Code::E005, self.file, span, message);
        for operand in operands {
            d = d.with_label(operand.span, format!("this is {}", type_name(operand.ty)));
        }
        self.report(d);
    }

    /// E005 on an expression of type `found` where another was needed.
    fn wrong_type(&mut self, span: Span, message: String, found: Type) {
        self.report(
            Diagnostic::new(Code::E005, self.file, span, message)
                .with_span_label(format!("this is `{found}`")),
        );
    }

    /// Lowers a rule condition, which must be a `bool`.
    pub fn condition(&mut self, expr: &ast::Expr) -> Option<ir::Expr> {
        let typed = self.lower(expr)?;
        match typed.ty {
            None | Some(Type::Bool) => Some(ir::fold(typed.into_type(Type::Bool))),
            Some(other) => {
                self.wrong_type(
                    expr.span,
                    format!("type mismatch: a condition must be `bool`, this is `{other}`"),
                    other,
                );
                None
            }
        }
    }

    /// Lowers an expression that must be of type `want` (an e-mail address).
    pub fn expect(&mut self, expr: &ast::Expr, want: Type) -> Option<ir::Expr> {
        let typed = self.lower(expr)?;
        match typed.ty {
            None => Some(ir::Expr::null(want)),
            Some(t) if t == want => Some(ir::fold(typed.expr)),
            Some(other) => {
                self.wrong_type(
                    expr.span,
                    format!("type mismatch: expected `{want}`, this is `{other}`"),
                    other,
                );
                None
            }
        }
    }

    fn lower(&mut self, expr: &ast::Expr) -> Option<Typed> {
        let span = expr.span;
        let typed = |ty: Type, kind: K| {
            Some(Typed {
                ty: Some(ty),
                expr: ir::Expr::new(ty, kind),
                span,
            })
        };
        match &expr.kind {
            ExprKind::Literal(literal) => {
                let (ty, value) = match literal {
                    Literal::Int(v) => (Type::Int, Value::Int(*v)),
                    Literal::Float(v) => (Type::Float, Value::Float(*v)),
                    Literal::String(v) => (Type::Text, Value::Text(v.clone())),
                    Literal::Bool(v) => (Type::Bool, Value::Bool(*v)),
                    Literal::Duration(v) => (Type::Duration, Value::Duration((*v)?)),
                    Literal::Timestamp(v) => (Type::Timestamp, Value::Timestamp((*v)?)),
                    Literal::Null => return Some(self.null(span)),
                };
                typed(ty, K::Const(value))
            }
            ExprKind::Field(name) => {
                let Scope::Known { fields, poisoned } = self.scope else {
                    return None;
                };
                if poisoned.contains(&name.name) {
                    return None;
                }
                match fields.iter().position(|f| f.name == name.name) {
                    Some(i) => typed(fields[i].ty, K::Field(i)),
                    None => {
                        let mut d = Diagnostic::new(
                            Code::E004,
                            self.file,
                            span,
                            format!("unknown field `{}`", name.name),
                        )
                        .with_span_label("not a field of this track");
                        d.help = did_you_mean(&name.name, fields.iter().map(|f| f.name.as_str()))
                            .or_else(|| {
                                let names: Vec<&str> =
                                    fields.iter().map(|f| f.name.as_str()).collect();
                                Some(format!("the fields are: {}", names.join(", ")))
                            });
                        self.report(d);
                        None
                    }
                }
            }
            ExprKind::Call { name, args } => self.call(name, args, span),
            ExprKind::Unary { op, operand } => {
                let inner = self.lower(operand)?;
                match op {
                    UnaryOp::Not => self.logical_operand(&inner, "not").map(|e| Typed {
                        ty: Some(Type::Bool),
                        expr: ir::Expr::new(Type::Bool, K::Not(Box::new(e))),
                        span,
                    }),
                    UnaryOp::Neg => match inner.ty {
                        None => Some(self.null(span)),
                        Some(ty @ (Type::Int | Type::Float | Type::Duration)) => {
                            typed(ty, K::Neg(Box::new(inner.expr)))
                        }
                        Some(_) => {
                            self.mismatch(
                                span,
                                format!("type mismatch: cannot negate {}", type_name(inner.ty)),
                                &[&inner],
                            );
                            None
                        }
                    },
                }
            }
            ExprKind::Binary { op, lhs, rhs, .. } => {
                if matches!(op, BinaryOp::Eq | BinaryOp::NotEq) {
                    self.warn_null_comparison(*op, lhs, rhs, span);
                }
                let (l, r) = (self.lower(lhs), self.lower(rhs));
                let (l, r) = (l?, r?);
                match op {
                    BinaryOp::And | BinaryOp::Or => {
                        let a = self.logical_operand(&l, op.symbol());
                        let b = self.logical_operand(&r, op.symbol());
                        let (a, b) = (Box::new(a?), Box::new(b?));
                        let kind = if *op == BinaryOp::And {
                            K::And(a, b)
                        } else {
                            K::Or(a, b)
                        };
                        typed(Type::Bool, kind)
                    }
                    op if op.is_comparison() => {
                        let (a, b) = self.comparable(l, r, span)?;
                        typed(Type::Bool, K::Cmp(cmp_op(*op), Box::new(a), Box::new(b)))
                    }
                    _ => self.arith(*op, l, r, span),
                }
            }
            ExprKind::InList {
                operand,
                list,
                negated,
            } => {
                let x = self.lower(operand);
                let items: Vec<Option<Typed>> = list.iter().map(|e| self.lower(e)).collect();
                let x = x?;
                let items: Vec<Typed> = items.into_iter().collect::<Option<_>>()?;
                // The common type of the operand and every element.
                let mut ty = x.ty;
                for item in &items {
                    let Ok(common) = common_type(ty, item.ty) else {
                        self.mismatch(
                            item.span,
                            format!(
                                "type mismatch: cannot look for {} among {}",
                                type_name(x.ty),
                                type_name(item.ty)
                            ),
                            &[&x, item],
                        );
                        return None;
                    };
                    ty = common;
                }
                let ty = ty.unwrap_or(Type::Bool);
                let list = items.into_iter().map(|i| i.into_type(ty)).collect();
                let test = ir::Expr::new(Type::Bool, K::InList(Box::new(x.into_type(ty)), list));
                Some(self.maybe_not(test, *negated, span))
            }
            ExprKind::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let (x, lo, hi) = (self.lower(operand), self.lower(low), self.lower(high));
                let (x, lo, hi) = (x?, lo?, hi?);
                let (lo, x1) = self.comparable(lo, x.clone(), span)?;
                let (x2, hi) = self.comparable(x, hi, span)?;
                let both = K::And(
                    Box::new(ir::Expr::new(
                        Type::Bool,
                        K::Cmp(CmpOp::LtEq, Box::new(lo), Box::new(x1)),
                    )),
                    Box::new(ir::Expr::new(
                        Type::Bool,
                        K::Cmp(CmpOp::LtEq, Box::new(x2), Box::new(hi)),
                    )),
                );
                Some(self.maybe_not(ir::Expr::new(Type::Bool, both), *negated, span))
            }
            ExprKind::IsNull { operand, negated } => {
                let x = self.lower(operand)?;
                let ty = x.ty.unwrap_or(Type::Bool);
                let test = ir::Expr::new(Type::Bool, K::IsNull(Box::new(x.into_type(ty))));
                Some(self.maybe_not(test, *negated, span))
            }
            ExprKind::Like {
                operand,
                pattern,
                negated,
            } => {
                let x = self.lower(operand)?;
                if x.ty.is_some_and(|t| t != Type::Text) {
                    self.mismatch(
                        span,
                        format!(
                            "type mismatch: `like` needs `text`, this is {}",
                            type_name(x.ty)
                        ),
                        &[&x],
                    );
                    return None;
                }
                let test = ir::Expr::new(
                    Type::Bool,
                    K::Like(Box::new(x.into_type(Type::Text)), pattern.value.clone()),
                );
                Some(self.maybe_not(test, *negated, span))
            }
        }
    }

    fn null(&self, span: Span) -> Typed {
        Typed {
            ty: None,
            expr: ir::Expr::null(Type::Bool),
            span,
        }
    }

    fn maybe_not(&self, test: ir::Expr, negated: bool, span: Span) -> Typed {
        let expr = if negated {
            ir::Expr::new(Type::Bool, K::Not(Box::new(test)))
        } else {
            test
        };
        Typed {
            ty: Some(Type::Bool),
            expr,
            span,
        }
    }

    fn logical_operand(&mut self, operand: &Typed, op: &str) -> Option<ir::Expr> {
        match operand.ty {
            None | Some(Type::Bool) => Some(operand.clone().into_type(Type::Bool)),
            Some(_) => {
                self.mismatch(
                    operand.span,
                    format!(
                        "type mismatch: `{op}` needs `bool`, this is {}",
                        type_name(operand.ty)
                    ),
                    &[operand],
                );
                None
            }
        }
    }

    /// Brings two operands of a comparison to one type, or reports E005.
    fn comparable(&mut self, l: Typed, r: Typed, span: Span) -> Option<(ir::Expr, ir::Expr)> {
        let Ok(ty) = common_type(l.ty, r.ty) else {
            let message = format!(
                "type mismatch: cannot compare {} with {}",
                type_name(l.ty),
                type_name(r.ty)
            );
            self.mismatch(span, message, &[&l, &r]);
            return None;
        };
        // Two NULL literals compare as booleans: the result is NULL either way.
        let ty = ty.unwrap_or(Type::Bool);
        Some((l.into_type(ty), r.into_type(ty)))
    }

    fn arith(&mut self, op: BinaryOp, l: Typed, r: Typed, span: Span) -> Option<Typed> {
        use Type::*;
        let arith_op = match op {
            BinaryOp::Add => ArithOp::Add,
            BinaryOp::Sub => ArithOp::Sub,
            BinaryOp::Mul => ArithOp::Mul,
            BinaryOp::Div => ArithOp::Div,
            _ => ArithOp::Rem,
        };
        let additive = matches!(op, BinaryOp::Add | BinaryOp::Sub);
        // (left operand type, right operand type, result type)
        let types = match (l.ty, r.ty) {
            (None, None) => return Some(self.null(span)),
            (Some(Int), Some(Int)) => (Int, Int, Int),
            (Some(a), Some(b)) if a.is_numeric() && b.is_numeric() => (Float, Float, Float),
            (Some(t), None) | (None, Some(t)) if t.is_numeric() => (t, t, t),
            (Some(Timestamp), Some(Duration) | None) if additive => {
                (Timestamp, Duration, Timestamp)
            }
            (Some(Duration) | None, Some(Timestamp)) if op == BinaryOp::Add => {
                (Duration, Timestamp, Timestamp)
            }
            (Some(Timestamp), Some(Timestamp)) if op == BinaryOp::Sub => {
                (Timestamp, Timestamp, Duration)
            }
            (Some(Duration), Some(Duration) | None) | (None, Some(Duration)) if additive => {
                (Duration, Duration, Duration)
            }
            _ => {
                let message = format!(
                    "type mismatch: cannot apply `{}` to {} and {}",
                    op.symbol(),
                    type_name(l.ty),
                    type_name(r.ty)
                );
                self.mismatch(span, message, &[&l, &r]);
                return None;
            }
        };
        let (lt, rt, result) = types;
        Some(Typed {
            ty: Some(result),
            expr: ir::Expr::new(
                result,
                K::Arith(
                    arith_op,
                    Box::new(l.into_type(lt)),
                    Box::new(r.into_type(rt)),
                ),
            ),
            span,
        })
    }

    fn call(&mut self, name: &ast::Ident, args: &[ast::Expr], span: Span) -> Option<Typed> {
        let Some(&(_, min, max)) = FUNCTIONS.iter().find(|(n, _, _)| *n == name.name) else {
            let mut d = Diagnostic::new(
                Code::E012,
                self.file,
                name.span,
                format!("unknown function `{}`", name.name),
            )
            .with_span_label("not a function of the language");
            d.help = did_you_mean(&name.name, FUNCTIONS.iter().map(|f| f.0)).or_else(|| {
                Some("the functions are: now, lower, upper, length, abs, coalesce".to_string())
            });
            self.report(d);
            for arg in args {
                let _ = self.lower(arg);
            }
            return None;
        };
        if args.len() < min || args.len() > max {
            let expected = match (min, max) {
                (0, 0) => "no arguments".to_string(),
                (1, 1) => "1 argument".to_string(),
                (m, usize::MAX) => {
                    format!("at least {m} argument{}", if m == 1 { "" } else { "s" })
                }
                (m, n) => format!("{m} to {n} arguments"),
            };
            self.report(
                Diagnostic::new(
                    Code::E012,
                    self.file,
                    span,
                    format!("`{}` takes {expected}, found {}", name.name, args.len()),
                )
                .with_span_label("wrong number of arguments"),
            );
            return None;
        }
        let lowered: Vec<Option<Typed>> = args.iter().map(|a| self.lower(a)).collect();
        let mut args: Vec<Typed> = lowered.into_iter().collect::<Option<_>>()?;
        let typed = |ty: Type, kind: K| {
            Some(Typed {
                ty: Some(ty),
                expr: ir::Expr::new(ty, kind),
                span,
            })
        };
        match name.name.as_str() {
            "now" => typed(Type::Timestamp, K::Now),
            "lower" | "upper" | "length" => {
                let arg = args.pop().expect("arity checked");
                if arg.ty.is_some_and(|t| t != Type::Text) {
                    self.mismatch(
                        arg.span,
                        format!(
                            "type mismatch: `{}` needs `text`, this is {}",
                            name.name,
                            type_name(arg.ty)
                        ),
                        &[&arg],
                    );
                    return None;
                }
                let arg = Box::new(arg.into_type(Type::Text));
                match name.name.as_str() {
                    "lower" => typed(Type::Text, K::Lower(arg)),
                    "upper" => typed(Type::Text, K::Upper(arg)),
                    _ => typed(Type::Int, K::Length(arg)),
                }
            }
            "abs" => {
                let arg = args.pop().expect("arity checked");
                match arg.ty {
                    None => Some(self.null(span)),
                    Some(ty @ (Type::Int | Type::Float | Type::Duration)) => {
                        typed(ty, K::Abs(Box::new(arg.expr)))
                    }
                    Some(_) => {
                        self.mismatch(
                            arg.span,
                            format!(
                                "type mismatch: `abs` needs a number, this is {}",
                                type_name(arg.ty)
                            ),
                            &[&arg],
                        );
                        None
                    }
                }
            }
            _ => {
                // coalesce: one common type for all arguments.
                let mut ty: Option<Type> = None;
                for arg in &args {
                    let Ok(common) = common_type(ty, arg.ty) else {
                        self.mismatch(
                            arg.span,
                            format!(
                                "type mismatch: `coalesce` arguments must agree, found {} and {}",
                                type_name(ty),
                                type_name(arg.ty)
                            ),
                            &[&args[0], arg],
                        );
                        return None;
                    };
                    ty = common;
                }
                let Some(ty) = ty else {
                    return Some(self.null(span));
                };
                typed(
                    ty,
                    K::Coalesce(args.into_iter().map(|a| a.into_type(ty)).collect()),
                )
            }
        }
    }

    fn warn_null_comparison(&mut self, op: BinaryOp, lhs: &ast::Expr, rhs: &ast::Expr, span: Span) {
        let is_null = |e: &ast::Expr| matches!(e.kind, ExprKind::Literal(Literal::Null));
        if is_null(lhs) || is_null(rhs) {
            let (fix, written) = if op == BinaryOp::Eq {
                ("is null", "=")
            } else {
                ("is not null", "!=")
            };
            self.report(
                Diagnostic::new(
                    Code::W004,
                    self.file,
                    span,
                    format!("comparing with `null` using `{written}` is never true"),
                )
                .with_span_label("always NULL")
                .with_help(format!("use `{fix}`")),
            );
        }
    }
}

fn cmp_op(op: BinaryOp) -> CmpOp {
    match op {
        BinaryOp::Eq => CmpOp::Eq,
        BinaryOp::NotEq => CmpOp::NotEq,
        BinaryOp::Lt => CmpOp::Lt,
        BinaryOp::LtEq => CmpOp::LtEq,
        BinaryOp::Gt => CmpOp::Gt,
        _ => CmpOp::GtEq,
    }
}

/// Two operand types do not meet in one type.
struct Mismatch;

/// The one type two operands are brought to: equal types meet in themselves,
/// an unknown type (a NULL literal) meets anything, `int` and `float` meet
/// in `float`; anything else is a mismatch.
fn common_type(a: Option<Type>, b: Option<Type>) -> Result<Option<Type>, Mismatch> {
    match (a, b) {
        (None, t) | (t, None) => Ok(t),
        (Some(a), Some(b)) if a == b => Ok(Some(a)),
        (Some(a), Some(b)) if a.is_numeric() && b.is_numeric() => Ok(Some(Type::Float)),
        _ => Err(Mismatch),
    }
}
