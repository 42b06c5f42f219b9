//! The nodes a client talks to, ranked nearest first.
//!
//! Each node has one long-lived gRPC channel (HTTP/2, multiplexed: no per-call connection
//! set-up). A background task probes every node with `grpc.health.v1` checks and keeps an
//! exponentially weighted moving average of the round trips; now and then it also asks the
//! node's `Status` to learn its province, its id and the leader's address. Calls that fail
//! mark a node down at once; the next successful probe brings it back.
//!
//! Ranking: healthy (SERVING) nodes first, then nodes not yet probed, then nodes that answer
//! but are not SERVING (stale, or no leader), then unreachable ones; within a class, nodes of
//! the preferred province first, then by round-trip time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::error::{Error, RetryKind};
use crate::tls::ClientTls;

/// The weight of a new round-trip sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;
/// Ask each node's `Status` (province, leader) every this many probes.
const STATUS_EVERY: u64 = 10;
/// The service whose health the probes check: the one platforms call.
const PROBED_SERVICE: &str = "quorumid.v1.Verifier";

/// What the client last saw of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Answers, knows a leader and is fresh enough for the default read level.
    Serving,
    /// Not probed yet.
    Unknown,
    /// Answers, but is stale or knows no leader: fine for LOCAL reads, not for others.
    NotServing,
    /// Did not answer its last probe or call.
    Unreachable,
}

/// A snapshot of one node's standing, for callers and the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub addr: String,
    pub node_id: Option<u64>,
    pub province: Option<String>,
    pub health: Health,
    /// Moving average of the probe round trips.
    pub rtt: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub addr: String,
    pub channel: Channel,
    state: Mutex<NodeState>,
}

#[derive(Clone, Debug)]
struct NodeState {
    rtt: Option<Duration>,
    health: Health,
    province: Option<String>,
    node_id: Option<u64>,
    probes: u64,
}

