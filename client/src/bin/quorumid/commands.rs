//! The subcommands: their arguments and what each one calls and prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use quorumid_client::{
    Authority, Client, CommitToken, Consistency, Enrollment, MembershipChange, NewLearner, Reason,
    RequestId, StatusChange, Template, Verification, VerifyOptions, pb,
};
use serde_json::json;

use crate::{Cli, Output, bulk};

/// `verify` answered, and the identity is not valid (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("the identity is {0}")]
pub struct NotValid(pub String);

/// The arguments do not make sense together (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

#[derive(Subcommand)]
pub enum Command {
    /// Enroll one identity (as a registrar).
    Enroll(EnrollArgs),
    /// Enroll many: a JSON-lines file, or a directory of `*.json` files, one identity each.
    BulkEnroll(bulk::BulkArgs),
    /// Is this identity valid? (as a platform)
    Verify(VerifyArgs),
    /// ACTIVE|SUSPENDED -> REVOKED (as an authority).
    Revoke(ChangeArgs),
    /// ACTIVE -> SUSPENDED (as an authority).
    Suspend(ChangeArgs),
    /// SUSPENDED -> ACTIVE (as an authority).
    Reinstate(ChangeArgs),
    /// A record's status and history (never templates or document numbers).
    Record {
        identity: String,
        #[command(flatten)]
        level: LevelArgs,
    },
    /// Cluster operations (as an operator).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Every member's role, applied index, watermark and state digest.
    Status,
    /// The nodes this client knows, nearest first, as it measures them.
    Nodes,
    /// Add a node as a learner (waits until it has caught up).
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
    /// Remove members.
    Remove { ids: Vec<u64> },
    /// Hand leadership to another voter (the most caught-up one unless --to is given).
    TransferLeader {
        #[arg(long)]
        to: Option<u64>,
    },
    /// Build a snapshot at the leader now.
    Snapshot,
}

#[derive(Args)]
pub struct AuthorityArgs {
    /// The acting office's id (default: "registrar-<province>" / "authority-<province>").
    #[arg(long)]
    pub authority: Option<String>,
    /// The province the authority is scoped to.
    #[arg(long)]
    pub authority_province: Option<String>,
    /// Act as a national authority.
    #[arg(long)]
    pub national: bool,
}

impl AuthorityArgs {
    /// The authority, defaulting its province to `default_province` when given.
    pub fn build(&self, role: &str, default_province: Option<&str>) -> anyhow::Result<Authority> {
        if self.national {
            return Ok(Authority::national(
                self.authority.clone().unwrap_or_else(|| "national".into()),
            ));
        }
        let province = self
            .authority_province
            .as_deref()
            .or(default_province)
            .ok_or_else(|| Usage("give --authority-province or --national".into()))?;
        let id = self
            .authority
            .clone()
            .unwrap_or_else(|| format!("{role}-{}", province.to_lowercase()));
        Ok(Authority::provincial(id, province))
    }
}

#[derive(Args)]
pub struct TemplateArgs {
    /// A face embedding file: little-endian f32 values.
    #[arg(long)]
    pub face: Option<PathBuf>,
    /// The model that made the face embedding.
    #[arg(long, default_value = "sface-2021dec")]
    pub face_model: String,
    /// A face photograph (PNG, JPEG or PGM, at most 1 MiB): the node embeds it.
    #[arg(long, conflicts_with = "face")]
    pub face_image: Option<PathBuf>,
    /// An ISO/IEC 19794-2:2005 finger minutiae record (repeat for several fingers).
    #[arg(long)]
    pub finger: Vec<PathBuf>,
}

impl TemplateArgs {
    pub fn load(&self) -> anyhow::Result<Vec<Template>> {
        let mut templates = Vec::new();
        if let Some(path) = &self.face {
            templates.push(face_template(path, &self.face_model)?);
        }
        if let Some(path) = &self.face_image {
            let image =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            templates.push(Template::FaceImage { image });
        }
        for path in &self.finger {
            templates.push(finger_template(path)?);
        }
        Ok(templates)
    }
}

pub fn face_template(path: &Path, model: &str) -> anyhow::Result<Template> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return Err(Usage(format!(
            "{}: a face embedding file holds little-endian f32 values ({} bytes is not a \
             positive multiple of 4)",
            path.display(),
            bytes.len()
        ))
        .into());
    }
    let embedding = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Template::Face {
        model: model.to_string(),
        embedding,
    })
}

pub fn finger_template(path: &Path) -> anyhow::Result<Template> {
    let record = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Template::Finger { record })
}

