//! `trackc lsp` as an editor meets it: the real binary over stdio, spoken
//! to in JSON-RPC with Content-Length frames. A project folder with
//! `trackc.toml` gives the schema; diagnostics come on open and change,
//! with UTF-16 positions on a line with non-ASCII text, and are cleared
//! when fixed; hover, definition, completion, symbols, formatting and a
//! quick fix answer; half-typed text never takes the server down.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trackc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Client {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn receive(&mut self) -> Value {
        let mut length = 0;
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the server closed"
            );
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                length = n.parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns its result (notifications meanwhile are
    /// skipped).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let m = self.receive();
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
        }
    }

    /// The next diagnostics published.
    fn diagnostics(&mut self) -> Vec<Value> {
        loop {
            let m = self.receive();
            if m["method"] == "textDocument/publishDiagnostics" {
                return m["params"]["diagnostics"].as_array().unwrap().clone();
            }
        }
    }
}

fn at(line: u32, character: u32) -> Value {
    json!({"line": line, "character": character})
}

#[test]
fn an_editor_session() {
    let dir = std::env::temp_dir().join(format!("trackc-lsp-{}", std::process::id()));
    let tracks = dir.join("tracks");
    std::fs::create_dir_all(&tracks).unwrap();
    std::fs::write(
        dir.join("trackc.toml"),
        "schema = \"db/schema.sql\"\ndialect = \"postgres\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::write(
        dir.join("db/schema.sql"),
        "CREATE TABLE contacts (id BIGINT PRIMARY KEY, score INT NOT NULL, note TEXT);",
    )
    .unwrap();
    let path = tracks.join("t.dt");
    let uri = format!("file://{}", path.display());
    // Line 3 has non-ASCII text before the mistake: `é` is one UTF-16
    // unit, `😀` two.
    let broken = "track t {\n    source key id { SELECT id, score, note FROM contacts }\n    \
                  step first {\n        when note = 'é😀' and scor > 1 then goto secnd\n        \
                  else goto second\n    }\n    step second { else end }\n}\n";
    let mut client = Client::start();
    let init = client.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    assert_eq!(init["capabilities"]["documentFormattingProvider"], true);
    client.notify("initialized", json!({}));
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "trackc", "version": 1, "text": broken}}),
    );
    let diagnostics = client.diagnostics();
    let codes: Vec<&str> = diagnostics
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["E004", "E003"], "{diagnostics:#?}");
    let scor = &diagnostics[0];
    // `        when note = 'é😀' and ` is 30 UTF-16 units (29 chars, 32 bytes).
    assert_eq!(scor["range"]["start"], at(3, 30), "{scor}");
    assert_eq!(scor["range"]["end"], at(3, 34));
    assert!(scor["message"]
        .as_str()
        .unwrap()
        .contains("did you mean `score`?"));

    // The quick fix for the help's suggestion.
    let actions = client.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri}, "range": scor["range"], "context": {"diagnostics": []}}),
    );
    let fix = &actions[0];
    assert_eq!(fix["title"], "replace with `score`");
    assert_eq!(fix["edit"]["changes"][&uri][0]["newText"], "score");

    // Half-typed text: the server answers with a syntax error, and lives.
    for (version, text) in [
        (2, "track t {\n    step s { when"),
        (3, "track"),
        (4, "}}}{{{ ( "),
    ] {
        client.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]}),
        );
        let d = client.diagnostics();
        assert!(d.iter().any(|d| d["code"] == "E001"), "{text}: {d:?}");
    }

    // Fixed: the diagnostics are cleared.
    let fixed = broken.replace("scor ", "score ").replace("secnd", "second");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 5}, "contentChanges": [{"text": fixed}]}),
    );
    assert_eq!(client.diagnostics(), Vec::<Value>::new());

    // Hover on a field: its type, from the schema of trackc.toml.
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": at(3, 33)}),
    );
    let text = hover["contents"]["value"].as_str().unwrap();
    assert!(text.starts_with("`score`: int"), "{text}");
    // On a step: its rules and who goes to it.
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": at(6, 10)}),
    );
    let text = hover["contents"]["value"].as_str().unwrap();
    assert!(text.contains("entered from `first`"), "{text}");

    // Definition of a goto's step, and of a field (its column in the query).
    let line3 = fixed.lines().nth(3).unwrap();
    let second = line3.find("goto second").unwrap() + "goto s".len();
    let column = line3[..second].encode_utf16().count() as u32;
    let def = client.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": uri}, "position": at(3, column)}),
    );
    assert_eq!(def["range"]["start"], at(6, 9), "{def}");
    let def = client.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": uri}, "position": at(3, 33)}),
    );
    assert_eq!(def["range"]["start"], at(1, 31), "{def}");

    // Completion after `goto`: the steps.
    let completion = client.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": at(4, 18)}),
    );
    let labels: Vec<&str> = completion
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["first", "second"]);
    // Elsewhere in a condition: fields with their types, functions, keywords.
    let completion = client.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": at(3, 13)}),
    );
    let score = completion
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "score")
        .unwrap();
    assert_eq!(score["detail"], "int");

    // Symbols: the track and its steps.
    let symbols = client.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": uri}}),
    );
    assert_eq!(symbols[0]["name"], "t");
    let steps: Vec<&str> = symbols[0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["first", "second"]);

    // Formatting: the same text as `trackc fmt`.
    let edits = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    let formatted = edits[0]["newText"].as_str().unwrap();
    assert_eq!(
        formatted,
        trackc_compiler::format::format_source(&fixed).unwrap()
    );
    assert!(formatted.contains("    step second {\n        else end\n    }\n"));

    client.request("shutdown", Value::Null);
    client.notify("exit", Value::Null);
    let status = client.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pytest-lsp suite of tests/lsp/ (a client the project did not
/// write): run with the Python that `TRACKC_PYTHON` names, which .ci/run
/// makes (a virtual environment with tests/lsp/requirements.txt). Without
/// it the suite is skipped loudly, unless `TRACKC_REQUIRE_PYTHON=1` (as
/// .ci/run sets), where that is a failure.
#[test]
fn the_pytest_lsp_suite_passes() {
    let Some(python) = std::env::var_os("TRACKC_PYTHON") else {
        assert!(
            std::env::var("TRACKC_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "TRACKC_REQUIRE_PYTHON=1 but TRACKC_PYTHON is not set: run .ci/run, or point it at \
             a Python with tests/lsp/requirements.txt installed"
        );
        eprintln!(
            "SKIPPED: the pytest-lsp suite (tests/lsp/) needs TRACKC_PYTHON, a Python with \
             tests/lsp/requirements.txt; .ci/run makes one"
        );
        return;
    };
    // Output to a file, not a pipe: a long report cannot block the child.
    let log_path =
        std::env::temp_dir().join(format!("trackc-pytest-lsp-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(python)
        .args(["-m", "pytest", "-q", "tests/lsp"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TRACKC_BIN", env!("CARGO_BIN_EXE_trackc"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // The suite takes seconds; a hang must fail, not stall CI.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the pytest-lsp suite hung for 120 s:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let report = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(status.success(), "{report}");
    assert!(report.contains(" passed"), "{report}");
    assert!(!report.contains("skipped"), "{report}");
}
