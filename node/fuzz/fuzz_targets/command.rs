//! Fuzz target: a Raft log entry's payload (a batch of commands), and a forwarded write.
//! The properties are in `quorumid_fuzz::command` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quorumid_fuzz::command(data));
