//! The runtime of decision tracks: storage (SQLite, PostgreSQL), runs of
//! tracks over blocks of records with exactly-once effects, triggers.

pub mod bundle;
pub mod clock;
pub mod console;
pub mod db;
pub mod deliver;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod node;
pub mod plan;
pub mod run;
pub mod sqltext;
pub mod why;

pub use error::{Error, Result};
pub mod demo;
