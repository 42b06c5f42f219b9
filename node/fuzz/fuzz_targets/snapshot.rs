//! Fuzz target: a snapshot file (`InstallSnapshot` from a peer, or the node's own file).
//! The properties are in `quorumid_fuzz::snapshot` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quorumid_fuzz::snapshot(data));
