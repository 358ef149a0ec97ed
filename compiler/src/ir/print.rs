//! The stable text form of the IR (`trackc build --emit ir`), pinned by
//! snapshot tests. Change it deliberately: people and tests read it.

use super::*;
use crate::syntax::literals::{format_duration, format_timestamp};
use std::fmt::Write;

pub fn print_program(program: &Program) -> String {
    let mut out = String::new();
    for (i, track) in program.tracks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        print_track(&mut out, track);
    }
    out
}

fn print_sql(out: &mut String, label: &str, sql: &Sql, indent: &str) {
    let params = if sql.params.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = sql.params.iter().map(|p| format!(":{p}")).collect();
        format!(" params({})", names.join(", "))
    };
    let _ = writeln!(out, "{indent}{label}{params}");
    // Lines after the first keep their indentation relative to each other.
    let text = sql.text.trim();
    let common = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    for (i, line) in text.lines().enumerate() {
        let line = if i == 0 {
            line
        } else {
            line.get(common..).unwrap_or(line.trim_start())
        };
        let _ = writeln!(out, "{indent}  | {}", line.trim_end());
    }
}

fn print_track(out: &mut String, track: &Track) {
    let version = track
        .version
        .map(|v| format!(" version {v}"))
        .unwrap_or_default();
    let _ = writeln!(out, "track {}{version}", track.name);
    let _ = writeln!(out, "  key {}", track.fields[track.key].name);
    let _ = writeln!(out, "  fields");
    for (i, f) in track.fields.iter().enumerate() {
        let _ = writeln!(
            out,
            "    #{i} {}: {}{}",
            f.name,
            f.ty,
            if f.nullable { "?" } else { "" }
        );
    }
    print_sql(out, "source", &track.source, "  ");
    for trigger in &track.triggers {
        match trigger {
            Trigger::Every(d) => {
                let _ = writeln!(out, "  on every {}", format_duration(*d));
            }
            Trigger::Cron { expr, tz } => {
                let tz = tz
                    .as_ref()
                    .map(|t| format!(" tz '{t}'"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  on cron '{expr}'{tz}");
            }
            Trigger::At(t) => {
                let _ = writeln!(out, "  on at {}", format_timestamp(*t));
            }
            Trigger::Event(e) => {
                let _ = writeln!(out, "  on event {e}");
            }
            Trigger::Change(sql) => print_sql(out, "on change", sql, "  "),
        }
    }
    for (i, step) in track.steps.iter().enumerate() {
        let wait = step
            .wait
            .map(|w| format!(" wait {}", format_duration(w)))
            .unwrap_or_default();
        let _ = writeln!(out, "  step #{i} {}{wait}", step.name);
        for (r, rule) in step.rules.iter().enumerate() {
            let condition = match &rule.condition {
                Some(c) => format!("when {}", expr_text(c, track)),
                None => "else".to_string(),
            };
            let _ = writeln!(out, "    rule {} {condition}", r + 1);
            for effect in &rule.effects {
                match effect {
                    Effect::Sql(sql) => print_sql(out, "sql", sql, "      "),
                    Effect::Email { template, to } => {
                        let _ =
                            writeln!(out, "      email '{template}' to {}", expr_text(to, track));
                    }
                    Effect::Webhook { url } => {
                        let _ = writeln!(out, "      webhook '{url}'");
                    }
                    Effect::Emit { event } => {
                        let _ = writeln!(out, "      emit {event}");
                    }
                }
            }
            let transition = match rule.transition {
                Transition::Stay => "stay".to_string(),
                Transition::Goto(s) => format!("goto #{s} {}", track.steps[s].name),
                Transition::End => "end".to_string(),
            };
            let _ = writeln!(out, "      {transition}");
        }
    }
}

fn cmp_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "eq",
        CmpOp::NotEq => "ne",
        CmpOp::Lt => "lt",
        CmpOp::LtEq => "le",
        CmpOp::Gt => "gt",
        CmpOp::GtEq => "ge",
    }
}

fn arith_name(op: ArithOp) -> &'static str {
    match op {
        ArithOp::Add => "add",
        ArithOp::Sub => "sub",
        ArithOp::Mul => "mul",
        ArithOp::Div => "div",
        ArithOp::Rem => "rem",
    }
}

/// One expression as typed prefix calls: `and(ge.int($score, 50), …)`.
pub fn expr_text(expr: &Expr, track: &Track) -> String {
    use ExprKind::*;
    let t = |e: &Expr| expr_text(e, track);
    let list = |es: &[Expr]| {
        es.iter()
            .map(|e| expr_text(e, track))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &expr.kind {
        Const(Value::Null) => format!("null.{}", expr.ty),
        Const(v) => v.to_string(),
        Field(i) => format!("${}", track.fields[*i].name),
        Now => "now()".to_string(),
        Not(e) => format!("not({})", t(e)),
        And(a, b) => format!("and({}, {})", t(a), t(b)),
        Or(a, b) => format!("or({}, {})", t(a), t(b)),
        Neg(e) => format!("neg.{}({})", expr.ty, t(e)),
        Arith(op, a, b) => format!("{}.{}({}, {})", arith_name(*op), a.ty, t(a), t(b)),
        Cmp(op, a, b) => format!("{}.{}({}, {})", cmp_name(*op), a.ty, t(a), t(b)),
        ToFloat(e) => format!("float({})", t(e)),
        IsNull(e) => format!("is_null({})", t(e)),
        InList(e, items) => format!("in.{}({}, [{}])", e.ty, t(e), list(items)),
        Like(e, p) => format!("like({}, '{}')", t(e), p.replace('\'', "''")),
        Lower(e) => format!("lower({})", t(e)),
        Upper(e) => format!("upper({})", t(e)),
        Length(e) => format!("length({})", t(e)),
        Abs(e) => format!("abs.{}({})", expr.ty, t(e)),
        Coalesce(args) => format!("coalesce.{}({})", expr.ty, list(args)),
    }
}
