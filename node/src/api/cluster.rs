//! The `Cluster` service: what operators see and change about the Raft group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use quorumid_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Context, errors, validate};
use crate::handover::HandoverError;
use crate::raft::{NodeId, NodeInfo};
use crate::security::policy;

const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

pub struct ClusterService {
    ctx: Arc<Context>,
}

impl ClusterService {
    pub fn new(ctx: Arc<Context>) -> ClusterService {
        ClusterService { ctx }
    }

    fn members(&self) -> Vec<pb::Member> {
        let metrics = self.ctx.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = metrics.last_log_index.unwrap_or(0);
        membership
            .nodes()
            .map(|(id, node)| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .map(|r| r.get(id).copied().flatten().map_or(0, |l| l.index));
                pb::Member {
                    node_id: *id,
                    province: node.province.clone(),
                    api_addr: node.api_addr.clone(),
                    raft_addr: node.raft_addr.clone(),
                    role: if voters.contains(id) {
                        pb::MemberRole::Voter
                    } else {
                        pb::MemberRole::Learner
                    } as i32,
                    matched_index: matched,
                    replication_lag: matched.map(|m| last.saturating_sub(m)),
                }
            })
            .collect()
    }

    /// Membership changes and hand-overs are made by the leader; other nodes say where it is.
    fn not_leader(&self) -> Status {
        let metrics = self.ctx.raft.metrics().borrow().clone();
        let leader = metrics.current_leader;
        let addr = leader
            .and_then(|l| metrics.membership_config.membership().get_node(&l).cloned())
            .map(|n| n.api_addr)
            .unwrap_or_default();
        errors::leader_hint(
            "membership changes and leadership transfers are made on the leader; ask it"
                .to_string(),
            leader,
            &addr,
        )
    }

    fn membership_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Status {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => self.not_leader(),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                Status::failed_precondition(format!("membership change refused: {c}"))
            }
            RaftError::Fatal(f) => Status::unavailable(format!("raft stopped: {f}")),
        }
    }

    fn membership_response(&self, log_index: u64) -> Response<pb::MembershipResponse> {
        Response::new(pb::MembershipResponse {
            log_index,
            members: self.members(),
        })
    }
}

fn address(field: &str, value: &str) -> Result<String, Status> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| errors::invalid(format!("{field} {value:?} is not a URI: {e}")))?;
    if uri.scheme_str().is_none_or(|s| s != "http" && s != "https") || uri.port_u16().is_none() {
        return Err(errors::invalid(format!(
            "{field} must look like http://host:port, got {value:?}"
        )));
    }
    Ok(value.to_string())
}

