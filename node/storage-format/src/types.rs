//! openraft's type configuration for quorumid: what a log entry carries (a registry
//! [`Batch`]), what applying it answers, and what the cluster knows of a member.

use std::io::Cursor;

use quorumid_registry::{Batch, Response};
use serde::{Deserialize, Serialize};

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

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
