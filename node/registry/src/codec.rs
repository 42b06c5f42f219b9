//! The one byte encoding of everything a node stores and sends: postcard (compact, serde-based).
//!
//! One encoding for log entries, votes, state machine records, snapshots and peer messages,
//! so there is one place to change it. Decoding never panics: bad bytes are an error. It lives
//! beside the commands and records it encodes, so their decoding can be tested (and fuzzed)
//! without the storage layer; the node's `raft::codec` re-exports it.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {source}")]
pub struct DecodeError {
    what: &'static str,
    source: postcard::Error,
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Encoding into a Vec fails only for types postcard cannot express, which none of ours are.
    postcard::to_stdvec(value).expect("postcard encodes every quorumid type")
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|source| DecodeError { what, source })
}
