//! `node.toml`: one peer of a group. Every key is checked when the file is
//! read, and an error names the key and says what it must be.

use crate::error::{Error, Result};
use crate::group::protocol::{NodeId, Role, Settings};
use crate::group::wire::{BALANCING_SINCE, PROTOCOL_OLDEST, PROTOCOL_VERSION};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a run may make no progress before its owner gives the track
/// up (Kafka's `max.poll.interval.ms` is five minutes; a block here is
/// seconds of work, so a minute without one finished is far from normal).
pub const STUCK_AFTER_DEFAULT: Duration = Duration::from_secs(60);
/// How long a moved track stays where it is before rebalancing may move it
/// again: long enough for a few runs to measure it on its new node.
pub const REBALANCE_COOLDOWN_DEFAULT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    Viewer,
    Operator,
    Author,
    Admin,
}

impl UserRole {
    /// As node.toml writes it.
    pub fn name(self) -> &'static str {
        match self {
            UserRole::Viewer => "viewer",
            UserRole::Operator => "operator",
            UserRole::Author => "author",
            UserRole::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: UserRole) -> bool {
        match needed {
            UserRole::Viewer => true,
            UserRole::Operator => matches!(self, UserRole::Operator | UserRole::Admin),
            UserRole::Author => matches!(self, UserRole::Author | UserRole::Admin),
            UserRole::Admin => self == UserRole::Admin,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: UserRole,
    /// The SHA-256 of the user's bearer token, in hex.
    pub token_sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    id: Option<i64>,
    listen: Option<String>,
    http: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    database: Option<String>,
    secret: Option<String>,
    secret_file: Option<String>,
    secret_previous: Option<String>,
    secret_previous_file: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_client_ca: Option<String>,
    cycle: Option<String>,
    missed_cycles: Option<i64>,
    claim_counter: Option<i64>,
    role: Option<String>,
    capacity: Option<i64>,
    smtp: Option<String>,
    smtp_from: Option<String>,
    templates: Option<String>,
    protocol: Option<i64>,
    stuck_after: Option<String>,
    rebalance_threshold: Option<i64>,
    rebalance_every: Option<i64>,
    rebalance_cooldown: Option<String>,
    history: Option<bool>,
    history_days: Option<i64>,
    #[serde(default)]
    history_off: Vec<String>,
    #[serde(default)]
    users: Vec<User>,
    /// `[databases]`: NAME = URL of each source database (`source from
    /// NAME`).
    #[serde(default)]
    databases: std::collections::BTreeMap<String, String>,
}

/// The decision history a node keeps (docs/runtime.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistorySettings {
    /// `history = false` keeps none.
    pub enabled: bool,
    /// Decisions older than this many days are pruned (0: never).
    pub days: i64,
    /// Tracks that keep none.
    pub off: Vec<String>,
}

/// The longest retention `history_days` accepts: a hundred years.
const HISTORY_DAYS_MAX: i64 = 36_500;

/// The PEM files of the HTTP API's TLS (paths resolved against the
/// directory of node.toml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// The shortest group secret accepted.
const SECRET_BYTES_MIN: usize = 16;

/// A secret given inline (`key`) or in a file (`key_file`, its first line).
fn read_secret(
    inline: Option<String>,
    file: Option<String>,
    key: &str,
    dir: &Path,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let secret = match (inline, file) {
        (Some(_), Some(_)) => return Err(format!("give `{key}` or `{key}_file`, not both")),
        (Some(s), None) => s.into_bytes(),
        (None, Some(f)) => {
            let p = dir.join(&f);
            let s =
                std::fs::read_to_string(&p).map_err(|e| format!("`{key}_file` = \"{f}\": {e}"))?;
            s.trim_end_matches(['\n', '\r']).as_bytes().to_vec()
        }
        (None, None) => return Ok(None),
    };
    if secret.len() < SECRET_BYTES_MIN {
        return Err(format!("`{key}` is shorter than {SECRET_BYTES_MIN} bytes"));
    }
    Ok(Some(secret))
}

/// A checked `node.toml`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub database: String,
    pub secret: Vec<u8>,
    /// The secret before a rotation: frames under it are still opened
    /// (docs/group.md).
    pub secret_previous: Option<Vec<u8>>,
    /// TLS on the HTTP API: PEM files, read again on SIGHUP.
    pub tls: Option<TlsFiles>,
    pub cycle: Duration,
    pub missed_cycles: u32,
    pub claim_counter: u32,
    pub role: Role,
    pub capacity: u32,
    pub smtp: Option<String>,
    pub smtp_from: String,
    pub templates: Option<String>,
    /// The peer protocol version this node speaks (an older one during a
    /// rolling upgrade; docs/group.md).
    pub protocol: u8,
    /// How long an owned run may make no progress before the owner gives
    /// the track up.
    pub stuck_after: Duration,
    /// Percent over the average cost per node before a track moves (0:
    /// rebalancing off; it is off while speaking a protocol before 4).
    pub rebalance_threshold: u32,
    /// Cycles between two moves of one node.
    pub rebalance_every: u32,
    /// How long a moved track stays put.
    pub rebalance_cooldown: Duration,
    pub users: Vec<User>,
    pub history: HistorySettings,
    /// The source databases tracks read (`source from NAME`): name → URL.
    /// Every node needs the same; one that lacks a track's, or cannot
    /// reach it, says so in its adverts and does not own the track.
    pub databases: std::collections::BTreeMap<String, String>,
    /// The file this was read from (read again on SIGHUP).
    pub path: Option<PathBuf>,
}

