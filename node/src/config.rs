//! Node configuration: a TOML file, with environment overrides for what differs per pod.
//!
//! ```toml
//! node_id = 1
//! province = "ON"
//! data_dir = "/var/lib/quorumid"
//! api_listen = "0.0.0.0:7100"          # platforms, registrars, operators
//! raft_listen = "0.0.0.0:7200"         # other nodes only
//! api_addr = "http://node-1.on:7100"   # how clients reach this node
//! raft_addr = "http://node-1.on:7200"  # how peers reach this node
//! bootstrap = false                    # true on exactly one node of a new cluster
//!
//! [[initial_members]]                  # the voters a bootstrapping node starts with
//! node_id = 1
//! province = "ON"
//! api_addr = "http://node-1.on:7100"
//! raft_addr = "http://node-1.on:7200"
//!
//! [keys]                               # or QUORUMID_DOCUMENT_KEY / QUORUMID_PSEUDONYM_KEY
//! document_key = "<64 hex characters>"
//! pseudonym_key = "<64 hex characters>"
//! storage_key = "<64 hex characters>"  # seals data at rest; or QUORUMID_STORAGE_KEY
//! storage_key_id = 2                   # stored with each sealed value; or QUORUMID_STORAGE_KEY_ID
//! retired_storage_keys = { "1" = "<64 hex characters>" } # opened, never used to seal; or
//!                                      # QUORUMID_RETIRED_STORAGE_KEYS="1:<hex>,..."
//!
//! [biometrics]                         # decision thresholds (BENCHMARKS.md)
//! face = 0.393                         # 1:1
//! fingerprint = 0.035
//! dedup_fpir = 0.01                    # 1:N: newcomers taken for somebody; see
//!                                      # biometrics/index.rs
//! face_models = "/var/lib/quorumid-models" # YuNet + SFace, for face images; or
//!                                      # QUORUMID_FACE_MODELS
//!
//! [tls]                                # mutual TLS on both ports; see security/tls.rs
//! ca = "/etc/quorumid/tls/ca.pem"
//! cert = "/etc/quorumid/tls/node.pem"
//! key = "/etc/quorumid/tls/node.key"
//!
//! [limits]                             # per-caller rate limits; see security/limits.rs
//! per_caller_per_second = 5000
//!
//! [telemetry]                          # see telemetry/config.rs; all optional
//! otlp_endpoint = "http://otel-collector:4317"
//! sample_ratio = 0.1
//! metrics_listen = "0.0.0.0:9100"
//! ```
//! Environment overrides: `QUORUMID_NODE_ID`, `QUORUMID_PROVINCE`, `QUORUMID_DATA_DIR`,
//! `QUORUMID_API_ADDR`, `QUORUMID_RAFT_ADDR`, `QUORUMID_BOOTSTRAP`, the two keys, and the
//! TLS files (`QUORUMID_TLS_CA`, `QUORUMID_TLS_CERT`, `QUORUMID_TLS_KEY`,
//! `QUORUMID_INSECURE_PLAINTEXT`), and `QUORUMID_FACE_MODELS`.
//!
//! On Kubernetes every pod of a province's StatefulSet reads the same file; what differs per
//! pod follows from its ordinal (`QUORUMID_POD_INDEX`, from the pod label
//! `apps.kubernetes.io/pod-index`):
//!
//! ```toml
//! api_addr = "http://on-quorumid-{ordinal}.on-quorumid-peers.quorumid.svc:7100"
//! raft_addr = "http://on-quorumid-{ordinal}.on-quorumid-peers.quorumid.svc:7200"
//!
//! [membership]
//! node_id_base = 100     # node_id = node_id_base + ordinal (leave node_id out)
//! seed = true            # pod 0 of this province initialises a new cluster (one province only)
//! join = ["http://on-quorumid-peers.quorumid.svc:7100"]   # nodes to ask for AddLearner
//! ```
//! Overrides: `QUORUMID_POD_INDEX`, `QUORUMID_NODE_ID_BASE`, `QUORUMID_SEED`, and
//! `QUORUMID_JOIN` (comma-separated addresses). See `join.rs` for what a node does with them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::biometrics::BiometricsConfig;
use crate::raft::{NodeId, NodeInfo};
use crate::reads::ReadSettings;
use crate::registry::ClusterKeys;
use crate::security::{LimitsConfig, TlsConfig};
use crate::telemetry::TelemetryConfig;
use quorumid_storage_format::Sealer;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// 0 (or absent) when it follows from `membership.node_id_base` and the pod ordinal.
    #[serde(default)]
    pub node_id: NodeId,
    pub province: String,
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub raft_listen: SocketAddr,
    pub api_addr: String,
    pub raft_addr: String,
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default)]
    pub initial_members: Vec<MemberConfig>,
    #[serde(default)]
    pub membership: MembershipConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub raft: RaftSettings,
    #[serde(default)]
    pub reads: ReadConfig,
    #[serde(default)]
    pub biometrics: BiometricsConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub node_id: NodeId,
    pub province: String,
    pub api_addr: String,
    pub raft_addr: String,
}

