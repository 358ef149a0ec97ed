//! Webhooks: a JSON `POST` of the record to the track's URL, with the
//! outbox row's id as `Idempotency-Key`.

use super::Failure;
use crate::db::OutboxItem;
use crate::error::{Error, Result};
use std::time::Duration;

pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("trackc/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))
}

/// The body a receiver gets: `{"id", "track", "key", "record"}`, where
/// `record` is the record's fields as the run saw them.
pub(crate) fn body(item: &OutboxItem) -> String {
    let text = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "{{\"id\":{},\"track\":{},\"key\":{},\"record\":{}}}",
        text(&item.row.id),
        text(&item.row.track),
        text(&item.row.key),
        item.row.payload
    )
}

pub(crate) async fn post(
    http: &reqwest::Client,
    item: &OutboxItem,
) -> std::result::Result<(), Failure> {
    let response = http
        .post(&item.row.target)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", &item.row.id)
        .body(body(item))
        .send()
        .await
        .map_err(|e| {
            if e.is_builder() {
                Failure::Permanent(format!("bad webhook URL: {}", error_chain(&e)))
            } else {
                Failure::Transient {
                    error: error_chain(&e),
                    retry_after: None,
                }
            }
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let error = format!("the receiver answered {status}");
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Request time-out, too early, too many requests and server errors may
    // pass; any other answer says the request itself is wrong.
    if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
        Err(Failure::Transient { error, retry_after })
    } else {
        Err(Failure::Permanent(error))
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{OutboxKind, OutboxRow};

    #[test]
    fn body_is_json_with_the_record() {
        let item = OutboxItem {
            row: OutboxRow {
                id: "t/k\"1/3/0".into(),
                kind: OutboxKind::Webhook,
                track: "t".into(),
                key: "k\"1".into(),
                target: "http://127.0.0.1/x".into(),
                recipient: None,
                payload: r#"{"id":1,"plan":"trial"}"#.into(),
                at: 0,
            },
            attempt: 1,
        };
        let v: serde_json::Value = serde_json::from_str(&body(&item)).unwrap();
        assert_eq!(v["key"], "k\"1");
        assert_eq!(v["record"]["plan"], "trial");
        assert_eq!(v["id"], "t/k\"1/3/0");
    }
}
