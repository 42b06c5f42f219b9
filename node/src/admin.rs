//! `quorumid-node admin`: a small operator CLI over the public gRPC API, enough for the
//! README walk-through (enroll, verify at every node, revoke, cluster status). The platform
//! client library and its full CLI live in `client/`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use quorumid_proto::v1::registry_client::RegistryClient;
use quorumid_proto::v1::verifier_client::VerifierClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, clap::Args)]
pub struct AdminOptions {
    /// Any node's API address.
    #[arg(long, default_value = "http://127.0.0.1:7101", env = "QUORUMID_NODE")]
    pub node: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LevelArg {
    Linearizable,
    Bounded,
    AtLeast,
    Local,
}

#[derive(Debug, clap::Args)]
pub struct AuthorityArgs {
    /// The acting authority's id (defaults to "authority-<province>" or "national").
    #[arg(long)]
    pub authority: Option<String>,
    /// The authority's province scope.
    #[arg(long, default_value = "ON")]
    pub authority_province: String,
    /// Act as a national authority.
    #[arg(long)]
    pub national: bool,
}

impl AuthorityArgs {
    fn build(&self) -> pb::Authority {
        let id = self.authority.clone().unwrap_or_else(|| {
            if self.national {
                "national".to_string()
            } else {
                format!("authority-{}", self.authority_province)
            }
        });
        pb::Authority {
            id,
            province: self.authority_province.clone(),
            national: self.national,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Every member's role, applied index and state digest.
    Status,
    /// Enroll a new identity.
    Enroll {
        #[arg(long)]
        province: String,
        #[arg(long)]
        document: String,
        /// Document issuer (defaults to the province).
        #[arg(long)]
        issuer: Option<String>,
        /// Face embedding file: little-endian f32 values.
        #[arg(long)]
        face: Option<std::path::PathBuf>,
        #[arg(long, default_value = "sface-2021dec")]
        face_model: String,
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        authority: AuthorityArgs,
    },
    /// Verify an identity as a platform would.
    Verify {
        identity: String,
        #[arg(long, default_value = "demo-platform")]
        platform: String,
        #[arg(long, value_enum, default_value = "bounded")]
        level: LevelArg,
        #[arg(long, default_value_t = 1000)]
        max_ms: u64,
        #[arg(long, default_value_t = 0)]
        min_index: u64,
        /// Ask every member of the cluster, one line each.
        #[arg(long)]
        everywhere: bool,
    },
    /// ACTIVE|SUSPENDED -> REVOKED.
    Revoke {
        identity: String,
        #[arg(long, default_value = "fraud")]
        reason: String,
        #[command(flatten)]
        authority: AuthorityArgs,
    },
    /// ACTIVE -> SUSPENDED.
    Suspend {
        identity: String,
        #[arg(long, default_value = "under-investigation")]
        reason: String,
        #[command(flatten)]
        authority: AuthorityArgs,
    },
    /// SUSPENDED -> ACTIVE.
    Reinstate {
        identity: String,
        #[arg(long, default_value = "issue-resolved")]
        reason: String,
        #[command(flatten)]
        authority: AuthorityArgs,
    },
    /// A record's status and history.
    Record { identity: String },
    /// Add a node as a learner.
    AddLearner {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        province: String,
        #[arg(long)]
        api_addr: String,
        #[arg(long)]
        raft_addr: String,
    },
    /// Make learners voters.
    Promote { ids: Vec<u64> },
    /// Make voters learners.
    Demote { ids: Vec<u64> },
    /// Remove members from the cluster.
    Remove { ids: Vec<u64> },
    /// Build a snapshot now.
    Snapshot,
}

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("{addr:?} is not a valid address"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

pub async fn cluster_client(addr: &str) -> anyhow::Result<ClusterClient<Channel>> {
    Ok(ClusterClient::new(channel(addr).await?))
}

fn reason_code(name: &str) -> anyhow::Result<i32> {
    let wanted = format!("REASON_CODE_{}", name.to_uppercase().replace('-', "_"));
    pb::ReasonCode::from_str_name(&wanted)
        .map(|r| r as i32)
        .with_context(|| format!("unknown reason {name:?} (e.g. fraud, deceased, document-lost)"))
}

fn level(level: LevelArg, max_ms: u64, min_index: u64) -> pb::ReadConsistency {
    let level = match level {
        LevelArg::Linearizable => pb::ConsistencyLevel::Linearizable,
        LevelArg::Bounded => pb::ConsistencyLevel::Bounded,
        LevelArg::AtLeast => pb::ConsistencyLevel::AtLeast,
        LevelArg::Local => pb::ConsistencyLevel::Local,
    };
    pb::ReadConsistency {
        level: level as i32,
        max_staleness_ms: max_ms,
        min_index,
    }
}

fn status_name(status: i32) -> &'static str {
    pb::IdentityStatus::try_from(status)
        .map(|s| s.as_str_name().trim_start_matches("IDENTITY_STATUS_"))
        .unwrap_or("?")
}

fn explain(status: tonic::Status) -> anyhow::Error {
    let reason = status
        .metadata()
        .get("quorumid-reason")
        .and_then(|v| v.to_str().ok())
        .map(|r| format!(" [{r}]"))
        .unwrap_or_default();
    anyhow::anyhow!("{:?}{reason}: {}", status.code(), status.message())
}

fn request_id(given: Option<String>) -> String {
    given.unwrap_or_else(|| format!("cli-{}", hex::encode(rand::random::<[u8; 8]>())))
}

pub async fn run(options: AdminOptions) -> anyhow::Result<()> {
    let node = options.node.as_str();
    match options.command {
        AdminCommand::Status => status(node).await,
        AdminCommand::Enroll {
            province,
            document,
            issuer,
            face,
            face_model,
            request_id: rid,
            authority,
        } => {
            let mut templates = Vec::new();
            if let Some(path) = face {
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                templates.push(pb::Template {
                    format: pb::TemplateFormat::FaceEmbeddingF32 as i32,
                    model_id: face_model,
                    data,
                });
            }
            let mut registry = RegistryClient::new(channel(node).await?);
            let answer = registry
                .enroll(pb::EnrollRequest {
                    request_id: request_id(rid),
                    document_issuer: issuer.unwrap_or_else(|| province.clone()),
                    home_province: province,
                    document_number: document,
                    templates,
                    authority: Some(authority.build()),
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "enrolled {} at log index {}",
                answer.identity_id, answer.log_index
            );
            Ok(())
        }
        AdminCommand::Verify {
            identity,
            platform,
            level: l,
            max_ms,
            min_index,
            everywhere,
        } => {
            let nodes = if everywhere {
                let mut cluster = cluster_client(node).await?;
                let status = cluster
                    .status(pb::StatusRequest {})
                    .await
                    .map_err(explain)?;
                status
                    .into_inner()
                    .members
                    .into_iter()
                    .map(|m| m.api_addr)
                    .collect()
            } else {
                vec![node.to_string()]
            };
            for addr in nodes {
                let request = pb::VerifyRequest {
                    identity_id: identity.clone(),
                    platform_id: platform.clone(),
                    consistency: Some(level(l, max_ms, min_index)),
                    probe: None,
                };
                let answer = match channel(&addr).await {
                    Ok(c) => VerifierClient::new(c)
                        .verify(request)
                        .await
                        .map_err(explain),
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(a) => {
                        let a = a.into_inner();
                        let facts = a.facts.unwrap_or_default();
                        println!(
                            "{addr}: {} pseudonym={} applied_index={} staleness_bound_ms={}",
                            status_name(a.status),
                            if a.pseudonym.is_empty() {
                                "-"
                            } else {
                                &a.pseudonym
                            },
                            facts.applied_index,
                            facts
                                .staleness_bound_ms
                                .map_or("unknown".into(), |s| s.to_string()),
                        );
                    }
                    Err(e) => println!("{addr}: {e}"),
                }
            }
            Ok(())
        }
        AdminCommand::Revoke {
            identity,
            reason,
            authority,
        } => change(node, "revoke", identity, &reason, &authority).await,
        AdminCommand::Suspend {
            identity,
            reason,
            authority,
        } => change(node, "suspend", identity, &reason, &authority).await,
        AdminCommand::Reinstate {
            identity,
            reason,
            authority,
        } => change(node, "reinstate", identity, &reason, &authority).await,
        AdminCommand::Record { identity } => {
            let mut registry = RegistryClient::new(channel(node).await?);
            let r = registry
                .get_record(pb::GetRecordRequest {
                    identity_id: identity,
                    consistency: Some(level(LevelArg::Linearizable, 0, 0)),
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "{} {} (home {})",
                r.identity_id,
                status_name(r.status),
                r.home_province
            );
            for e in r.history {
                let kind = pb::history_event::Kind::try_from(e.kind)
                    .map(|k| k.as_str_name().trim_start_matches("KIND_"))
                    .unwrap_or("?");
                let reason = pb::ReasonCode::try_from(e.reason)
                    .map(|k| k.as_str_name().trim_start_matches("REASON_CODE_"))
                    .unwrap_or("?");
                let by = e.authority.map(|a| a.id).unwrap_or_default();
                println!(
                    "  index {:>6}  {kind:<11} {reason:<20} by {by}",
                    e.log_index
                );
            }
            Ok(())
        }
        AdminCommand::AddLearner {
            id,
            province,
            api_addr,
            raft_addr,
        } => {
            let mut cluster = cluster_client(node).await?;
            let r = cluster
                .add_learner(pb::AddLearnerRequest {
                    node_id: id,
                    province,
                    api_addr,
                    raft_addr,
                    wait_caught_up: true,
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!("membership changed at log index {}", r.log_index);
            Ok(())
        }
        AdminCommand::Promote { ids } => {
            membership(
                node,
                pb::change_membership_request::Change::Promote(pb::NodeIds { ids }),
            )
            .await
        }
        AdminCommand::Demote { ids } => {
            membership(
                node,
                pb::change_membership_request::Change::Demote(pb::NodeIds { ids }),
            )
            .await
        }
        AdminCommand::Remove { ids } => {
            membership(
                node,
                pb::change_membership_request::Change::Remove(pb::NodeIds { ids }),
            )
            .await
        }
        AdminCommand::Snapshot => {
            let mut cluster = cluster_client(node).await?;
            let r = cluster
                .trigger_snapshot(pb::TriggerSnapshotRequest {})
                .await
                .map_err(explain)?;
            println!("snapshot at log index {}", r.into_inner().snapshot_index);
            Ok(())
        }
    }
}

async fn change(
    node: &str,
    what: &str,
    identity: String,
    reason: &str,
    authority: &AuthorityArgs,
) -> anyhow::Result<()> {
    let mut registry = RegistryClient::new(channel(node).await?);
    let request = pb::StatusChangeRequest {
        request_id: request_id(None),
        identity_id: identity,
        reason: reason_code(reason)?,
        authority: Some(authority.build()),
    };
    let answer = match what {
        "revoke" => registry.revoke(request).await,
        "suspend" => registry.suspend(request).await,
        _ => registry.reinstate(request).await,
    }
    .map_err(explain)?
    .into_inner();
    println!(
        "{} at log index {} (use --level at-least --min-index {} to read your write)",
        status_name(answer.status),
        answer.log_index,
        answer.log_index
    );
    Ok(())
}

async fn membership(
    node: &str,
    change: pb::change_membership_request::Change,
) -> anyhow::Result<()> {
    let leader = {
        let mut cluster = cluster_client(node).await?;
        let status = cluster
            .status(pb::StatusRequest {})
            .await
            .map_err(explain)?
            .into_inner();
        if status.leader_api_addr.is_empty() {
            bail!("no leader is known at {node}");
        }
        status.leader_api_addr
    };
    let mut cluster = cluster_client(&leader).await?;
    let r = cluster
        .change_membership(pb::ChangeMembershipRequest {
            change: Some(change),
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!("membership changed at log index {}", r.log_index);
    Ok(())
}

async fn status(node: &str) -> anyhow::Result<()> {
    let mut cluster = cluster_client(node).await?;
    let here = cluster
        .status(pb::StatusRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "term {}  leader {}  joint membership: {}",
        here.term,
        here.leader_id.map_or("none".into(), |l| l.to_string()),
        here.joint_membership
    );
    println!(
        "{:<5} {:<8} {:<8} {:<10} {:<24} {:>8} {:>9} {:<16}",
        "node", "province", "member", "role", "api", "applied", "watermark", "state digest"
    );
    for m in here.members {
        let member = pb::MemberRole::try_from(m.role)
            .map(|r| r.as_str_name().trim_start_matches("MEMBER_ROLE_"))
            .unwrap_or("?");
        let seen = async {
            let mut c = cluster_client(&m.api_addr).await?;
            Ok::<_, anyhow::Error>(c.status(pb::StatusRequest {}).await?.into_inner())
        }
        .await;
        match seen {
            Ok(s) => {
                let role = pb::NodeRole::try_from(s.role)
                    .map(|r| r.as_str_name().trim_start_matches("NODE_ROLE_"))
                    .unwrap_or("?");
                println!(
                    "{:<5} {:<8} {:<8} {:<10} {:<24} {:>8} {:>9} {:<16}",
                    m.node_id,
                    m.province,
                    member,
                    role,
                    m.api_addr,
                    s.applied_index,
                    s.watermark_age_ms.map_or("-".into(), |a| format!("{a}ms")),
                    &s.state_digest[..16.min(s.state_digest.len())],
                );
            }
            Err(_) => println!(
                "{:<5} {:<8} {:<8} {:<10} {:<24} (unreachable)",
                m.node_id, m.province, member, "-", m.api_addr
            ),
        }
    }
    Ok(())
}
