//! A cluster of real nodes in one test process: real RocksDB in temporary directories, real
//! gRPC servers on loopback ports, and the outgoing fault switch to cut links.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quorumid_node::biometrics::{BiometricsConfig, default_models_dir};
use quorumid_node::config::{KeysConfig, MemberConfig, NodeConfig, RaftSettings, ReadConfig};
use quorumid_node::node::Node;
use quorumid_node::security::certs::CertificateAuthority;
use quorumid_node::security::{Caller, TlsConfig};
use quorumid_node::telemetry::TelemetryConfig;
use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use quorumid_proto::v1::registry_client::RegistryClient;
use quorumid_proto::v1::verifier_client::VerifierClient;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const DOCUMENT_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub const PSEUDONYM_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
pub const STORAGE_KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";
pub const PROVINCES: [&str; 7] = ["ON", "QC", "BC", "AB", "MB", "SK", "NS"];

/// Fails the test if `condition` does not hold within `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn keys() -> KeysConfig {
    KeysConfig {
        document_key: Some(DOCUMENT_KEY.into()),
        pseudonym_key: Some(PSEUDONYM_KEY.into()),
        storage_key: Some(STORAGE_KEY.into()),
        ..KeysConfig::default()
    }
}

pub fn authority(province: &str) -> pb::Authority {
    pb::Authority {
        id: format!("registrar-{province}"),
        province: province.into(),
        national: false,
    }
}

pub fn consistency(
    level: pb::ConsistencyLevel,
    max_ms: u64,
    min_index: u64,
) -> pb::ReadConsistency {
    pb::ReadConsistency {
        level: level as i32,
        max_staleness_ms: max_ms,
        min_index,
    }
}

