//! Peer messages on the wire: encoded with postcard, signed with
//! HMAC-SHA256 over the group's secret. A frame names its sender, its
//! receiver and a counter; a receiver drops a frame whose MAC is wrong,
//! that is meant for another node, or whose counter it has seen (replay),
//! and says why so the node can count it.
//!
//! Every frame says which protocol version it speaks. The envelope is the
//! same in every version and is what lets a node name a peer it cannot
//! read: `0x00`, the version (one byte), then the postcard body (which
//! starts with the sender id as a varint), then the 32-byte MAC over all
//! that. Version 1 (trackc before versioned frames) had no header; its
//! body starts with the sender id, never 0, so a first byte 0 tells the
//! two apart. This build reads versions `PROTOCOL_OLDEST..=PROTOCOL_VERSION`
//! and speaks `PROTOCOL_VERSION` unless told to speak an older one during
//! a rolling upgrade (`protocol` in node.toml; docs/group.md).
//!
//! Counters start at the sender's boot instant in microseconds and go up
//! by one per frame, so a restarted node's frames are newer than its
//! earlier life's. Frames may arrive out of order (UDP, two TCP streams):
//! a window of recent counters is accepted once each.
//!
//! From protocol 3 the message is encrypted (ChaCha20-Poly1305): blocks
//! carry customer records across the network. The body is the header
//! (sender, receiver, counter, in clear: the receiver needs them before it
//! can decrypt), the sender's salt (16 random bytes drawn once per life of
//! the node), then the sealed message with its tag, the header and salt
//! as associated data. The key is HKDF-SHA256 of the group secret with
//! that salt, so each life of each sender has its own key and the counter
//! can be the nonce: a (key, nonce) pair never repeats even when a
//! restarted node's clock goes back. The HMAC trailer stays: it keeps the
//! envelope every version shares, so a node still names a peer whose
//! version it cannot read. docs/group.md says why an AEAD keyed from the
//! secret and not TLS between peers.
//!
//! During a secret rotation a node opens frames under its secret or
//! `secret_previous` and seals them under its secret (docs/group.md).

use super::protocol::{Advert, Block, BlockId, Message, NodeId, Outcome, Role};
use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};

const MAC_BYTES: usize = 32;
/// The protocol version this build speaks unless `protocol` says otherwise.
/// Bump it when a message changes its encoding, and keep reading the
/// versions a group may still run during an upgrade.
pub const PROTOCOL_VERSION: u8 = 4;
/// The oldest version this build reads and can speak. Version 1 is the
/// same messages without the version header.
pub const PROTOCOL_OLDEST: u8 = 1;
/// The first byte of a versioned frame (a version 1 frame starts with its
/// sender id, which is never 0).
const VERSIONED: u8 = 0;
/// The receiver of an advertisement: every peer (it is sent to each
/// configured address before their ids are known).
pub const BROADCAST: NodeId = 0;
/// How far behind the newest counter of a sender a frame may be.
const REPLAY_WINDOW: u64 = 4096;
/// The largest frame accepted (a block of records with its payload).
pub const FRAME_BYTES_MAX: usize = 16 << 20;
/// The first protocol whose messages are encrypted.
pub const ENCRYPTED_SINCE: u8 = 3;
/// The first protocol whose advertisements carry track costs and moves
/// (rebalancing); 2 and 3 carry `MessageV3`.
pub const BALANCING_SINCE: u8 = 4;
/// A sender's salt: random, drawn once per life, sent in clear.
const SALT_BYTES: usize = 16;
/// What HKDF expands the frame key for, so that no other use of the group
/// secret can ever share that key.
const KEY_INFO: &[u8] = b"trackc peer frame key, protocol 3";

/// The messages of an older protocol, whose advert was `A`: the variants
/// and fields are in their order on the wire.
#[derive(Serialize, Deserialize)]
enum OlderMessage<A> {
    Advert(A),
    Block(Block),
    Ack {
        id: BlockId,
        outcome: Outcome,
        free: u32,
    },
    Drain,
}

/// Protocol 1: its advert had neither `runs` nor `gave_up`.
type MessageV1 = OlderMessage<AdvertV1>;
/// Protocols 2 and 3: their advert had neither costs nor moves.
type MessageV3 = OlderMessage<AdvertV3>;

