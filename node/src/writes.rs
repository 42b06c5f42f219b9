//! The write path: any node accepts a write, the leader completes and proposes it.
//!
//! A node that is not the leader forwards the request (already validated, document number
//! already hashed) to the leader's Raft port. The leader does the work that is not
//! deterministic before proposing (DESIGN.md 4): it draws the new identity id, reads its
//! clock and fingerprints the request. Retries are safe: the state machine answers a known
//! `request_id` with its first result.
//!
//! De-dup: an enrollment with a face or a fingerprint is first searched against every
//! enrolled one (1:N, DESIGN.md 4). The leader searches the enrollments that arrive together
//! as one batch, each also against the batch's earlier ones, and searches the next batch only
//! once this one is applied: every search sees every earlier enrollment. A read-index round
//! at the first batch of a leadership term brings in what earlier terms committed. The
//! searches run on blocking threads, split over the cores.
//!
//! Group commit: openraft 0.9 appends (and fsyncs) one log entry per proposal, one after the
//! other. The leader therefore proposes batches: one log entry is in flight at a time
//! (`MAX_IN_FLIGHT`), and the commands that arrive meanwhile wait and go out together as the
//! next entry. A lone write is proposed at once; under load one entry (one fsync, one
//! replication round) carries many writes. Each command of a batch is applied on its own, in
//! order, with its own answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use opentelemetry::trace::TraceContextExt as _;
use quorumid_proto::v1::RaftPayload;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::biometrics::{Biometrics, DedupIndex, Modality};
use crate::raft::codec::{decode, encode};
use crate::raft::network::{Peers, call_peer};
use crate::raft::state_machine::StateReader;
use crate::raft::{NodeId, Raft};
use crate::registry::{
    Command, IdentityId, Outcome, Proposal, Rejection, Request, Response, Template, TemplateFormat,
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
/// Enrollments searched together after one read-index round, at most.
const MAX_DEDUP_BATCH: usize = 256;

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
    proposer: Arc<Proposer>,
    /// Enrollments with biometric templates on their way to the de-dup search, each with
    /// the span of the call that made it (its trace goes on to the proposal).
    enrollments: mpsc::Sender<Queued<(Request, tracing::Span)>>,
}

/// Something waiting for its turn, and where its answer goes.
struct Queued<T> {
    item: T,
    reply: oneshot::Sender<Result<Response, WriteError>>,
}

/// The leader's side of a write: completes requests into commands and hands them to the
/// batcher.
struct Proposer {
    node_id: NodeId,
    raft: Raft,
    telemetry: Arc<NodeTelemetry>,
    /// Completed commands on their way into the next batch.
    queue: mpsc::Sender<Queued<Command>>,
}

