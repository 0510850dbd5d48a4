//! The agents' wire protocol, used by both ends of a migration and by the transports:
//!
//! - [`tls`]: mutual TLS 1.3 identities (a node's certificate from the cluster CA);
//! - [`ca`]: the cluster CA and the node certificates it issues (`rdmig ca`);
//! - [`wire`]: the channel (TLS, then framed messages, every wait bounded);
//! - [`msg`]: the requests and replies, each checked when it is decoded ([`msg::Request`],
//!   [`msg::Reply`]), and the plain data types they carry ([`Endpoint`], [`msg::RingInfo`]).

pub mod ca;
pub mod msg;
pub mod tls;
pub mod wire;

pub use msg::Endpoint;
