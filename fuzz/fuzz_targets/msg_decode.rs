//! A control message as the agent decodes it from a frame (`Channel::recv_msg_max`:
//! `msg::decode`) and then checks it (`Request::validate`): no panic on any bytes, and a request
//! that validates encodes and decodes back to itself (what the agent acts on is what was sent).
//! Replies (what the source decodes from an agent) must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdmig_proto::msg::{self, Reply, Request};

fuzz_target!(|data: &[u8]| {
    let _ = msg::decode::<Reply>(data);
    let Ok(req) = msg::decode::<Request>(data) else { return };
    let id = req.id().cloned();
    if req.validate().is_err() {
        return;
    }
    // Whatever names a migration names a valid one once the request validates.
    if let Some(id) = &id {
        id.validate().expect("a validated request names a valid migration id");
    }
    // No longer than the input (postcard's canonical form is never longer), so within MAX_MSG.
    let bytes = msg::encode(&req).expect("a validated request encodes");
    assert!(bytes.len() <= data.len(), "re-encoded {} bytes from {}", bytes.len(), data.len());
    let back: Request = msg::decode(&bytes).expect("a re-encoded request decodes");
    assert_eq!(back, req);
    back.validate().expect("a re-encoded request validates");
    assert_eq!(msg::encode(&back).expect("encodes again"), bytes);
});
