//! The fdinfo lines of rdmig's ib_uverbs, as the plugin's dump reads them for a uverbs file and
//! for an event file (rdmig_criu::fdinfo): no panic on any text, and lookups of what parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdmig_criu::fdinfo::{self, EventInfo};
use rdmig_criu::uverbs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(Some(info)) = fdinfo::parse_uverbs(&text) {
        assert_eq!(info.abi, fdinfo::ABI_VERSION);
        for c in &info.cqs {
            assert!(info.cq(c.handle).is_some());
        }
        for o in &info.objs {
            assert!(info.obj(&o.kind, o.handle).is_some());
            for t in [uverbs::OBJ_QP, uverbs::OBJ_SRQ, uverbs::OBJ_MR, uverbs::OBJ_MW, uverbs::OBJ_AH, uverbs::OBJ_PD] {
                let _ = info.obj_of_type(t, o.handle);
            }
        }
    }
    match fdinfo::parse_event_file(&text) {
        Ok(EventInfo::CompChannel { token, .. }) => assert!(!token.is_empty()),
        Ok(_) | Err(_) => {}
    }
    if let Some(t) = fdinfo::file_token(&text) {
        assert!(!t.is_empty());
    }
});
