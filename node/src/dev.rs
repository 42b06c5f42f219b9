//! `quorumid-node dev`: a local multi-province cluster on loopback, for trying quorumid out.
//!
//! Each node is a child process (`quorumid-node serve --config ...`) with its own data
//! directory, so a node can be killed (`kill -9 PID`) and restarted like a real one. The
//! first three nodes are voters; any further node joins as a learner. Data and generated
//! keys stay in the directory between runs; `--fresh` starts over. Ctrl-C stops every node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use quorumid_biometrics::extract::{SFACE_FILE, YUNET_FILE};
use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use crate::biometrics::{BiometricsConfig, default_models_dir};
use crate::config::{KeysConfig, MemberConfig, NodeConfig, RaftSettings, ReadConfig};
use crate::telemetry::TelemetryConfig;

const PROVINCES: [&str; 9] = ["ON", "QC", "BC", "AB", "MB", "SK", "NS", "NB", "NL"];
const VOTERS: usize = 3;

#[derive(Clone, Debug, clap::Args)]
pub struct DevOptions {
    /// How many nodes (one province each). The first three vote; the others are learners.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Where the nodes keep their data, configuration and logs.
    #[arg(long, default_value = ".quorumid-dev")]
    pub dir: PathBuf,
    /// Node N listens on BASE+N (API) and BASE+100+N (Raft), on 127.0.0.1.
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Delete the directory's previous cluster first.
    #[arg(long)]
    pub fresh: bool,
}

struct DevNode {
    config: NodeConfig,
    config_path: PathBuf,
    child: Child,
}

fn member(options: &DevOptions, id: u64) -> MemberConfig {
    let api = options.base_port + id as u16;
    let raft = options.base_port + 100 + id as u16;
    MemberConfig {
        node_id: id,
        province: PROVINCES[(id - 1) as usize].to_string(),
        api_addr: format!("http://127.0.0.1:{api}"),
        raft_addr: format!("http://127.0.0.1:{raft}"),
    }
}

/// The cluster keys of this dev directory: generated once, kept in `keys.toml`.
pub fn dev_keys(dir: &Path) -> anyhow::Result<KeysConfig> {
    let path = dir.join("keys.toml");
    let fresh = || Some(hex::encode(rand::random::<[u8; 32]>()));
    let mut keys = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        Err(_) => KeysConfig {
            document_key: fresh(),
            pseudonym_key: fresh(),
            ..KeysConfig::default()
        },
    };
    // Directories from before encryption at rest get a storage key now.
    if keys.storage_key.is_none() {
        keys.storage_key = fresh();
    }
    std::fs::write(&path, toml::to_string(&keys)?)?;
    Ok(keys)
}

/// The configuration of every node of a dev cluster (also used by `quorumid-bench`).
pub fn configs(options: &DevOptions, keys: &KeysConfig) -> Vec<NodeConfig> {
    let voters: Vec<MemberConfig> = (1..=options.nodes.min(VOTERS as u64))
        .map(|id| member(options, id))
        .collect();
    (1..=options.nodes)
        .map(|id| {
            let m = member(options, id);
            NodeConfig {
                node_id: id,
                province: m.province.clone(),
                data_dir: options.dir.join(format!("node-{id}")),
                api_listen: m
                    .api_addr
                    .trim_start_matches("http://")
                    .parse()
                    .expect("loopback"),
                raft_listen: m
                    .raft_addr
                    .trim_start_matches("http://")
                    .parse()
                    .expect("loopback"),
                api_addr: m.api_addr,
                raft_addr: m.raft_addr,
                bootstrap: id == 1,
                initial_members: if id == 1 { voters.clone() } else { Vec::new() },
                membership: Default::default(),
                keys: keys.clone(),
                raft: RaftSettings::default(),
                reads: ReadConfig::default(),
                // Face images work when the models are where `.ci/prereqs` fetched them.
                biometrics: BiometricsConfig {
                    face_models: default_models_dir().filter(|dir| {
                        dir.join(YUNET_FILE).is_file() && dir.join(SFACE_FILE).is_file()
                    }),
                    ..BiometricsConfig::default()
                },
                tls: Default::default(),
                limits: Default::default(),
                // Metrics on base port + 200 + id; no trace export.
                telemetry: TelemetryConfig {
                    metrics_listen: Some(SocketAddr::from((
                        [127, 0, 0, 1],
                        options.base_port + 200 + id as u16,
                    ))),
                    ..TelemetryConfig::default()
                },
            }
        })
        .collect()
}

