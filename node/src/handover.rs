//! Leadership hand-over, built on openraft 0.9.25, which has no transfer API.
//!
//! openraft refuses a vote while the voter's *leader lease* is valid: a voter whose vote is
//! committed (it follows a leader) rejects any vote request until `election_timeout_max` has
//! passed since the leader last reached it (`Engine::handle_vote_req`). The leader's own lease,
//! though, is only the time it was elected: it is never extended on the leader itself. So:
//!
//! 1. the leader picks a voter that holds its whole log (the named one, or the one with the
//!    most log replicated) and waits until it has caught up;
//! 2. it stops its heartbeats (`runtime_config().heartbeat(false)`), and asks that voter over
//!    the internal `Raft.Elect` RPC to start an election now (`trigger().elect()`);
//! 3. the candidate's term is higher and its log as long as the leader's, so the leader grants
//!    its vote and steps down. With three voters that is a quorum at once; with more, the other
//!    followers grant once their lease runs out (no more heartbeats reach them), so the leader
//!    repeats the request until a new leader is known or the time limit passes;
//! 4. heartbeats are switched back on (they matter again only if this node leads again).
//!
//! Nothing here weakens safety: every vote is still granted by openraft's own rules (higher
//! term, log at least as up to date). If the hand-over does not complete in time, the old
//! leader either leads on or the cluster elects someone by timeout, as after a crash.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use quorumid_proto::v1::ElectRequest;

use crate::raft::network::{Peers, call_peer};
use crate::raft::{NodeId, Raft};

/// How long the chosen voter may take to catch up before the hand-over starts.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
const ELECT_CALL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {0} is not a voter of the cluster; only a voter can lead")]
    NotAVoter(NodeId),
    #[error("no other voter can take over (a single-voter cluster)")]
    NoOtherVoter,
    #[error("node {to} did not catch up with the leader's log in time")]
    Behind { to: NodeId },
    #[error("no new leader within {limit:?}: {last_error}")]
    TimedOut { limit: Duration, last_error: String },
}

/// The voter to hand over to: `to` if given, else the voter with the most log replicated
/// (the lowest id among equals).
fn pick(raft: &Raft, to: Option<NodeId>) -> Result<NodeId, HandoverError> {
    let metrics = raft.metrics().borrow().clone();
    if metrics.state != ServerState::Leader {
        return Err(HandoverError::NotLeader {
            leader: metrics.current_leader,
        });
    }
    let membership = metrics.membership_config.membership();
    let me = metrics.id;
    if let Some(to) = to {
        if to == me || !membership.voter_ids().any(|v| v == to) {
            return Err(HandoverError::NotAVoter(to));
        }
        return Ok(to);
    }
    let matched = |id: NodeId| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .map_or(0, |l| l.index)
    };
    membership
        .voter_ids()
        .filter(|v| *v != me)
        .max_by_key(|v| (matched(*v), std::cmp::Reverse(*v)))
        .ok_or(HandoverError::NoOtherVoter)
}

/// What a hand-over needs: this node's Raft, its peer connections, and the configured
/// `election_timeout_max` (which is also the leader lease).
#[derive(Clone)]
pub struct Handover {
    pub raft: Raft,
    pub peers: Arc<Peers>,
    pub election_timeout_max: Duration,
}

impl Handover {
    /// Hands leadership to `to` (or the most caught-up voter) and returns the new leader,
    /// which is normally that voter.
    pub async fn transfer(&self, to: Option<NodeId>) -> Result<NodeId, HandoverError> {
        transfer(&self.raft, &self.peers, to, self.election_timeout_max).await
    }
}

async fn transfer(
    raft: &Raft,
    peers: &Peers,
    to: Option<NodeId>,
    election_timeout_max: Duration,
) -> Result<NodeId, HandoverError> {
    let to = pick(raft, to)?;
    let last_log = raft.metrics().borrow().last_log_index.unwrap_or(0);
    raft.wait(Some(CATCH_UP_WAIT))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&to).copied().flatten())
                    .is_some_and(|l| l.index >= last_log)
            },
            "the new leader caught up",
        )
        .await
        .map_err(|_| HandoverError::Behind { to })?;
    let Some(node) = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&to)
        .cloned()
    else {
        return Err(HandoverError::NotAVoter(to));
    };

    tracing::info!(to, "handing leadership over");
    raft.runtime_config().heartbeat(false);
    // The followers' leases run out within one election_timeout_max after the last heartbeat;
    // give the hand-over that, plus two more rounds of elections.
    let limit = election_timeout_max * 3;
    let retry = election_timeout_max / 4;
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_error = String::from("no answer yet");
    let outcome = loop {
        let metrics = raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(leader) if leader != metrics.id => break Ok(leader),
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(HandoverError::TimedOut { limit, last_error });
        }
        let request = ElectRequest {
            min_log_index: metrics.last_log_index.unwrap_or(0),
        };
        match peers.client(to, &node.raft_addr) {
            Ok(mut client) => {
                if let Err(e) =
                    call_peer("Elect", to, ELECT_CALL_TIMEOUT, client.elect(request)).await
                {
                    last_error = e.to_string();
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        let _ = raft
            .wait(Some(retry))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != m.id),
                "another leader",
            )
            .await;
    };
    raft.runtime_config().heartbeat(true);
    match &outcome {
        Ok(leader) => tracing::info!(leader, "leadership handed over"),
        Err(e) => tracing::warn!(error = %e, "leadership hand-over did not complete"),
    }
    outcome
}
