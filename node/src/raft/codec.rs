//! The byte encoding of what Raft stores and sends: the registry's codec (postcard), one
//! encoding for the whole node.

pub use crate::registry::codec::{DecodeError, decode, encode};
