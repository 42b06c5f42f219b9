//! The incoming side of node-to-node calls: the `quorumid.v1.Raft` gRPC service.
//!
//! Raft messages are handed to openraft as they are; answers (including openraft's own
//! errors) go back encoded. Read index and write forwarding are served by the leader only.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use quorumid_proto::v1::raft_server;
use quorumid_proto::v1::{RaftPayload, ReadIndexRequest, ReadIndexResponse};
use tonic::{Request, Response, Status};

use super::codec::{decode, encode};
use super::{NodeId, Raft, TypeConfig};
use crate::writes::Writer;

pub struct RaftService {
    raft: Raft,
    writer: Arc<Writer>,
}

impl RaftService {
    pub fn new(raft: Raft, writer: Arc<Writer>) -> RaftService {
        RaftService { raft, writer }
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
        let rpc: AppendEntriesRequest<TypeConfig> = payload("append entries request", request)?;
        answer(&self.raft.append_entries(rpc).await)
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
}