#[derive(Serialize, Deserialize)]
struct AdvertV1 {
    role: Role,
    ready: bool,
    draining: bool,
    bundle: u64,
    owned: Vec<(String, u64)>,
    claims: Vec<(String, u32)>,
    free: u32,
    busy: Vec<(String, u32)>,
    master: Option<NodeId>,
    database: bool,
}

/// Protocol 1's advert, then `runs` and `gave_up`. Postcard writes a
/// struct's fields one after another with nothing around them, so the
/// nested advert takes the same bytes as its fields written out here.
#[derive(Serialize, Deserialize)]
struct AdvertV3 {
    v1: AdvertV1,
    runs: Vec<(String, u64)>,
    gave_up: Vec<String>,
}

impl From<Advert> for AdvertV1 {
    fn from(a: Advert) -> AdvertV1 {
        AdvertV1 {
            role: a.role,
            ready: a.ready,
            draining: a.draining,
            bundle: a.bundle,
            owned: a.owned,
            claims: a.claims,
            free: a.free,
            busy: a.busy,
            master: a.master,
            database: a.database,
        }
    }
}

impl From<AdvertV1> for Advert {
    /// A protocol 1 peer says nothing of its runs' progress (it is not
    /// watched for stalls), never gives a track up as stuck, and takes no
    /// part in rebalancing.
    fn from(a: AdvertV1) -> Advert {
        Advert {
            role: a.role,
            ready: a.ready,
            draining: a.draining,
            bundle: a.bundle,
            owned: a.owned,
            claims: a.claims,
            free: a.free,
            busy: a.busy,
            master: a.master,
            database: a.database,
            runs: Vec::new(),
            gave_up: Vec::new(),
            balancing: false,
            costs: Vec::new(),
            handoffs: Vec::new(),
            moved: u32::MAX,
            asks: Vec::new(),
        }
    }
}

impl From<Advert> for AdvertV3 {
    fn from(mut a: Advert) -> AdvertV3 {
        let (runs, gave_up) = (std::mem::take(&mut a.runs), std::mem::take(&mut a.gave_up));
        AdvertV3 {
            v1: AdvertV1::from(a),
            runs,
            gave_up,
        }
    }
}

impl From<AdvertV3> for Advert {
    /// A protocol 2 or 3 peer takes no part in rebalancing: it says
    /// nothing of costs or moves, and peers make no plan while it is there.
    fn from(a: AdvertV3) -> Advert {
        Advert {
            runs: a.runs,
            gave_up: a.gave_up,
            ..Advert::from(a.v1)
        }
    }
}

impl<A: From<Advert>> From<Message> for OlderMessage<A> {
    fn from(m: Message) -> OlderMessage<A> {
        match m {
            Message::Advert(a) => OlderMessage::Advert(A::from(a)),
            Message::Block(b) => OlderMessage::Block(b),
            Message::Ack { id, outcome, free } => OlderMessage::Ack { id, outcome, free },
            Message::Drain => OlderMessage::Drain,
        }
    }
}

impl<A> From<OlderMessage<A>> for Message
where
    Advert: From<A>,
{
    fn from(m: OlderMessage<A>) -> Message {
        match m {
            OlderMessage::Advert(a) => Message::Advert(Advert::from(a)),
            OlderMessage::Block(b) => Message::Block(b),
            OlderMessage::Ack { id, outcome, free } => Message::Ack { id, outcome, free },
            OlderMessage::Drain => Message::Drain,
        }
    }
}

/// What precedes the sealed message of an encrypted frame: `Signed`
/// without its message, so the bytes are those of earlier versions.
#[derive(Serialize, Deserialize)]
struct Header {
    sender: NodeId,
    receiver: NodeId,
    counter: u64,
}

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
    /// Authentic, but of a protocol version this build does not read: the
    /// sender (when its id could be read) and the version it speaks.
    Version { sender: Option<NodeId>, version: u8 },
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
            Rejected::Version { .. } => "version",
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

