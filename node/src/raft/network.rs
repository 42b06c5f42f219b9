//! Outgoing node-to-node calls: openraft's `RaftNetwork` over gRPC, and the peer connections
//! that write forwarding and read-index rounds share with it.
//!
//! [`Faults`] is a switch in the outgoing path: tests cut the links between nodes with it
//! (both sides' switches cut make a symmetric partition). Nothing in production sets it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::EntryPayload;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quorumid_proto::v1::RaftPayload;
use quorumid_proto::v1::raft_client::RaftClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument as _;

use super::codec::{decode, encode};
use super::{NodeId, NodeInfo, TypeConfig};
use crate::security::Tls;
use crate::telemetry::NodeTelemetry;
use crate::telemetry::propagation::{self, InjectContext};
use crate::telemetry::writes::{ENTRY_TRACES, encode_entry_traces};

/// The largest message a node sends or accepts on the Raft port: a batch of log entries with
/// their templates, or one snapshot chunk.
pub const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;

/// Links cut for fault injection, by peer node id.
#[derive(Clone, Default)]
pub struct Faults {
    cut: Arc<RwLock<HashSet<NodeId>>>,
}

impl Faults {
    pub fn cut(&self, peer: NodeId) {
        self.cut.write().expect("faults lock poisoned").insert(peer);
    }

    pub fn heal(&self, peer: NodeId) {
        self.cut
            .write()
            .expect("faults lock poisoned")
            .remove(&peer);
    }

    pub fn heal_all(&self) {
        self.cut.write().expect("faults lock poisoned").clear();
    }

    pub fn is_cut(&self, peer: NodeId) -> bool {
        self.cut
            .read()
            .expect("faults lock poisoned")
            .contains(&peer)
    }
}

/// Why a call to a peer did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("link to node {0} is cut (fault injection)")]
    Cut(NodeId),
    #[error("peer address {addr:?} is invalid: {reason}")]
    Address { addr: String, reason: String },
    #[error("node {peer} did not answer: {status}")]
    Status { peer: NodeId, status: tonic::Status },
    #[error("node {peer} did not answer within {timeout:?}")]
    Timeout { peer: NodeId, timeout: Duration },
    #[error("node {peer} sent an answer that does not decode: {source}")]
    Decode {
        peer: NodeId,
        source: super::codec::DecodeError,
    },
}

/// A Raft-service client whose calls carry the caller's trace context.
pub type PeerClient = RaftClient<InterceptedService<Channel, InjectContext>>;

/// Connections to the other nodes, one lazily connected channel per address (made again
/// when the node's TLS certificate is reloaded).
pub struct Peers {
    channels: Mutex<HashMap<String, (u64, Channel)>>,
    pub faults: Faults,
    tls: Option<Arc<Tls>>,
}

impl Peers {
    pub fn new(faults: Faults, tls: Option<Arc<Tls>>) -> Arc<Peers> {
        Arc::new(Peers {
            channels: Mutex::new(HashMap::new()),
            faults,
            tls,
        })
    }

    /// A Raft-service client for `peer` at `addr`, reusing the connection.
    pub fn client(&self, peer: NodeId, addr: &str) -> Result<PeerClient, PeerError> {
        if self.faults.is_cut(peer) {
            return Err(PeerError::Cut(peer));
        }
        let generation = self.tls.as_ref().map_or(0, |tls| tls.generation());
        let mut channels = self.channels.lock().expect("peers lock poisoned");
        let channel = match channels.get(addr) {
            Some((made, channel)) if *made == generation => channel.clone(),
            _ => {
                let bad_address = |e: tonic::transport::Error| PeerError::Address {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                };
                let mut endpoint = Endpoint::from_shared(addr.to_string())
                    .map_err(bad_address)?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10));
                if let Some(tls) = &self.tls {
                    endpoint = tls.client(endpoint).map_err(bad_address)?;
                }
                let channel = endpoint.connect_lazy();
                channels.insert(addr.to_string(), (generation, channel.clone()));
                channel
            }
        };
        Ok(RaftClient::with_interceptor(channel, InjectContext)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE))
    }
}