impl MemberConfig {
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            province: self.province.clone(),
            api_addr: self.api_addr.clone(),
            raft_addr: self.raft_addr.clone(),
        }
    }
}

/// How a node without data becomes a member, and how a StatefulSet pod's node id and
/// addresses follow from its ordinal.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// The pod ordinal (`QUORUMID_POD_INDEX`); replaces `{ordinal}` in the two addresses.
    pub pod_index: Option<u64>,
    /// With a pod ordinal: `node_id = node_id_base + ordinal`.
    pub node_id_base: Option<NodeId>,
    /// This node's province is the seed: its pod 0 (or the node itself, without an ordinal)
    /// initialises a new cluster of itself when it has no data and no join address answers
    /// for an existing cluster.
    pub seed: bool,
    /// API addresses to ask to add this node as a learner when it has no data.
    pub join: Vec<String>,
}

/// The placeholder for the pod ordinal in `api_addr` and `raft_addr`.
const ORDINAL: &str = "{ordinal}";
/// The placeholder for the node id in `tls.cert` and `tls.key`.
const NODE_ID: &str = "{node_id}";

/// The cluster secrets, as 64 hex characters each. Every node must hold the same ones
/// (snapshots carry sealed values from node to node).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub document_key: Option<String>,
    pub pseudonym_key: Option<String>,
    /// The active storage key (AES-256-GCM) and its id.
    pub storage_key: Option<String>,
    #[serde(default)]
    pub storage_key_id: Option<u32>,
    /// Storage keys replaced by the active one, by id: values sealed with them still open.
    #[serde(default)]
    pub retired_storage_keys: BTreeMap<String, String>,
}

impl std::fmt::Debug for KeysConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeysConfig(..)")
    }
}

