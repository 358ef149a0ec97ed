//! A relay between the nodes of a group on loopback that can cut a node
//! off from its peers (a partition) while each keeps its database.
//!
//! Every ordered pair of nodes (k, j) gets two relay ports:
//! - `toward[k][j]`, UDP: node k sends its adverts there (it is in k's
//!   `peers`); the relay passes them to j's `listen` address from `back`;
//! - `back[k][j]`, UDP and TCP on one port: j learns k's address from the
//!   adverts' source, so j's TCP frames for k (blocks, acks) come here and
//!   go on to k's `listen` address.
//!
//! So every datagram and every connection crosses one known link, and
//! `isolate(id)` drops all of that node's links (datagrams dropped,
//! connections closed, new ones closed at once) until it is healed. The
//! TCP bytes it passes are kept (`captured_tcp`), to look at the wire.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};

type NodeId = u64;

#[derive(Default)]
struct Cuts {
    isolated: BTreeSet<NodeId>,
}

impl Cuts {
    fn open(&self, a: NodeId, b: NodeId) -> bool {
        !self.isolated.contains(&a) && !self.isolated.contains(&b)
    }
}

/// The most TCP bytes the relay keeps for `captured_tcp`: enough for the
/// blocks of a test's runs, bounded whatever a test sends.
const CAPTURE_BYTES_MAX: usize = 256 << 20;

pub struct PeerRelay {
    cuts: Arc<Mutex<Cuts>>,
    /// Every byte of every TCP connection (blocks, acks) the relay passed.
    captured: Arc<Mutex<Vec<u8>>>,
    /// The addresses to put in each node's `peers`.
    peers: BTreeMap<NodeId, Vec<SocketAddr>>,
}

impl PeerRelay {
    /// Relays between nodes listening at `listen` (id → address).
    pub fn start(listen: &BTreeMap<NodeId, SocketAddr>) -> PeerRelay {
        let cuts = Arc::new(Mutex::new(Cuts::default()));
        let captured = Arc::new(Mutex::new(Vec::new()));
        let mut peers: BTreeMap<NodeId, Vec<SocketAddr>> = BTreeMap::new();
        for (&k, &k_listen) in listen {
            for (&j, &j_listen) in listen {
                if k == j {
                    continue;
                }
                let toward = UdpSocket::bind("127.0.0.1:0").unwrap();
                let (back, back_tcp) = udp_and_tcp_on_one_port();
                peers
                    .entry(k)
                    .or_default()
                    .push(toward.local_addr().unwrap());
                let c = cuts.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok((n, _)) = toward.recv_from(&mut buf) {
                        if c.lock().unwrap().open(k, j) {
                            let _ = back.send_to(&buf[..n], j_listen);
                        }
                    }
                });
                let c = cuts.clone();
                let capture = captured.clone();
                std::thread::spawn(move || {
                    for stream in back_tcp.incoming() {
                        let Ok(from_j) = stream else { continue };
                        if !c.lock().unwrap().open(k, j) {
                            let _ = from_j.shutdown(Shutdown::Both);
                            continue;
                        }
                        let Ok(to_k) = TcpStream::connect(k_listen) else {
                            continue;
                        };
                        pipe(from_j, to_k, c.clone(), (k, j), capture.clone());
                    }
                });
            }
        }
        PeerRelay {
            cuts,
            captured,
            peers,
        }
    }

    /// The bytes of the TCP traffic between the nodes so far (both ways).
    pub fn captured_tcp(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }

    /// What node `id` must have as `peers`.
    pub fn peers_of(&self, id: NodeId) -> &[SocketAddr] {
        &self.peers[&id]
    }

    /// Cuts node `id` off from every peer, or heals it.
    pub fn isolate(&self, id: NodeId, cut: bool) {
        let mut c = self.cuts.lock().unwrap();
        if cut {
            c.isolated.insert(id);
        } else {
            c.isolated.remove(&id);
        }
    }
}

/// A UDP socket and a TCP listener on the same free loopback port.
fn udp_and_tcp_on_one_port() -> (UdpSocket, TcpListener) {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
            return (udp, tcp);
        }
    }
}

/// Copies bytes both ways while the link `(a, b)` is not cut; a cut
/// closes both sockets.
fn pipe(
    x: TcpStream,
    y: TcpStream,
    cuts: Arc<Mutex<Cuts>>,
    (a, b): (NodeId, NodeId),
    captured: Arc<Mutex<Vec<u8>>>,
) {
    for (mut from, mut to) in [(x.try_clone().unwrap(), y.try_clone().unwrap()), (y, x)] {
        let cuts = cuts.clone();
        let captured = captured.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match from.read(&mut buf) {
                    Ok(n) if n > 0 && cuts.lock().unwrap().open(a, b) => {
                        {
                            let mut c = captured.lock().unwrap();
                            if c.len() + n <= CAPTURE_BYTES_MAX {
                                c.extend_from_slice(&buf[..n]);
                            }
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
}