/// Runs one peer call (`rpc` names it in traces) with a deadline, mapping every failure to a
/// [`PeerError`].
pub async fn call_peer<T, F>(
    rpc: &'static str,
    peer: NodeId,
    timeout: Duration,
    call: F,
) -> Result<T, PeerError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let answer = match propagation::client_span(rpc, peer) {
        Some(span) => tokio::time::timeout(timeout, call.instrument(span)).await,
        None => tokio::time::timeout(timeout, call).await,
    };
    match answer {
        Err(_) => Err(PeerError::Timeout { peer, timeout }),
        Ok(Err(status)) => Err(PeerError::Status { peer, status }),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// openraft's factory of connections to peers.
#[derive(Clone)]
pub struct Network {
    peers: Arc<Peers>,
    telemetry: Arc<NodeTelemetry>,
}

impl Network {
    pub fn new(peers: Arc<Peers>, telemetry: Arc<NodeTelemetry>) -> Network {
        Network { peers, telemetry }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        Connection {
            peers: self.peers.clone(),
            telemetry: self.telemetry.clone(),
            target,
            addr: node.raft_addr.clone(),
        }
    }
}

/// openraft's connection to one peer.
pub struct Connection {
    peers: Arc<Peers>,
    telemetry: Arc<NodeTelemetry>,
    target: NodeId,
    addr: String,
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: RPCOption,
        entry_traces: Option<String>,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |e: PeerError| RPCError::Unreachable(Unreachable::new(&e));
        let mut client = self
            .peers
            .client(self.target, &self.addr)
            .map_err(unreachable)?;
        let mut payload = tonic::Request::new(RaftPayload {
            payload: encode(request),
        });
        if let Some(value) = entry_traces.and_then(|v| v.parse().ok()) {
            payload.metadata_mut().insert(ENTRY_TRACES, value);
        }
        let ttl = option.hard_ttl();
        let answer = match rpc {
            Rpc::AppendEntries => {
                call_peer(
                    "AppendEntries",
                    self.target,
                    ttl,
                    client.append_entries(payload),
                )
                .await
            }
            Rpc::Vote => call_peer("Vote", self.target, ttl, client.vote(payload)).await,
            Rpc::InstallSnapshot => {
                call_peer(
                    "InstallSnapshot",
                    self.target,
                    ttl,
                    client.install_snapshot(payload),
                )
                .await
            }
        };
        let answer = answer.map_err(|e| match &e {
            PeerError::Status { status, .. } if status.code() == tonic::Code::Unavailable => {
                unreachable(e)
            }
            _ => RPCError::Network(NetworkError::new(&e)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = decode("raft answer", &answer.payload)
            .map_err(|source| {
                RPCError::Network(NetworkError::new(&PeerError::Decode {
                    peer: self.target,
                    source,
                }))
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        // Entries of traced writes: the call joins the first one's trace and tells the peer
        // under which context each entry was proposed.
        let traced: Vec<_> = rpc
            .entries
            .iter()
            .filter_map(|entry| match &entry.payload {
                // A batch's entry travels under its first traced command's context.
                EntryPayload::Normal(commands) => commands
                    .iter()
                    .find_map(|c| self.telemetry.writes.get(&c.request.request_id))
                    .map(|cx| (entry.log_id.index, cx)),
                _ => None,
            })
            .collect();
        let Some((_, first)) = traced.first() else {
            return self.call(Rpc::AppendEntries, &rpc, option, None).await;
        };
        let span = tracing::info_span!(
            "raft.append_entries",
            node_id = self.telemetry.node_id,
            peer_node_id = self.target,
            entries = rpc.entries.len()
        );
        propagation::set_parent(&span, first);
        let header = encode_entry_traces(&traced);
        self.call(Rpc::AppendEntries, &rpc, option, Some(header))
            .instrument(span)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, option, None).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option, None).await
    }
}
