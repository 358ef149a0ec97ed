//! The reference interpreter: evaluates IR expressions and steps over one
//! record at a time, with exactly LANGUAGE.md's semantics and nothing clever.
//! Every other evaluator (the JIT, SQL engines in tests) is checked against it.

use crate::block::Block;
use crate::ir::{ArithOp, CmpOp, Expr, ExprKind, Step};
use crate::types::Type;
use crate::value::Value;
use std::cmp::Ordering;

/// What an evaluation sees besides the record: the instant of the run.
#[derive(Clone, Copy, Debug)]
pub struct Env {
    /// `now()`, microseconds since the epoch.
    pub now: i64,
}

/// The 0-based index of the first rule of `step` that
/// fires for `record`, or `None` if none does.
pub fn eval_step(step: &Step, record: &[Value], env: Env) -> Option<usize> {
    step.rules.iter().position(|rule| match &rule.condition {
        None => true,
        Some(condition) => eval(condition, record, env) == Value::Bool(true),
    })
}

/// [`eval_step`] for every record of a block, one record at a time (the
/// reference the JIT is held to, and the interpreter's engine in `eval`).
pub fn eval_block(step: &Step, block: &Block, env: Env) -> Vec<Option<usize>> {
    let mut record = Vec::with_capacity(block.columns().len());
    (0..block.len())
        .map(|i| {
            record.clear();
            record.extend(block.columns().iter().map(|c| c.get(i)));
            eval_step(step, &record, env)
        })
        .collect()
}

/// Evaluates an expression over one record (values indexed by field).
pub fn eval(expr: &Expr, record: &[Value], env: Env) -> Value {
    use ExprKind::*;
    let ev = |e: &Expr| eval(e, record, env);
    match &expr.kind {
        Const(v) => v.clone(),
        Field(i) => record[*i].clone(),
        Now => Value::Timestamp(env.now),
        Not(e) => match ev(e) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        And(a, b) => match (ev(a), ev(b)) {
            (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
            (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
            _ => Value::Null,
        },
        Or(a, b) => match (ev(a), ev(b)) {
            (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
            (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
            _ => Value::Null,
        },
        Neg(e) => match ev(e) {
            Value::Int(v) => v.checked_neg().map_or(Value::Null, Value::Int),
            Value::Duration(v) => v.checked_neg().map_or(Value::Null, Value::Duration),
            Value::Float(v) => Value::float(-v),
            _ => Value::Null,
        },
        Arith(op, a, b) => arith(*op, expr.ty, ev(a), ev(b)),
        Cmp(op, a, b) => match compare(&ev(a), &ev(b)) {
            Some(ordering) => Value::Bool(cmp_holds(*op, ordering)),
            None => Value::Null,
        },
        ToFloat(e) => match ev(e) {
            Value::Int(v) => Value::Float(v as f64),
            _ => Value::Null,
        },
        IsNull(e) => Value::Bool(ev(e).is_null()),
        InList(e, list) => {
            let x = ev(e);
            let mut saw_null = x.is_null();
            for item in list {
                match compare(&x, &ev(item)) {
                    Some(Ordering::Equal) => return Value::Bool(true),
                    Some(_) => {}
                    None => saw_null = true,
                }
            }
            if saw_null {
                Value::Null
            } else {
                Value::Bool(false)
            }
        }
        Like(e, pattern) => match ev(e) {
            Value::Text(s) => Value::Bool(like(&s, pattern)),
            _ => Value::Null,
        },
        Lower(e) => text_fn(ev(e), |s| Value::Text(s.to_lowercase())),
        Upper(e) => text_fn(ev(e), |s| Value::Text(s.to_uppercase())),
        Length(e) => text_fn(ev(e), |s| Value::Int(s.chars().count() as i64)),
        Abs(e) => match ev(e) {
            Value::Int(v) => v.checked_abs().map_or(Value::Null, Value::Int),
            Value::Duration(v) => v.checked_abs().map_or(Value::Null, Value::Duration),
            Value::Float(v) => Value::Float(v.abs()),
            _ => Value::Null,
        },
        Coalesce(args) => args
            .iter()
            .map(ev)
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
    }
}

fn text_fn(v: Value, f: impl FnOnce(&str) -> Value) -> Value {
    match v {
        Value::Text(s) => f(&s),
        _ => Value::Null,
    }
}

fn cmp_holds(op: CmpOp, ordering: Ordering) -> bool {
    match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::NotEq => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::LtEq => ordering != Ordering::Greater,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::GtEq => ordering != Ordering::Less,
    }
}

/// Orders two values of the same type; `None` if either is NULL.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Timestamp(x), Value::Timestamp(y)) | (Value::Duration(x), Value::Duration(y)) => {
            Some(x.cmp(y))
        }
        _ => None,
    }
}

