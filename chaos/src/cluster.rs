//! A quorumid cluster in containers (testcontainers), one private network per run.
//!
//! Each node is a container named `<run>-n<id>` on the network `<run>`; peers reach each other
//! by container name (`raft_addr`), the harness reaches each node's API on a host port mapped
//! to it (`api_addr = http://127.0.0.1:PORT`, so the leader hints nodes give the client library
//! work from the host too). The first `voters` nodes start as the voters (node 1 bootstraps);
//! the rest join as learners, one further province each. A node's data lives in its
//! container's volume, so kill -9 and start again keeps it.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;
use quorumid_client::{Client, NewLearner, pb};
use testcontainers::core::{IntoContainerPort as _, WaitFor};
use testcontainers::runners::AsyncRunner as _;
use testcontainers::{ContainerAsync, GenericImage, ImageExt as _};

use crate::docker::{self, ContainerFacts, LABEL};

const PROVINCES: [&str; 9] = ["ON", "QC", "BC", "AB", "MB", "SK", "NS", "NB", "NL"];
const API_PORT: u16 = 7100;
const RAFT_PORT: u16 = 7200;

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Unique per run: names the network and prefixes the containers.
    pub run: String,
    /// `name:tag` of the node image.
    pub image: String,
    pub voters: u64,
    pub learners: u64,
}

pub struct Node {
    pub id: u64,
    pub province: String,
    pub container_name: String,
    pub api_addr: String,
    container: ContainerAsync<GenericImage>,
    /// A client for this node alone (status, final reads).
    pub client: Client,
}

pub struct Cluster {
    pub docker: Docker,
    pub spec: ClusterSpec,
    pub nodes: Vec<Node>,
    /// A client over every node (membership changes).
    pub admin: Client,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn config(
    id: u64,
    province: &str,
    api_addrs: &[String],
    spec: &ClusterSpec,
    keys: &(String, String, String),
) -> String {
    let api_addr = &api_addrs[(id - 1) as usize];
    let raft_addr = |n: u64| format!("http://{}-n{n}:{RAFT_PORT}", spec.run);
    let mut text = format!(
        "node_id = {id}\nprovince = \"{province}\"\ndata_dir = \"/var/lib/quorumid\"\n\
         api_listen = \"0.0.0.0:{API_PORT}\"\nraft_listen = \"0.0.0.0:{RAFT_PORT}\"\n\
         api_addr = \"{api_addr}\"\nraft_addr = \"{}\"\nbootstrap = {}\n",
        raft_addr(id),
        id == 1
    );
    if id == 1 {
        for v in 1..=spec.voters {
            // Only the bootstrapping node reads the initial members.
            text.push_str(&format!(
                "\n[[initial_members]]\nnode_id = {v}\nprovince = \"{}\"\napi_addr = \"{}\"\nraft_addr = \"{}\"\n",
                PROVINCES[(v - 1) as usize],
                api_addrs[(v - 1) as usize],
                raft_addr(v)
            ));
        }
    }
    text.push_str(&format!(
        "\n[keys]\ndocument_key = \"{}\"\npseudonym_key = \"{}\"\nstorage_key = \"{}\"\n\
         \n[tls]\ninsecure_plaintext = true\n\
         \n[raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\n\
         snapshot_after_entries = 300\nkeep_entries_after_snapshot = 50\n",
        keys.0, keys.1, keys.2
    ));
    text
}

async fn node_client(addr: &str) -> anyhow::Result<Client> {
    Client::builder()
        .endpoint(addr)
        .deadline(Duration::from_secs(2))
        .attempt_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .with_context(|| format!("client for {addr}"))
}

impl Cluster {
    /// Creates the network, starts every node and adds the learners; answers once a leader
    /// is known and every learner has caught up.
    pub async fn start(docker: Docker, spec: ClusterSpec) -> anyhow::Result<Cluster> {
        docker::create_network(&docker, &spec.run, &spec.run).await?;
        let keys = (
            hex::encode(rand::random::<[u8; 32]>()),
            hex::encode(rand::random::<[u8; 32]>()),
            hex::encode(rand::random::<[u8; 32]>()),
        );
        let total = spec.voters + spec.learners;
        let ports: Vec<u16> = (0..total).map(|_| free_port()).collect::<Result<_, _>>()?;
        let api_addrs: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let (name, tag) = spec
            .image
            .split_once(':')
            .with_context(|| format!("image {} must be name:tag", spec.image))?;
        let starts = (1..=total).map(|id| {
            let province = PROVINCES[(id - 1) as usize % PROVINCES.len()].to_string();
            let text = config(id, &province, &api_addrs, &spec, &keys);
            let container_name = format!("{}-n{id}", spec.run);
            let request = GenericImage::new(name, tag)
                .with_wait_for(WaitFor::message_on_stderr("node started"))
                .with_container_name(&container_name)
                .with_network(&spec.run)
                .with_label(LABEL, &spec.run)
                .with_mapped_port(ports[(id - 1) as usize], API_PORT.tcp())
                .with_copy_to("/etc/quorumid/node.toml", text.into_bytes())
                .with_startup_timeout(Duration::from_secs(60));
            let addr = api_addrs[(id - 1) as usize].clone();
            async move {
                let container = request
                    .start()
                    .await
                    .with_context(|| format!("starting container {container_name}"))?;
                let client = node_client(&addr).await?;
                anyhow::Ok(Node {
                    id,
                    province,
                    container_name,
                    api_addr: addr,
                    container,
                    client,
                })
            }
        });
        let nodes = futures::future::try_join_all(starts).await?;
        let admin = Client::builder()
            .endpoints(nodes.iter().map(|n| n.api_addr.clone()))
            .deadline(Duration::from_secs(20))
            .attempt_timeout(Duration::from_secs(10))
            .connect()
            .await
            .context("admin client")?;
        let cluster = Cluster {
            docker,
            spec,
            nodes,
            admin,
        };
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .context("the new cluster elected no leader")?;
        for n in cluster.nodes.iter().skip(cluster.spec.voters as usize) {
            cluster
                .admin
                .add_learner(&NewLearner {
                    node_id: n.id,
                    province: n.province.clone(),
                    api_addr: n.api_addr.clone(),
                    raft_addr: format!("http://{}:{RAFT_PORT}", n.container_name),
                })
                .await
                .with_context(|| format!("adding node {} as a learner", n.id))?;
        }
        Ok(cluster)
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub async fn facts(&self, id: u64) -> anyhow::Result<ContainerFacts> {
        docker::inspect(&self.docker, self.node(id).container.id(), &self.spec.run).await
    }

    /// The node's own status, if it answers.
    pub async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        let node = self.node(id);
        node.client.status_at(&node.api_addr).await.ok()
    }

