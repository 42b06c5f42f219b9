//! The write path: any node accepts a write, the leader completes and proposes it.
//!
//! A node that is not the leader forwards the request (already validated, document number
//! already hashed) to the leader's Raft port. The leader does the work that is not
//! deterministic before proposing (DESIGN.md 4): it draws the new identity id, reads its
//! clock and fingerprints the request. Retries are safe: the state machine answers a known
//! `request_id` with its first result.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use quorumid_proto::v1::RaftPayload;
use serde::{Deserialize, Serialize};

use crate::raft::codec::{decode, encode};
use crate::raft::network::{Peers, call_peer};
use crate::raft::{NodeId, Raft};
use crate::registry::{Command, IdentityId, Proposal, Request, Response};

/// How long a forwarded write may take at the leader (commit needs a quorum's fsync).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a write got no result. Every case is safe to retry with the same `request_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    #[error("no leader is known: the cluster is electing one, or this node is cut off from it")]
    NoLeader,
    #[error("leader (node {leader_id}) could not be reached: {reason}")]
    LeaderUnreachable {
        leader_id: NodeId,
        leader_api_addr: String,
        reason: String,
    },
    #[error("leadership moved while the write was in flight; retry with the same request_id")]
    LeaderChanged {
        leader_id: Option<NodeId>,
        leader_api_addr: String,
    },
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// Submits writes from this node.
pub struct Writer {
    node_id: NodeId,
    raft: Raft,
    peers: Arc<Peers>,
}

impl Writer {
    pub fn new(node_id: NodeId, raft: Raft, peers: Arc<Peers>) -> Writer {
        Writer {
            node_id,
            raft,
            peers,
        }
    }

    /// Writes `request` through the leader, wherever it is.
    pub async fn submit(&self, request: Request) -> Result<Response, WriteError> {
        match self.raft.current_leader().await {
            None => Err(WriteError::NoLeader),
            Some(leader) if leader == self.node_id => self.propose(request).await,
            Some(leader) => self.forward(leader, request).await,
        }
    }

    /// Leader only: completes `request` into a command and proposes it.
    pub async fn propose(&self, request: Request) -> Result<Response, WriteError> {
        let new_identity = match request.proposal {
            Proposal::Enroll { .. } => Some(IdentityId::from_random(rand::random())),
            Proposal::ChangeStatus { .. } => None,
        };
        let command = Command {
            fingerprint: request.fingerprint(),
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            new_identity,
            request,
        };
        match self.raft.client_write(command).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                Err(WriteError::LeaderChanged {
                    leader_id: to.leader_id,
                    leader_api_addr: to.leader_node.map(|n| n.api_addr).unwrap_or_default(),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(_))) => {
                unreachable!("a registry command is not a membership change")
            }
            Err(RaftError::Fatal(_)) => Err(WriteError::ShuttingDown),
        }
    }

    async fn forward(&self, leader: NodeId, request: Request) -> Result<Response, WriteError> {
        let node = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned();
        let Some(node) = node else {
            return Err(WriteError::NoLeader);
        };
        let unreachable = |reason: String| WriteError::LeaderUnreachable {
            leader_id: leader,
            leader_api_addr: node.api_addr.clone(),
            reason,
        };
        let mut client = self
            .peers
            .client(leader, &node.raft_addr)
            .map_err(|e| unreachable(e.to_string()))?;
        let payload = RaftPayload {
            payload: encode(&request),
        };
        let answer = call_peer(leader, FORWARD_TIMEOUT, client.forward(payload))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        decode::<Result<Response, WriteError>>("forwarded write answer", &answer.payload)
            .map_err(|e| unreachable(e.to_string()))?
    }
}