/// The key of one life of a sender: HKDF-SHA256 of the group secret with
/// the life's salt.
fn frame_key(secret: &[u8], salt: &[u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(secret);
    let okm = prk
        .expand(&[KEY_INFO], &CHACHA20_POLY1305)
        .expect("32 bytes is far below HKDF-SHA256's limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// The nonce of a frame: its counter, unique within a life's key.
fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// A salt for this life of node `me`: random bytes from the operating
/// system. The salt is public; it only has to differ between lives, so if
/// the system gave no randomness, a hash of who and when still does.
fn life_salt(me: NodeId, first_counter: u64) -> [u8; SALT_BYTES] {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; SALT_BYTES];
    if ring::rand::SystemRandom::new().fill(&mut salt).is_err() {
        use sha2::Digest;
        let mut h = Sha256::new();
        h.update(me.to_be_bytes());
        h.update(first_counter.to_be_bytes());
        h.update(std::process::id().to_be_bytes());
        salt.copy_from_slice(&h.finalize()[..SALT_BYTES]);
    }
    salt
}

/// `bytes` with a valid MAC under `secret` appended: what only a holder of
/// the secret could send (the fuzz targets reach the decoders with it).
pub fn with_mac(secret: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut frame = bytes.to_vec();
    let mut m = mac(secret);
    m.update(&frame);
    frame.extend_from_slice(&m.finalize().into_bytes());
    frame
}

/// Signs (and from protocol 3 encrypts) this node's outgoing frames.
pub struct Sealer {
    secret: Vec<u8>,
    me: NodeId,
    counter: u64,
    version: u8,
    salt: [u8; SALT_BYTES],
    key: LessSafeKey,
}

impl Sealer {
    /// Seals frames of `PROTOCOL_VERSION`.
    pub fn new(secret: &[u8], me: NodeId, first_counter: u64) -> Sealer {
        let salt = life_salt(me, first_counter);
        Sealer {
            secret: secret.to_vec(),
            me,
            counter: first_counter,
            version: PROTOCOL_VERSION,
            key: frame_key(secret, &salt),
            salt,
        }
    }

    /// Seals frames of `version` instead: an older one this build can
    /// speak during a rolling upgrade, or (in tests) one it cannot.
    pub fn speaking(mut self, version: u8) -> Sealer {
        self.version = version;
        self
    }

    /// Seals the next frames under `secret` (a rotation; docs/group.md).
    pub fn set_secret(&mut self, secret: &[u8]) {
        self.secret = secret.to_vec();
        self.key = frame_key(secret, &self.salt);
    }

    pub fn seal(&mut self, to: NodeId, message: &Message) -> Vec<u8> {
        self.counter += 1;
        let (sender, receiver, counter) = (self.me, to, self.counter);
        let encoded = if self.version == 1 {
            let message = MessageV1::from(message.clone());
            postcard::to_extend(
                &Signed {
                    sender,
                    receiver,
                    counter,
                    message,
                },
                Vec::new(),
            )
        } else if self.version < ENCRYPTED_SINCE {
            postcard::to_extend(
                &Signed {
                    sender,
                    receiver,
                    counter,
                    message: MessageV3::from(message.clone()),
                },
                vec![VERSIONED, self.version],
            )
        } else {
            let header = Header {
                sender,
                receiver,
                counter,
            };
            postcard::to_extend(&header, vec![VERSIONED, self.version]).map(|mut frame| {
                frame.extend_from_slice(&self.salt);
                let mut sealed = if self.version < BALANCING_SINCE {
                    postcard::to_allocvec(&MessageV3::from(message.clone()))
                } else {
                    postcard::to_allocvec(message)
                }
                .expect("messages always encode");
                self.key
                    .seal_in_place_append_tag(nonce(counter), Aad::from(&frame[..]), &mut sealed)
                    .expect("a frame is far below ChaCha20's length limit");
                frame.extend_from_slice(&sealed);
                frame
            })
        };
        let mut frame = encoded.expect("messages always encode");
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

/// An authentic, fresh frame.
#[derive(Debug, PartialEq)]
pub struct Opened {
    pub sender: NodeId,
    /// The protocol version the sender speaks.
    pub version: u8,
    pub message: Message,
}

/// The largest advertisement a node sends: an advert is one UDP datagram,
/// and over IPv4 a datagram carries at most 65,535 bytes less its IP (20)
/// and UDP (8) headers. A larger one is not sent at all.
pub const ADVERT_BYTES_MAX: usize = 65_507;

/// The most bytes an advertisement can take on the wire in a group that
/// runs these tracks: as if one node owned all of them, each with a run
/// under way, blocks in flight, a cost and a handoff, with as many
/// operator moves asked as a node keeps (of the longest name), every
/// number at its widest. A node owns a track or claims it or gave it up,
/// never two of these, so claims and gave-up tracks add nothing to the
/// widest case. A deploy to a group whose figure is over
/// [`ADVERT_BYTES_MAX`] is refused.
pub fn advert_bytes_at_most(tracks: &[String]) -> usize {
    use super::protocol::{Handoff, TrackCost, ASKS_MAX};
    let widest = NodeId::MAX;
    let longest = tracks.iter().max_by_key(|t| t.len()).cloned();
    let each = |n: u64| tracks.iter().map(move |t| (t.clone(), n));
    let advert = Advert {
        role: Role::Standby,
        ready: true,
        draining: true,
        bundle: u64::MAX,
        owned: each(u64::MAX).collect(),
        claims: Vec::new(),
        free: u32::MAX,
        busy: tracks.iter().map(|t| (t.clone(), u32::MAX)).collect(),
        master: Some(widest),
        database: true,
        runs: each(u64::MAX).collect(),
        gave_up: Vec::new(),
        balancing: true,
        costs: (tracks.iter())
            .map(|t| TrackCost {
                track: t.clone(),
                cost: u64::MAX,
                runs: u32::MAX,
                blocks: u64::MAX,
                millis: u64::MAX,
                held: u32::MAX,
                pinned: true,
            })
            .collect(),
        handoffs: (tracks.iter())
            .map(|t| Handoff {
                track: t.clone(),
                to: widest,
                manual: true,
                released: true,
                cost: u64::MAX,
            })
            .collect(),
        moved: u32::MAX,
        asks: (longest.into_iter())
            .flat_map(|t| std::iter::repeat_n((t, widest), ASKS_MAX))
            .collect(),
    };
    Sealer::new(b"any secret", widest, u64::MAX - 1)
        .seal(BROADCAST, &Message::Advert(advert))
        .len()
}

/// Checks (and from protocol 3 decrypts) incoming frames.
pub struct Opener {
    /// The group secret, then `secret_previous` during a rotation.
    secrets: Vec<Vec<u8>>,
    me: NodeId,
    windows: BTreeMap<NodeId, Window>,
}

impl Opener {
    pub fn new(secret: &[u8], me: NodeId) -> Opener {
        Opener {
            secrets: vec![secret.to_vec()],
            me,
            windows: BTreeMap::new(),
        }
    }

    /// Opens frames sealed under `secret` or, during a rotation, under
    /// `previous`.
    pub fn set_secrets(&mut self, secret: &[u8], previous: Option<&[u8]>) {
        self.secrets = std::iter::once(secret)
            .chain(previous)
            .map(<[u8]>::to_vec)
            .collect();
    }

    /// The sender, version and message of an authentic, fresh frame.
    pub fn open(&mut self, frame: &[u8]) -> Result<Opened, Rejected> {
        if frame.len() <= MAC_BYTES || frame.len() > FRAME_BYTES_MAX {
            return Err(Rejected::Size);
        }
        let (signed_part, tag) = frame.split_at(frame.len() - MAC_BYTES);
        let secret = self
            .secrets
            .iter()
            .find(|secret| {
                let mut m = mac(secret);
                m.update(signed_part);
                m.verify_slice(tag).is_ok()
            })
            .ok_or(Rejected::Mac)?;
        let (version, body) = match signed_part {
            [VERSIONED, version, body @ ..] => (*version, body),
            [VERSIONED] => return Err(Rejected::Malformed),
            body => (1, body),
        };
        if !(PROTOCOL_OLDEST..=PROTOCOL_VERSION).contains(&version) {
            // Every version's body starts with the sender id.
            let sender = postcard::take_from_bytes::<NodeId>(body)
                .ok()
                .map(|(id, _)| id);
            return Err(Rejected::Version { sender, version });
        }
        let signed: Signed<Message> = if version == 1 {
            let v1: Signed<MessageV1> =
                postcard::from_bytes(body).map_err(|_| Rejected::Malformed)?;
            Signed {
                sender: v1.sender,
                receiver: v1.receiver,
                counter: v1.counter,
                message: v1.message.into(),
            }
        } else if version < ENCRYPTED_SINCE {
            let v3: Signed<MessageV3> =
                postcard::from_bytes(body).map_err(|_| Rejected::Malformed)?;
            Signed {
                sender: v3.sender,
                receiver: v3.receiver,
                counter: v3.counter,
                message: v3.message.into(),
            }
        } else {
            let (header, rest) =
                postcard::take_from_bytes::<Header>(body).map_err(|_| Rejected::Malformed)?;
            if rest.len() < SALT_BYTES + CHACHA20_POLY1305.tag_len() {
                return Err(Rejected::Malformed);
            }
            let (salt, sealed) = rest.split_at(SALT_BYTES);
            let associated = &signed_part[..signed_part.len() - sealed.len()];
            let mut plain = sealed.to_vec();
            // The MAC held, so a tag that fails is the sender's bug or a
            // holder of the secret forging: dropped as a MAC failure.
            let message = frame_key(secret, salt)
                .open_in_place(nonce(header.counter), Aad::from(associated), &mut plain)
                .map_err(|_| Rejected::Mac)?;
            let message = if version < BALANCING_SINCE {
                postcard::from_bytes::<MessageV3>(message)
                    .map_err(|_| Rejected::Malformed)?
                    .into()
            } else {
                postcard::from_bytes(message).map_err(|_| Rejected::Malformed)?
            };
            Signed {
                sender: header.sender,
                receiver: header.receiver,
                counter: header.counter,
                message,
            }
        };
        let broadcast =
            signed.receiver == BROADCAST && matches!(signed.message, Message::Advert(_));
        if signed.receiver != self.me && !broadcast {
            return Err(Rejected::Receiver);
        }
        let w = self.windows.entry(signed.sender).or_default();
        let c = signed.counter;
        // How far behind, by subtraction: `c + window` overflowed for a
        // counter near the top (only a holder of the secret can send one;
        // found by the fuzz target peer_frame).
        let too_old = w
            .highest
            .checked_sub(c)
            .is_some_and(|behind| behind >= REPLAY_WINDOW);
        if too_old || w.seen.contains(&c) {
            return Err(Rejected::Replay);
        }
        w.seen.insert(c);
        if c > w.highest {
            w.highest = c;
            let floor = c.saturating_sub(REPLAY_WINDOW);
            w.seen = w.seen.split_off(&floor);
        }
        Ok(Opened {
            sender: signed.sender,
            version,
            message: signed.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame with any body behind a valid MAC.
    fn authentic(secret: &[u8], prefix: &[u8], body: &[u8]) -> Vec<u8> {
        with_mac(secret, &[prefix, body].concat())
    }

    proptest! {
        /// Fuzzing the peer frame decoder on stable (issue 18): any body,
        /// under any version byte, behind a valid MAC, and mutations of a
        /// real advert, open or are refused; nothing panics.
        #[test]
        fn any_authentic_frame_opens_or_is_refused(
            version in prop_oneof![Just(None), (0u8..=5).prop_map(Some)],
            body in proptest::collection::vec(any::<u8>(), 0..600),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        ) {
            let prefix: Vec<u8> = match version {
                None => vec![],
                Some(v) => vec![VERSIONED, v],
            };
            let mut opener = Opener::new(b"secret", 2);
            let _ = opener.open(&authentic(b"secret", &prefix, &body));
            let mut sealer = Sealer::new(b"secret", 1, 1000);
            let real = sealer.seal(2, &advert());
            let mut real_body = real[2..real.len() - MAC_BYTES].to_vec();
            for (at, byte) in flips {
                if !real_body.is_empty() {
                    let i = at % real_body.len();
                    real_body[i] ^= byte;
                }
            }
            let _ = opener.open(&authentic(b"secret", &prefix, &real_body));
        }
    }
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
            runs: vec![("welcome".into(), 12)],
            gave_up: vec!["later".into()],
            balancing: true,
            costs: vec![],
            handoffs: vec![],
            moved: u32::MAX,
            asks: vec![],
        })
    }

    #[test]
    fn the_widest_advert_of_a_bundle_is_what_a_node_could_send() {
        let names: Vec<String> = (0..40).map(|i| format!("track_number_{i:03}")).collect();
        let at_most = advert_bytes_at_most(&names);
        // The advert of a node that owns every track with a run under way
        // and costs known, as the protocol builds it, is no larger.
        let real = Advert {
            owned: names.iter().map(|t| (t.clone(), 1 << 40)).collect(),
            runs: names.iter().map(|t| (t.clone(), 1 << 40)).collect(),
            busy: names.iter().map(|t| (t.clone(), 1 << 20)).collect(),
            costs: (names.iter())
                .map(|t| crate::group::protocol::TrackCost {
                    track: t.clone(),
                    cost: 1 << 40,
                    runs: 1 << 20,
                    blocks: 1 << 30,
                    millis: 1 << 40,
                    held: 1 << 20,
                    pinned: false,
                })
                .collect(),
            ..match advert() {
                Message::Advert(a) => a,
                _ => unreachable!(),
            }
        };
        let sent = Sealer::new(b"secret", 3, 1 << 50)
            .seal(BROADCAST, &Message::Advert(real))
            .len();
        assert!(sent < at_most, "{sent} ≥ {at_most}");
        // It grows with the names: each track is in five lists.
        let longer: Vec<String> = names.iter().map(|n| format!("{n}_and_ten")).collect();
        assert!(advert_bytes_at_most(&longer) >= at_most + 40 * 5 * 8);
        // No tracks: a small frame; the limit is a UDP datagram's.
        assert!(advert_bytes_at_most(&[]) < 300);
        let many: Vec<String> = (0..2000)
            .map(|i| format!("a_track_with_a_long_name_{i:05}"))
            .collect();
        assert!(advert_bytes_at_most(&many) > ADVERT_BYTES_MAX);
    }

    #[test]
    fn a_sealed_frame_opens_once() {
        let mut a = Sealer::new(b"secret", 1, 1000);
        let mut b = Opener::new(b"secret", 2);
        let frame = a.seal(2, &advert());
        let opened = Opened {
            sender: 1,
            version: PROTOCOL_VERSION,
            message: advert(),
        };
        assert_eq!(b.open(&frame), Ok(opened));
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

    /// A block's records cross the network encrypted: none of the
    /// payload's bytes shows in the frame, and another life of the same
    /// node with the same counter seals different bytes (its own key).
    #[test]
    fn block_frames_are_encrypted_with_a_key_per_life() {
        let secret = b"the group secret of the test";
        let record = b"alice@example.com;VIP;credit 4100".to_vec();
        let block = Message::Block(Block {
            id: BlockId {
                owner: 1,
                incarnation: 5,
                seq: 1,
            },
            track: "welcome".into(),
            epoch: 2,
            payload: record.clone(),
        });
        let frame = Sealer::new(secret, 1, 1000).seal(2, &block);
        assert!(!frame.windows(8).any(|w| record.windows(8).any(|r| r == w)));
        let again = Sealer::new(secret, 1, 1000).seal(2, &block);
        assert_ne!(frame, again, "two lives share no key");
        let mut b = Opener::new(secret, 2);
        assert_eq!(b.open(&frame).unwrap().message, block);
        // Whoever holds the secret can fix the MAC after changing the
        // ciphertext; the AEAD tag still refuses it.
        let mut altered = frame[..frame.len() - MAC_BYTES].to_vec();
        let at = altered.len() - 20;
        altered[at] ^= 1;
        let refused = authentic(secret, &[], &altered);
        assert_eq!(Opener::new(secret, 2).open(&refused), Err(Rejected::Mac));
        // Speaking protocol 2 (a rolling upgrade) sends it in clear.
        let clear = Sealer::new(secret, 1, 1000).speaking(2).seal(2, &block);
        assert!(clear.windows(record.len()).any(|w| w == record));
    }

    /// A rotation: a node given `secret_previous` opens frames under
    /// either secret; once the old one is dropped, its frames are not.
    #[test]
    fn during_a_rotation_both_secrets_open_and_after_it_only_the_new() {
        let (old, new) = (
            b"the old group secret".as_slice(),
            b"the new group secret".as_slice(),
        );
        let mut b = Opener::new(old, 2);
        let mut from_old = Sealer::new(old, 1, 1000);
        let mut from_new = Sealer::new(new, 3, 1000);
        assert_eq!(b.open(&from_new.seal(2, &advert())), Err(Rejected::Mac));
        b.set_secrets(new, Some(old));
        for version in PROTOCOL_OLDEST..=PROTOCOL_VERSION {
            let mut old_speaker = Sealer::new(old, 4, 1000 * u64::from(version)).speaking(version);
            assert!(b.open(&old_speaker.seal(2, &advert())).is_ok());
        }
        assert!(b.open(&from_old.seal(2, &advert())).is_ok());
        assert!(b.open(&from_new.seal(2, &advert())).is_ok());
        // A sender switches secrets mid-life and is still heard.
        from_old.set_secret(new);
        b.set_secrets(new, None);
        assert!(b.open(&from_old.seal(2, &advert())).is_ok());
        assert_eq!(
            b.open(&Sealer::new(old, 5, 1000).seal(2, &advert())),
            Err(Rejected::Mac)
        );
    }

    /// The last counters a u64 holds are accepted once each, and the
    /// window's arithmetic does not overflow (a crash fuzz target
    /// peer_frame found; its input is in the corpus).
    #[test]
    fn counters_at_the_top_of_the_range_are_accepted_once() {
        let mut b = Opener::new(b"secret", 2);
        let mut a = Sealer::new(b"secret", 1, u64::MAX - 2);
        let (f1, f2) = (a.seal(2, &advert()), a.seal(2, &advert()));
        assert!(b.open(&f2).is_ok());
        assert!(b.open(&f1).is_ok());
        assert_eq!(b.open(&f2), Err(Rejected::Replay));
    }

    #[test]
    fn a_restarted_sender_is_heard_and_its_old_frames_are_not() {
        let mut b = Opener::new(b"secret", 2);
        let old = Sealer::new(b"secret", 1, 10).seal(2, &advert());
        let mut restarted = Sealer::new(b"secret", 1, 10 + 2 * REPLAY_WINDOW);
        assert!(b.open(&restarted.seal(2, &advert())).is_ok());
        assert_eq!(b.open(&old), Err(Rejected::Replay));
    }

    #[test]
    fn every_version_this_build_reads_opens_and_says_which_it_is() {
        let mut b = Opener::new(b"secret", 2);
        for version in PROTOCOL_OLDEST..=PROTOCOL_VERSION {
            let mut a = Sealer::new(b"secret", 1, 1000 * version as u64).speaking(version);
            let opened = b.open(&a.seal(2, &advert())).unwrap();
            assert_eq!((opened.sender, opened.version), (1, version));
        }
        // Version 1 has no header: the frame starts with the sender id.
        let v1 = Sealer::new(b"secret", 7, 0).speaking(1).seal(2, &advert());
        assert_eq!(v1[0], 7);
        let v2 = Sealer::new(b"secret", 7, 0).seal(2, &advert());
        assert_eq!(&v2[..3], &[VERSIONED, PROTOCOL_VERSION, 7]);
    }

    #[test]
    fn a_peer_of_a_version_this_build_does_not_read_is_named() {
        let mut b = Opener::new(b"secret", 2);
        let newer = PROTOCOL_VERSION + 1;
        let frame = Sealer::new(b"secret", 3, 0)
            .speaking(newer)
            .seal(2, &advert());
        assert_eq!(
            b.open(&frame),
            Err(Rejected::Version {
                sender: Some(3),
                version: newer
            })
        );
        // Only an authentic frame names a version: a forged one is a MAC
        // failure, whatever its header says.
        let forged = Sealer::new(b"guess", 3, 0)
            .speaking(newer)
            .seal(2, &advert());
        assert_eq!(b.open(&forged), Err(Rejected::Mac));
        // A header and nothing else is malformed, not a version.
        let mut bare = vec![VERSIONED];
        let mut m = mac(b"secret");
        m.update(&bare);
        bare.extend_from_slice(&m.finalize().into_bytes());
        assert_eq!(b.open(&bare), Err(Rejected::Malformed));
    }

    /// Frames sealed by trackc before versioned frames (protocol 1), with
    /// the secret "the group secret of the test", from node 3 to node 2:
    /// an advert, a block, an ack and a drain. This build must read them.
    const PROTOCOL_1_FRAMES: [&str; 4] = [
        "0302c1843d00000100edfd03010777656c636f6d650301056c617465720102010777656c636f6d65050101016388a3ddf75f03b5e8d8af6f783bcd0a091f10d23db4a32760bdec7bf23198a3",
        "0302c2843d01034d090777656c636f6d65030301020372c1fbe30e926ae858258fd0b6e9e0c5570ca90d22e43135e9b1cc793f9c1b7c",
        "0302c3843d02034d0903046c6f737401403a0abbe93535743559526089b42f1e777140e311f670bd7bcc1f47fc6dbe34",
        "0302c4843d03714eedb6b44796c01e069097b228e6ef53a5521f0e0e6f96a62dfef7569e1db5",
    ];

    fn protocol_1_messages() -> [Message; 4] {
        let id = BlockId {
            owner: 3,
            incarnation: 77,
            seq: 9,
        };
        [
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
                runs: vec![],
                gave_up: vec![],
                balancing: false,
                costs: vec![],
                handoffs: vec![],
                moved: u32::MAX,
                asks: vec![],
            }),
            Message::Block(Block {
                id,
                track: "welcome".into(),
                epoch: 3,
                payload: vec![1, 2, 3],
            }),
            Message::Ack {
                id,
                outcome: Outcome::Failed("lost".into()),
                free: 1,
            },
            Message::Drain,
        ]
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn frames_of_the_build_before_versions_are_read_and_spoken() {
        let secret = b"the group secret of the test";
        let mut b = Opener::new(secret, 2);
        for (frame, message) in PROTOCOL_1_FRAMES.iter().zip(protocol_1_messages()) {
            let opened = b.open(&unhex(frame)).unwrap();
            assert_eq!((opened.sender, opened.version), (3, 1));
            assert_eq!(opened.message, message);
        }
        // Speaking protocol 1, this build seals the same bytes.
        let mut a = Sealer::new(secret, 3, 1_000_000).speaking(1);
        for (frame, message) in PROTOCOL_1_FRAMES.iter().zip(protocol_1_messages()) {
            assert_eq!(a.seal(2, &message), unhex(frame));
        }
        // What protocol 1 cannot say is left out, not mangled.
        let mut a = Sealer::new(secret, 3, 5_000_000).speaking(1);
        let opened = b.open(&a.seal(2, &advert())).unwrap();
        let Message::Advert(got) = opened.message else {
            panic!("an advert")
        };
        assert!(got.runs.is_empty() && got.gave_up.is_empty());
        assert_eq!(got.owned, vec![("welcome".to_string(), 3)]);
    }

    /// Protocol 4 carries costs and moves; speaking 3 (a rolling upgrade)
    /// leaves them out, and the receiver sees a peer that takes no part in
    /// rebalancing.
    #[test]
    fn costs_and_moves_ride_on_protocol_4_and_are_left_out_of_3() {
        use crate::group::protocol::{Handoff, TrackCost};
        let Message::Advert(mut full) = advert() else {
            unreachable!()
        };
        full.costs = vec![TrackCost {
            track: "welcome".into(),
            cost: 1200,
            runs: 7,
            blocks: 3,
            millis: 41,
            held: 90,
            pinned: true,
        }];
        full.handoffs = vec![Handoff {
            track: "later".into(),
            to: 3,
            manual: false,
            released: true,
            cost: 80,
        }];
        full.moved = 12;
        full.asks = vec![("welcome".into(), 2)];
        // Protocol 2 and 3's advert is its fields one after another, in
        // this order (the nested protocol 1 advert adds no byte).
        let a = full.clone();
        let flat = postcard::to_allocvec(&(
            a.role, a.ready, a.draining, a.bundle, &a.owned, &a.claims, a.free, &a.busy, a.master,
            a.database, &a.runs, &a.gave_up,
        ))
        .unwrap();
        assert_eq!(postcard::to_allocvec(&AdvertV3::from(a)).unwrap(), flat);
        let message = Message::Advert(full.clone());
        let mut b = Opener::new(b"secret", 2);
        let four = Sealer::new(b"secret", 1, 1000).seal(2, &message);
        assert_eq!(b.open(&four).unwrap().message, message);
        for version in [2, 3] {
            let mut a = Sealer::new(b"secret", 1, 5000 * version).speaking(version as u8);
            let Message::Advert(got) = b.open(&a.seal(2, &message)).unwrap().message else {
                panic!("an advert")
            };
            assert!(!got.balancing && got.costs.is_empty() && got.handoffs.is_empty());
            assert!(got.asks.is_empty() && got.moved == u32::MAX);
            assert_eq!(
                (got.owned, got.gave_up),
                (full.owned.clone(), full.gave_up.clone())
            );
        }
    }
}