/// Raft timing and log compaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot (for followers slightly behind).
    pub keep_entries_after_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> RaftSettings {
        RaftSettings {
            // openraft 0.9 lets a follower campaign only after `election_timeout_max` (its
            // leader lease) plus a random election timeout without hearing from the leader: a
            // stall must last 900 ms before it costs an election. A leader whose process dies
            // is replaced about `election_timeout_max` after its last heartbeat
            // (`leader_watch.rs`); a leader cut off by the network in 0.9-1.2 s.
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_after_entries: 10_000,
            keep_entries_after_snapshot: 1_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadConfig {
    pub watermark_interval_ms: u64,
    pub max_wait_ms: u64,
}

impl Default for ReadConfig {
    fn default() -> ReadConfig {
        let d = ReadSettings::default();
        ReadConfig {
            watermark_interval_ms: d.interval.as_millis() as u64,
            max_wait_ms: d.max_wait.as_millis() as u64,
        }
    }
}

impl ReadConfig {
    pub fn settings(&self) -> ReadSettings {
        ReadSettings {
            interval: Duration::from_millis(self.watermark_interval_ms.max(1)),
            max_wait: Duration::from_millis(self.max_wait_ms),
            ..ReadSettings::default()
        }
    }
}

impl NodeConfig {
    /// Reads `path` and applies the environment overrides.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut config: NodeConfig = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        config.apply_env(|name| std::env::var(name).ok())?;
        config.resolve_ordinal()?;
        config.resolve_node_id_paths();
        config.check()?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("QUORUMID_NODE_ID") {
            self.node_id = v
                .parse()
                .context("QUORUMID_NODE_ID must be a positive integer")?;
        }
        if let Some(v) = var("QUORUMID_PROVINCE") {
            self.province = v;
        }
        if let Some(v) = var("QUORUMID_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("QUORUMID_API_ADDR") {
            self.api_addr = v;
        }
        if let Some(v) = var("QUORUMID_RAFT_ADDR") {
            self.raft_addr = v;
        }
        if let Some(v) = var("QUORUMID_BOOTSTRAP") {
            self.bootstrap = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = var("QUORUMID_POD_INDEX") {
            self.membership.pod_index = Some(v.trim().parse().with_context(|| {
                format!("QUORUMID_POD_INDEX must be a pod ordinal (0, 1, ...), got {v:?}")
            })?);
        }
        if let Some(v) = var("QUORUMID_NODE_ID_BASE") {
            self.membership.node_id_base = Some(v.trim().parse().with_context(|| {
                format!("QUORUMID_NODE_ID_BASE must be a positive integer, got {v:?}")
            })?);
        }
        if let Some(v) = var("QUORUMID_SEED") {
            self.membership.seed = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = var("QUORUMID_JOIN") {
            self.membership.join = v
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = var("QUORUMID_DOCUMENT_KEY") {
            self.keys.document_key = Some(v);
        }
        if let Some(v) = var("QUORUMID_PSEUDONYM_KEY") {
            self.keys.pseudonym_key = Some(v);
        }
        if let Some(v) = var("QUORUMID_STORAGE_KEY") {
            self.keys.storage_key = Some(v);
        }
        if let Some(v) = var("QUORUMID_RETIRED_STORAGE_KEYS") {
            // id:hex,id:hex (a Secret's value, like the other keys).
            for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (id, key) = pair.split_once(':').with_context(
                    || "QUORUMID_RETIRED_STORAGE_KEYS must list id:key pairs, comma-separated",
                )?;
                self.keys
                    .retired_storage_keys
                    .insert(id.trim().to_string(), key.trim().to_string());
            }
        }
        if let Some(v) = var("QUORUMID_STORAGE_KEY_ID") {
            self.keys.storage_key_id = Some(v.trim().parse().with_context(|| {
                format!("QUORUMID_STORAGE_KEY_ID must be a key id (0, 1, ...), got {v:?}")
            })?);
        }
        if let Some(v) = var("QUORUMID_TLS_CA") {
            self.tls.ca = Some(v.into());
        }
        if let Some(v) = var("QUORUMID_TLS_CERT") {
            self.tls.cert = Some(v.into());
        }
        if let Some(v) = var("QUORUMID_TLS_KEY") {
            self.tls.key = Some(v.into());
        }
        if let Some(v) = var("QUORUMID_INSECURE_PLAINTEXT") {
            self.tls.insecure_plaintext = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = var("QUORUMID_FACE_MODELS") {
            self.biometrics.face_models = Some(v.into());
        }
        Ok(())
    }

    /// Derives the node id and the addresses from the pod ordinal, where configured.
    pub fn resolve_ordinal(&mut self) -> anyhow::Result<()> {
        let m = &self.membership;
        let templated = self.api_addr.contains(ORDINAL) || self.raft_addr.contains(ORDINAL);
        let Some(ordinal) = m.pod_index else {
            if templated {
                bail!(
                    "api_addr or raft_addr contains {ORDINAL}, but no pod ordinal is set \
                     (QUORUMID_POD_INDEX or membership.pod_index)"
                );
            }
            if m.node_id_base.is_some() {
                bail!("membership.node_id_base is set, but no pod ordinal (QUORUMID_POD_INDEX)");
            }
            return Ok(());
        };
        if let Some(base) = m.node_id_base {
            if self.node_id != 0 {
                bail!(
                    "set either node_id ({}) or membership.node_id_base ({base}) with a pod \
                     ordinal, not both",
                    self.node_id
                );
            }
            self.node_id = base
                .checked_add(ordinal)
                .context("membership.node_id_base + pod ordinal does not fit a node id")?;
        }
        let ordinal = ordinal.to_string();
        self.api_addr = self.api_addr.replace(ORDINAL, &ordinal);
        self.raft_addr = self.raft_addr.replace(ORDINAL, &ordinal);
        Ok(())
    }

    /// Replaces `{node_id}` in the TLS certificate and key paths: the pods of a StatefulSet
    /// share one Secret holding every node's files.
    pub fn resolve_node_id_paths(&mut self) {
        let id = self.node_id.to_string();
        for path in [&mut self.tls.cert, &mut self.tls.key]
            .into_iter()
            .flatten()
        {
            if let Some(text) = path.to_str().filter(|t| t.contains(NODE_ID)) {
                *path = PathBuf::from(text.replace(NODE_ID, &id));
            }
        }
    }

    /// Whether this node initialises a new cluster when it has no data: `bootstrap`, or the
    /// seed rule (pod 0 of the seed province).
    pub fn initialises(&self) -> bool {
        self.bootstrap || (self.membership.seed && self.membership.pod_index.unwrap_or(0) == 0)
    }

    /// The voters a new cluster starts with: `initial_members`, or this node alone.
    pub fn initial_membership(&self) -> BTreeMap<NodeId, NodeInfo> {
        if self.initial_members.is_empty() {
            return BTreeMap::from([(self.node_id, self.info())]);
        }
        self.initial_members
            .iter()
            .map(|m| (m.node_id, m.info()))
            .collect()
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if self.node_id == 0 {
            bail!(
                "node_id must be positive (set node_id, or membership.node_id_base with a pod \
                 ordinal)"
            );
        }
        for (field, value) in [("api_addr", &self.api_addr), ("raft_addr", &self.raft_addr)] {
            if value.contains(ORDINAL) {
                bail!("{field} still contains {ORDINAL}: no pod ordinal was applied");
            }
        }
        if self
            .membership
            .join
            .iter()
            .any(|a| a.parse::<http::Uri>().is_err())
        {
            bail!(
                "membership.join must list API addresses like http://host:7100, got {:?}",
                self.membership.join
            );
        }
        if self.initialises()
            && !self.initial_members.is_empty()
            && !self
                .initial_members
                .iter()
                .any(|m| m.node_id == self.node_id)
        {
            bail!(
                "this node initialises the cluster, but initial_members does not list it ({})",
                self.node_id
            );
        }
        if self.bootstrap
            && !self
                .initial_members
                .iter()
                .any(|m| m.node_id == self.node_id)
        {
            bail!(
                "bootstrap is set, but initial_members does not list this node ({})",
                self.node_id
            );
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            bail!("raft.election_timeout_min_ms must be larger than raft.heartbeat_ms (> 0)");
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            bail!("raft.election_timeout_max_ms must be larger than raft.election_timeout_min_ms");
        }
        self.cluster_keys()?;
        self.sealer()?;
        self.tls.check(&[self.api_listen, self.raft_listen])?;
        if self.tls.enabled() {
            let addrs = [&self.api_addr, &self.raft_addr]
                .into_iter()
                .chain(&self.membership.join)
                .chain(
                    self.initial_members
                        .iter()
                        .flat_map(|m| [&m.api_addr, &m.raft_addr]),
                );
            for addr in addrs {
                if !addr.starts_with("https://") {
                    bail!("with [tls], every address must be https://, got {addr:?}");
                }
            }
        }
        self.telemetry.check()?;
        self.biometrics.check().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            province: self.province.clone(),
            api_addr: self.api_addr.clone(),
            raft_addr: self.raft_addr.clone(),
        }
    }

    pub fn cluster_keys(&self) -> anyhow::Result<ClusterKeys> {
        Ok(ClusterKeys::new(
            key_bytes("document_key", self.keys.document_key.as_deref())?,
            key_bytes("pseudonym_key", self.keys.pseudonym_key.as_deref())?,
        ))
    }

    /// The storage keys that seal values at rest.
    pub fn sealer(&self) -> anyhow::Result<Sealer> {
        let k = &self.keys;
        let active_id = k.storage_key_id.unwrap_or(1);
        let active = key_bytes("storage_key", k.storage_key.as_deref())?;
        let mut retired = Vec::new();
        for (id, key) in &k.retired_storage_keys {
            let name = format!("retired_storage_keys.{id}");
            let id: u32 = id
                .parse()
                .with_context(|| format!("keys.{name}: a storage key id is a number"))?;
            if id == active_id {
                bail!("keys.retired_storage_keys lists {id}, the active storage_key_id");
            }
            retired.push((id, key_bytes(&name, Some(key))?));
        }
        Ok(Sealer::new((active_id, active), retired))
    }

    pub fn raft_config(&self) -> anyhow::Result<openraft::Config> {
        let r = &self.raft;
        let config = openraft::Config {
            cluster_name: "quorumid".to_string(),
            heartbeat_interval: r.heartbeat_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_after_entries),
            max_in_snapshot_log_to_keep: r.keep_entries_after_snapshot,
            snapshot_max_chunk_size: 1024 * 1024,
            // A new leader in openraft 0.9 re-sends each follower part of the log it has not
            // purged (it binary-searches their match), and an AppendEntries has one heartbeat
            // to complete. 64 entries of large batches outlived it and were sent again: the
            // first write after a failover waited ~250 ms more under load (BENCHMARKS.md).
            max_payload_entries: 16,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

/// A 256-bit key from its 64 hex characters.
fn key_bytes(name: &str, value: Option<&str>) -> anyhow::Result<[u8; 32]> {
    let value = value.with_context(|| {
        format!(
            "keys.{name} is not set (64 hex characters, or the QUORUMID_{} variable)",
            name.to_uppercase()
        )
    })?;
    hex::decode(value.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("keys.{name} must be exactly 64 hex characters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        node_id = 1
        province = "ON"
        data_dir = "/tmp/x"
        api_listen = "127.0.0.1:7100"
        raft_listen = "127.0.0.1:7200"
        api_addr = "http://127.0.0.1:7100"
        raft_addr = "http://127.0.0.1:7200"
        [keys]
        document_key = "0000000000000000000000000000000000000000000000000000000000000001"
        pseudonym_key = "0000000000000000000000000000000000000000000000000000000000000002"
        storage_key = "0000000000000000000000000000000000000000000000000000000000000003"
    "#;

    #[test]
    fn environment_overrides_the_file() {
        let mut config: NodeConfig = toml::from_str(BASE).unwrap();
        config
            .apply_env(|name| match name {
                "QUORUMID_NODE_ID" => Some("7".into()),
                "QUORUMID_PROVINCE" => Some("QC".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.node_id, 7);
        assert_eq!(config.province, "QC");
        config.check().unwrap();
    }

    const POD: &str = r#"
        province = "ON"
        data_dir = "/var/lib/quorumid"
        api_listen = "0.0.0.0:7100"
        raft_listen = "0.0.0.0:7200"
        api_addr = "http://on-quorumid-{ordinal}.on-quorumid-peers:7100"
        raft_addr = "http://on-quorumid-{ordinal}.on-quorumid-peers:7200"
        [membership]
        node_id_base = 100
        [keys]
        document_key = "0000000000000000000000000000000000000000000000000000000000000001"
        pseudonym_key = "0000000000000000000000000000000000000000000000000000000000000002"
        storage_key = "0000000000000000000000000000000000000000000000000000000000000003"
        [tls]
        insecure_plaintext = true
    "#;

    fn pod(vars: &[(&str, &str)]) -> anyhow::Result<NodeConfig> {
        let mut config: NodeConfig = toml::from_str(POD)?;
        config.apply_env(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })?;
        config.resolve_ordinal()?;
        config.resolve_node_id_paths();
        config.check()?;
        Ok(config)
    }

    #[test]
    fn the_pod_ordinal_gives_the_node_id_and_addresses() {
        let config = pod(&[("QUORUMID_POD_INDEX", "2")]).unwrap();
        assert_eq!(config.node_id, 102);
        assert_eq!(
            config.api_addr,
            "http://on-quorumid-2.on-quorumid-peers:7100"
        );
        assert_eq!(
            config.raft_addr,
            "http://on-quorumid-2.on-quorumid-peers:7200"
        );
        assert!(!config.initialises());

        let err = pod(&[]).unwrap_err().to_string();
        assert!(err.contains("QUORUMID_POD_INDEX"), "{err}");
        let err = pod(&[("QUORUMID_POD_INDEX", "two")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ordinal"), "{err}");
        let err = pod(&[("QUORUMID_POD_INDEX", "1"), ("QUORUMID_NODE_ID", "5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn only_pod_zero_of_the_seed_province_initialises() {
        let seed0 = pod(&[("QUORUMID_POD_INDEX", "0"), ("QUORUMID_SEED", "true")]).unwrap();
        assert!(seed0.initialises());
        assert_eq!(
            seed0
                .initial_membership()
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            vec![100]
        );
        let seed1 = pod(&[("QUORUMID_POD_INDEX", "1"), ("QUORUMID_SEED", "true")]).unwrap();
        assert!(!seed1.initialises());
        let other0 = pod(&[("QUORUMID_POD_INDEX", "0")]).unwrap();
        assert!(!other0.initialises());
    }

    #[test]
    fn join_addresses_come_from_the_environment() {
        let config = pod(&[
            ("QUORUMID_POD_INDEX", "0"),
            ("QUORUMID_JOIN", "http://a:7100, http://b:7100,"),
        ])
        .unwrap();
        assert_eq!(
            config.membership.join,
            vec!["http://a:7100", "http://b:7100"]
        );
        let err = pod(&[("QUORUMID_POD_INDEX", "0"), ("QUORUMID_JOIN", "http://a b")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("membership.join"), "{err}");
    }

    #[test]
    fn bad_settings_are_explained() {
        let mut config: NodeConfig = toml::from_str(BASE).unwrap();
        config.keys.document_key = Some("abc".into());
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("64 hex"), "{err}");
        let err = toml::from_str::<NodeConfig>(&format!("{BASE}\nbogus = 1")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let mut config: NodeConfig = toml::from_str(BASE).unwrap();
        config.bootstrap = true;
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("initial_members")
        );
    }

    #[test]
    fn tls_paths_name_the_node_id_and_addresses_are_https() {
        let tls_vars = [
            ("QUORUMID_POD_INDEX", "1"),
            ("QUORUMID_TLS_CERT", "/tls/node-{node_id}.pem"),
            ("QUORUMID_TLS_KEY", "/tls/node-{node_id}.key"),
            ("QUORUMID_TLS_CA", "/tls/ca.pem"),
        ];
        let err = pod(&tls_vars).unwrap_err().to_string();
        assert!(err.contains("every address must be https://"), "{err}");
        let mut config: NodeConfig = toml::from_str(&POD.replace("http://", "https://")).unwrap();
        config
            .apply_env(|name| {
                tls_vars
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap();
        config.resolve_ordinal().unwrap();
        config.resolve_node_id_paths();
        config.check().unwrap();
        assert_eq!(config.tls.cert.unwrap(), PathBuf::from("/tls/node-101.pem"));
        assert_eq!(config.tls.key.unwrap(), PathBuf::from("/tls/node-101.key"));
    }

    #[test]
    fn storage_keys_rotate_through_the_environment() {
        let mut config: NodeConfig = toml::from_str(BASE).unwrap();
        let old = "0000000000000000000000000000000000000000000000000000000000000003";
        let new = "0000000000000000000000000000000000000000000000000000000000000009";
        let before = config.sealer().unwrap().seal(b"place", b"value");
        config
            .apply_env(|name| match name {
                "QUORUMID_STORAGE_KEY" => Some(new.into()),
                "QUORUMID_STORAGE_KEY_ID" => Some("2".into()),
                "QUORUMID_RETIRED_STORAGE_KEYS" => Some(format!("1:{old}")),
                _ => None,
            })
            .unwrap();
        config.check().unwrap();
        let sealer = config.sealer().unwrap();
        assert_eq!(sealer.open(b"place", &before).unwrap(), b"value");
        assert_eq!(sealer.seal(b"p", b"v")[1..5], 2u32.to_be_bytes());
        config
            .apply_env(|name| (name == "QUORUMID_RETIRED_STORAGE_KEYS").then(|| format!("2:{old}")))
            .unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("the active storage_key_id"), "{err}");
    }

    #[test]
    fn plaintext_is_refused_beyond_loopback_unless_declared_insecure() {
        let mut config: NodeConfig = toml::from_str(BASE).unwrap();
        config.check().unwrap();
        config.api_listen = "0.0.0.0:7100".parse().unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains("refusing to serve plaintext on 0.0.0.0:7100"),
            "{err}"
        );
        config
            .apply_env(|name| (name == "QUORUMID_INSECURE_PLAINTEXT").then(|| "true".into()))
            .unwrap();
        config.check().unwrap();
        config.tls.ca = Some("/etc/ca.pem".into());
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("all of ca, cert and key"), "{err}");
    }
}
