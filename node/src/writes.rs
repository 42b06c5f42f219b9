//! The write path: any node accepts a write, the leader completes and proposes it.
//!
//! A node that is not the leader forwards the request (already validated, document number
//! already hashed) to the leader's Raft port. The leader does the work that is not
//! deterministic before proposing (DESIGN.md 4): it draws the new identity id, reads its
//! clock and fingerprints the request. Retries are safe: the state machine answers a known
//! `request_id` with its first result. Enrollments with a face are searched against every
//! enrolled face first (1:N de-dup), one at a time.
//!
//! Group commit: openraft 0.9 appends (and fsyncs) one log entry per proposal, one after the
//! other. The leader therefore proposes batches: one log entry is in flight at a time
//! (`MAX_IN_FLIGHT`), and the commands that arrive meanwhile wait and go out together as the
//! next entry. A lone write is proposed at once; under load one entry (one fsync, one
//! replication round) carries many writes. Each command of a batch is applied on its own, in
//! order, with its own answer.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use opentelemetry::trace::TraceContextExt as _;
use quorumid_proto::v1::RaftPayload;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::biometrics::Biometrics;
use crate::raft::codec::{decode, encode};
use crate::raft::network::{Peers, call_peer};
use crate::raft::state_machine::StateReader;
use crate::raft::{NodeId, Raft};
use crate::registry::{
    Command, IdentityId, Outcome, Proposal, Rejection, Request, Response, TemplateFormat,
};
use crate::telemetry::NodeTelemetry;

/// How long a step of a write may take: forwarding it, or confirming leadership before the
/// de-dup search (a commit needs a quorum's fsync).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Log entries proposed and not yet applied, at most. One measured best on the 2-core
/// benchmark machine (status changes at 16 clients: 3,425/s with 1, 3,041/s with 2, 2,987/s
/// with 4): there the cost is CPU per entry, and fewer, larger entries cost less.
const MAX_IN_FLIGHT: usize = 1;
/// A batch takes more commands while its templates add up to less than this (a single
/// command may be larger). 16 entries of this size (an AppendEntries at most, openraft's
/// `max_payload_entries`) fit a Raft message.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Commands waiting for a batch, at most; further writes wait to be queued.
const QUEUE: usize = 4_096;

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
    #[error("the leader could not read its state: {0}")]
    Unavailable(String),
}

impl From<ForwardToLeader<NodeId, crate::raft::NodeInfo>> for WriteError {
    fn from(to: ForwardToLeader<NodeId, crate::raft::NodeInfo>) -> WriteError {
        WriteError::LeaderChanged {
            leader_id: to.leader_id,
            leader_api_addr: to.leader_node.map(|n| n.api_addr).unwrap_or_default(),
        }
    }
}

/// Submits writes from this node.
pub struct Writer {
    node_id: NodeId,
    raft: Raft,
    peers: Arc<Peers>,
    biometrics: Arc<Biometrics>,
    state: StateReader,
    telemetry: Arc<NodeTelemetry>,
    /// Serialises enrollments that carry faces on the leader, so each one's de-dup search
    /// sees every earlier one applied.
    enrolling: tokio::sync::Mutex<()>,
    /// Completed commands on their way into the next batch.
    queue: mpsc::Sender<Queued>,
}

/// A command waiting for a batch, and where its answer goes.
struct Queued {
    command: Command,
    reply: oneshot::Sender<Result<Response, WriteError>>,
}