impl NodeConfig {
    pub fn read(path: &Path) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut config = NodeConfig::parse(&text, dir)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// The configuration of `trackc serve`: one database, the console and
    /// the API on `http`, no group (no peers; a secret no one shares).
    pub fn standalone(database: &str, http: SocketAddr, users: Vec<User>) -> Result<NodeConfig> {
        let secret = new_token()?;
        // A JSON string is a TOML basic string (the same escapes).
        let quoted = serde_json::Value::from(database).to_string();
        let text = format!(
            "id = 1\nlisten = \"127.0.0.1:0\"\nhttp = \"{http}\"\ndatabase = {quoted}\nsecret = \"{secret}\"\n"
        );
        let mut config = NodeConfig::parse(&text, Path::new(".")).map_err(Error::Config)?;
        config.users = users;
        Ok(config)
    }

    /// The `[[users]]` of a TOML file (a node.toml, or a file of users
    /// alone), checked as a node checks them.
    pub fn users_of(path: &Path) -> Result<Vec<User>> {
        #[derive(Deserialize)]
        struct UsersOnly {
            #[serde(default)]
            users: Vec<User>,
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let file: UsersOnly =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        for u in &file.users {
            if u.token_sha256.len() != 64 || !u.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(Error::Config(format!(
                    "{}: user `{}`: `token_sha256` is not 64 hex digits (sha256sum of the token)",
                    path.display(),
                    u.name
                )));
            }
        }
        if file.users.is_empty() {
            return Err(Error::Config(format!(
                "{}: no [[users]] in it (trackc token new makes one)",
                path.display()
            )));
        }
        Ok(file.users)
    }

