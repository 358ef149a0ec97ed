//! The peer group: the protocol as a pure state machine (`protocol`), its
//! deterministic simulation (`sim`), and authenticated messages on the
//! wire (`wire`). The node around them (transport, database work, HTTP)
//! is in `crate::node`.

pub mod protocol;
pub mod sim;
pub mod wire;