#[derive(Args)]
pub struct EnrollArgs {
    /// The province the identity is homed in.
    #[arg(long)]
    pub province: String,
    /// The identity document's number (stored only as a keyed hash).
    #[arg(long)]
    pub document: String,
    /// The document's issuer (default: the province).
    #[arg(long)]
    pub issuer: Option<String>,
    #[command(flatten)]
    pub templates: TemplateArgs,
    /// Reuse to retry an enrollment safely (default: a fresh random id).
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub authority: AuthorityArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Level {
    Linearizable,
    Bounded,
    AtLeast,
    Local,
}

#[derive(Args)]
pub struct LevelArgs {
    #[arg(long, value_enum, default_value = "bounded")]
    pub level: Level,
    /// BOUNDED: the staleness bound.
    #[arg(long, default_value_t = 1000)]
    pub max_ms: u64,
    /// AT_LEAST: the commit token (log index) a write printed.
    #[arg(long)]
    pub min_index: Option<u64>,
}

impl LevelArgs {
    pub fn consistency(&self) -> anyhow::Result<Consistency> {
        Ok(match self.level {
            Level::Linearizable => Consistency::Linearizable,
            Level::Bounded => Consistency::Bounded(Duration::from_millis(self.max_ms)),
            Level::AtLeast => {
                Consistency::AtLeast(CommitToken(self.min_index.ok_or_else(|| {
                    Usage("--level at-least needs --min-index (a write's commit token)".into())
                })?))
            }
            Level::Local => Consistency::Local,
        })
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    pub identity: String,
    #[command(flatten)]
    pub level: LevelArgs,
    /// A biometric probe to match against the enrolled templates.
    #[command(flatten)]
    pub probe: TemplateArgs,
    /// Ask every member of the cluster, one line each (exit code from the nearest answer).
    #[arg(long)]
    pub everywhere: bool,
}

#[derive(Args)]
pub struct ChangeArgs {
    pub identity: String,
    /// key-compromise, document-lost, document-stolen, deceased, fraud, holder-request,
    /// superseded, court-order, under-investigation, issue-resolved.
    #[arg(long)]
    pub reason: Reason,
    /// Reuse to retry a change safely (default: a fresh random id).
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub authority: AuthorityArgs,
}

pub async fn run(cli: &Cli, client: &Client, out: &Output) -> anyhow::Result<()> {
    match &cli.command {
        Command::Enroll(args) => enroll(client, out, args).await,
        Command::BulkEnroll(args) => bulk::run(client, out, args).await,
        Command::Verify(args) => verify(cli, client, out, args).await,
        Command::Revoke(args) => change(client, out, args, "revoke").await,
        Command::Suspend(args) => change(client, out, args, "suspend").await,
        Command::Reinstate(args) => change(client, out, args, "reinstate").await,
        Command::Record { identity, level } => record(client, out, identity, level).await,
        Command::Cluster(command) => cluster(client, out, command).await,
    }
}

async fn enroll(client: &Client, out: &Output, args: &EnrollArgs) -> anyhow::Result<()> {
    let authority = args.authority.build("registrar", Some(&args.province))?;
    let mut enrollment = Enrollment::new(&args.province, &args.document, authority)
        .issuer(args.issuer.as_deref().unwrap_or(&args.province));
    for template in args.templates.load()? {
        enrollment = enrollment.template(template);
    }
    if let Some(id) = &args.request_id {
        enrollment = enrollment.request_id(RequestId::new(id.clone()));
    }
    let enrolled = client.enroll(&enrollment).await?;
    out.answer(
        json!({
            "identity_id": enrolled.identity_id,
            "commit_token": enrolled.token.index(),
            "request_id": enrollment.request_id.as_str(),
        }),
        || {
            format!(
                "enrolled {} (commit token {})",
                enrolled.identity_id,
                enrolled.token.index()
            )
        },
    );
    Ok(())
}

fn verification_json(v: &Verification) -> serde_json::Value {
    json!({
        "status": v.status.as_str(),
        "valid": v.is_valid(),
        "pseudonym": v.pseudonym,
        "probe_matched": v.probe_matched,
        "node_id": v.facts.node_id,
        "applied_index": v.facts.applied_index,
        "staleness_bound_ms": v.facts.staleness_bound.map(|d| d.as_millis() as u64),
    })
}

fn verification_row(v: &Verification) -> Vec<String> {
    vec![
        v.facts.node_id.to_string(),
        v.status.to_string(),
        match v.probe_matched {
            Some(true) => "match".into(),
            Some(false) => "no match".into(),
            None => "-".into(),
        },
        v.facts.applied_index.to_string(),
        v.facts
            .staleness_bound
            .map_or("unknown".into(), |d| format!("{}ms", d.as_millis())),
        if v.pseudonym.is_empty() {
            "-".into()
        } else {
            v.pseudonym.clone()
        },
    ]
}

const VERIFY_HEADERS: [&str; 6] = [
    "node",
    "status",
    "probe",
    "applied",
    "staleness",
    "pseudonym",
];

async fn verify(cli: &Cli, client: &Client, out: &Output, args: &VerifyArgs) -> anyhow::Result<()> {
    let probe = args.probe.load()?;
    if probe.len() > 1 {
        return Err(Usage("give one probe: --face, --face-image or one --finger".into()).into());
    }
    let options = VerifyOptions {
        consistency: Some(args.level.consistency()?),
        probe: probe.into_iter().next(),
        deadline: None,
        holder: None,
    };
    let answer = client.verify_with(&args.identity, options.clone()).await?;
    if args.everywhere {
        let mut rows = Vec::new();
        let mut all = Vec::new();
        for member in client.status().await?.members {
            let one = Client::builder()
                .endpoint(member.api_addr.clone())
                .platform(cli.platform.clone())
                .deadline(client.settings().attempt_timeout)
                .connect()
                .await?;
            match one.verify_with(&args.identity, options.clone()).await {
                Ok(v) => {
                    rows.push(verification_row(&v));
                    all.push(verification_json(&v));
                }
                Err(e) => {
                    let mut row = vec![member.node_id.to_string(), format!("error: {e}")];
                    row.resize(VERIFY_HEADERS.len(), String::new());
                    rows.push(row);
                    all.push(json!({ "node_id": member.node_id, "error": e.to_string() }));
                }
            }
        }
        if out.json {
            println!("{}", serde_json::Value::Array(all));
        } else {
            out.table(&VERIFY_HEADERS, &rows);
        }
    } else if out.json {
        println!("{}", verification_json(&answer));
    } else {
        out.table(&VERIFY_HEADERS, &[verification_row(&answer)]);
    }
    match answer.require_valid() {
        Ok(_) => Ok(()),
        Err(e) => Err(NotValid(e.to_string().trim_start_matches("the identity is ").into()).into()),
    }
}

async fn change(
    client: &Client,
    out: &Output,
    args: &ChangeArgs,
    what: &str,
) -> anyhow::Result<()> {
    let authority = args.authority.build("authority", None)?;
    let mut change = StatusChange::new(&args.identity, args.reason, authority);
    if let Some(id) = &args.request_id {
        change = change.request_id(RequestId::new(id.clone()));
    }
    let changed = match what {
        "revoke" => client.revoke(&change).await?,
        "suspend" => client.suspend(&change).await?,
        _ => client.reinstate(&change).await?,
    };
    out.answer(
        json!({
            "status": changed.status.as_str(),
            "commit_token": changed.token.index(),
            "request_id": change.request_id.as_str(),
        }),
        || {
            format!(
                "{} (commit token {}; read it back anywhere with --level at-least --min-index {})",
                changed.status,
                changed.token.index(),
                changed.token.index()
            )
        },
    );
    Ok(())
}

async fn record(
    client: &Client,
    out: &Output,
    identity: &str,
    level: &LevelArgs,
) -> anyhow::Result<()> {
    let record = client.record(identity, level.consistency()?).await?;
    let history: Vec<serde_json::Value> = record
        .history
        .iter()
        .map(|e| {
            json!({
                "kind": e.kind,
                "reason": e.reason.map(|r| r.name()),
                "authority": e.authority.as_ref().map(|a| &a.id),
                "at_unix_ms": e.at_unix_ms,
                "log_index": e.log_index,
            })
        })
        .collect();
    if out.json {
        println!(
            "{}",
            json!({
                "identity_id": record.identity_id,
                "status": record.status.as_str(),
                "home_province": record.home_province,
                "templates": record.templates.iter().map(|(f, m)| json!({"format": f, "model": m})).collect::<Vec<_>>(),
                "history": history,
                "node_id": record.facts.node_id,
                "applied_index": record.facts.applied_index,
            })
        );
        return Ok(());
    }
    println!(
        "{} {} (home {}; templates: {})",
        record.identity_id,
        record.status,
        record.home_province,
        if record.templates.is_empty() {
            "none".to_string()
        } else {
            record
                .templates
                .iter()
                .map(|(f, m)| format!("{f}/{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let rows: Vec<Vec<String>> = record
        .history
        .iter()
        .map(|e| {
            vec![
                e.log_index.to_string(),
                e.kind.to_string(),
                e.reason.map_or("-".into(), |r| r.name()),
                e.authority.as_ref().map_or("-".into(), |a| a.id.clone()),
                e.at_unix_ms.to_string(),
            ]
        })
        .collect();
    out.table(&["index", "event", "reason", "by", "at_unix_ms"], &rows);
    Ok(())
}

fn name(s: &str, prefix: &str) -> String {
    s.trim_start_matches(prefix).to_string()
}

async fn cluster(client: &Client, out: &Output, command: &ClusterCommand) -> anyhow::Result<()> {
    let membership = |r: pb::MembershipResponse| {
        let members: Vec<String> = r
            .members
            .iter()
            .map(|m| {
                let role = pb::MemberRole::try_from(m.role)
                    .map(|r| name(r.as_str_name(), "MEMBER_ROLE_").to_lowercase())
                    .unwrap_or_default();
                format!("{}({role})", m.node_id)
            })
            .collect();
        out.answer(
            json!({ "log_index": r.log_index, "members": members }),
            || {
                format!(
                    "membership changed at log index {}: {}",
                    r.log_index,
                    members.join(" ")
                )
            },
        );
    };
    match command {
        ClusterCommand::Status => status(client, out).await,
        ClusterCommand::Nodes => {
            let rows: Vec<Vec<String>> = client
                .nodes()
                .into_iter()
                .map(|n| {
                    vec![
                        n.addr,
                        n.node_id.map_or("-".into(), |i| i.to_string()),
                        n.province.unwrap_or_else(|| "-".into()),
                        format!("{:?}", n.health).to_uppercase(),
                        n.rtt
                            .map_or("-".into(), |d| format!("{:.2}ms", d.as_secs_f64() * 1e3)),
                    ]
                })
                .collect();
            out.table(&["endpoint", "node", "province", "health", "rtt"], &rows);
            Ok(())
        }
        ClusterCommand::AddLearner {
            id,
            province,
            api_addr,
            raft_addr,
        } => {
            let learner = NewLearner {
                node_id: *id,
                province: province.clone(),
                api_addr: api_addr.clone(),
                raft_addr: raft_addr.clone(),
            };
            membership(client.add_learner(&learner).await?);
            Ok(())
        }
        ClusterCommand::Promote { ids } => {
            membership(
                client
                    .change_membership(MembershipChange::Promote(ids.clone()))
                    .await?,
            );
            Ok(())
        }
        ClusterCommand::Demote { ids } => {
            membership(
                client
                    .change_membership(MembershipChange::Demote(ids.clone()))
                    .await?,
            );
            Ok(())
        }
        ClusterCommand::Remove { ids } => {
            membership(
                client
                    .change_membership(MembershipChange::Remove(ids.clone()))
                    .await?,
            );
            Ok(())
        }
        ClusterCommand::TransferLeader { to } => {
            let leader = client.transfer_leader(*to).await?;
            out.answer(json!({ "leader": leader }), || {
                format!("leadership handed to node {leader}")
            });
            Ok(())
        }
        ClusterCommand::Snapshot => {
            let index = client.trigger_snapshot().await?;
            out.answer(json!({ "snapshot_index": index }), || {
                format!("snapshot at log index {index}")
            });
            Ok(())
        }
    }
}

async fn status(client: &Client, out: &Output) -> anyhow::Result<()> {
    let here = client.status().await?;
    if !out.json {
        println!(
            "term {}  leader {}  joint membership: {}",
            here.term,
            here.leader_id.map_or("none".into(), |l| l.to_string()),
            here.joint_membership
        );
    }
    let mut rows = Vec::new();
    for m in &here.members {
        let member = pb::MemberRole::try_from(m.role)
            .map(|r| name(r.as_str_name(), "MEMBER_ROLE_"))
            .unwrap_or_default();
        let mut row = vec![
            m.node_id.to_string(),
            m.province.clone(),
            member,
            m.api_addr.clone(),
        ];
        match client.status_at(&m.api_addr).await {
            Ok(s) => {
                let role = pb::NodeRole::try_from(s.role)
                    .map(|r| name(r.as_str_name(), "NODE_ROLE_"))
                    .unwrap_or_default();
                row.extend([
                    role,
                    s.applied_index.to_string(),
                    m.replication_lag.map_or("-".into(), |l| l.to_string()),
                    s.watermark_age_ms.map_or("-".into(), |a| format!("{a}ms")),
                    s.state_digest.chars().take(16).collect(),
                ]);
            }
            Err(e) => row.extend([
                "UNREACHABLE".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                e.to_string(),
            ]),
        }
        rows.push(row);
    }
    out.table(
        &[
            "node",
            "province",
            "member",
            "api",
            "role",
            "applied",
            "lag",
            "watermark",
            "digest",
        ],
        &rows,
    );
    Ok(())
}
