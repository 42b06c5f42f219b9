//! A running province node: storage, Raft, the read gate, and the two gRPC servers (public
//! API port, peer Raft port), started together and stopped together; and, if configured,
//! the `/metrics` listener.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::InterceptorLayer;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tower::util::MapResponseLayer;
use tracing::Instrument as _;

use crate::api::{self, Context};
use crate::biometrics::{Biometrics, DedupIndex};
use crate::config::NodeConfig;
use crate::handover::{Handover, HandoverError};
use crate::join::{self, JoinProgress, StartMode};
use crate::leader_watch::{self, LeaderContact};
use crate::raft::log_store::LogStore;
use crate::raft::network::{Faults, MAX_RAFT_MESSAGE, Network, Peers};
use crate::raft::service::RaftService;
use crate::raft::state_machine::{StateMachine, StateReader};
use crate::raft::store::Store;
use crate::raft::{NodeId, Raft};
use crate::reads::Freshness;
use crate::security::limits::RateLimits;
use crate::security::{Authenticate, Tls};
use crate::telemetry::propagation::{Port, server_span};
use crate::telemetry::{NodeTelemetry, metrics};
use crate::writes::Writer;

/// How long a stopping node lets calls in flight finish.
const SERVER_DRAIN: Duration = Duration::from_secs(2);
/// `tasks[..SERVERS]` are the two gRPC servers.
const SERVERS: usize = 2;

pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub ctx: Arc<Context>,
    /// The fault switch of this node's outgoing peer calls (tests only).
    pub faults: Faults,
    /// How joining the cluster goes (stays at its default unless the node started to join).
    pub joining: watch::Receiver<JoinProgress>,
    handover: Handover,
    pub telemetry: Arc<NodeTelemetry>,
    /// Where `/metrics` is served (`telemetry.metrics_listen`, with the port bound).
    pub metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Binds the configured ports and starts the node.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        let api = TcpListener::bind(config.api_listen)
            .await
            .with_context(|| format!("binding the API port {}", config.api_listen))?;
        let raft = TcpListener::bind(config.raft_listen)
            .await
            .with_context(|| format!("binding the Raft port {}", config.raft_listen))?;
        Node::start_on(config, api, raft).await
    }

    /// Starts the node on listeners bound by the caller (tests bind port 0).
    pub async fn start_on(
        config: NodeConfig,
        api_listener: TcpListener,
        raft_listener: TcpListener,
    ) -> anyhow::Result<Node> {
        // Everything the node starts runs in its span, which labels its log lines.
        let telemetry = NodeTelemetry::new(config.node_id, &config.province);
        let span = telemetry.node_span();
        Node::start_in_span(config, api_listener, raft_listener, telemetry)
            .instrument(span)
            .await
    }

    async fn start_in_span(
        config: NodeConfig,
        api_listener: TcpListener,
        raft_listener: TcpListener,
        telemetry: Arc<NodeTelemetry>,
    ) -> anyhow::Result<Node> {
        let keys = config.cluster_keys()?;
        let tls = if config.tls.enabled() {
            tracing::info!("mutual TLS on both ports");
            Some(Tls::load(&config.tls, config.node_id)?)
        } else {
            tracing::warn!(
                api = %config.api_listen,
                raft = %config.raft_listen,
                "PLAINTEXT: no [tls] configured; callers are not authenticated and may do \
                 everything. For development and isolated test networks only."
            );
            None
        };
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let store = Store::open(&config.data_dir.join("db"), config.sealer()?)
            .with_context(|| format!("opening RocksDB in {}", config.data_dir.display()))?;
        let log_store = LogStore::new(store.clone());
        let index = Arc::new(DedupIndex::default());
        // Before Raft: a node whose face models are missing stops here, saying which file.
        let biometrics = Arc::new(
            Biometrics::new(config.biometrics.clone(), index.clone())
                .context("loading the face models (biometrics.face_models)")?,
        );
        let state_machine = StateMachine::open(
            store.clone(),
            &config.data_dir.join("snapshots"),
            Some(index.clone()),
        )?
        .with_telemetry(telemetry.clone());
        let faults = Faults::default();
        let peers = Peers::new(faults.clone(), tls.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(config.raft_config()?),
            Network::new(peers.clone(), telemetry.clone()),
            log_store,
            state_machine,
        )
        .await
        .context("starting raft")?;

        let initialised = raft.is_initialized().await?;
        let mode = join::start_mode(&config, initialised, || {
            join::existing_cluster(&config, tls.as_deref())
        })
        .await;
        tracing::info!(mode = ?mode, "starting");
        if mode == StartMode::Initialise {
            let members = config.initial_membership();
            let count = members.len();
            raft.initialize(members)
                .await
                .context("initialising the cluster")?;
            tracing::info!(members = count, "initialised a new cluster");
        }

        let (writer, writer_tasks) = Writer::new(
            config.node_id,
            raft.clone(),
            peers.clone(),
            biometrics.clone(),
            StateReader::new(store.clone()),
            telemetry.clone(),
        );
        let writer = Arc::new(writer);
        let freshness = Freshness::start(
            config.node_id,
            raft.clone(),
            peers.clone(),
            config.reads.settings(),
        );
        let handover = Handover {
            raft: raft.clone(),
            peers: peers.clone(),
            election_timeout_max: Duration::from_millis(config.raft.election_timeout_max_ms),
        };
        let ctx = Arc::new(Context {
            node_id: config.node_id,
            province: config.province.clone(),
            raft: raft.clone(),
            writer: writer.clone(),
            freshness,
            state: StateReader::new(store.clone()),
            keys,
            biometrics,
            handover: handover.clone(),
            telemetry: telemetry.clone(),
        });

        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (routes, health) = api::routes(ctx.clone())?;
        let (node_id, province) = (config.node_id, config.province.clone());
        let limits = RateLimits::new(&config.limits).map(Arc::new);
        let authenticated = |nodes_only: bool| {
            InterceptorLayer::new(Authenticate {
                tls: tls.is_some(),
                nodes_only,
                limits: if nodes_only { None } else { limits.clone() },
            })
        };
        let api_router = Server::builder()
            .trace_fn(server_span(Port::Api, node_id, province.clone()))
            .layer(MapResponseLayer::new(metrics::count_rejections(
                telemetry.clone(),
            )))
            .layer(authenticated(false))
            .add_routes(routes.routes());
        let contact = Arc::new(LeaderContact::default());
        let raft_router = Server::builder()
            .trace_fn(server_span(Port::Raft, node_id, province))
            .layer(authenticated(true))
            .add_service(
                quorumid_proto::v1::raft_server::RaftServer::new(RaftService::new(
                    raft.clone(),
                    writer,
                    telemetry.clone(),
                    contact.clone(),
                    stopped.clone(),
                ))
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE),
            );
        // Plaintext connections get TCP_NODELAY from `TcpIncoming` (the builder's own setting
        // is ignored for a listener we bound ourselves), TLS ones from `Tls::incoming`. Without
        // it, small answers wait for the peer's delayed ACK: 40 ms stalls at the tail.
        type Serving = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
        let (api_server, raft_server): (Serving, Serving) = match &tls {
            None => (
                Box::pin(api_router.serve_with_incoming_shutdown(
                    TcpIncoming::from(api_listener).with_nodelay(Some(true)),
                    until_stopped(stopped.clone()),
                )),
                Box::pin(raft_router.serve_with_incoming_shutdown(
                    TcpIncoming::from(raft_listener).with_nodelay(Some(true)),
                    until_stopped(stopped.clone()),
                )),
            ),
            Some(tls) => (
                Box::pin(api_router.serve_with_incoming_shutdown(
                    tls.incoming(api_listener, until_stopped(stopped.clone())),
                    until_stopped(stopped.clone()),
                )),
                Box::pin(raft_router.serve_with_incoming_shutdown(
                    tls.incoming(raft_listener, until_stopped(stopped.clone())),
                    until_stopped(stopped.clone()),
                )),
            ),
        };
        let (join_progress, joining) = watch::channel(JoinProgress::default());
        let (metrics_addr, metrics_server) = match config.telemetry.metrics_listen {
            None => (None, None),
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics port {addr}"))?;
                let sources = metrics::Sources {
                    telemetry: telemetry.clone(),
                    raft: raft.clone(),
                    freshness: ctx.freshness.clone(),
                    store,
                    biometrics: ctx.biometrics.clone(),
                };
                (
                    Some(listener.local_addr()?),
                    Some(metrics::serve(listener, sources, until_stopped(stopped))),
                )
            }
        };
        let mut tasks = vec![
            tokio::spawn(async move {
                if let Err(e) = api_server.await {
                    tracing::error!(error = %e, "API server stopped");
                }
            }),
            tokio::spawn(async move {
                if let Err(e) = raft_server.await {
                    tracing::error!(error = %e, "Raft server stopped");
                }
            }),
            tokio::spawn(api::report_health(ctx.clone(), health)),
            tokio::spawn(metrics::watch_leader(raft.clone(), telemetry.clone())),
            tokio::spawn(leader_watch::run(
                raft.clone(),
                peers.clone(),
                contact,
                leader_watch::Timing::from(&config.raft),
            )),
        ];
        tasks.extend(writer_tasks);
        if let Some(tls) = &tls {
            tasks.push(tokio::spawn(tls.clone().watch_rotation()));
        }
        if mode == StartMode::Join {
            // After the servers: the leader replicates to this node as soon as it is added.
            tasks.push(tokio::spawn(join::join(
                raft.clone(),
                config.node_id,
                config.info(),
                config.membership.join.clone(),
                tls.clone(),
                join_progress,
            )));
        }
        if let Some(server) = metrics_server {
            tasks.push(tokio::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            }));
        }
        tracing::info!(
            node_id = config.node_id,
            province = %config.province,
            api = %config.api_addr,
            raft = %config.raft_addr,
            "node started"
        );
        Ok(Node {
            id: config.node_id,
            raft,
            ctx,
            faults,
            joining,
            handover,
            telemetry,
            metrics_addr,
            stop,
            tasks,
        })
    }

    /// If this node leads, hands leadership to the most caught-up voter (before a graceful
    /// stop), and returns the new leader. A node that does not lead has nothing to hand over.
    pub async fn hand_over(&self) -> Result<Option<NodeId>, HandoverError> {
        match self.handover.transfer(None).await {
            Ok(leader) => Ok(Some(leader)),
            Err(HandoverError::NotLeader { .. } | HandoverError::NoOtherVoter) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stops serving and shuts Raft down (its storage is durable at every step anyway).
    ///
    /// The servers stop accepting, tell their clients to go away (HTTP/2 GOAWAY) and get a
    /// moment to finish calls in flight; then every connection is closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks;
        let drained = tokio::time::timeout(SERVER_DRAIN, async {
            for server in tasks.iter_mut().take(SERVERS) {
                let _ = server.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("calls still in flight after {SERVER_DRAIN:?}; closing anyway");
        }
        tasks.retain(|task| !task.is_finished());
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