fn spawn(config: NodeConfig, config_path: PathBuf) -> anyhow::Result<DevNode> {
    let log = std::fs::File::create(config.data_dir.join("node.log"))?;
    let child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting a node process")?;
    Ok(DevNode {
        config,
        config_path,
        child,
    })
}

pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    if options.fresh && options.dir.exists() {
        std::fs::remove_dir_all(&options.dir)
            .with_context(|| format!("removing {}", options.dir.display()))?;
    }
    std::fs::create_dir_all(&options.dir)?;
    let keys = dev_keys(&options.dir)?;
    eprintln!(
        "WARNING: dev mode. Plaintext gRPC on loopback; cluster keys are kept in {}.",
        options.dir.join("keys.toml").display()
    );

    let mut nodes = Vec::new();
    for config in configs(&options, &keys) {
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config.data_dir.join("node.toml");
        std::fs::write(&path, toml::to_string_pretty(&config)?)?;
        nodes.push(spawn(config, path)?);
    }

    let first = nodes[0].config.api_addr.clone();
    let leader = wait_for_leader(&first).await?;
    // Nodes beyond the voters join as learners (a node that already joined keeps its place).
    let members: Vec<u64> = leader.members.iter().map(|m| m.node_id).collect();
    for node in nodes.iter().skip(VOTERS) {
        let c = &node.config;
        if members.contains(&c.node_id) {
            continue;
        }
        let mut cluster = cluster_client(&leader.leader_api_addr).await?;
        cluster
            .add_learner(pb::AddLearnerRequest {
                node_id: c.node_id,
                province: c.province.clone(),
                api_addr: c.api_addr.clone(),
                raft_addr: c.raft_addr.clone(),
                wait_caught_up: false,
            })
            .await
            .with_context(|| format!("adding node {} as a learner", c.node_id))?;
    }

    println!(
        "quorumid dev cluster: {} nodes, data in {}",
        nodes.len(),
        options.dir.display()
    );
    println!(
        "{:<6} {:<9} {:<24} {:<8} log",
        "node", "province", "api", "pid"
    );
    for n in &nodes {
        let c = &n.config;
        println!(
            "{:<6} {:<9} {:<24} {:<8} {}",
            c.node_id,
            c.province,
            c.api_addr,
            n.child.id().map_or("-".into(), |p| p.to_string()),
            c.data_dir.join("node.log").display()
        );
    }
    println!(
        "\nleader: node {} ({})",
        leader.node_id, leader.leader_api_addr
    );
    println!("Try, in another terminal (README.md has the walk-through):");
    let all: Vec<&str> = nodes.iter().map(|n| n.config.api_addr.as_str()).collect();
    println!("  export QUORUMID_NODES={}", all.join(","));
    println!("  quorumid cluster status");
    println!("  quorumid enroll --province ON --document P1234567");
    println!(
        "Restart a killed node with: quorumid-node serve --config {}",
        nodes[0].config_path.display()
    );
    if let Some(metrics) = nodes[0].config.telemetry.metrics_listen {
        println!("Metrics: curl http://{metrics}/metrics (node 1; the others follow on)");
    }
    println!("Ctrl-C stops the cluster.");

    tokio::signal::ctrl_c().await?;
    eprintln!("stopping {} nodes...", nodes.len());
    for node in &mut nodes {
        if let Some(pid) = node.child.id() {
            // SIGTERM: each node shuts down cleanly.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
    for node in &mut nodes {
        if tokio::time::timeout(Duration::from_secs(10), node.child.wait())
            .await
            .is_err()
        {
            let _ = node.child.kill().await;
        }
    }
    Ok(())
}

async fn cluster_client(addr: &str) -> anyhow::Result<ClusterClient<Channel>> {
    let channel = Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("{addr:?} is not a valid address"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(ClusterClient::new(channel))
}

/// Polls `addr` until the cluster has a leader, and returns that node's status.
pub async fn wait_for_leader(addr: &str) -> anyhow::Result<pb::StatusResponse> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut cluster) = cluster_client(addr).await
            && let Ok(status) = cluster.status(pb::StatusRequest {}).await
        {
            let status = status.into_inner();
            if status.leader_id.is_some() {
                let mut leader_client = cluster_client(&status.leader_api_addr).await?;
                return Ok(leader_client
                    .status(pb::StatusRequest {})
                    .await?
                    .into_inner());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no leader was elected within 30 s; see the node logs");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
