//! The peer group: the protocol as a pure state machine (`protocol`), the
//! rebalancing plan as a pure function (`balance`), its
//! deterministic simulation (`sim`), and authenticated messages on the
//! wire (`wire`). The node around them (transport, database work, HTTP)
//! is in `crate::node`.

pub mod balance;
pub mod protocol;
pub mod sim;
pub mod wire;
