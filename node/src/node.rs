//! A running province node: storage, Raft, the read gate, and the two gRPC servers (public
//! API port, peer Raft port), started together and stopped together.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::api::{self, Context};
use crate::biometrics::{Biometrics, FaceIndex};
use crate::config::NodeConfig;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Faults, MAX_RAFT_MESSAGE, Network, Peers};
use crate::raft::service::RaftService;
use crate::raft::state_machine::{StateMachine, StateReader};
use crate::raft::store::Store;
use crate::raft::{NodeId, Raft};
use crate::reads::Freshness;
use crate::writes::Writer;

pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub ctx: Arc<Context>,
    /// The fault switch of this node's outgoing peer calls (tests only).
    pub faults: Faults,
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
        let keys = config.cluster_keys()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let store = Store::open(&config.data_dir.join("db"))
            .with_context(|| format!("opening RocksDB in {}", config.data_dir.display()))?;
        let log_store = LogStore::new(store.clone());
        let faces = Arc::new(FaceIndex::default());
        let state_machine = StateMachine::open(
            store.clone(),
            &config.data_dir.join("snapshots"),
            Some(faces.clone()),
        )?;
        let faults = Faults::default();
        let peers = Peers::new(faults.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(config.raft_config()?),
            Network::new(peers.clone()),
            log_store,
            state_machine,
        )
        .await
        .context("starting raft")?;

        if config.bootstrap && !raft.is_initialized().await? {
            let members: BTreeMap<_, _> = config
                .initial_members
                .iter()
                .map(|m| (m.node_id, m.info()))
                .collect();
            raft.initialize(members)
                .await
                .context("initialising the cluster")?;
            tracing::info!(
                members = config.initial_members.len(),
                "initialised a new cluster"
            );
        }

        let biometrics = Arc::new(Biometrics::new(config.biometrics.clone(), faces));
        let writer = Arc::new(Writer::new(
            config.node_id,
            raft.clone(),
            peers.clone(),
            biometrics.clone(),
            StateReader::new(store.clone()),
        ));
        let freshness = Freshness::start(
            config.node_id,
            raft.clone(),
            peers.clone(),
            config.reads.settings(),
        );
        let ctx = Arc::new(Context {
            node_id: config.node_id,
            province: config.province.clone(),
            raft: raft.clone(),
            writer: writer.clone(),
            freshness,
            state: StateReader::new(store),
            keys,
            biometrics,
        });

        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (routes, health) = api::routes(ctx.clone())?;
        let api_server = Server::builder()
            .tcp_nodelay(true)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(api_listener),
                until_stopped(stopped.clone()),
            );
        let raft_server = Server::builder()
            .tcp_nodelay(true)
            .add_service(
                quorumid_proto::v1::raft_server::RaftServer::new(RaftService::new(
                    raft.clone(),
                    writer,
                ))
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE),
            )
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(raft_listener),
                until_stopped(stopped),
            );
        let tasks = vec![
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
        ];
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
            stop,
            tasks,
        })
    }

    /// Stops serving and shuts Raft down (its storage is durable at every step anyway).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
