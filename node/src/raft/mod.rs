//! Replication: openraft wired to RocksDB storage and a gRPC network.
//!
//! - `store`: the RocksDB database, one per node, and its column families.
//! - `log_store`: the Raft log, vote and commit point (synced before openraft hears "done").
//! - `state_machine`: applies committed entries to the registry state; snapshots.
//! - `network`: openraft's outgoing RPCs over gRPC, and the fault switch used by tests.
//! - `service`: the incoming side of those RPCs, plus read index and write forwarding.
//! - `codec`: the byte encoding of everything Raft stores or sends.

// openraft's traits return its own (large) `StorageError`; our storage helpers return it too
// rather than boxing it and converting back at every trait boundary.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod log_store;
pub mod network;
pub mod service;
pub mod state_machine;
pub mod store;

pub use quorumid_storage_format::types::{
    Entry, LogId, Membership, NodeId, NodeInfo, SnapshotMeta, StoredMembership, TypeConfig,
};

pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
