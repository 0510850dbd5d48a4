//! The agents' wire protocol, used by both ends of a migration and by the transports:
//!
//! - [`wire`]: the authenticated channel (per-connection keys from the cluster secret, framed
//!   messages with a counter and a tag);
//! - [`mac`]: the frame tag (NH over 1 KiB blocks, then SipHash-2-4-128);
//! - [`msg`]: the requests and replies, each checked when it is decoded ([`msg::Request`],
//!   [`msg::Reply`]), and the plain data types they carry ([`Endpoint`], [`msg::RingInfo`]).

pub mod mac;
pub mod msg;
pub mod wire;

pub use msg::Endpoint;
