//! The incoming side of node-to-node calls: the `quorumid.v1.Raft` gRPC service.
//!
//! Raft messages are handed to openraft as they are; answers (including openraft's own
//! errors) go back encoded. Read index and write forwarding are served by the leader only;
//! `Elect` is the candidate's side of a leadership hand-over (`handover.rs`).

use std::sync::Arc;

use openraft::EntryPayload;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use quorumid_proto::v1::raft_server;
use quorumid_proto::v1::{
    ElectRequest, ElectResponse, RaftPayload, ReadIndexRequest, ReadIndexResponse,
    WatchLeaderRequest,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::codec::{decode, encode};
use super::{NodeId, Raft, TypeConfig};
use crate::leader_watch::{self, LeaderContact, LeaderStream};
use crate::telemetry::NodeTelemetry;
use crate::telemetry::writes::{ENTRY_TRACES, decode_entry_traces};
use crate::writes::Writer;

pub struct RaftService {
    raft: Raft,
    writer: Arc<Writer>,
    telemetry: Arc<NodeTelemetry>,
    contact: Arc<LeaderContact>,
    /// Turns true when the node begins to stop: open `WatchLeader` streams end then.
    stopping: watch::Receiver<bool>,
}

impl RaftService {
    pub fn new(
        raft: Raft,
        writer: Arc<Writer>,
        telemetry: Arc<NodeTelemetry>,
        contact: Arc<LeaderContact>,
        stopping: watch::Receiver<bool>,
    ) -> RaftService {
        RaftService {
            raft,
            writer,
            telemetry,
            contact,
            stopping,
        }
    }
}

fn payload<T: serde::de::DeserializeOwned>(
    what: &'static str,
    request: Request<RaftPayload>,
) -> Result<T, Status> {
    decode(what, &request.into_inner().payload).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn answer<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(RaftPayload {
        payload: encode(value),
    }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let traces = request
            .metadata()
            .get(ENTRY_TRACES)
            .and_then(|v| v.to_str().ok())
            .map(decode_entry_traces)
            .unwrap_or_default();
        let rpc: AppendEntriesRequest<TypeConfig> = payload("append entries request", request)?;
        // Remember under which context each traced entry was proposed, for its apply span.
        for entry in &rpc.entries {
            if let (EntryPayload::Normal(commands), Some(cx)) =
                (&entry.payload, traces.get(&entry.log_id.index))
            {
                for command in commands {
                    self.telemetry
                        .writes
                        .remember(&command.request.request_id, cx.clone());
                }
            }
        }
        let result = self.raft.append_entries(rpc).await;
        // Any answer but "your vote is stale" means a current leader reached this node.
        if let Ok(response) = &result
            && !matches!(response, AppendEntriesResponse::HigherVote(_))
        {
            self.contact.heard();
        }
        answer(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = payload("vote request", request)?;
        answer(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = payload("snapshot chunk", request)?;
        answer(&self.raft.install_snapshot(rpc).await)
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let term = self.raft.metrics().borrow().current_term;
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _)) => Ok(Response::new(ReadIndexResponse {
                read_index: read_log_id.map_or(0, |l| l.index),
                term,
            })),
            Err(e) => Err(Status::unavailable(format!(
                "cannot confirm leadership for a read index: {e}"
            ))),
        }
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let write: crate::registry::Request = payload("forwarded write", request)?;
        answer(&self.writer.propose(write).await)
    }

    type WatchLeaderStream = LeaderStream;

    async fn watch_leader(
        &self,
        _request: Request<WatchLeaderRequest>,
    ) -> Result<Response<LeaderStream>, Status> {
        leader_watch::serve(&self.raft, self.stopping.clone()).map(Response::new)
    }

    async fn elect(
        &self,
        request: Request<ElectRequest>,
    ) -> Result<Response<ElectResponse>, Status> {
        let min_log_index = request.into_inner().min_log_index;
        let metrics = self.raft.metrics().borrow().clone();
        if !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == metrics.id)
        {
            return Err(Status::failed_precondition(
                "this node is not a voter; it cannot be elected",
            ));
        }
        let last = metrics.last_log_index.unwrap_or(0);
        if last < min_log_index {
            return Err(Status::failed_precondition(format!(
                "this node's log ends at index {last}, behind the leader's {min_log_index}"
            )));
        }
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
        Ok(Response::new(ElectResponse {
            term: self.raft.metrics().borrow().current_term,
        }))
    }
}
