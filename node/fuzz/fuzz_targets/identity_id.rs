//! Fuzz target: an identity id, as typed by a person or sent by a platform.
//! The properties are in `quorumid_fuzz::identity_id` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quorumid_fuzz::identity_id(data));
