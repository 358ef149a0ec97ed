//! The HTTP API over TLS with a real `trackc node` and the real `trackc`
//! client: a private CA with `--ca`, a certificate replaced and reloaded
//! on SIGHUP (and a broken one refused without harm), client certificates
//! required with `tls_client_ca`, and plain `http://` to another machine
//! refused unless the operator insists. One node on SQLite, no peers.

#[path = "support/certs.rs"]
mod certs;
#[path = "support/db.rs"]
mod db;
#[path = "support/nodes.rs"]
mod nodes;

use certs::Ca;
use db::{free_ports, temp_dir};
use nodes::{signal, start, trackc, wait_for, write_configs, Node, Plan, TOKENS};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// `trackc status` against `node` with these extra arguments.
fn status_with(node: &Node, args: &[&str]) -> Output {
    trackc()
        .args(["status", "--format", "json", "--to", &node.http])
        .args(args)
        .env("TRACKC_TOKEN", "viewer-token")
        .output()
        .unwrap()
}

fn answers(node: &Node, args: &[&str]) -> bool {
    let out = status_with(node, args);
    out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|s| s["node"] == 1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("node1.log")).unwrap()
}

#[test]
fn the_api_speaks_tls_reloads_on_sighup_and_can_require_client_certificates() {
    let dir = temp_dir("tls-api");
    let ca1 = Ca::new("trackc test CA one");
    let ca1_pem = ca1.write(&dir, "ca1.pem");
    let ca1_pem = ca1_pem.to_str().unwrap();
    ca1.issue(&dir, "server", &["127.0.0.1", "localhost"], false);
    let ports = free_ports(2);
    let listen = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let mut plan = Plan {
        id: 1,
        listen,
        http: ports[1],
        database: format!("sqlite:{}", dir.join("node.db").display()),
        peers: vec![listen],
        extra: "tls_cert = \"server.pem\"\ntls_key = \"server.key\"".into(),
    };
    let configs = write_configs(&dir, std::slice::from_ref(&plan));
    let https = format!("https://127.0.0.1:{}", ports[1]);
    let node = start(1, &configs[0].1, &https, &dir);

    // Verified against the private CA.
    wait_for("the node answers over TLS", Duration::from_secs(30), || {
        answers(&node, &["--ca", ca1_pem])
    });
    // Without the CA the certificate is not trusted, and the error says so.
    let out = status_with(&node, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    // Plain HTTP to the TLS port gets no answer.
    let plain = Node {
        id: 1,
        http: format!("http://127.0.0.1:{}", ports[1]),
        child: None,
    };
    assert!(!status_with(&plain, &[]).status.success());

    // A new certificate from another CA, reloaded on SIGHUP: new
    // connections are served with it, the old CA no longer verifies.
    let ca2 = Ca::new("trackc test CA two");
    let ca2_pem = ca2.write(&dir, "ca2.pem");
    let ca2_pem = ca2_pem.to_str().unwrap();
    ca2.issue(&dir, "server", &["127.0.0.1"], false);
    signal(&node, "-HUP");
    wait_for(
        "the new certificate is served",
        Duration::from_secs(10),
        || answers(&node, &["--ca", ca2_pem]),
    );
    assert!(!answers(&node, &["--ca", ca1_pem]));
    assert!(log_of(&dir).contains("SIGHUP: reloaded the TLS files"));

    // A broken certificate file is refused on reload; the node goes on
    // with the one it has.
    let good = std::fs::read(dir.join("server.pem")).unwrap();
    std::fs::write(dir.join("server.pem"), "not a certificate\n").unwrap();
    signal(&node, "-HUP");
    wait_for(
        "the broken reload is logged",
        Duration::from_secs(10),
        || log_of(&dir).contains("kept the running configuration"),
    );
    let log = log_of(&dir);
    assert!(log.contains("`tls_cert` ="), "{log}");
    assert!(log.contains("no certificate in it"), "{log}");
    assert!(answers(&node, &["--ca", ca2_pem]));
    std::fs::write(dir.join("server.pem"), good).unwrap();

    // Client certificates required: a client without one is refused in
    // the handshake, one signed by the clients' CA is served.
    let clients = Ca::new("trackc test clients");
    clients.write(&dir, "clients.pem");
    let (cert, key) = clients.issue(&dir, "operator", &["operator.example"], true);
    let stranger = Ca::new("someone else");
    let (bad_cert, bad_key) = stranger.issue(&dir, "stranger", &["stranger.example"], true);
    plan.extra += "\ntls_client_ca = \"clients.pem\"";
    write_configs(&dir, std::slice::from_ref(&plan));
    signal(&node, "-HUP");
    let mine = [
        "--ca",
        ca2_pem,
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ];
    wait_for(
        "client certificates are required",
        Duration::from_secs(10),
        || !answers(&node, &["--ca", ca2_pem]),
    );
    assert!(answers(&node, &mine));
    let theirs = [
        "--ca",
        ca2_pem,
        "--client-cert",
        bad_cert.to_str().unwrap(),
        "--client-key",
        bad_key.to_str().unwrap(),
    ];
    assert!(!answers(&node, &theirs));

    let log = log_of(&dir);
    for (_, token) in TOKENS {
        assert!(!log.contains(token), "a token in the log: {log}");
    }
}

/// Plain `http://` to another machine is refused before anything is sent,
/// and sent with a loud warning only with `--insecure-http`.
#[test]
fn plain_http_to_another_machine_needs_insisting() {
    let out = trackc()
        .args(["status", "--to", "http://10.255.255.1:8101"])
        .env("TRACKC_TOKEN", "viewer-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("in clear") && e.contains("--insecure-http"),
        "{e}"
    );
    // 0.0.0.0 is not loopback by its address, and a connection to it is
    // refused at once here (no server on that port).
    let closed = free_ports(1)[0];
    let out = trackc()
        .args([
            "status",
            "--insecure-http",
            "--to",
            &format!("http://0.0.0.0:{closed}"),
        ])
        .env("TRACKC_TOKEN", "viewer-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("WARNING: --insecure-http"),
        "{}",
        stderr(&out)
    );
}