fn int_arith(op: ArithOp, a: i64, b: i64) -> Option<i64> {
    match op {
        ArithOp::Add => a.checked_add(b),
        ArithOp::Sub => a.checked_sub(b),
        ArithOp::Mul => a.checked_mul(b),
        ArithOp::Div => a.checked_div(b),
        // i64::MIN % -1 is 0, not an overflow.
        ArithOp::Rem if b == -1 => Some(0),
        ArithOp::Rem => a.checked_rem(b),
    }
}

fn arith(op: ArithOp, ty: Type, a: Value, b: Value) -> Value {
    let int = |a: i64, b: i64| int_arith(op, a, b);
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => match op {
            ArithOp::Add => Value::float(x + y),
            ArithOp::Sub => Value::float(x - y),
            ArithOp::Mul => Value::float(x * y),
            ArithOp::Div | ArithOp::Rem if y == 0.0 => Value::Null,
            ArithOp::Div => Value::float(x / y),
            ArithOp::Rem => Value::float(x % y),
        },
        (Value::Int(x), Value::Int(y)) => int(x, y).map_or(Value::Null, Value::Int),
        (Value::Timestamp(x) | Value::Duration(x), Value::Timestamp(y) | Value::Duration(y)) => {
            match int(x, y) {
                None => Value::Null,
                Some(v) if ty == Type::Timestamp => Value::Timestamp(v),
                Some(v) => Value::Duration(v),
            }
        }
        _ => Value::Null,
    }
}

/// SQL `LIKE`, case-sensitive: `%` matches any run of characters, `_` one
/// character. Linear backtracking over the last `%` (no exponential blowup).
pub fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || (pattern[p] != '%' && pattern[p] == text[t]))
        {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: Value) -> Expr {
        let ty = v.ty().unwrap_or(Type::Bool);
        Expr::constant(ty, v)
    }

    fn run(kind: ExprKind, ty: Type) -> Value {
        eval(&Expr::new(ty, kind), &[], Env { now: 0 })
    }

    #[test]
    fn like_matches_sql() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "h_llo"));
        assert!(!like("Hello", "h%"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("ééx", "__x"));
        assert!(like("a%b", "a%b"));
        assert!(!like("abc", "ab"));
        assert!(like("mississippi", "%iss%ppi"));
    }

    #[test]
    fn integer_edges_are_null_not_panics() {
        let int = |v| Box::new(c(Value::Int(v)));
        assert_eq!(
            run(
                ExprKind::Arith(ArithOp::Add, int(i64::MAX), int(1)),
                Type::Int
            ),
            Value::Null
        );
        assert_eq!(
            run(ExprKind::Arith(ArithOp::Div, int(1), int(0)), Type::Int),
            Value::Null
        );
        assert_eq!(
            run(
                ExprKind::Arith(ArithOp::Div, int(i64::MIN), int(-1)),
                Type::Int
            ),
            Value::Null
        );
        assert_eq!(
            run(
                ExprKind::Arith(ArithOp::Rem, int(i64::MIN), int(-1)),
                Type::Int
            ),
            Value::Int(0)
        );
        assert_eq!(
            run(ExprKind::Arith(ArithOp::Div, int(-7), int(2)), Type::Int),
            Value::Int(-3)
        );
        assert_eq!(
            run(ExprKind::Arith(ArithOp::Rem, int(-7), int(2)), Type::Int),
            Value::Int(-1)
        );
        assert_eq!(run(ExprKind::Neg(int(i64::MIN)), Type::Int), Value::Null);
        assert_eq!(run(ExprKind::Abs(int(i64::MIN)), Type::Int), Value::Null);
    }

    #[test]
    fn three_valued_logic() {
        let b = |v: Option<bool>| Box::new(c(v.map_or(Value::Null, Value::Bool)));
        assert_eq!(
            run(ExprKind::And(b(Some(false)), b(None)), Type::Bool),
            Value::Bool(false)
        );
        assert_eq!(
            run(ExprKind::And(b(Some(true)), b(None)), Type::Bool),
            Value::Null
        );
        assert_eq!(
            run(ExprKind::Or(b(Some(true)), b(None)), Type::Bool),
            Value::Bool(true)
        );
        assert_eq!(
            run(ExprKind::Or(b(Some(false)), b(None)), Type::Bool),
            Value::Null
        );
        assert_eq!(run(ExprKind::Not(b(None)), Type::Bool), Value::Null);
        let x = Box::new(c(Value::Int(1)));
        let list = vec![c(Value::Int(2)), Expr::null(Type::Int)];
        assert_eq!(
            run(ExprKind::InList(x.clone(), list), Type::Bool),
            Value::Null
        );
        let list = vec![c(Value::Int(1)), Expr::null(Type::Int)];
        assert_eq!(
            run(ExprKind::InList(x, list), Type::Bool),
            Value::Bool(true)
        );
    }
}
