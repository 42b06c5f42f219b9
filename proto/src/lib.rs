//! The `quorumid.v1` gRPC API, generated from `proto/quorumid/v1/*.proto`.
//!
//! The .proto files are the contract for platforms in any language; this crate is the Rust
//! binding used by the node, the client library and the tests.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("quorumid.v1");

    /// Encoded `FileDescriptorSet` of the quorumid.v1 package, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("quorumid_v1_descriptor");
}
