//! The durable migration journal every rdmig node keeps (issue 15): the data types first.

mod event;

pub use event::{Durability, Event, InvalidNodeName, NewEvent, NodeName, Outcome, Phase, Role, UnknownName};
pub use rdmig_proto::msg::MigrationId;
