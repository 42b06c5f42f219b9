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

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::registry::{Batch, Response};

pub type NodeId = u64;

/// What the cluster knows about a member (openraft's `Node`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub province: String,
    /// Where clients reach the node's public API, e.g. `http://10.0.0.5:7100`.
    pub api_addr: String,
    /// Where peers reach the node's Raft service, e.g. `http://10.0.0.5:7200`.
    pub raft_addr: String,
}

openraft::declare_raft_types!(
    /// quorumid's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = Vec<Response>,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
