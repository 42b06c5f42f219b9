//! How a node without data becomes a member of the cluster (the StatefulSet bootstrap).
//!
//! At start a node does exactly one of three things:
//! - **resume**: it has Raft state (a vote or log entries): it carries on as the member it was;
//! - **initialise**: it has no state and [`NodeConfig::initialises`] (the seed rule: pod 0 of
//!   the seed province, or `bootstrap`), and none of its join addresses answers for an
//!   existing cluster: it initialises a new cluster of `initial_members` (by default itself);
//! - **join**: it has no state and join addresses: it asks them, one after the other and
//!   again with backoff, to add it as a learner (`Cluster.AddLearner`), following the
//!   `quorumid-leader-addr` hint of a node that is not the leader, until the membership it
//!   receives through replication lists it.
//!
//! Promotion to voter is never automatic: an operator promotes learners (`quorumid cluster promote`), so
//! that no pod start changes the quorum.

use std::sync::Arc;
use std::time::Duration;

use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::api::errors::LEADER_ADDR_KEY;
use crate::config::NodeConfig;
use crate::raft::{NodeId, NodeInfo, Raft};
use crate::security::Tls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A Status call while probing for an existing cluster (it delays the seed's first start).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long to wait, after the leader accepted us, for the membership to reach this node.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(10);

/// What a node does at start when it finds its own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    Resume,
    Initialise,
    Join,
    /// No state, not the seed and no join address: wait to be added by an operator.
    Wait,
}

/// The start rule (see the module comment). `cluster_answers` is asked only when it matters:
/// whether a join address answered for an existing cluster.
pub async fn start_mode(
    config: &NodeConfig,
    initialised: bool,
    cluster_answers: impl AsyncFnOnce() -> Option<String>,
) -> StartMode {
    if initialised {
        return StartMode::Resume;
    }
    if config.initialises() {
        match cluster_answers().await {
            None => return StartMode::Initialise,
            Some(addr) => tracing::warn!(
                at = %addr,
                "this node has no data and is the seed, but a cluster already answers: \
                 joining it instead of initialising a second one"
            ),
        }
    }
    if config.membership.join.is_empty() {
        StartMode::Wait
    } else {
        StartMode::Join
    }
}

/// The first join address whose node is a member of an initialised cluster, if any answers.
/// This node's own address is skipped: its port is bound already but not served yet.
pub async fn existing_cluster(config: &NodeConfig, tls: Option<&Tls>) -> Option<String> {
    for addr in config
        .membership
        .join
        .iter()
        .filter(|a| **a != config.api_addr)
    {
        let Ok(mut client) = client(addr, tls).await else {
            continue;
        };
        let asked = tokio::time::timeout(PROBE_TIMEOUT, client.status(pb::StatusRequest {}));
        let status = match asked.await {
            Ok(Ok(s)) => s.into_inner(),
            _ => continue,
        };
        if status.node_id != config.node_id && !status.members.is_empty() {
            return Some(addr.clone());
        }
    }
    None
}

/// Where joining stands, for tests and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinProgress {
    /// AddLearner calls made so far (including ones that failed).
    pub attempts: u32,
    pub joined: bool,
    pub last_error: Option<String>,
}

fn is_member(raft: &Raft, id: NodeId) -> bool {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&id)
        .is_some()
}

async fn client(addr: &str, tls: Option<&Tls>) -> Result<ClusterClient<Channel>, String> {
    let mut endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|e| format!("join address {addr:?} is invalid: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = tls
            .client(endpoint)
            .map_err(|e| format!("TLS settings for {addr}: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    Ok(ClusterClient::new(channel))
}

/// The outcome of one AddLearner call.
enum Asked {
    Added,
    /// Not the leader; the leader's API address, when the node knows it.
    Redirect(Option<String>),
    Failed(String),
}

async fn ask(addr: &str, tls: Option<&Tls>, request: &pb::AddLearnerRequest) -> Asked {
    let mut client = match client(addr, tls).await {
        Ok(c) => c,
        Err(e) => return Asked::Failed(e),
    };
    match client.add_learner(request.clone()).await {
        Ok(_) => Asked::Added,
        Err(status) => {
            let hint = status
                .metadata()
                .get(LEADER_ADDR_KEY)
                .and_then(|v| v.to_str().ok())
                .filter(|a| !a.is_empty())
                .map(String::from);
            if hint.is_some() || status.code() == tonic::Code::Unavailable {
                Asked::Redirect(hint)
            } else {
                Asked::Failed(format!("{addr} refused: {}", status.message()))
            }
        }
    }
}

/// Asks the join addresses to add this node as a learner until the membership lists it.
/// Runs until it succeeds (or its task is aborted when the node stops).
pub async fn join(
    raft: Raft,
    node_id: NodeId,
    info: NodeInfo,
    addrs: Vec<String>,
    tls: Option<Arc<Tls>>,
    progress: watch::Sender<JoinProgress>,
) {
    let tls = tls.as_deref();
    let request = pb::AddLearnerRequest {
        node_id,
        province: info.province,
        api_addr: info.api_addr,
        raft_addr: info.raft_addr,
        wait_caught_up: false,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        if is_member(&raft, node_id) {
            tracing::info!("this node is a member of the cluster");
            progress.send_modify(|p| p.joined = true);
            return;
        }
        for addr in &addrs {
            progress.send_modify(|p| p.attempts += 1);
            let mut outcome = ask(addr, tls, &request).await;
            if let Asked::Redirect(Some(leader)) = &outcome {
                progress.send_modify(|p| p.attempts += 1);
                outcome = ask(leader, tls, &request).await;
            }
            match outcome {
                Asked::Added => {
                    tracing::info!(via = %addr, "added as a learner; waiting for the membership");
                    let _ = raft
                        .wait(Some(MEMBERSHIP_WAIT))
                        .metrics(
                            |m| {
                                m.membership_config
                                    .membership()
                                    .get_node(&node_id)
                                    .is_some()
                            },
                            "membership lists this node",
                        )
                        .await;
                    break;
                }
                Asked::Redirect(_) => {
                    let e = format!("{addr} knows no leader yet");
                    tracing::info!(error = %e, "joining: will retry");
                    progress.send_modify(|p| p.last_error = Some(e));
                }
                Asked::Failed(e) => {
                    tracing::info!(error = %e, "joining: will retry");
                    progress.send_modify(|p| p.last_error = Some(e));
                }
            }
        }
        if !is_member(&raft, node_id) {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