fn node_ids(field: &str, ids: &[u64]) -> Result<BTreeSet<NodeId>, Status> {
    if ids.is_empty() || ids.len() > 64 {
        return Err(errors::invalid(format!(
            "{field} must list 1 to 64 node ids"
        )));
    }
    if ids.contains(&0) {
        return Err(errors::invalid(format!("{field}: node id 0 is not valid")));
    }
    Ok(ids.iter().copied().collect())
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        policy::cluster_status(&policy::caller(&request)?)?;
        let metrics = self.ctx.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let role = match metrics.state {
            ServerState::Leader => pb::NodeRole::Leader,
            ServerState::Follower => pb::NodeRole::Follower,
            ServerState::Candidate => pb::NodeRole::Candidate,
            ServerState::Learner => pb::NodeRole::Learner,
            ServerState::Shutdown => pb::NodeRole::Shutdown,
        };
        let leader_api_addr = metrics
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.api_addr.clone()))
            .unwrap_or_default();
        let (digest_applied, digest) = self.ctx.state.digest().map_err(errors::state)?;
        // The committed index a node knows: the leader's own; elsewhere, what it applied.
        let committed_index = match metrics.state {
            ServerState::Leader => metrics.replication.as_ref().map_or(0, |r| {
                let mut matched: Vec<u64> = membership
                    .voter_ids()
                    .map(|v| r.get(&v).copied().flatten().map_or(0, |l| l.index))
                    .collect();
                matched.sort_unstable();
                matched
                    .get((matched.len().saturating_sub(1)) / 2)
                    .copied()
                    .unwrap_or(0)
            }),
            _ => metrics.last_applied.map_or(0, |l| l.index),
        };
        Ok(Response::new(pb::StatusResponse {
            node_id: self.ctx.node_id,
            province: self.ctx.province.clone(),
            role: role as i32,
            leader_id: metrics.current_leader,
            leader_api_addr,
            term: metrics.current_term,
            members: self.members(),
            joint_membership: membership.get_joint_config().len() > 1,
            applied_index: digest_applied.map_or(0, |l| l.index),
            committed_index,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            snapshot_index: metrics.snapshot.map_or(0, |l| l.index),
            purged_index: metrics.purged.map_or(0, |l| l.index),
            watermark_age_ms: self.ctx.freshness.age().map(|a| a.as_millis() as u64),
            state_digest: digest.to_string(),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let caller = policy::caller(&request)?;
        let r = request.into_inner();
        policy::add_learner(&caller, r.node_id)?;
        if r.node_id == 0 {
            return Err(errors::invalid("node_id 0 is not valid"));
        }
        let node = NodeInfo {
            province: validate::province("province", &r.province)?,
            api_addr: address("api_addr", &r.api_addr)?,
            raft_addr: address("raft_addr", &r.raft_addr)?,
        };
        let written = self
            .ctx
            .raft
            .add_learner(r.node_id, node, r.wait_caught_up)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(self.membership_response(written.log_id.index))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        use pb::change_membership_request::Change;
        policy::cluster_admin(&policy::caller(&request)?, "ChangeMembership")?;
        let change = request
            .into_inner()
            .change
            .ok_or_else(|| errors::invalid("change is required: promote, demote or remove"))?;
        let membership = self
            .ctx
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let known: BTreeMap<NodeId, NodeInfo> =
            membership.nodes().map(|(k, v)| (*k, v.clone())).collect();
        let unknown =
            |ids: &BTreeSet<NodeId>| ids.iter().find(|id| !known.contains_key(id)).copied();
        let steps: Vec<(ChangeMembers<NodeId, NodeInfo>, bool)> = match change {
            Change::Promote(ids) => {
                let ids = node_ids("promote", &ids.ids)?;
                if let Some(id) = unknown(&ids) {
                    return Err(Status::not_found(format!(
                        "node {id} is not a member; add it as a learner first"
                    )));
                }
                vec![(ChangeMembers::AddVoterIds(ids), true)]
            }
            Change::Demote(ids) => {
                let ids = node_ids("demote", &ids.ids)?;
                if let Some(id) = ids.iter().find(|id| !voters.contains(id)) {
                    return Err(Status::failed_precondition(format!(
                        "node {id} is not a voter"
                    )));
                }
                vec![(ChangeMembers::RemoveVoters(ids), true)]
            }
            Change::Remove(ids) => {
                let ids = node_ids("remove", &ids.ids)?;
                if let Some(id) = unknown(&ids) {
                    return Err(Status::not_found(format!("node {id} is not a member")));
                }
                let (as_voters, as_learners): (BTreeSet<_>, BTreeSet<_>) =
                    ids.into_iter().partition(|id| voters.contains(id));
                let mut steps = Vec::new();
                if !as_voters.is_empty() {
                    steps.push((ChangeMembers::RemoveVoters(as_voters), false));
                }
                if !as_learners.is_empty() {
                    steps.push((ChangeMembers::RemoveNodes(as_learners), false));
                }
                steps
            }
        };
        let mut log_index = 0;
        for (change, retain) in steps {
            let written = self
                .ctx
                .raft
                .change_membership(change, retain)
                .await
                .map_err(|e| self.membership_error(e))?;
            log_index = written.log_id.index;
        }
        Ok(self.membership_response(log_index))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        policy::cluster_admin(&policy::caller(&request)?, "TransferLeader")?;
        let to = match request.into_inner().to_node_id {
            0 => None,
            id => Some(id),
        };
        let leader = self.ctx.handover.transfer(to).await.map_err(|e| match e {
            HandoverError::NotLeader { .. } => self.not_leader(),
            HandoverError::NotAVoter(_) | HandoverError::NoOtherVoter => {
                Status::failed_precondition(e.to_string())
            }
            HandoverError::Behind { .. } | HandoverError::TimedOut { .. } => {
                Status::unavailable(format!("leadership hand-over failed: {e}"))
            }
        })?;
        Ok(Response::new(pb::TransferLeaderResponse {
            leader_id: leader,
            term: self.ctx.raft.metrics().borrow().current_term,
        }))
    }

    async fn trigger_snapshot(
        &self,
        request: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        policy::cluster_admin(&policy::caller(&request)?, "TriggerSnapshot")?;
        let applied = self.ctx.freshness.applied_index();
        self.ctx
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
        let built = self
            .ctx
            .raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot built",
            )
            .await;
        Ok(Response::new(pb::TriggerSnapshotResponse {
            snapshot_index: built.ok().and_then(|m| m.snapshot).map_or(0, |s| s.index),
        }))
    }
}
