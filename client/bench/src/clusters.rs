//! The two systems under test: three real processes each, on loopback, fsync on, each
//! with its own data directory, so that a member can be killed (`kill -9`) and restarted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use quorumid_node::config::{NodeConfig, RaftSettings};
use quorumid_node::dev::{self, DevOptions};
use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

/// How long a cluster may take to start or to settle after a restart.
const SETTLE: Duration = Duration::from_secs(60);

/// What the failover measurement needs of a cluster, whichever system it runs.
pub trait Members {
    fn len(&self) -> usize;
    /// Waits until every member follows one leader and is caught up; returns the leader's
    /// position.
    async fn settled(&self) -> anyhow::Result<usize>;
    /// SIGKILL, and wait for the process to be gone.
    async fn kill(&mut self, member: usize);
    /// Starts a killed member again, on its data.
    fn restart(&mut self, member: usize) -> anyhow::Result<()>;
}

/// Calls `agreed` every 50 ms until it names the leader, for at most `SETTLE`.
async fn until_settled<F, Fut>(system: &str, mut agreed: F) -> anyhow::Result<usize>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    let deadline = Instant::now() + SETTLE;
    loop {
        match agreed().await {
            Ok(leader) => return Ok(leader),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!(
                    "the {system} cluster did not settle within {SETTLE:?}"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One member process: how to start it again, and the running child (if any).
struct Member {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and wait for the process to be gone.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 10 s.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(addr.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A 3-node quorumid cluster of `quorumid-node serve` processes, configured like
/// `quorumid-node dev` (WAL fsync; Raft timings as given, by default the node's).
pub struct QuorumidCluster {
    configs: Vec<NodeConfig>,
    members: Vec<Member>,
    /// One multiplexed HTTP/2 channel per node, shared by every client of the bench.
    pub channels: Vec<Channel>,
}

impl QuorumidCluster {
    pub async fn start(
        dir: &Path,
        binary: &Path,
        base_port: u16,
        raft: &RaftSettings,
    ) -> anyhow::Result<Self> {
        if !binary.exists() {
            bail!(
                "{} not found: build the workspace first (client/bench/run.sh does)",
                binary.display()
            );
        }
        std::fs::create_dir_all(dir)?;
        let options = DevOptions {
            nodes: 3,
            dir: dir.to_path_buf(),
            base_port,
            fresh: false,
        };
        let keys = dev::dev_keys(dir)?;
        let mut configs = dev::configs(&options, &keys);
        for config in &mut configs {
            config.raft = raft.clone();
        }
        let mut members = Vec::new();
        let mut channels = Vec::new();
        for config in &configs {
            std::fs::create_dir_all(&config.data_dir)?;
            let path = config.data_dir.join("node.toml");
            std::fs::write(&path, toml::to_string_pretty(config)?)?;
            let mut member = Member {
                program: binary.to_path_buf(),
                args: vec![
                    "serve".into(),
                    "--config".into(),
                    path.display().to_string(),
                ],
                log: config.data_dir.join("node.log"),
                child: None,
            };
            member.spawn()?;
            members.push(member);
            channels.push(channel(&config.api_addr)?);
        }
        let cluster = QuorumidCluster {
            configs,
            members,
            channels,
        };
        dev::wait_for_leader(&cluster.configs[0].api_addr).await?;
        cluster.settled().await?;
        Ok(cluster)
    }

    pub async fn status(&self, node: usize) -> anyhow::Result<pb::StatusResponse> {
        let mut client = ClusterClient::new(self.channels[node].clone());
        let answer =
            tokio::time::timeout(Duration::from_secs(2), client.status(pb::StatusRequest {}))
                .await
                .context("status timed out")??;
        Ok(answer.into_inner())
    }

    /// The leader's position, if every node follows it, has applied what it committed and
    /// has a fresh read watermark.
    async fn agreed(&self) -> anyhow::Result<usize> {
        let mut statuses = Vec::new();
        for node in 0..self.members.len() {
            statuses.push(self.status(node).await?);
        }
        let leader_id = statuses[0].leader_id.context("no leader")?;
        let leader = statuses
            .iter()
            .find(|s| s.node_id == leader_id)
            .context("leader not among the live nodes")?;
        for s in &statuses {
            if s.leader_id != Some(leader_id)
                || s.term != leader.term
                || s.applied_index < leader.committed_index
                || s.watermark_age_ms.is_none_or(|age| age > 500)
            {
                bail!("not settled");
            }
        }
        self.configs
            .iter()
            .position(|c| c.node_id == leader_id)
            .context("unknown leader id")
    }

    pub async fn stop(&mut self) {
        for member in &mut self.members {
            member.stop().await;
        }
    }
}

impl Members for QuorumidCluster {
    fn len(&self) -> usize {
        self.members.len()
    }

    async fn settled(&self) -> anyhow::Result<usize> {
        until_settled("quorumid", || self.agreed()).await
    }

    async fn kill(&mut self, node: usize) {
        self.members[node].kill().await;
    }

    fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        self.members[node].spawn()
    }
}

/// A 3-member etcd cluster (etcd's defaults: fsync on, heartbeat 100 ms, election 1000 ms).
pub struct EtcdCluster {
    members: Vec<Member>,
    /// One client per member (each one channel), so that load is spread like quorumid's.
    pub clients: Vec<etcd_client::Client>,
}

impl EtcdCluster {
    pub async fn start(dir: &Path, binary: &Path, base_port: u16) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let client_url = |i: u16| format!("http://127.0.0.1:{}", base_port + 1 + i);
        let peer_url = |i: u16| format!("http://127.0.0.1:{}", base_port + 11 + i);
        let initial_cluster: Vec<String> =
            (0..3).map(|i| format!("e{i}={}", peer_url(i))).collect();
        let mut members = Vec::new();
        for i in 0..3u16 {
            let data = dir.join(format!("e{i}"));
            let mut member = Member {
                program: binary.to_path_buf(),
                args: vec![
                    format!("--name=e{i}"),
                    format!("--data-dir={}", data.display()),
                    format!("--listen-client-urls={}", client_url(i)),
                    format!("--advertise-client-urls={}", client_url(i)),
                    format!("--listen-peer-urls={}", peer_url(i)),
                    format!("--initial-advertise-peer-urls={}", peer_url(i)),
                    format!("--initial-cluster={}", initial_cluster.join(",")),
                    "--initial-cluster-state=new".into(),
                    "--initial-cluster-token=quorumid-bench".into(),
                    "--log-level=warn".into(),
                ],
                log: dir.join(format!("e{i}.log")),
                child: None,
            };
            member.spawn().with_context(|| {
                format!(
                    "is etcd installed? (Debian: apt-get install etcd-server; tried {})",
                    binary.display()
                )
            })?;
            members.push(member);
        }
        let mut clients = Vec::new();
        for i in 0..3u16 {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(5));
            let deadline = Instant::now() + SETTLE;
            let client = loop {
                match etcd_client::Client::connect([client_url(i)], Some(options.clone())).await {
                    Ok(client) => break client,
                    Err(e) if Instant::now() > deadline => {
                        return Err(e).context(format!("connecting to etcd member {i}"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            clients.push(client);
        }
        let cluster = EtcdCluster { members, clients };
        cluster.settled().await?;
        Ok(cluster)
    }

    /// The leader's position, if every member names it and answers a linearizable read.
    async fn agreed(&self) -> anyhow::Result<usize> {
        let mut leader = None;
        let mut leader_position = None;
        for (i, client) in self.clients.iter().enumerate() {
            let mut maintenance = client.maintenance_client();
            let status = tokio::time::timeout(Duration::from_secs(2), maintenance.status())
                .await
                .context("status timed out")??;
            let member_id = status.header().context("no header")?.member_id();
            if leader.is_some_and(|l| l != status.leader()) || status.leader() == 0 {
                bail!("no agreed leader");
            }
            leader = Some(status.leader());
            if member_id == status.leader() {
                leader_position = Some(i);
            }
            let mut kv = client.kv_client();
            tokio::time::timeout(Duration::from_secs(2), kv.get("settled", None))
                .await
                .context("read timed out")??;
        }
        leader_position.context("the leader is not among the live members")
    }

    pub async fn stop(&mut self) {
        for member in &mut self.members {
            member.stop().await;
        }
    }
}

impl Members for EtcdCluster {
    fn len(&self) -> usize {
        self.members.len()
    }

    async fn settled(&self) -> anyhow::Result<usize> {
        until_settled("etcd", || self.agreed()).await
    }

    async fn kill(&mut self, member: usize) {
        self.members[member].kill().await;
    }

    fn restart(&mut self, member: usize) -> anyhow::Result<()> {
        self.members[member].spawn()
    }
}
