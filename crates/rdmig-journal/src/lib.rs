//! The durable migration journal every rdmig node keeps (issue 15): the data types, and the
//! merge of several nodes' events into one ordered stream.

mod error;
mod event;
mod merge;

pub use error::StreamError;
pub use event::{Durability, Event, InvalidNodeName, NewEvent, NodeName, Outcome, Phase, Role, UnknownName};
pub use merge::{merge, Gap, Merged, MergedEvent, NodeStream};
pub use rdmig_proto::msg::MigrationId;