pub fn reason_of(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("quorumid-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub struct TestCluster {
    pub dir: TempDir,
    pub raft: RaftSettings,
    pub configs: BTreeMap<u64, NodeConfig>,
    pub nodes: BTreeMap<u64, Node>,
    /// With mutual TLS: the directory of the cluster CA and of every issued certificate.
    pub tls: Option<PathBuf>,
    /// Where every node loads its face models from, if anywhere.
    pub face_models: Option<PathBuf>,
}

async fn free_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

impl TestCluster {
    /// Starts `voters` nodes and initialises them as one cluster.
    pub async fn start(voters: u64, raft: RaftSettings) -> TestCluster {
        TestCluster::empty(raft).start_voters(voters).await
    }

    /// Like [`TestCluster::start`], with mutual TLS: a fresh cluster CA, a certificate per node.
    pub async fn start_with_tls(voters: u64, raft: RaftSettings) -> TestCluster {
        let mut cluster = TestCluster::empty(raft);
        let dir = cluster.dir.path().join("tls");
        CertificateAuthority::create("test cluster CA")
            .unwrap()
            .save(&dir)
            .unwrap();
        cluster.tls = Some(dir);
        cluster.start_voters(voters).await
    }

    /// Like [`TestCluster::start`], every node with the face models (FACE_IMAGE templates),
    /// from where `node/biometrics/models/fetch.sh` put them (`.ci/prereqs` runs it; a node
    /// refuses to start without them, naming the missing file).
    pub async fn start_with_face_models(voters: u64, raft: RaftSettings) -> TestCluster {
        let dir = default_models_dir().expect("QUORUMID_FACE_MODELS or HOME is set");
        let mut cluster = TestCluster::empty(raft);
        cluster.face_models = Some(dir);
        cluster.start_voters(voters).await
    }

    async fn start_voters(self, voters: u64) -> TestCluster {
        let mut cluster = self;
        let mut listeners = BTreeMap::new();
        for id in 1..=voters {
            let (api, api_addr) = free_listener().await;
            let (raft, raft_addr) = free_listener().await;
            cluster
                .configs
                .insert(id, cluster.config(id, api_addr, raft_addr));
            listeners.insert(id, (api, raft));
        }
        let members: Vec<MemberConfig> = cluster.configs.values().map(member_of).collect();
        for (id, (api, raft)) in listeners {
            let config = cluster.configs.get_mut(&id).unwrap();
            config.bootstrap = id == 1;
            config.initial_members = members.clone();
            let node = Node::start_on(config.clone(), api, raft)
                .await
                .expect("start node");
            cluster.nodes.insert(id, node);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    /// The certificate and key files of `caller` (issued on first use), e.g. `node/1`.
    pub fn certificate(&self, caller: &str) -> (PathBuf, PathBuf) {
        let dir = self.tls.as_ref().expect("a TLS cluster");
        let name = caller.replace('/', "-");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        if !cert.exists() {
            let parsed = Caller::from_uri(&format!("spiffe://quorumid/{caller}")).unwrap();
            let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
            let ca = CertificateAuthority::load(dir).unwrap();
            ca.issue(&parsed, &hosts).unwrap().save(dir, &name).unwrap();
        }
        (cert, key)
    }

    /// A connection to node `id`'s API port presenting `caller`'s certificate.
    pub async fn channel_as(
        &self,
        id: u64,
        caller: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        let dir = self.tls.as_ref().expect("a TLS cluster");
        let (cert, key) = self.certificate(caller);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                std::fs::read(dir.join("ca.pem")).unwrap(),
            ))
            .identity(Identity::from_pem(
                std::fs::read(cert).unwrap(),
                std::fs::read(key).unwrap(),
            ));
        Channel::from_shared(self.api(id))
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }

    fn config(&self, id: u64, api: SocketAddr, raft: SocketAddr) -> NodeConfig {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let tls = match &self.tls {
            None => TlsConfig::default(),
            Some(dir) => {
                let (cert, key) = self.certificate(&format!("node/{id}"));
                TlsConfig {
                    ca: Some(dir.join("ca.pem")),
                    cert: Some(cert),
                    key: Some(key),
                    reload_secs: 1,
                    insecure_plaintext: false,
                }
            }
        };
        NodeConfig {
            node_id: id,
            province: PROVINCES[(id as usize - 1) % PROVINCES.len()].into(),
            data_dir: self.dir.path().join(format!("node-{id}")),
            api_listen: api,
            raft_listen: raft,
            api_addr: format!("{scheme}://{api}"),
            raft_addr: format!("{scheme}://{raft}"),
            bootstrap: false,
            initial_members: Vec::new(),
            membership: Default::default(),
            keys: keys(),
            raft: self.raft.clone(),
            reads: ReadConfig::default(),
            biometrics: BiometricsConfig {
                face_models: self.face_models.clone(),
                ..BiometricsConfig::default()
            },
            tls,
            limits: Default::default(),
            // Every test node serves /metrics, on a port of its own.
            telemetry: TelemetryConfig {
                metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
                ..TelemetryConfig::default()
            },
        }
    }

    /// No nodes yet: tests start them with [`TestCluster::start_new_node_with`].
    pub fn empty(raft: RaftSettings) -> TestCluster {
        TestCluster {
            dir: tempfile::tempdir().expect("temporary directory"),
            raft,
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tls: None,
            face_models: None,
        }
    }

    /// Starts a new, empty node (not yet a member) and returns its id.
    pub async fn start_new_node(&mut self) -> u64 {
        self.start_new_node_with(|_| {}).await
    }

    /// Starts a new node with no data, its configuration changed by `edit` (seed, join
    /// addresses, ...), and returns its id.
    pub async fn start_new_node_with(&mut self, edit: impl FnOnce(&mut NodeConfig)) -> u64 {
        let id = self.configs.keys().max().copied().unwrap_or(0) + 1;
        let (api, api_addr) = free_listener().await;
        let (raft, raft_addr) = free_listener().await;
        let mut config = self.config(id, api_addr, raft_addr);
        edit(&mut config);
        self.configs.insert(id, config.clone());
        let node = Node::start_on(config, api, raft).await.expect("start node");
        self.nodes.insert(id, node);
        id
    }

    /// Adds node `learner` as a learner through `leader` and waits until it caught up.
    pub async fn add_learner(&self, leader: u64, learner: u64) {
        let m = self.member(learner);
        self.cluster(leader)
            .await
            .add_learner(pb::AddLearnerRequest {
                node_id: learner,
                province: m.province,
                api_addr: m.api_addr,
                raft_addr: m.raft_addr,
                wait_caught_up: true,
            })
            .await
            .expect("add learner");
    }

    pub fn member(&self, id: u64) -> MemberConfig {
        member_of(&self.configs[&id])
    }

    /// Stops a node as abruptly as an in-process node can be stopped: servers and Raft go
    /// away at once; only what was synced to RocksDB remains.
    pub async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// Starts a stopped node again on its own ports and data directory.
    pub async fn restart(&mut self, id: u64) {
        let config = self.configs[&id].clone();
        let mut attempt = 0;
        let node = loop {
            match Node::start(config.clone()).await {
                Ok(node) => break node,
                // The old node's ports may take a moment to be released.
                Err(_) if attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restarting node {id}: {e:#}"),
            }
        };
        self.nodes.insert(id, node);
    }

    pub async fn wait_for_leader(&self) -> u64 {
        let mut leader = 0;
        eventually(
            "a leader known to every running node",
            Duration::from_secs(20),
            || {
                let leaders: Vec<Option<u64>> = self
                    .nodes
                    .values()
                    .map(|n| n.raft.metrics().borrow().current_leader)
                    .collect();
                let agreed = leaders.first().copied().flatten().filter(|l| {
                    self.nodes.contains_key(l) && leaders.iter().all(|x| *x == Some(*l))
                });
                leader = agreed.unwrap_or(0);
                async move { agreed.is_some() }
            },
        )
        .await;
        leader
    }

    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .find_map(|n| n.raft.metrics().borrow().current_leader)
    }

    pub fn followers(&self) -> Vec<u64> {
        let leader = self.leader();
        self.nodes
            .keys()
            .copied()
            .filter(|id| Some(*id) != leader)
            .collect()
    }

    pub fn api(&self, id: u64) -> String {
        self.configs[&id].api_addr.clone()
    }

    /// A connection to node `id`'s API port (as operator `ops` on a TLS cluster).
    async fn channel(&self, id: u64) -> Channel {
        if self.tls.is_some() {
            return self
                .channel_as(id, "operator/ops")
                .await
                .expect("connect to node");
        }
        Channel::from_shared(self.api(id))
            .unwrap()
            .connect()
            .await
            .expect("connect to node")
    }

    pub async fn registry(&self, id: u64) -> RegistryClient<Channel> {
        RegistryClient::new(self.channel(id).await)
    }

    pub async fn verifier(&self, id: u64) -> VerifierClient<Channel> {
        VerifierClient::new(self.channel(id).await)
    }

    pub async fn cluster(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(id).await)
    }

    pub async fn status(&self, id: u64) -> pb::StatusResponse {
        self.cluster(id)
            .await
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Cuts every link between `id` and the other nodes, both ways.
    pub fn isolate(&self, id: u64) {
        for (other, node) in &self.nodes {
            if *other != id {
                node.faults.cut(id);
                self.nodes[&id].faults.cut(*other);
            }
        }
    }

    pub fn heal_all(&self) {
        for node in self.nodes.values() {
            node.faults.heal_all();
        }
    }

    pub async fn enroll(
        &self,
        at: u64,
        request_id: &str,
        document: &str,
    ) -> Result<pb::EnrollResponse, tonic::Status> {
        self.registry(at)
            .await
            .enroll(enroll_request(request_id, "ON", document))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn revoke(
        &self,
        at: u64,
        request_id: &str,
        identity: &str,
    ) -> Result<pb::StatusChangeResponse, tonic::Status> {
        self.registry(at)
            .await
            .revoke(pb::StatusChangeRequest {
                request_id: request_id.into(),
                identity_id: identity.into(),
                reason: pb::ReasonCode::Fraud as i32,
                authority: Some(authority("ON")),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn verify(
        &self,
        at: u64,
        identity: &str,
        consistency: pb::ReadConsistency,
    ) -> Result<pb::VerifyResponse, tonic::Status> {
        self.send_verify(at, identity, consistency, None).await
    }

    /// A linearizable `Verify` at node `at` with a biometric probe.
    pub async fn verify_probe(
        &self,
        at: u64,
        identity: &str,
        probe: pb::Template,
    ) -> Result<pb::VerifyResponse, tonic::Status> {
        let linearizable = consistency(pb::ConsistencyLevel::Linearizable, 0, 0);
        self.send_verify(at, identity, linearizable, Some(probe))
            .await
    }

    async fn send_verify(
        &self,
        at: u64,
        identity: &str,
        consistency: pb::ReadConsistency,
        probe: Option<pb::Template>,
    ) -> Result<pb::VerifyResponse, tonic::Status> {
        self.verifier(at)
            .await
            .verify(pb::VerifyRequest {
                identity_id: identity.into(),
                platform_id: "test-platform".into(),
                consistency: Some(consistency),
                probe,
                holder: None,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Waits until every running node has applied `index` and all show the same digest;
    /// returns that digest.
    pub async fn converged(&self, index: u64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = Vec::new();
            for id in self.nodes.keys() {
                let s = self.status(*id).await;
                seen.push((s.applied_index, s.state_digest));
            }
            if seen.iter().all(|(applied, _)| *applied >= index)
                && seen.windows(2).all(|w| w[0] == w[1])
            {
                return seen[0].1.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nodes did not converge at index {index}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

fn member_of(c: &NodeConfig) -> MemberConfig {
    MemberConfig {
        node_id: c.node_id,
        province: c.province.clone(),
        api_addr: c.api_addr.clone(),
        raft_addr: c.raft_addr.clone(),
    }
}

pub fn enroll_request(request_id: &str, province: &str, document: &str) -> pb::EnrollRequest {
    pb::EnrollRequest {
        request_id: request_id.into(),
        home_province: province.into(),
        document_issuer: province.into(),
        document_number: document.into(),
        templates: vec![face_template(&synthetic_embedding(document))],
        authority: Some(authority(province)),
        holder_key: Vec::new(),
    }
}

/// A face template of model `sface-2021dec` from f32 values.
pub fn face_template(values: &[f32]) -> pb::Template {
    pb::Template {
        format: pb::TemplateFormat::FaceEmbeddingF32 as i32,
        model_id: "sface-2021dec".into(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// A pseudo-random 512-dimensional embedding drawn from `seed`: two different seeds give
/// nearly orthogonal vectors (cosine about N(0, 0.044)), far below the de-dup threshold.
pub fn synthetic_embedding(seed: &str) -> Vec<f32> {
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (0..512)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}
