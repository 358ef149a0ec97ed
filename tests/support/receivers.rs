//! Real receivers for the tests, on loopback: an HTTP server that records
//! webhooks and answers by path, and an SMTP sink that records messages.
//! Each connection gets a thread, so a receiver told to hang holds up only
//! its own request.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Listens on a free loopback port and serves each connection on a thread
/// of its own, recording into the list it returns with the address.
fn listen<T: Send + 'static>(serve: fn(TcpStream, &Mutex<Vec<T>>)) -> (String, Arc<Mutex<Vec<T>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got: Arc<Mutex<Vec<T>>> = Arc::default();
    let shared = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = shared.clone();
            std::thread::spawn(move || serve(stream, &shared));
        }
    });
    (addr, got)
}

/// A webhook as the receiver got it.
#[derive(Clone, Debug)]
pub struct Hook {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: String,
}

/// Answers by path: `/hook` 200; `/flaky` 500 for the first two requests
/// of an idempotency key, then 200; `/gone` 404; `/gone-once` 404 for the
/// first request of an idempotency key (the delivery is parked), then 200;
/// `/hang` never answers.
pub struct HttpReceiver {
    pub addr: String,
    hooks: Arc<Mutex<Vec<Hook>>>,
}

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        let (addr, hooks) = listen(serve_http);
        HttpReceiver { addr, hooks }
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }
}

fn serve_http(stream: TcpStream, seen: &Mutex<Vec<Hook>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let hook = Hook {
            path: path.clone(),
            idempotency_key: headers.get("idempotency-key").cloned(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let earlier = {
            let mut seen = seen.lock().unwrap();
            let earlier = seen
                .iter()
                .filter(|h| h.path == path && h.idempotency_key == hook.idempotency_key)
                .count();
            seen.push(hook);
            earlier
        };
        let status = match path.as_str() {
            "/hang" => {
                std::thread::sleep(Duration::from_secs(120));
                return;
            }
            "/gone" => "404 Not Found",
            "/gone-once" if earlier < 1 => "404 Not Found",
            "/flaky" if earlier < 2 => "500 Internal Server Error",
            _ => "200 OK",
        };
        let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A message as the sink got it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Vec<String>,
    pub data: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<String> {
        self.data.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Accepts every message (a minimal SMTP server: EHLO, MAIL, RCPT, DATA,
/// RSET, NOOP, QUIT).
pub struct SmtpSink {
    pub url: String,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let (addr, mails) = listen(|stream, got| {
            let _ = serve_smtp(stream, got);
        });
        SmtpSink {
            url: format!("smtp://{addr}"),
            mails,
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn serve_smtp(stream: TcpStream, got: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    writer.write_all(b"220 sink ESMTP\r\n")?;
    let mut to = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250-sink\r\n250 8BITMIME\r\n",
            "MAIL" | "RSET" => {
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                let addr = line.trim_end().rsplit(':').next().unwrap_or("");
                to.push(addr.trim_matches(|c| c == '<' || c == '>').to_string());
                b"250 OK\r\n"
            }
            "DATA" => {
                writer.write_all(b"354 go on\r\n")?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l)? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    data.push_str(&l);
                }
                got.lock().unwrap().push(Mail {
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 queued\r\n"
            }
            "QUIT" => {
                writer.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => b"250 OK\r\n",
        };
        writer.write_all(reply)?;
    }
}
