//! The operator's side of the HTTP API (`trackc deploy/status/drain/emit
//! --to URL`): `https://` verified against the system's roots or `--ca`,
//! an optional client certificate, and plain `http://` only to this
//! machine unless the operator insists.

use crate::error::{Error, Result};
use std::path::PathBuf;

/// How a client reaches a node's API.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// Trust only the CA certificates of this PEM file (a private CA).
    pub ca: Option<PathBuf>,
    /// The client's certificate and key (PEM), for a node with
    /// `tls_client_ca`.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Send plain HTTP to another machine anyway.
    pub insecure_http: bool,
}

/// What to do about a URL before anything is sent: refused (an error), or
/// allowed with a warning to print, or allowed.
pub fn check_url(url: &reqwest::Url, connection: &Connection) -> Result<Option<String>> {
    match url.scheme() {
        "https" => return Ok(None),
        "http" => {}
        other => {
            return Err(Error::Config(format!(
                "{url}: `{other}://` is not an API address: write https://HOST:PORT (or \
                 http:// to this machine)"
            )))
        }
    }
    if connection.ca.is_some() || connection.identity.is_some() {
        return Err(Error::Config(format!(
            "{url}: --ca and --client-cert are for https:// URLs; over http:// nothing would \
             be encrypted"
        )));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if loopback {
        return Ok(None);
    }
    let host = url.host_str().unwrap_or("?");
    if !connection.insecure_http {
        return Err(Error::Config(format!(
            "{url}: plain http:// to {host} would send the token and the request across the \
             network in clear: use https:// (with --ca FILE for a private CA), or \
             --insecure-http to send it anyway"
        )));
    }
    Ok(Some(format!(
        "WARNING: --insecure-http: the token and the request go to {host} in clear; anyone on \
         the network between can read and replay them"
    )))
}

fn read(flag: &str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{flag} {}: {e}", path.display())))
}

fn client(connection: &Connection) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = &connection.ca {
        let certs = reqwest::Certificate::from_pem_bundle(&read("--ca", ca)?)
            .map_err(|e| Error::Config(format!("--ca {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "--ca {}: no certificate in it (a PEM file with -----BEGIN CERTIFICATE-----)",
                ca.display()
            )));
        }
        builder = builder.tls_certs_only(certs);
    }
    if let Some((cert, key)) = &connection.identity {
        let mut pem = read("--client-cert", cert)?;
        pem.push(b'\n');
        pem.extend(read("--client-key", key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            Error::Config(format!(
                "--client-cert {} --client-key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| Error::Config(format!("the HTTP client: {e}")))
}

/// A query string of `pairs`, each percent-encoded (`track=a&key=b%20c`).
pub fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Sends one request; the status and the body.
pub fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
    connection: &Connection,
) -> Result<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::Config(format!("{url}: {e}: write https://HOST:PORT")))?;
    if let Some(warning) = check_url(&parsed, connection)? {
        eprintln!("{warning}");
    }
    let client = client(connection)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut req = client
            .request(method, parsed)
            .timeout(std::time::Duration::from_secs(60));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let response = req.send().await.map_err(|e| Error::Io(describe(url, e)))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| Error::Io(format!("{url}: {e}")))?;
        Ok((status, text))
    })
}

/// A request error with its causes: reqwest's own message alone ("error
/// sending request") hides the certificate problem behind it.
fn describe(url: &str, e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = format!("{url}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, connection: &Connection) -> std::result::Result<Option<String>, String> {
        check_url(&reqwest::Url::parse(url).unwrap(), connection).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_http_goes_only_to_this_machine_unless_insisted() {
        let plain = Connection::default();
        for local in [
            "http://127.0.0.1:8101",
            "http://127.9.9.9",
            "http://[::1]:80",
            "http://localhost:8101/",
            "https://10.0.0.5:8101",
            "https://trackc.example.com",
        ] {
            assert_eq!(check(local, &plain), Ok(None), "{local}");
        }
        let refused = check("http://10.0.0.5:8101", &plain).unwrap_err();
        assert!(
            refused.contains("in clear") && refused.contains("--insecure-http"),
            "{refused}"
        );
        assert!(check("http://node1.example.com", &plain).is_err());
        let insisting = Connection {
            insecure_http: true,
            ..Connection::default()
        };
        let warning = check("http://10.0.0.5:8101", &insisting).unwrap().unwrap();
        assert!(
            warning.starts_with("WARNING") && warning.contains("10.0.0.5"),
            "{warning}"
        );
        let with_ca = Connection {
            ca: Some("ca.pem".into()),
            ..Connection::default()
        };
        let e = check("http://127.0.0.1:8101", &with_ca).unwrap_err();
        assert!(e.contains("are for https://"), "{e}");
        let e = check("ftp://127.0.0.1", &plain).unwrap_err();
        assert!(e.contains("`ftp://` is not an API address"), "{e}");
    }
}
