//! Records in and decisions out, as JSON lines (`trackc eval`): a record is
//! one JSON object with a member per field; a decision says which rule of
//! the step fired, the actions it takes, and the step the record is in next.

use crate::interp::{eval, Env};
use crate::ir::{Effect, Step, Track, Transition};
use crate::syntax::literals::{format_duration, format_timestamp, parse_timestamp};
use crate::types::Type;
use crate::value::Value;
use serde_json::{json, Map, Value as Json};

/// Reads one record of `track` from a JSON object. Every field must be
/// present (`null` for NULL); members that are not fields are ignored.
pub fn parse_record(track: &Track, line: &str) -> Result<Vec<Value>, String> {
    let object: Map<String, Json> = match serde_json::from_str(line) {
        Ok(Json::Object(o)) => o,
        Ok(_) => return Err("a record must be a JSON object".to_string()),
        Err(e) => return Err(format!("not valid JSON: {e}")),
    };
    track
        .fields
        .iter()
        .map(|field| {
            let json = object.get(&field.name).ok_or_else(|| {
                format!(
                    "missing field `{}` (write `\"{}\": null` for NULL)",
                    field.name, field.name
                )
            })?;
            json_value(field.ty, json).map_err(|e| format!("field `{}`: {e}", field.name))
        })
        .collect()
}

fn json_value(ty: Type, json: &Json) -> Result<Value, String> {
    let wrong = |what: &str| Err(format!("expected {what}, found {json}"));
    Ok(match (ty, json) {
        (_, Json::Null) => Value::Null,
        (Type::Int, Json::Number(n)) => match n.as_i64() {
            Some(v) => Value::Int(v),
            None => return wrong("a 64-bit integer"),
        },
        (Type::Float, Json::Number(n)) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        (Type::Bool, Json::Bool(b)) => Value::Bool(*b),
        (Type::Text, Json::String(s)) => Value::Text(s.clone()),
        (Type::Timestamp, Json::String(s)) => Value::Timestamp(parse_timestamp(s)?),
        (Type::Int, _) => return wrong("an integer"),
        (Type::Float, _) => return wrong("a number"),
        (Type::Bool, _) => return wrong("true or false"),
        (Type::Text, _) => return wrong("a string"),
        (Type::Timestamp | Type::Duration, _) => return wrong("an RFC 3339 timestamp string"),
    })
}

/// A value as JSON: timestamps as RFC 3339 strings, durations in the
/// language's notation.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Int(v) => json!(v),
        Value::Float(v) => json!(v),
        Value::Bool(v) => json!(v),
        Value::Text(v) => json!(v),
        Value::Timestamp(v) => json!(format_timestamp(*v)),
        Value::Duration(v) => json!(format_duration(*v)),
    }
}

/// The decision for one record in `step`, given the index of the rule that
/// fired (from whichever evaluator).
pub fn decision(
    track: &Track,
    step: &Step,
    record: &[Value],
    fired: Option<usize>,
    env: Env,
) -> Json {
    let mut actions = Vec::new();
    let mut next = Some(step.name.clone());
    if let Some(rule) = fired.map(|r| &step.rules[r]) {
        for effect in &rule.effects {
            actions.push(match effect {
                Effect::Sql(sql) => {
                    let params: Map<String, Json> = sql
                        .params
                        .iter()
                        .map(|p| {
                            let value = match p.as_str() {
                                "now" => Value::Timestamp(env.now),
                                "last_run" => Value::Null,
                                field => track.field(field).map_or(Value::Null, |i| record[i].clone()),
                            };
                            (p.clone(), value_json(&value))
                        })
                        .collect();
                    json!({"action": "sql", "statement": sql.text, "params": params})
                }
                Effect::Email { template, to } => {
                    json!({"action": "email", "template": template, "to": value_json(&eval(to, record, env))})
                }
                Effect::Webhook { url } => json!({"action": "webhook", "url": url}),
                Effect::Emit { event } => json!({"action": "emit", "event": event}),
            });
        }
        match rule.transition {
            Transition::Stay => actions.push(json!({"action": "stay"})),
            Transition::Goto(s) => {
                next = Some(track.steps[s].name.clone());
                actions.push(json!({"action": "goto", "step": track.steps[s].name}));
            }
            Transition::End => {
                next = None;
                actions.push(json!({"action": "end"}));
            }
        }
    }
    json!({
        "key": value_json(&record[track.key]),
        "step": step.name,
        "rule": fired.map(|r| r + 1),
        "actions": actions,
        "next": next,
    })
}