impl Node {
    /// `server_name`: the host name `addr`'s IP address was resolved from, if it was.
    fn new(addr: String, server_name: Option<&str>, connect: &Connect) -> Result<Node, Error> {
        let bad = |e: tonic::transport::Error| {
            Error::Config(format!("{addr:?} is not a valid endpoint: {e}"))
        };
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(bad)?
            .connect_timeout(connect.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if let Some(tls) = &connect.tls {
            if !addr.starts_with("https://") {
                return Err(Error::Config(format!(
                    "{addr:?}: with TLS settings, node addresses must be https://"
                )));
            }
            endpoint = endpoint.tls_config(tls.config(server_name)).map_err(bad)?;
        }
        let channel = endpoint.connect_lazy();
        Ok(Node {
            addr,
            channel,
            state: Mutex::new(NodeState {
                rtt: None,
                health: Health::Unknown,
                province: None,
                node_id: None,
                probes: 0,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        // The state is a few plain fields: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn view(&self) -> NodeView {
        let s = self.state();
        NodeView {
            addr: self.addr.clone(),
            node_id: s.node_id,
            province: s.province.clone(),
            health: s.health,
            rtt: s.rtt,
        }
    }

    /// A call to this node failed: stop preferring it until a probe says otherwise.
    pub fn failed(&self, kind: RetryKind) {
        let mut s = self.state();
        s.health = match kind {
            RetryKind::Stale | RetryKind::NoLeader => Health::NotServing.max(s.health),
            // BEHIND says nothing about the node's health, only about one token.
            RetryKind::Behind => s.health,
            RetryKind::ShuttingDown | RetryKind::Unreachable | RetryKind::Timeout => {
                Health::Unreachable
            }
        };
    }

    fn probed(&self, rtt: Duration, serving: bool) {
        let mut s = self.state();
        s.rtt = Some(match s.rtt {
            None => rtt,
            Some(avg) => avg.mul_f64(1.0 - EWMA_ALPHA) + rtt.mul_f64(EWMA_ALPHA),
        });
        s.health = if serving {
            Health::Serving
        } else {
            Health::NotServing
        };
        s.probes += 1;
    }

    fn probe_failed(&self) {
        let mut s = self.state();
        s.health = Health::Unreachable;
        s.probes += 1;
    }
}

/// The configured nodes (probed and ranked) and the addresses learned from the cluster
/// (the leader's, used for writes only).
#[derive(Debug)]
pub(crate) struct NodeSet {
    nodes: Vec<Arc<Node>>,
    learned: Mutex<HashMap<String, Arc<Node>>>,
    leader: Mutex<Option<String>>,
    province: Option<String>,
    connect: Connect,
    probe_timeout: Duration,
}

/// How every node's channel is made.
#[derive(Clone, Debug)]
pub(crate) struct Connect {
    pub timeout: Duration,
    pub tls: Option<ClientTls>,
}

impl NodeSet {
    /// One node per endpoint; a host name that resolves to several addresses gives one node
    /// per address.
    pub async fn resolve(
        endpoints: &[String],
        province: Option<String>,
        connect: Connect,
        probe_timeout: Duration,
    ) -> Result<NodeSet, Error> {
        let mut addrs: Vec<(String, Option<String>)> = Vec::new();
        for endpoint in endpoints {
            for (addr, name) in expand(endpoint).await? {
                if !addrs.iter().any(|(a, _)| *a == addr) {
                    addrs.push((addr, name));
                }
            }
        }
        if addrs.is_empty() {
            return Err(Error::Config("no endpoints given".into()));
        }
        let nodes = addrs
            .into_iter()
            .map(|(a, name)| Node::new(a, name.as_deref(), &connect).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(NodeSet {
            nodes,
            learned: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
            province,
            connect,
            probe_timeout,
        })
    }

    /// The configured nodes, best first.
    pub fn ranked(&self) -> Vec<Arc<Node>> {
        let mut ranked: Vec<(Health, bool, Duration, Arc<Node>)> = self
            .nodes
            .iter()
            .map(|n| {
                let s = n.state();
                let elsewhere = match (&self.province, &s.province) {
                    (Some(want), Some(have)) => want != have,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                (
                    s.health,
                    elsewhere,
                    s.rtt.unwrap_or(Duration::MAX),
                    n.clone(),
                )
            })
            .collect();
        ranked.sort_by_key(|(health, elsewhere, rtt, _)| (*health, *elsewhere, *rtt));
        ranked.into_iter().map(|(.., n)| n).collect()
    }

    pub fn views(&self) -> Vec<NodeView> {
        self.ranked().iter().map(|n| n.view()).collect()
    }

    /// The node at `addr`: a configured one, or a channel kept for a learned address.
    pub fn at(&self, addr: &str) -> Result<Arc<Node>, Error> {
        if let Some(n) = self.nodes.iter().find(|n| n.addr == addr) {
            return Ok(n.clone());
        }
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = learned.get(addr) {
            return Ok(n.clone());
        }
        let node = Arc::new(Node::new(addr.to_string(), None, &self.connect)?);
        learned.insert(addr.to_string(), node.clone());
        Ok(node)
    }

    pub fn leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_leader(&self, addr: &str) {
        if !addr.is_empty() {
            *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr.to_string());
        }
    }

    /// Stops sending writes first to `addr` (it did not answer).
    pub fn forget_leader(&self, addr: &str) {
        let mut leader = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        if leader.as_deref() == Some(addr) {
            *leader = None;
        }
    }

    /// Probes every configured node once, concurrently.
    pub async fn probe_all(&self) {
        futures::future::join_all(self.nodes.iter().map(|n| self.probe(n))).await;
    }

    async fn probe(&self, node: &Node) {
        let (first, periodic) = {
            let s = node.state();
            (s.province.is_none(), s.probes.is_multiple_of(STATUS_EVERY))
        };
        // Status first on a new connection, so that its set-up is not counted as a round trip.
        if first || periodic {
            let mut cluster = ClusterClient::new(node.channel.clone());
            let status =
                tokio::time::timeout(self.probe_timeout, cluster.status(pb::StatusRequest {}))
                    .await;
            match status {
                Ok(Ok(status)) => {
                    let status = status.into_inner();
                    self.set_leader(&status.leader_api_addr);
                    let mut s = node.state();
                    s.province = Some(status.province);
                    s.node_id = Some(status.node_id);
                }
                _ => {
                    node.probe_failed();
                    return;
                }
            }
        }
        let mut health = HealthClient::new(node.channel.clone());
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.probe_timeout,
            health.check(HealthCheckRequest {
                service: PROBED_SERVICE.to_string(),
            }),
        )
        .await;
        match answer {
            Ok(Ok(answer)) => node.probed(
                started.elapsed(),
                answer.into_inner().status == ServingStatus::Serving as i32,
            ),
            _ => node.probe_failed(),
        }
    }
}

/// Probes `set` every `interval` until the client is dropped.
pub(crate) async fn probe_forever(set: Weak<NodeSet>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(set) = set.upgrade() else { return };
        set.probe_all().await;
    }
}

/// `http://name:port` → one `http://ip:port` per address the name resolves to. IP literals,
/// and names that do not resolve now, are kept as given (the channel resolves them later).
async fn expand(endpoint: &str) -> Result<Vec<(String, Option<String>)>, Error> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| Error::Config(format!("{endpoint:?} is not a valid endpoint URI: {e}")))?;
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(Error::Config(format!(
            "{endpoint:?} needs a scheme and a host, like http://node-1:7100"
        )));
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let as_given = || vec![(endpoint.trim_end_matches('/').to_string(), None)];
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(as_given());
    }
    match tokio::net::lookup_host((bare, port)).await {
        Ok(addrs) => {
            let mut out: Vec<(String, Option<String>)> = addrs
                .map(|a| (format!("{scheme}://{a}"), Some(bare.to_string())))
                .collect();
            out.dedup();
            if out.is_empty() {
                return Ok(as_given());
            }
            Ok(out)
        }
        Err(_) => Ok(as_given()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Connect {
        Connect {
            timeout: Duration::from_secs(1),
            tls: None,
        }
    }

    async fn set(addrs: &[&str], province: Option<&str>) -> NodeSet {
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        NodeSet::resolve(
            &addrs,
            province.map(str::to_string),
            plain(),
            Duration::from_secs(1),
        )
        .await
        .unwrap()
    }

    fn set_state(n: &Node, health: Health, rtt_ms: u64, province: &str) {
        let mut s = n.state();
        s.health = health;
        s.rtt = Some(Duration::from_millis(rtt_ms));
        s.province = Some(province.to_string());
    }

    #[tokio::test]
    async fn ranking_prefers_healthy_then_province_then_latency() {
        let set = set(
            &[
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3",
                "http://127.0.0.1:4",
            ],
            Some("QC"),
        )
        .await;
        set_state(&set.nodes[0], Health::Serving, 9, "ON");
        set_state(&set.nodes[1], Health::Serving, 20, "QC");
        set_state(&set.nodes[2], Health::Unreachable, 1, "QC");
        set_state(&set.nodes[3], Health::Serving, 3, "ON");
        let order: Vec<String> = set.ranked().iter().map(|n| n.addr.clone()).collect();
        assert_eq!(
            order,
            [
                "http://127.0.0.1:2",
                "http://127.0.0.1:4",
                "http://127.0.0.1:1",
                "http://127.0.0.1:3"
            ]
        );
        // A stale answer moves a node behind every serving one.
        set.nodes[1].failed(RetryKind::Stale);
        assert_eq!(set.ranked()[0].addr, "http://127.0.0.1:4");
    }

    #[tokio::test]
    async fn round_trips_are_averaged() {
        let set = set(&["http://127.0.0.1:1"], None).await;
        let n = &set.nodes[0];
        n.probed(Duration::from_millis(100), true);
        n.probed(Duration::from_millis(0), true);
        assert_eq!(n.view().rtt, Some(Duration::from_millis(70)));
        n.probe_failed();
        assert_eq!(n.view().health, Health::Unreachable);
    }

    #[tokio::test]
    async fn endpoints_are_checked_and_names_expanded() {
        let err = NodeSet::resolve(
            &["not a uri".to_string()],
            None,
            plain(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("not a valid endpoint"), "{err}");
        let set = set(&["http://localhost:7100", "http://127.0.0.1:7100/"], None).await;
        let addrs: Vec<String> = set.nodes.iter().map(|n| n.addr.clone()).collect();
        assert!(
            addrs.contains(&"http://127.0.0.1:7100".to_string()),
            "{addrs:?}"
        );
        assert!(
            addrs.iter().all(|a| !a.contains("localhost")),
            "names are resolved: {addrs:?}"
        );
    }
}
