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

impl Error {
    pub fn db(context: impl Into<String>, message: impl fmt::Display) -> Error {
        Error::Db {
            context: context.into(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) | Error::Data(m) | Error::Deploy(m) | Error::Io(m) => f.write_str(m),
            Error::Db { context, message } => write!(f, "{context}: {message}"),
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
