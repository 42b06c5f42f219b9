//! Fuzz target: an ISO/IEC 19794-2:2005 minutiae record, as enrollment and verification receive it.
//! The properties are in `quorumid_fuzz::iso19794` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quorumid_fuzz::iso19794(data));
