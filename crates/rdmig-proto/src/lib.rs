//! The agents' wire protocol, used by both ends of a migration and by the transports:
//!
//! - [`tls`]: mutual TLS 1.3 identities (a node's certificate from the cluster CA);
//! - [`ca`]: the cluster CA and the node certificates it issues (`rdmig ca`);
//! - [`wire`]: the channel (TLS, then framed messages, every wait bounded);
//! - [`pagestream`]: the pieces CRIU's page stream is relayed in between the agents;
//! - [`msg`]: the requests and replies, each checked when it is decoded ([`msg::Request`],
//!   [`msg::Reply`]), and the plain data types they carry ([`Endpoint`], [`msg::RingInfo`]).

pub mod ca;
pub mod msg;
pub mod pagestream;
pub mod tls;
pub mod wire;

pub use msg::Endpoint;

/// Seeds of the fuzz targets (fuzz/corpus/<target>/), built by this crate's tests so that they
/// follow the format: a test fails when a seed is not what it builds, and
/// `RDMIG_WRITE_FUZZ_SEEDS=1 cargo test -p rdmig-proto` rewrites them.
#[cfg(test)]
pub(crate) fn fuzz_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let seed = dir.join(name);
    if std::env::var_os("RDMIG_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&seed, bytes).unwrap();
    }
    assert!(
        std::fs::read(&seed).is_ok_and(|b| b == bytes),
        "{} is not the seed this test builds: RDMIG_WRITE_FUZZ_SEEDS=1 cargo test -p rdmig-proto rewrites it",
        seed.display()
    );
}
