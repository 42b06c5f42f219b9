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
//!
//! [biometrics]                         # 1:1 decision thresholds (BENCHMARKS.md)
//! face = 0.393
//! fingerprint = 0.033
//! ```
//! Environment overrides: `QUORUMID_NODE_ID`, `QUORUMID_PROVINCE`, `QUORUMID_DATA_DIR`,
//! `QUORUMID_API_ADDR`, `QUORUMID_RAFT_ADDR`, `QUORUMID_BOOTSTRAP`, and the two keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::biometrics::Thresholds;
use crate::raft::{NodeId, NodeInfo};
use crate::reads::ReadSettings;
use crate::registry::ClusterKeys;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
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
    pub keys: KeysConfig,
    #[serde(default)]
    pub raft: RaftSettings,
    #[serde(default)]
    pub reads: ReadConfig,
    #[serde(default)]
    pub biometrics: Thresholds,
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

/// The cluster secrets, as 64 hex characters each. Every node must hold the same ones.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub document_key: Option<String>,
    pub pseudonym_key: Option<String>,
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
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
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
        if let Some(v) = var("QUORUMID_DOCUMENT_KEY") {
            self.keys.document_key = Some(v);
        }
        if let Some(v) = var("QUORUMID_PSEUDONYM_KEY") {
            self.keys.pseudonym_key = Some(v);
        }
        Ok(())
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if self.node_id == 0 {
            bail!("node_id must be positive");
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
        let parse = |name: &str, value: &Option<String>| -> anyhow::Result<[u8; 32]> {
            let value = value.as_deref().with_context(|| {
                format!(
                    "keys.{name} is not set (64 hex characters, or the QUORUMID_{} variable)",
                    name.to_uppercase()
                )
            })?;
            let bytes = hex::decode(value.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .with_context(|| format!("keys.{name} must be exactly 64 hex characters"))?;
            Ok(bytes)
        };
        Ok(ClusterKeys::new(
            parse("document_key", &self.keys.document_key)?,
            parse("pseudonym_key", &self.keys.pseudonym_key)?,
        ))
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
            max_payload_entries: 64,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
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
}