    /// The keys whose change in `new` takes effect only at the next start
    /// (a reload applies the secrets and the TLS files).
    pub fn needs_restart_for(&self, new: &NodeConfig) -> Vec<&'static str> {
        let users = |c: &NodeConfig| {
            c.users
                .iter()
                .map(|u| (u.name.clone(), u.role, u.token_sha256.clone()))
                .collect::<Vec<_>>()
        };
        [
            ("id", self.id != new.id),
            ("listen", self.listen != new.listen),
            ("http", self.http != new.http),
            ("peers", self.peers != new.peers),
            ("database", self.database != new.database),
            ("tls_cert", self.tls.is_some() != new.tls.is_some()),
            ("cycle", self.cycle != new.cycle),
            ("missed_cycles", self.missed_cycles != new.missed_cycles),
            ("claim_counter", self.claim_counter != new.claim_counter),
            ("role", self.role != new.role),
            ("capacity", self.capacity != new.capacity),
            ("smtp", self.smtp != new.smtp),
            ("smtp_from", self.smtp_from != new.smtp_from),
            ("templates", self.templates != new.templates),
            ("protocol", self.protocol != new.protocol),
            ("stuck_after", self.stuck_after != new.stuck_after),
            (
                "rebalance_threshold",
                self.rebalance_threshold != new.rebalance_threshold,
            ),
            (
                "rebalance_every",
                self.rebalance_every != new.rebalance_every,
            ),
            (
                "rebalance_cooldown",
                self.rebalance_cooldown != new.rebalance_cooldown,
            ),
            ("history", self.history != new.history),
            ("users", users(self) != users(new)),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// Parses the text of a `node.toml`; `dir` is where `secret_file` is
    /// found when relative.
    pub fn parse(text: &str, dir: &Path) -> std::result::Result<NodeConfig, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let required = |v: Option<String>, key: &str| v.ok_or(format!("`{key}` is missing"));
        let addr = |v: &str, key: &str| {
            v.parse::<SocketAddr>().map_err(|_| {
                format!("`{key}` = \"{v}\" is not an address: write HOST:PORT, as 127.0.0.1:7100")
            })
        };
        let id = raw.id.ok_or("`id` is missing (a positive integer)")?;
        if id < 1 {
            return Err(format!("`id` = {id}: a node id is a positive integer"));
        }
        let listen = addr(&required(raw.listen, "listen")?, "listen")?;
        let http = addr(&required(raw.http, "http")?, "http")?;
        let peers = raw
            .peers
            .iter()
            .map(|p| addr(p, "peers"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let database = required(raw.database, "database")?;
        for (name, url) in &raw.databases {
            crate::db::DbUrl::parse(url).map_err(|e| format!("`databases.{name}`: {e}"))?;
        }
        let databases = raw.databases.clone();
        crate::db::DbUrl::parse_state(&database).map_err(|e| format!("`database`: {e}"))?;
        let secret = read_secret(raw.secret, raw.secret_file, "secret", dir)?
            .ok_or("`secret` or `secret_file` is missing")?;
        let secret_previous = read_secret(
            raw.secret_previous,
            raw.secret_previous_file,
            "secret_previous",
            dir,
        )?;
        if secret_previous.as_ref() == Some(&secret) {
            return Err(
                "`secret_previous` is the same as `secret`: a rotation needs a new one".into(),
            );
        }
        let tls = match (raw.tls_cert, raw.tls_key, raw.tls_client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert: dir.join(cert),
                key: dir.join(key),
                client_ca: client_ca.map(|c| dir.join(c)),
            }),
            (None, None, Some(_)) => {
                return Err("`tls_client_ca` needs `tls_cert` and `tls_key`".into())
            }
            (Some(_), None, _) => return Err("`tls_cert` is given without `tls_key`".into()),
            (None, Some(_), _) => return Err("`tls_key` is given without `tls_cert`".into()),
        };
        let duration = |v: Option<String>, key: &str, default, min, max| match v {
            None => Ok(default),
            Some(c) => {
                let d = parse_duration(&c).ok_or(format!(
                    "`{key}` = \"{c}\" is not a duration: write 200ms, 1s, 2m or 1h"
                ))?;
                if d < min || d > max {
                    return Err(format!(
                        "`{key}` = \"{c}\" is out of range: {} to {}",
                        show_duration(min),
                        show_duration(max)
                    ));
                }
                Ok(d)
            }
        };
        let cycle = duration(
            raw.cycle,
            "cycle",
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_secs(120),
        )?;
        let stuck_after = duration(
            raw.stuck_after,
            "stuck_after",
            STUCK_AFTER_DEFAULT,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?;
        if stuck_after < cycle * 5 {
            return Err(format!(
                "`stuck_after` ({}) must be at least five cycles ({})",
                show_duration(stuck_after),
                show_duration(cycle * 5)
            ));
        }
        let rebalance_cooldown = duration(
            raw.rebalance_cooldown,
            "rebalance_cooldown",
            REBALANCE_COOLDOWN_DEFAULT,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?;
        let protocol = match raw.protocol {
            None => PROTOCOL_VERSION,
            Some(v) if (i64::from(PROTOCOL_OLDEST)..=i64::from(PROTOCOL_VERSION)).contains(&v) => {
                v as u8
            }
            Some(v) => {
                return Err(format!(
                    "`protocol` = {v}: this build speaks protocol {PROTOCOL_OLDEST} to {PROTOCOL_VERSION}"
                ))
            }
        };
        let history = HistorySettings {
            enabled: raw.history.unwrap_or(true),
            days: match raw.history_days {
                None => crate::db::HISTORY_DAYS_DEFAULT,
                Some(d) if (0..=HISTORY_DAYS_MAX).contains(&d) => d,
                Some(d) => {
                    return Err(format!(
                        "`history_days` = {d} is out of range: 0 (keep all) to {HISTORY_DAYS_MAX}"
                    ))
                }
            },
            off: raw.history_off,
        };
        let defaults = Settings::new(0, Role::Active);
        let count = |v: Option<i64>, key: &str, default: u32, max: u32| match v {
            None => Ok(default),
            Some(n) if n >= 1 && n <= i64::from(max) => Ok(n as u32),
            Some(n) => Err(format!("`{key}` = {n} is out of range: 1 to {max}")),
        };
        let role = match raw.role.as_deref() {
            None | Some("active") => Role::Active,
            Some("standby") => Role::Standby,
            Some(r) => return Err(format!("`role` = \"{r}\": write \"active\" or \"standby\"")),
        };
        for u in &raw.users {
            let ok =
                u.token_sha256.len() == 64 && u.token_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(format!(
                    "`users` `{}`: `token_sha256` is not 64 hex digits (sha256sum of the token)",
                    u.name
                ));
            }
        }
        Ok(NodeConfig {
            id: id as NodeId,
            listen,
            http,
            peers,
            database,
            secret,
            secret_previous,
            tls,
            cycle,
            missed_cycles: count(
                raw.missed_cycles,
                "missed_cycles",
                defaults.missed_cycles,
                100,
            )?,
            claim_counter: count(
                raw.claim_counter,
                "claim_counter",
                defaults.claim_counter,
                100,
            )?,
            role,
            capacity: count(raw.capacity, "capacity", defaults.capacity, 256)?,
            smtp: raw.smtp,
            smtp_from: raw.smtp_from.unwrap_or_else(|| "trackc@localhost".into()),
            templates: raw.templates,
            protocol,
            stuck_after,
            rebalance_threshold: match raw.rebalance_threshold {
                None => defaults.rebalance_threshold,
                Some(t) if (0..=1000).contains(&t) => t as u32,
                Some(t) => {
                    return Err(format!(
                        "`rebalance_threshold` = {t} is out of range: 0 (off) to 1000 percent"
                    ))
                }
            },
            rebalance_every: count(
                raw.rebalance_every,
                "rebalance_every",
                defaults.rebalance_every,
                10_000,
            )?,
            rebalance_cooldown,
            users: raw.users,
            history,
            databases,
            path: None,
        })
    }

    /// The protocol's parameters; `incarnation` tells this life of the node
    /// from its earlier ones (its start time).
    pub fn settings(&self, incarnation: u64) -> Settings {
        Settings {
            missed_cycles: self.missed_cycles,
            claim_counter: self.claim_counter,
            capacity: self.capacity,
            stuck_cycles: self
                .stuck_after
                .as_millis()
                .div_ceil(self.cycle.as_millis()) as u32,
            incarnation,
            // Peers speaking 3 could not see this node's costs and moves.
            rebalance_threshold: if self.protocol >= BALANCING_SINCE {
                self.rebalance_threshold
            } else {
                0
            },
            rebalance_every: self.rebalance_every,
            rebalance_cooldown: self
                .rebalance_cooldown
                .as_millis()
                .div_ceil(self.cycle.as_millis()) as u32,
            ..Settings::new(self.id, self.role)
        }
    }

    /// The user whose token this is. Every user's hash is compared, each
    /// in constant time, so the answer's timing says nothing of how close
    /// a guess came.
    pub fn user(&self, token: &str) -> Option<&User> {
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for u in &self.users {
            if constant_time_eq(&hash, &unhex32(&u.token_sha256)) && found.is_none() {
                found = Some(u);
            }
        }
        found
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their length
/// only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    a.len() == b.len() && diff == 0
}

/// The bytes of a `token_sha256` (checked to be 64 hex digits when read).
fn unhex32(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
}

/// A new bearer token: 32 bytes from the operating system's randomness,
/// in hex after a `trackc_` prefix (easy to find in a leaked text).
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Io("the operating system gave no random bytes".into()))?;
    Ok(format!(
        "trackc_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The hex SHA-256 of a token, as `token_sha256` holds it.
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `250ms`, `1s`, `2m`, as `parse_duration` reads them.
fn show_duration(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// `250ms`, `1s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 2
listen = "127.0.0.1:7102"
http = "127.0.0.1:8102"
peers = ["127.0.0.1:7101", "127.0.0.1:7103"]
database = "postgres://postgres@127.0.0.1/trackc"
secret = "a group secret of some length"
cycle = "200ms"

[[users]]
name = "ops"
role = "operator"
token_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
"#;

    fn error(text: &str) -> String {
        NodeConfig::parse(text, Path::new(".")).unwrap_err()
    }

    proptest::proptest! {
        /// Fuzzing node.toml on stable (issue 18): a good file with bytes
        /// replaced, cut short or spliced is read or refused with a
        /// message; nothing panics.
        #[test]
        fn a_damaged_config_is_read_or_refused(
            edits in proptest::collection::vec((0usize..2000, "[ -~\\n]{0,12}"), 0..6),
            cut in 0usize..2000,
        ) {
            let mut text = GOOD.to_string();
            for (at, insert) in edits {
                let mut at = at % (text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let end = (at + insert.len()).min(text.len());
                let mut end = end;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, &insert);
            }
            let mut cut = cut.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let _ = NodeConfig::parse(&text, Path::new("."));
            let _ = NodeConfig::parse(&text[..cut], Path::new("."));
        }
    }

    #[test]
    fn a_good_config_and_its_defaults() {
        let c = NodeConfig::parse(GOOD, Path::new(".")).unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.cycle, Duration::from_millis(200));
        assert_eq!((c.missed_cycles, c.claim_counter, c.capacity), (4, 2, 2));
        assert_eq!(c.role, Role::Active);
        assert_eq!(
            (c.protocol, c.stuck_after),
            (PROTOCOL_VERSION, STUCK_AFTER_DEFAULT)
        );
        assert_eq!(c.user("foo").unwrap().name, "ops");
        assert!(c.user("bar").is_none());
        assert_eq!(
            c.history,
            HistorySettings {
                enabled: true,
                days: crate::db::HISTORY_DAYS_DEFAULT,
                off: vec![]
            }
        );
    }

    #[test]
    fn history_is_configured_and_checked() {
        let text = GOOD.replace(
            "id = 2",
            "id = 2\nhistory = false\nhistory_days = 7\nhistory_off = [\"noisy\"]",
        );
        let c = NodeConfig::parse(&text, Path::new(".")).unwrap();
        assert_eq!(
            c.history,
            HistorySettings {
                enabled: false,
                days: 7,
                off: vec!["noisy".into()]
            }
        );
        let e = error(&GOOD.replace("id = 2", "id = 2\nhistory_days = -1"));
        assert!(e.contains("`history_days` = -1 is out of range"), "{e}");
    }

    #[test]
    fn rebalancing_is_configured_and_off_before_protocol_4() {
        let c = NodeConfig::parse(GOOD, Path::new(".")).unwrap();
        let s = c.settings(0);
        // Defaults: 25 %, 10 cycles, two minutes (600 cycles of 200 ms).
        assert_eq!(
            (
                s.rebalance_threshold,
                s.rebalance_every,
                s.rebalance_cooldown
            ),
            (25, 10, 600)
        );
        let text = GOOD.replace(
            "id = 2",
            "id = 2\nrebalance_threshold = 40\nrebalance_every = 3\nrebalance_cooldown = \"2s\"",
        );
        let s = NodeConfig::parse(&text, Path::new("."))
            .unwrap()
            .settings(0);
        assert_eq!(
            (
                s.rebalance_threshold,
                s.rebalance_every,
                s.rebalance_cooldown
            ),
            (40, 3, 10)
        );
        let old = GOOD.replace("id = 2", "id = 2\nprotocol = 3");
        let s = NodeConfig::parse(&old, Path::new(".")).unwrap().settings(0);
        assert_eq!(
            s.rebalance_threshold, 0,
            "peers speaking 3 cannot see costs"
        );
        let e = error(&GOOD.replace("id = 2", "id = 2\nrebalance_threshold = -5"));
        assert!(
            e.contains("`rebalance_threshold` = -5 is out of range"),
            "{e}"
        );
        let e = error(&GOOD.replace("id = 2", "id = 2\nrebalance_every = 0"));
        assert!(e.contains("`rebalance_every` = 0 is out of range"), "{e}");
        let e = error(&GOOD.replace("id = 2", "id = 2\nrebalance_cooldown = \"soon\""));
        assert!(
            e.contains("`rebalance_cooldown` = \"soon\" is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn tls_files_and_the_previous_secret_are_read_beside_node_toml() {
        let text = GOOD.replace(
            "id = 2",
            "id = 2\nsecret_previous = \"the secret before the rotation\"\n\
             tls_cert = \"tls/cert.pem\"\ntls_key = \"/etc/trackc/key.pem\"",
        );
        let c = NodeConfig::parse(&text, Path::new("/srv/node")).unwrap();
        assert_eq!(
            c.secret_previous.as_deref(),
            Some(b"the secret before the rotation".as_slice())
        );
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: PathBuf::from("/srv/node/tls/cert.pem"),
                key: PathBuf::from("/etc/trackc/key.pem"),
                client_ca: None,
            })
        );
        let plain = NodeConfig::parse(GOOD, Path::new(".")).unwrap();
        assert!(plain.tls.is_none() && plain.secret_previous.is_none());
    }

    #[test]
    fn every_bad_key_is_named() {
        let cases = [
            (
                GOOD.replace("cycle = \"200ms\"", "cycle = \"50ms\""),
                "`cycle` = \"50ms\" is out of range",
            ),
            (
                GOOD.replace("cycle = \"200ms\"", "cycle = \"soon\""),
                "`cycle` = \"soon\" is not a duration",
            ),
            (GOOD.replace("id = 2", "id = 0"), "`id` = 0"),
            (GOOD.replace("id = 2\n", ""), "`id` is missing"),
            (
                GOOD.replace("\"127.0.0.1:7102\"", "\"here\""),
                "`listen` = \"here\" is not an address",
            ),
            (
                GOOD.replace("postgres://postgres@127.0.0.1/trackc", "mysql://x"),
                "`database`: mysql://x: trackc keeps its own tables in PostgreSQL or SQLite",
            ),
            (
                format!("{GOOD}\n[databases]\ncrm = \"oracle://x\"\n"),
                "`databases.crm`: `oracle://x` is not a database URL",
            ),
            (
                GOOD.replace("postgres://postgres@127.0.0.1/trackc", "oracle://x"),
                "`database`: `oracle://x` is not a database URL",
            ),
            (
                GOOD.replace(
                    "secret = \"a group secret of some length\"",
                    "secret = \"short\"",
                ),
                "shorter than 16",
            ),
            (
                GOOD.replace("role = \"operator\"", "role = \"root\""),
                "unknown variant `root`",
            ),
            (
                GOOD.replace("id = 2", "id = 2\ncapacity = 0"),
                "`capacity` = 0 is out of range",
            ),
            (
                GOOD.replace("id = 2", "id = 2\nrole = \"leader\""),
                "`role` = \"leader\"",
            ),
            (
                GOOD.replace("id = 2", "id = 2\nlisten_on = 1"),
                "unknown field `listen_on`",
            ),
            (GOOD.replace("2c26b46b", "zz"), "not 64 hex digits"),
            (
                GOOD.replace("id = 2", "id = 2\nprotocol = 99"),
                "`protocol` = 99: this build speaks protocol 1 to",
            ),
            (
                GOOD.replace("id = 2", "id = 2\nstuck_after = \"500ms\""),
                "`stuck_after` = \"500ms\" is out of range: 1s to 24h",
            ),
            (
                GOOD.replace("cycle = \"200ms\"", "cycle = \"1s\"\nstuck_after = \"2s\""),
                "`stuck_after` (2s) must be at least five cycles (5s)",
            ),
            (
                GOOD.replace(
                    "id = 2",
                    "id = 2\nsecret_previous = \"a group secret of some length\"",
                ),
                "`secret_previous` is the same as `secret`",
            ),
            (
                GOOD.replace("id = 2", "id = 2\nsecret_previous = \"old\""),
                "`secret_previous` is shorter than 16 bytes",
            ),
            (
                GOOD.replace("id = 2", "id = 2\ntls_client_ca = \"ca.pem\""),
                "`tls_client_ca` needs `tls_cert` and `tls_key`",
            ),
            (
                GOOD.replace("id = 2", "id = 2\ntls_cert = \"cert.pem\""),
                "`tls_cert` is given without `tls_key`",
            ),
        ];
        for (text, expected) in cases {
            let e = error(&text);
            assert!(e.contains(expected), "expected `{expected}` in: {e}");
        }
    }

    #[test]
    fn new_tokens_are_random_and_only_their_own_hash_matches() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("trackc_") && a.len() == 7 + 64);
        let config = NodeConfig::parse(
            &GOOD.replace(
                "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
                &token_sha256(&a).to_uppercase(),
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(config.user(&a).unwrap().name, "ops");
        assert!(config.user(&b).is_none() && config.user("").is_none());
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn roles_allow_what_they_should() {
        use UserRole::*;
        assert!(Viewer.allows(Viewer) && !Viewer.allows(Operator));
        assert!(Operator.allows(Operator) && !Operator.allows(Author));
        assert!(Author.allows(Author) && !Author.allows(Operator) && !Author.allows(Admin));
        assert!([Viewer, Operator, Author, Admin]
            .iter()
            .all(|&r| Admin.allows(r)));
    }
}
