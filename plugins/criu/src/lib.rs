//! rdmig's CRIU plugin (issue 5): being written; nothing here is loaded by CRIU yet.
