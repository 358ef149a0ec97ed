//! Peer messages on the wire: encoded with postcard, signed with
//! HMAC-SHA256 over the group's secret. A frame names its sender, its
//! receiver and a counter; a receiver drops a frame whose MAC is wrong,
//! that is meant for another node, or whose counter it has seen (replay),
//! and says why so the node can count it.
//!
//! Counters start at the sender's boot instant in microseconds and go up
//! by one per frame, so a restarted node's frames are newer than its
//! earlier life's. Frames may arrive out of order (UDP, two TCP streams):
//! a window of recent counters is accepted once each.

use super::protocol::{Message, NodeId};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};

const MAC_BYTES: usize = 32;
/// The receiver of an advertisement: every peer (it is sent to each
/// configured address before their ids are known).
pub const BROADCAST: NodeId = 0;
/// How far behind the newest counter of a sender a frame may be.
const REPLAY_WINDOW: u64 = 4096;
/// The largest frame accepted (a block of records with its payload).
pub const FRAME_BYTES_MAX: usize = 16 << 20;

#[derive(Serialize, Deserialize)]
struct Signed<M> {
    sender: NodeId,
    receiver: NodeId,
    counter: u64,
    message: M,
}

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than a MAC, or longer than `FRAME_BYTES_MAX`.
    Size,
    /// The MAC does not match: another secret, or altered on the way.
    Mac,
    /// Signed, but not a message this version reads.
    Malformed,
    /// Meant for another node.
    Receiver,
    /// A counter already seen, or too old.
    Replay,
}

impl Rejected {
    pub fn name(self) -> &'static str {
        match self {
            Rejected::Size => "size",
            Rejected::Mac => "mac",
            Rejected::Malformed => "malformed",
            Rejected::Receiver => "receiver",
            Rejected::Replay => "replay",
        }
    }
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Signs this node's outgoing frames.
pub struct Sealer {
    secret: Vec<u8>,
    me: NodeId,
    counter: u64,
}

impl Sealer {
    pub fn new(secret: &[u8], me: NodeId, first_counter: u64) -> Sealer {
        Sealer {
            secret: secret.to_vec(),
            me,
            counter: first_counter,
        }
    }

    pub fn seal(&mut self, to: NodeId, message: &Message) -> Vec<u8> {
        self.counter += 1;
        let signed = Signed {
            sender: self.me,
            receiver: to,
            counter: self.counter,
            message,
        };
        let mut frame = postcard::to_allocvec(&signed).expect("messages always encode");
        let mut m = mac(&self.secret);
        m.update(&frame);
        frame.extend_from_slice(&m.finalize().into_bytes());
        frame
    }
}

#[derive(Default)]
struct Window {
    highest: u64,
    seen: BTreeSet<u64>,
}

/// Checks incoming frames.
pub struct Opener {
    secret: Vec<u8>,
    me: NodeId,
    windows: BTreeMap<NodeId, Window>,
}

impl Opener {
    pub fn new(secret: &[u8], me: NodeId) -> Opener {
        Opener {
            secret: secret.to_vec(),
            me,
            windows: BTreeMap::new(),
        }
    }

    /// The sender and the message of an authentic, fresh frame.
    pub fn open(&mut self, frame: &[u8]) -> Result<(NodeId, Message), Rejected> {
        if frame.len() <= MAC_BYTES || frame.len() > FRAME_BYTES_MAX {
            return Err(Rejected::Size);
        }
        let (body, tag) = frame.split_at(frame.len() - MAC_BYTES);
        let mut m = mac(&self.secret);
        m.update(body);
        m.verify_slice(tag).map_err(|_| Rejected::Mac)?;
        let signed: Signed<Message> =
            postcard::from_bytes(body).map_err(|_| Rejected::Malformed)?;
        let broadcast =
            signed.receiver == BROADCAST && matches!(signed.message, Message::Advert(_));
        if signed.receiver != self.me && !broadcast {
            return Err(Rejected::Receiver);
        }
        let w = self.windows.entry(signed.sender).or_default();
        let c = signed.counter;
        if c + REPLAY_WINDOW <= w.highest || w.seen.contains(&c) {
            return Err(Rejected::Replay);
        }
        w.seen.insert(c);
        if c > w.highest {
            w.highest = c;
            let floor = c.saturating_sub(REPLAY_WINDOW);
            w.seen = w.seen.split_off(&floor);
        }
        Ok((signed.sender, signed.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::protocol::{Advert, Role};

    fn advert() -> Message {
        Message::Advert(Advert {
            role: Role::Active,
            ready: true,
            draining: false,
            bundle: 7,
            owned: vec![("welcome".into(), 3)],
            claims: vec![],
            free: 2,
            busy: vec![],
            master: Some(1),
            database: true,
        })
    }

    #[test]
    fn a_sealed_frame_opens_once() {
        let mut a = Sealer::new(b"secret", 1, 1000);
        let mut b = Opener::new(b"secret", 2);
        let frame = a.seal(2, &advert());
        assert_eq!(b.open(&frame), Ok((1, advert())));
        assert_eq!(b.open(&frame), Err(Rejected::Replay));
        // Out of order within the window is fine, each once.
        let f1 = a.seal(2, &advert());
        let f2 = a.seal(2, &advert());
        assert!(b.open(&f2).is_ok());
        assert!(b.open(&f1).is_ok());
        assert_eq!(b.open(&f1), Err(Rejected::Replay));
    }

    #[test]
    fn forged_altered_and_misdirected_frames_are_dropped() {
        let mut b = Opener::new(b"secret", 2);
        let forged = Sealer::new(b"guess", 1, 0).seal(2, &advert());
        assert_eq!(b.open(&forged), Err(Rejected::Mac));
        let mut frame = Sealer::new(b"secret", 1, 0).seal(2, &advert());
        frame[3] ^= 1;
        assert_eq!(b.open(&frame), Err(Rejected::Mac));
        let elsewhere = Sealer::new(b"secret", 1, 0).seal(3, &advert());
        assert_eq!(b.open(&elsewhere), Err(Rejected::Receiver));
        assert_eq!(b.open(&[1, 2, 3]), Err(Rejected::Size));
    }

    #[test]
    fn a_restarted_sender_is_heard_and_its_old_frames_are_not() {
        let mut b = Opener::new(b"secret", 2);
        let old = Sealer::new(b"secret", 1, 10).seal(2, &advert());
        let mut restarted = Sealer::new(b"secret", 1, 10 + 2 * REPLAY_WINDOW);
        assert!(b.open(&restarted.seal(2, &advert())).is_ok());
        assert_eq!(b.open(&old), Err(Rejected::Replay));
    }
}
