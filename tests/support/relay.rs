//! A fault-injecting TCP relay in front of PostgreSQL, on loopback: the
//! store connects to the relay, the relay to the server, and the test
//! decides what gets lost on the way.
//!
//! It reads the wire protocol just enough to find message boundaries, so
//! it can lose exactly the answer to a statement that the server did carry
//! out (`lose_answers`): the server's `CommandComplete` with that tag
//! (`COMMIT`, or `INSERT` for a statement outside a transaction) is
//! swallowed and both sockets are closed, which is what a client sees when
//! the network or the server's host fails right after a commit.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The largest protocol message the relay parses (a block's arrays of a
/// few thousand rows are far smaller); larger ones end the connection.
const MESSAGE_BYTES_MAX: usize = 64 << 20;

#[derive(Default)]
struct Faults {
    /// The tag of the answers to lose (`COMMIT`, `INSERT`).
    tag: Mutex<Vec<u8>>,
    /// Answers still to be lost.
    answers_to_lose: AtomicUsize,
    /// Answers lost so far.
    answers_lost: AtomicUsize,
    /// Connections relayed so far.
    connections: AtomicUsize,
    /// New connections are refused (closed at once) while set.
    refusing: AtomicBool,
    /// The client side of every connection relayed, to cut them.
    live: Mutex<Vec<TcpStream>>,
    /// The server's answers are held (not lost) while set: the client's
    /// calls hang, as behind a stalled proxy or a frozen server.
    stalled: AtomicBool,
}

pub struct Relay {
    pub addr: SocketAddr,
    faults: Arc<Faults>,
}

impl Relay {
    /// Relays connections on a free loopback port to `server`.
    pub fn start(server: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if f.refusing.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(server) else {
                    continue;
                };
                f.connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(c) = client.try_clone() {
                    let mut live = f.live.lock().unwrap();
                    // Connections closed since are dropped from the list.
                    live.retain(|s| s.peer_addr().is_ok());
                    live.push(c);
                }
                relay_pair(client, server, f.clone());
            }
        });
        Relay { addr, faults }
    }

    /// The next `n` COMMITs the server completes have their answer lost
    /// and their connection closed.
    pub fn lose_commit_answers(&self, n: usize) {
        self.lose_answers("COMMIT", n);
    }

    /// The next `n` statements completed with `tag` have their answer
    /// lost and their connection closed.
    pub fn lose_answers(&self, tag: &str, n: usize) {
        *self.faults.tag.lock().unwrap() = tag.as_bytes().to_vec();
        self.faults.answers_to_lose.store(n, Ordering::SeqCst);
    }

    pub fn commit_answers_lost(&self) -> usize {
        self.answers_lost()
    }

    pub fn answers_lost(&self) -> usize {
        self.faults.answers_lost.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.faults.connections.load(Ordering::SeqCst)
    }

    pub fn refuse(&self, refusing: bool) {
        self.faults.refusing.store(refusing, Ordering::SeqCst);
    }

    /// The database is unreachable while `severed`: every relayed
    /// connection is cut and new ones are closed at once.
    pub fn sever(&self, severed: bool) {
        self.refuse(severed);
        if severed {
            for c in self.faults.live.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// Holds every answer of the server while `stalled`; they go on, in
    /// order, once it is unset.
    pub fn stall(&self, stalled: bool) {
        self.faults.stalled.store(stalled, Ordering::SeqCst);
    }
}

fn relay_pair(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Client to server: bytes as they come.
    std::thread::spawn(move || {
        let (mut from, mut to) = (c2, s2);
        let mut buf = [0u8; 16 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
    // Server to client: message by message, so that a COMMIT's answer can
    // be swallowed whole.
    std::thread::spawn(move || {
        let (mut from, mut to) = (server, client);
        let _ = from.set_read_timeout(Some(Duration::from_secs(600)));
        while let Some(message) = read_message(&mut from) {
            let tag = faults.tag.lock().unwrap().clone();
            if completes(&message, &tag) && take_one(&faults.answers_to_lose) {
                faults.answers_lost.fetch_add(1, Ordering::SeqCst);
                break;
            }
            while faults.stalled.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if to.write_all(&message).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// One backend message: a type byte, a big-endian length that counts
/// itself, the body.
fn read_message(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 5];
    from.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
    if !(4..=MESSAGE_BYTES_MAX).contains(&len) {
        return None;
    }
    let mut message = head.to_vec();
    message.resize(1 + len, 0);
    from.read_exact(&mut message[5..]).ok()?;
    Some(message)
}

/// `CommandComplete` whose tag's first word is `tag` (a transaction that
/// failed answers `ROLLBACK`, not `COMMIT`; an insert `INSERT 0 1`).
fn completes(message: &[u8], tag: &[u8]) -> bool {
    let body = &message[5..];
    message[0] == b'C'
        && !tag.is_empty()
        && body.starts_with(tag)
        && matches!(body.get(tag.len()), Some(b' ' | b'\0'))
}
