//! Constant folding over IR expressions. A subtree with no field and no
//! `now()` is evaluated once, here, by the reference interpreter — so folding
//! cannot change what an expression means. `and`/`or` with one constant side
//! simplify by three-valued logic.

use super::{Expr, ExprKind};
use crate::interp::{eval, Env};
use crate::value::Value;

pub fn fold(expr: Expr) -> Expr {
    use ExprKind::*;
    let ty = expr.ty;
    let f = |e: Box<Expr>| Box::new(fold(*e));
    let kind = match expr.kind {
        k @ (Const(_) | Field(_) | Now) => return Expr::new(ty, k),
        Not(e) => Not(f(e)),
        And(a, b) => {
            let (a, b) = (fold(*a), fold(*b));
            match (a.as_const(), b.as_const()) {
                (Some(Value::Bool(false)), _) | (_, Some(Value::Bool(false))) => {
                    return Expr::constant(ty, Value::Bool(false))
                }
                (Some(Value::Bool(true)), _) => return b,
                (_, Some(Value::Bool(true))) => return a,
                _ => And(Box::new(a), Box::new(b)),
            }
        }
        Or(a, b) => {
            let (a, b) = (fold(*a), fold(*b));
            match (a.as_const(), b.as_const()) {
                (Some(Value::Bool(true)), _) | (_, Some(Value::Bool(true))) => {
                    return Expr::constant(ty, Value::Bool(true))
                }
                (Some(Value::Bool(false)), _) => return b,
                (_, Some(Value::Bool(false))) => return a,
                _ => Or(Box::new(a), Box::new(b)),
            }
        }
        Neg(e) => Neg(f(e)),
        Arith(op, a, b) => Arith(op, f(a), f(b)),
        Cmp(op, a, b) => Cmp(op, f(a), f(b)),
        ToFloat(e) => ToFloat(f(e)),
        IsNull(e) => IsNull(f(e)),
        InList(e, list) => InList(f(e), list.into_iter().map(fold).collect()),
        Like(e, p) => Like(f(e), p),
        Lower(e) => Lower(f(e)),
        Upper(e) => Upper(f(e)),
        Length(e) => Length(f(e)),
        Abs(e) => Abs(f(e)),
        Coalesce(args) => {
            // Leading NULL constants never win; a leading non-NULL constant
            // always does.
            let mut args: Vec<Expr> = args
                .into_iter()
                .map(fold)
                .skip_while(|a| a.as_const() == Some(&Value::Null))
                .collect();
            match args.first().and_then(Expr::as_const) {
                Some(_) => return args.swap_remove(0),
                None if args.is_empty() => return Expr::null(ty),
                None => Coalesce(args),
            }
        }
    };
    let expr = Expr::new(ty, kind);
    if expr.children().iter().all(|c| c.as_const().is_some()) {
        let value = eval(&expr, &[], Env { now: 0 });
        return Expr::constant(ty, value);
    }
    expr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{ArithOp, CmpOp};
    use crate::types::Type;

    fn int(v: i64) -> Box<Expr> {
        Box::new(Expr::constant(Type::Int, Value::Int(v)))
    }

    #[test]
    fn constant_subtrees_fold_and_fields_stay() {
        let sum = Expr::new(Type::Int, ExprKind::Arith(ArithOp::Add, int(2), int(3)));
        let field = Box::new(Expr::new(Type::Int, ExprKind::Field(0)));
        let cmp = Expr::new(
            Type::Bool,
            ExprKind::Cmp(CmpOp::Gt, field.clone(), Box::new(sum)),
        );
        let folded = fold(cmp);
        assert_eq!(
            folded,
            Expr::new(Type::Bool, ExprKind::Cmp(CmpOp::Gt, field, int(5)))
        );
    }

    #[test]
    fn and_or_simplify_by_three_valued_logic() {
        let x = Box::new(Expr::new(Type::Bool, ExprKind::Field(0)));
        let t = Box::new(Expr::constant(Type::Bool, Value::Bool(true)));
        let n = Box::new(Expr::null(Type::Bool));
        assert_eq!(
            fold(Expr::new(Type::Bool, ExprKind::And(t.clone(), x.clone()))),
            *x
        );
        assert_eq!(
            fold(Expr::new(Type::Bool, ExprKind::Or(x.clone(), t.clone()))),
            *t
        );
        // null and x is not foldable: it is false when x is false.
        let kept = Expr::new(Type::Bool, ExprKind::And(n, x));
        assert_eq!(fold(kept.clone()), kept);
    }
}