impl Writer {
    /// The writer, and its two background tasks (the batcher and the de-dup batcher), for the
    /// node to stop with its others: the de-dup batcher holds the store open.
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        peers: Arc<Peers>,
        biometrics: Arc<Biometrics>,
        state: StateReader,
        telemetry: Arc<NodeTelemetry>,
    ) -> (Writer, [tokio::task::JoinHandle<()>; 2]) {
        let (queue, queued) = mpsc::channel(QUEUE);
        let batcher = tokio::spawn(propose_batches(raft.clone(), queued));
        let proposer = Arc::new(Proposer {
            node_id,
            raft: raft.clone(),
            telemetry,
            queue,
        });
        let (enrollments, waiting) = mpsc::channel(QUEUE);
        let dedup = tokio::spawn(dedup_batches(proposer.clone(), biometrics, state, waiting));
        let writer = Writer {
            node_id,
            raft,
            peers,
            proposer,
            enrollments,
        };
        (writer, [batcher, dedup])
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
    /// with a face or a fingerprint goes through the 1:N de-dup search first.
    pub async fn propose(&self, request: Request) -> Result<Response, WriteError> {
        let biometric = match &request.proposal {
            Proposal::Enroll { templates, .. } => !templates.is_empty(),
            _ => false,
        };
        if !biometric {
            return self.proposer.complete_and_propose(request).await;
        }
        let (reply, answer) = oneshot::channel();
        self.enrollments
            .send(Queued {
                item: (request, tracing::Span::current()),
                reply,
            })
            .await
            .map_err(|_| WriteError::ShuttingDown)?;
        answer.await.map_err(|_| WriteError::ShuttingDown)?
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

impl Proposer {
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
                .send(Queued {
                    item: command,
                    reply,
                })
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
}

/// The leader's batcher (see the module comment): runs until the writer is dropped.
async fn propose_batches(raft: Raft, mut queued: mpsc::Receiver<Queued<Command>>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        // Wait for a slot first: commands that arrive meanwhile join this batch.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = command_bytes(&first.item);
        let mut batch = vec![first];
        while bytes < MAX_BATCH_BYTES {
            let Ok(next) = queued.try_recv() else { break };
            bytes += command_bytes(&next.item);
            batch.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|q| (q.item, q.reply)).unzip();
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

/// The leader's de-dup batcher: runs until the writer is dropped. The enrollments that
/// waited while the previous batch was searched and committed are searched together, once
/// the index holds everything committed before them (`index_holds_every_enrollment`), each
/// against the index and against the batch's earlier enrollments; the ones found new are
/// proposed together, and the next batch waits until they are applied, so that it sees
/// them in the index.
async fn dedup_batches(
    proposer: Arc<Proposer>,
    biometrics: Arc<Biometrics>,
    state: StateReader,
    mut waiting: mpsc::Receiver<Queued<(Request, tracing::Span)>>,
) {
    // The term in which a read-index round last completed here (see
    // `index_holds_every_enrollment`).
    let mut confirmed_term = None;
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_DEDUP_BATCH {
            let Ok(next) = waiting.try_recv() else { break };
            batch.push(next);
        }
        let log_index = match index_holds_every_enrollment(&proposer, &mut confirmed_term).await {
            Ok(log_index) => log_index,
            Err(e) => {
                for queued in batch {
                    let _ = queued.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        // A retry of an applied enrollment would find its own templates, and a retry of one
        // earlier in this batch would find the earlier one's: `apply` answers both with the
        // first result instead.
        let mut seen = HashSet::new();
        let mut to_search = Vec::with_capacity(batch.len());
        let mut queued = Vec::with_capacity(batch.len());
        // The search joins the trace of the batch's first enrollment.
        let first_span = batch[0].item.1.clone();
        for Queued {
            item: (item, span),
            reply,
        } in batch
        {
            let applied = match state.request(&item.request_id) {
                Ok(seen) => seen.is_some_and(|s| s.fingerprint == item.fingerprint()),
                Err(e) => {
                    let _ = reply.send(Err(WriteError::Unavailable(e.to_string())));
                    continue;
                }
            };
            let retry = applied || !seen.insert(item.request_id.clone());
            to_search.push((!retry).then(|| enrolled_templates(&item)));
            queued.push((item, span, reply));
        }
        let search = {
            let biometrics = biometrics.clone();
            let telemetry = proposer.telemetry.clone();
            tokio::task::spawn_blocking(move || {
                let _span = tracing::info_span!(
                    parent: &first_span,
                    "dedup.search",
                    enrollments = to_search.len()
                )
                .entered();
                search_batch(&biometrics, &telemetry, to_search)
            })
        };
        let found = match search.await {
            Ok(found) => found,
            Err(e) => {
                let error = WriteError::Unavailable(format!("the de-dup search stopped: {e}"));
                for (_, _, reply) in queued {
                    let _ = reply.send(Err(error.clone()));
                }
                continue;
            }
        };
        let mut proposals = tokio::task::JoinSet::new();
        for ((request, span, reply), duplicate) in queued.into_iter().zip(found) {
            if let Some(modality) = duplicate {
                let rejection = match modality {
                    Modality::Face => Rejection::DuplicateFace,
                    Modality::Fingerprint => Rejection::DuplicateFingerprint,
                };
                let _ = reply.send(Ok(Response {
                    outcome: Outcome::Rejected(rejection),
                    log_index,
                }));
                continue;
            }
            let proposer = proposer.clone();
            proposals.spawn(
                async move {
                    let _ = reply.send(proposer.complete_and_propose(request).await);
                }
                .instrument(span),
            );
        }
        while proposals.join_next().await.is_some() {}
    }
}

/// A batch's 1:N de-dup searches, measured (blocking: a fingerprint search takes one MCC
/// comparison per enrolled finger). `None` in, `None` out: not searched. The batch is
/// searched in the index together (its faces in one pass over the gallery, its fingers
/// split over the cores); the checks against the batch's earlier enrollments follow, in
/// order. Each enrollment's de-dup time is the batch's search plus its own check.
fn search_batch(
    biometrics: &Biometrics,
    telemetry: &NodeTelemetry,
    batch: Vec<Option<Vec<Template>>>,
) -> Vec<Option<Modality>> {
    let started = Instant::now();
    let in_index = biometrics.duplicates(&batch);
    let took = started.elapsed();
    // The batch's earlier enrollments that were found new, indexed under made-up ids.
    let earlier = DedupIndex::default();
    batch
        .into_iter()
        .zip(in_index)
        .map(|(templates, found)| {
            let templates = templates?;
            let started = Instant::now();
            let found = found.or_else(|| biometrics.duplicate(&templates, &earlier));
            let metrics = &telemetry.metrics;
            metrics
                .dedup_duration
                .observe((took + started.elapsed()).as_secs_f64());
            for (check, modality) in [
                ("dedup_face", Modality::Face),
                ("dedup_fingerprint", Modality::Fingerprint),
            ] {
                if has_modality(&templates, modality) {
                    metrics.biometric(check, found == Some(modality));
                }
            }
            if found.is_none() {
                earlier.insert(&IdentityId::from_random(rand::random()), &templates);
            }
            found
        })
        .collect()
}

fn has_modality(templates: &[Template], modality: Modality) -> bool {
    let format = match modality {
        Modality::Face => TemplateFormat::FaceEmbeddingF32,
        Modality::Fingerprint => TemplateFormat::Iso19794_2_2005,
    };
    templates.iter().any(|t| t.format == format)
}

fn enrolled_templates(request: &Request) -> Vec<Template> {
    match &request.proposal {
        Proposal::Enroll { templates, .. } => templates.clone(),
        _ => Vec::new(),
    }
}

/// Waits until this node's de-dup index holds every committed enrollment, and returns the
/// applied log index the batch's refusals carry.
///
/// The first batch of a leadership term needs a read-index round: enrollments committed in
/// earlier terms may not be applied here yet. Within the term it is not needed again: every
/// enrollment of the term goes through this batcher, and each batch is applied before the
/// next one is searched. So the round runs once per term, not once per batch (it took a
/// heartbeat round trip from every batch). If the node was deposed without knowing it, its
/// proposals fail; a refusal it makes is still sound, since whatever it matched is committed.
async fn index_holds_every_enrollment(
    proposer: &Proposer,
    confirmed_term: &mut Option<u64>,
) -> Result<u64, WriteError> {
    let (term, leading, applied) = {
        let metrics = proposer.raft.metrics();
        let m = metrics.borrow();
        let leading =
            m.state == openraft::ServerState::Leader && m.current_leader == Some(proposer.node_id);
        (
            m.current_term,
            leading,
            m.last_applied.map_or(0, |l| l.index),
        )
    };
    if leading && *confirmed_term == Some(term) {
        return Ok(applied);
    }
    // The term is read before the round: if leadership moved meanwhile, the next batch sees
    // a different term and runs a round of its own.
    let read = linearizable(&proposer.raft).await?;
    *confirmed_term = Some(term);
    Ok(read.map_or(0, |l| l.index))
}

/// One read-index round: once it returns, everything committed before it is applied here.
async fn linearizable(raft: &Raft) -> Result<Option<crate::raft::LogId>, WriteError> {
    tokio::time::timeout(WRITE_TIMEOUT, raft.ensure_linearizable())
        .await
        .map_err(|_| WriteError::NoLeader)?
        .map_err(|e| match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)) => to.into(),
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => WriteError::NoLeader,
            RaftError::Fatal(_) => WriteError::ShuttingDown,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::biometrics::BiometricsConfig;

    fn finger(name: &str) -> Template {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/fvc2002/DB4_B")
            .join(name);
        Template {
            format: TemplateFormat::Iso19794_2_2005,
            model_id: "secugen".into(),
            data: std::fs::read(path).unwrap(),
        }
    }

    fn face(values: &[f32]) -> Template {
        Template {
            format: TemplateFormat::FaceEmbeddingF32,
            model_id: "m".into(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn a_batch_is_searched_against_its_own_earlier_enrollments() {
        let index = Arc::new(DedupIndex::default());
        index.insert(
            &IdentityId::from_random(rand::random()),
            &[finger("101_1.iso")],
        );
        index.insert(
            &IdentityId::from_random(rand::random()),
            &[face(&[0.0, 1.0, 0.0])],
        );
        let biometrics = Biometrics::new(BiometricsConfig::default(), index).unwrap();
        let telemetry = NodeTelemetry::new(1, "ON");
        let found = search_batch(
            &biometrics,
            &telemetry,
            vec![
                Some(vec![finger("103_1.iso")]),
                Some(vec![finger("101_2.iso")]),
                Some(vec![finger("103_2.iso")]),
                None,
                Some(vec![face(&[1.0, 0.0, 0.0]), finger("102_1.iso")]),
                Some(vec![face(&[0.99, 0.1, 0.0])]),
                Some(vec![face(&[0.0, 0.0, 1.0])]),
                Some(vec![face(&[0.05, 0.99, 0.0]), finger("104_1.iso")]),
            ],
        );
        assert_eq!(
            found,
            [
                None,
                Some(Modality::Fingerprint), // the index's 101_1
                Some(Modality::Fingerprint), // the batch's 103_1
                None,
                None,
                Some(Modality::Face), // the batch's first face
                None,
                Some(Modality::Face), // the index's face, in the batch's pass over the faces
            ]
        );
    }
}