impl Writer {
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        peers: Arc<Peers>,
        biometrics: Arc<Biometrics>,
        state: StateReader,
        telemetry: Arc<NodeTelemetry>,
    ) -> Writer {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(propose_batches(raft.clone(), queued));
        Writer {
            node_id,
            raft,
            peers,
            biometrics,
            state,
            telemetry,
            enrolling: tokio::sync::Mutex::new(()),
            queue,
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

    /// Leader only: completes `request` into a command and proposes it. An enrollment
    /// with a face is first searched against every enrolled face (1:N de-dup).
    pub async fn propose(&self, request: Request) -> Result<Response, WriteError> {
        let faces = match &request.proposal {
            Proposal::Enroll { templates, .. } => templates
                .iter()
                .any(|t| t.format == TemplateFormat::FaceEmbeddingF32)
                .then_some(templates),
            _ => None,
        };
        let Some(templates) = faces else {
            return self.complete_and_propose(request).await;
        };
        let _one_at_a_time = self.enrolling.lock().await;
        // Apply everything committed before searching: the index follows the applied state.
        let read = tokio::time::timeout(WRITE_TIMEOUT, self.raft.ensure_linearizable())
            .await
            .map_err(|_| WriteError::NoLeader)?
            .map_err(|e| match e {
                RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)) => to.into(),
                RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => WriteError::NoLeader,
                RaftError::Fatal(_) => WriteError::ShuttingDown,
            })?;
        // A retry of an applied enrollment would find its own face: let `apply` answer it
        // with the first result instead.
        let retry = self
            .state
            .request(&request.request_id)
            .map_err(|e| WriteError::Unavailable(e.to_string()))?
            .is_some_and(|seen| seen.fingerprint == request.fingerprint());
        if !retry && self.search_faces(templates) {
            return Ok(Response {
                outcome: Outcome::Rejected(Rejection::DuplicateFace),
                log_index: read.map_or(0, |l| l.index),
            });
        }
        self.complete_and_propose(request).await
    }

    /// The 1:N de-dup search, measured.
    fn search_faces(&self, templates: &[crate::registry::Template]) -> bool {
        let started = Instant::now();
        let duplicate = {
            let _span = tracing::info_span!("dedup.search").entered();
            self.biometrics.duplicate_face(templates)
        };
        let metrics = &self.telemetry.metrics;
        metrics
            .dedup_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.biometric("dedup_face", duplicate);
        duplicate
    }

    async fn complete_and_propose(&self, request: Request) -> Result<Response, WriteError> {
        let new_identity = match request.proposal {
            Proposal::Enroll { .. } => Some(IdentityId::from_random(rand::random())),
            _ => None,
        };
        let command = Command {
            fingerprint: request.fingerprint(),
            at_unix_ms: unix_ms_now(),
            new_identity,
            request,
        };
        // The Raft append and the apply on every node join this span's trace.
        let span = tracing::info_span!("raft.propose", node_id = self.node_id);
        let cx = span.context().span().span_context().clone();
        self.telemetry
            .writes
            .remember(&command.request.request_id, cx);
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let queued = async {
            self.queue
                .send(Queued { command, reply })
                .await
                .map_err(|_| WriteError::ShuttingDown)?;
            answer.await.map_err(|_| WriteError::ShuttingDown)?
        };
        let response = queued.instrument(span).await?;
        self.telemetry
            .metrics
            .raft_commit_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(log_index = response.log_index, "proposal committed");
        Ok(response)
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
        let answer = call_peer("Forward", leader, WRITE_TIMEOUT, client.forward(payload))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        decode::<Result<Response, WriteError>>("forwarded write answer", &answer.payload)
            .map_err(|e| unreachable(e.to_string()))?
    }
}

/// The leader's batcher (see the module comment): runs until the writer is dropped.
async fn propose_batches(raft: Raft, mut queued: mpsc::Receiver<Queued>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        // Wait for a slot first: commands that arrive meanwhile join this batch.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = command_bytes(&first.command);
        let mut batch = vec![first];
        while bytes < MAX_BATCH_BYTES {
            let Ok(next) = queued.try_recv() else { break };
            bytes += command_bytes(&next.command);
            batch.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|q| (q.command, q.reply)).unzip();
            // (Traces: the network finds each command's proposing span by its request id.)
            let written = raft.client_write(commands).await;
            drop(slot);
            match written {
                Ok(written) => {
                    for (reply, response) in replies.into_iter().zip(written.data) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Err(e) => {
                    let error = write_error(e);
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

/// This node's wall clock, Unix milliseconds: the time a leader stamps on what it proposes,
/// and what holder proofs are checked against. Never read inside `apply`.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The size that counts towards `MAX_BATCH_BYTES`: the templates, plus a bound on the rest.
fn command_bytes(command: &Command) -> usize {
    let templates = match &command.request.proposal {
        Proposal::Enroll { templates, .. } => templates.iter().map(|t| t.data.len()).sum(),
        _ => 0,
    };
    templates + 512
}

fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, crate::raft::NodeInfo>>,
) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => to.into(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(_)) => {
            unreachable!("a registry command is not a membership change")
        }
        RaftError::Fatal(_) => WriteError::ShuttingDown,
    }
}
