//! The operator's side of the HTTP API (`trackc deploy/status/drain/emit
//! --to URL`).

use crate::error::{Error, Result};

/// Sends one request; the status and the body.
pub fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut req = client
            .request(method, url)
            .timeout(std::time::Duration::from_secs(60));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let response = req
            .send()
            .await
            .map_err(|e| Error::Io(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| Error::Io(format!("{url}: {e}")))?;
        Ok((status, text))
    })
}
