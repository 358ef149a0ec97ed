//! The runtime's errors: each says what failed and where, in words an
//! operator can act on.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A bad URL, option or file given by the user.
    Config(String),
    /// The database refused or could not be reached; `context` says what
    /// the runtime was doing.
    Db {
        context: String,
        message: String,
    },
    /// The database could not do it now and trying again may work: the
    /// connection was lost, the server is restarting, a serialization
    /// failure, a deadlock, a lock or statement timeout. `db::retry`
    /// retries these; any other error is final.
    Transient {
        context: String,
        message: String,
        fault: Fault,
    },
    /// A value that does not fit its field, a NULL key, …
    Data(String),
    /// Track files with errors, or a deploy that would lose records.
    Deploy(String),
    Io(String),
    /// A block cut under an epoch the track has left: another node owns
    /// the track now.
    Fenced {
        track: String,
        epoch: u64,
        current: u64,
    },
    /// SIGINT/SIGTERM: the work stopped after the current block.
    Stopped,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Why a transient error happened, which decides what helps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection is gone or the server cannot take it now (restart,
    /// failover, terminated backend): reconnect, and the database counts
    /// as unreachable until an operation succeeds again.
    Connection,
    /// The transaction lost to another (serialization failure, deadlock,
    /// lock timeout, SQLite busy): the same connection may try again.
    Conflict,
    /// A statement ran past the statement timeout.
    Timeout,
}

impl Error {
    pub fn db(context: impl Into<String>, message: impl fmt::Display) -> Error {
        Error::Db {
            context: context.into(),
            message: message.to_string(),
        }
    }

    /// The fault of a transient error (`None`: final).
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Error::Transient { fault, .. } => Some(*fault),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) | Error::Data(m) | Error::Deploy(m) | Error::Io(m) => f.write_str(m),
            Error::Db { context, message }
            | Error::Transient {
                context, message, ..
            } => {
                write!(f, "{context}: {message}")
            }
            Error::Fenced {
                track,
                epoch,
                current,
            } => write!(
                f,
                "track {track}: the block's epoch {epoch} is not the track's epoch {current}"
            ),
            Error::Stopped => f.write_str("stopped"),
        }
    }
}

impl std::error::Error for Error {}

/// Adds what the runtime was doing to a database error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::db(what(), e))
    }
}

/// The URL without its password, for messages and logs
/// (`postgres://u:***@h/db`, `smtp://u:***@mail`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            match user.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &user[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