    /// The node that says it leads, at the highest term any node reports.
    pub async fn leader(&self) -> Option<u64> {
        let statuses =
            futures::future::join_all(self.ids().into_iter().map(|id| self.status(id))).await;
        statuses
            .into_iter()
            .flatten()
            .filter(|s| s.role == pb::NodeRole::Leader as i32)
            .max_by_key(|s| s.term)
            .map(|s| s.node_id)
    }

    pub async fn wait_for_leader(&self, within: Duration) -> anyhow::Result<u64> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(id) = self.leader().await {
                return Ok(id);
            }
            if tokio::time::Instant::now() > until {
                bail!("no node reported being leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// kill -9 of the node's process (the container stops with it).
    pub async fn kill(&self, id: u64) -> anyhow::Result<()> {
        docker::kill9(&self.docker, self.node(id).container.id()).await
    }

    /// SIGTERM, then SIGKILL after 10 s: a graceful stop.
    pub async fn stop(&self, id: u64) -> anyhow::Result<()> {
        self.node(id)
            .container
            .stop_with_timeout(Some(10))
            .await
            .with_context(|| format!("stopping node {id}"))
    }

    /// Starts the node's stopped container again (same volume) and waits until it answers.
    pub async fn restart(&self, id: u64) -> anyhow::Result<()> {
        self.node(id)
            .container
            .start()
            .await
            .with_context(|| format!("starting node {id} again"))?;
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.status(id).await.is_none() {
            if tokio::time::Instant::now() > until {
                bail!("node {id} did not answer within 30 s of its restart");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    pub async fn pause(&self, id: u64) -> anyhow::Result<()> {
        self.node(id)
            .container
            .pause()
            .await
            .with_context(|| format!("pausing node {id}"))
    }

    pub async fn unpause(&self, id: u64) -> anyhow::Result<()> {
        self.node(id)
            .container
            .unpause()
            .await
            .with_context(|| format!("unpausing node {id}"))
    }

    /// Every node's container output, for the run's directory.
    pub async fn logs(&self) -> Vec<(u64, String)> {
        let mut all = Vec::new();
        for n in &self.nodes {
            let text = docker::logs(&self.docker, n.container.id())
                .await
                .unwrap_or_else(|e| format!("(logs not read: {e:#})"));
            all.push((n.id, text));
        }
        all
    }

    /// Removes the containers (with their volumes) and the network.
    pub async fn remove(self) -> anyhow::Result<()> {
        let Cluster {
            docker,
            spec,
            nodes,
            admin,
        } = self;
        drop(admin);
        for n in nodes {
            let name = n.container_name.clone();
            n.container
                .rm()
                .await
                .with_context(|| format!("removing container {name}"))?;
        }
        docker::remove_network(&docker, &spec.run).await
    }
}
