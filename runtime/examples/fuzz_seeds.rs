//! Writes the seed inputs of the fuzz targets to `fuzz/corpus/<target>/`:
//! real peer frames of every protocol version, real block payloads, API
//! bodies, node.toml files, and the example tracks. libFuzzer grows the
//! corpus from these (bench/fuzz.sh). Run from the repository's root:
//! `cargo run -p trackc-runtime --example fuzz_seeds`.

use std::path::Path;
use trackc_compiler::value::Value;
use trackc_runtime::db::RunInfo;
use trackc_runtime::fuzzing::FUZZ_SECRET;
use trackc_runtime::group::protocol::{Advert, Block, BlockId, Message, Outcome, Role};
use trackc_runtime::group::wire::{Sealer, BROADCAST, PROTOCOL_OLDEST, PROTOCOL_VERSION};
use trackc_runtime::node::work::BlockPayload;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("the corpus folder");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("a seed");
}

fn main() {
    let payload = BlockPayload {
        run: RunInfo {
            id: 3,
            track: "welcome".into(),
            now: 1_764_000_000_000_000,
            last_run: 1_763_000_000_000_000,
            resumed: false,
            event: None,
        },
        rows: vec![
            vec![
                Value::Int(1),
                Value::Text("a@example.com".into()),
                Value::Null,
            ],
            vec![Value::Int(2), Value::Float(2.5), Value::Bool(true)],
        ],
    };
    let payload = postcard::to_allocvec(&payload).expect("a payload encodes");
    write("block_payload", "two-rows", &payload);
    let resumed = BlockPayload {
        run: RunInfo {
            id: i64::MAX,
            track: "é".into(),
            now: -1,
            last_run: 0,
            resumed: true,
            event: None,
        },
        rows: vec![vec![]; 3],
    };
    write(
        "block_payload",
        "resumed-empty-rows",
        &postcard::to_allocvec(&resumed).expect("a payload encodes"),
    );
    write("block_payload", "empty", &[]);

    let id = BlockId {
        owner: 1,
        incarnation: 7,
        seq: 9,
    };
    let messages = [
        (
            "advert",
            Message::Advert(Advert {
                role: Role::Active,
                ready: true,
                draining: false,
                bundle: 0xfeed,
                owned: vec![("welcome".into(), 3)],
                claims: vec![("later".into(), 1)],
                free: 2,
                busy: vec![("welcome".into(), 5)],
                master: Some(1),
                database: true,
                runs: vec![("welcome".into(), 12)],
                gave_up: vec!["stuck".into()],
                balancing: true,
                costs: vec![],
                handoffs: vec![],
                moved: u32::MAX,
                asks: vec![],
            }),
        ),
        (
            "block",
            Message::Block(Block {
                id,
                track: "welcome".into(),
                epoch: 3,
                payload,
            }),
        ),
        (
            "ack",
            Message::Ack {
                id,
                outcome: Outcome::Failed("lost".into()),
                free: 1,
            },
        ),
        ("drain", Message::Drain),
    ];
    for version in PROTOCOL_OLDEST..=PROTOCOL_VERSION {
        let mut sealer = Sealer::new(FUZZ_SECRET, 1, 1000).speaking(version);
        for (name, message) in &messages {
            let to = if *name == "advert" { BROADCAST } else { 2 };
            write(
                "peer_frame",
                &format!("v{version}-{name}"),
                &sealer.seal(to, message),
            );
        }
    }

    write("api_body", "emit-one", br#"{"event": "ping", "key": "42"}"#);
    write(
        "api_body",
        "emit-many",
        br#"[{"event": "ping", "key": "1"}, {"event": "ping", "key": null}]"#,
    );
    write(
        "api_body",
        "deploy",
        br#"{"files": [{"name": "a.dt", "text": "track a { }"}], "schema": {"name": "schema.sql", "text": "CREATE TABLE t (id INT)"}, "map": ["a.x=y"]}"#,
    );

    write(
        "node_toml",
        "full",
        br#"id = 2
listen = "127.0.0.1:7102"
http = "127.0.0.1:8102"
peers = ["127.0.0.1:7101", "127.0.0.1:7103"]
database = "postgres://postgres@127.0.0.1/trackc"
secret = "a group secret of some length"
secret_previous = "the secret before the rotation"
tls_cert = "cert.pem"
tls_key = "key.pem"
cycle = "200ms"
stuck_after = "10s"
protocol = 2

[[users]]
name = "ops"
role = "operator"
token_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
"#,
    );

    write(
        "node_toml",
        "minimal",
        br#"id = 1
listen = "127.0.0.1:7101"
http = "127.0.0.1:8101"
database = "sqlite:trackc.db"
secret_file = "group.secret"
"#,
    );
    write(
        "node_toml",
        "standby",
        br#"id = 3
listen = "[::1]:7103"
http = "[::1]:8103"
peers = ["[::1]:7101"]
database = "sqlite:trackc.db"
secret = "sixteen bytes at least"
role = "standby"
capacity = 256
missed_cycles = 100
tls_cert = "c.pem"
tls_key = "k.pem"
tls_client_ca = "ca.pem"
"#,
    );

    for entry in std::fs::read_dir("tracks").expect("run from the repository's root") {
        let path = entry.expect("a track file").path();
        if path.to_string_lossy().ends_with(".dt.test") {
            let name = path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace('.', "_");
            write(
                "dt_test",
                &name,
                &std::fs::read(&path).expect("a test file"),
            );
        }
        if path.extension().is_some_and(|e| e == "dt") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            write(
                "dt_check",
                &name,
                &std::fs::read(&path).expect("a track file"),
            );
        }
    }
}
