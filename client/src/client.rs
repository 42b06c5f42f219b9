//! [`Client`]: the calls a platform, a registrar, an authority or an operator makes, each run
//! against the cluster with failover ([`crate::failover`]) over the ranked node set
//! ([`crate::nodes`]). [`ClientBuilder`] holds the settings.

use std::sync::Arc;
use std::time::Duration;

use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use quorumid_proto::v1::registry_client::RegistryClient;
use quorumid_proto::v1::verifier_client::VerifierClient;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::failover::{self, Plan};
use crate::nodes::{self, NodeSet, NodeView};
use crate::tls::ClientTls;
use crate::types::{
    CommitToken, Consistency, Enrolled, Enrollment, IdentityStatus, ReadFacts, Record,
    StatusChange, StatusChanged, Template, Verification,
};

/// Everything a client can be tuned with; [`ClientBuilder`] sets it.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The platform id sent with verifications (also the pseudonym sector).
    pub platform_id: String,
    /// The level of reads that do not name one.
    pub consistency: Consistency,
    /// How long a call may take in all, across every node it tries.
    pub deadline: Duration,
    /// How long one node may take to answer before the next one is tried.
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    /// How often every node's round-trip time and health are measured.
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// Reads: also ask the second-best node if the best has not answered after this long.
    pub hedge_after: Option<Duration>,
    /// Prefer nodes of this province among equally healthy ones.
    pub province: Option<String>,
    /// Mutual TLS: the cluster CA and this caller's certificate (node addresses `https://`).
    pub tls: Option<ClientTls>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            platform_id: "unnamed-platform".to_string(),
            consistency: Consistency::default(),
            deadline: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            hedge_after: None,
            province: None,
            tls: None,
        }
    }
}

/// Builds a [`Client`]: endpoints, then settings, then [`ClientBuilder::connect`].
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    settings: Settings,
}

impl ClientBuilder {
    /// A node's API address (`http://host:port`). A host name that resolves to several
    /// addresses (a headless Kubernetes Service) counts as one node per address.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> ClientBuilder {
        self.endpoints.push(endpoint.into());
        self
    }

    pub fn endpoints<S: Into<String>>(mut self, endpoints: impl IntoIterator<Item = S>) -> Self {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    pub fn platform(mut self, platform_id: impl Into<String>) -> ClientBuilder {
        self.settings.platform_id = platform_id.into();
        self
    }

    pub fn consistency(mut self, consistency: Consistency) -> ClientBuilder {
        self.settings.consistency = consistency;
        self
    }

    pub fn deadline(mut self, deadline: Duration) -> ClientBuilder {
        self.settings.deadline = deadline;
        self
    }

    pub fn attempt_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.settings.attempt_timeout = timeout;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.settings.connect_timeout = timeout;
        self
    }

    pub fn probe_interval(mut self, interval: Duration) -> ClientBuilder {
        self.settings.probe_interval = interval;
        self
    }

    pub fn hedge_after(mut self, delay: Duration) -> ClientBuilder {
        self.settings.hedge_after = Some(delay);
        self
    }

    pub fn province(mut self, province: impl Into<String>) -> ClientBuilder {
        self.settings.province = Some(province.into());
        self
    }

    /// Mutual TLS with the cluster (see SECURITY.md): required by nodes configured with `[tls]`.
    pub fn tls(mut self, tls: ClientTls) -> ClientBuilder {
        self.settings.tls = Some(tls);
        self
    }

    /// Resolves the endpoints, probes every node once (bounded by the probe timeout) so the
    /// first call already goes to the nearest, and starts probing in the background.
    pub async fn connect(self) -> Result<Client, Error> {
        let s = self.settings;
        if s.deadline.is_zero() || s.attempt_timeout.is_zero() || s.probe_interval.is_zero() {
            return Err(Error::Config(
                "deadline, attempt timeout and probe interval must be positive".into(),
            ));
        }
        let nodes = Arc::new(
            NodeSet::resolve(
                &self.endpoints,
                s.province.clone(),
                nodes::Connect {
                    timeout: s.connect_timeout,
                    tls: s.tls.clone(),
                },
                s.probe_timeout,
            )
            .await?,
        );
        nodes.probe_all().await;
        let prober = tokio::spawn(nodes::probe_forever(
            Arc::downgrade(&nodes),
            s.probe_interval,
        ));
        Ok(Client {
            inner: Arc::new(Inner {
                nodes,
                settings: s,
                prober,
            }),
        })
    }
}

/// A connection to a quorumid cluster. Cheap to clone (clones share the connections and the
/// measurements); the background prober stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    nodes: Arc<NodeSet>,
    settings: Settings,
    prober: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.prober.abort();
    }
}

/// Per-call options of a verification.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Instead of the client's default level.
    pub consistency: Option<Consistency>,
    /// A biometric probe to match 1:1 against the identity's enrolled templates.
    pub probe: Option<Template>,
    /// The platform's challenge, signed by the holder's device (SECURITY.md has the message).
    pub holder: Option<pb::HolderChallenge>,
    /// Instead of the client's default deadline.
    pub deadline: Option<Duration>,
}

/// A membership change, made by the leader through joint consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    Promote(Vec<u64>),
    Demote(Vec<u64>),
    Remove(Vec<u64>),
}

/// A new member, joining as a learner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLearner {
    pub node_id: u64,
    pub province: String,
    pub api_addr: String,
    pub raft_addr: String,
}

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The configured nodes, best first, as last measured.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.inner.nodes.views()
    }

    /// The leader's API address, as last learned.
    pub fn leader(&self) -> Option<String> {
        self.inner.nodes.leader()
    }

    fn read_plan(&self, deadline: Option<Duration>) -> Plan {
        let s = &self.inner.settings;
        Plan {
            deadline: deadline.unwrap_or(s.deadline),
            attempt_timeout: s.attempt_timeout,
            hedge_after: s.hedge_after,
            to_leader: false,
            one_round: false,
        }
    }

    fn leader_plan(&self) -> Plan {
        let s = &self.inner.settings;
        Plan {
            deadline: s.deadline,
            attempt_timeout: s.attempt_timeout,
            hedge_after: None,
            to_leader: true,
            one_round: false,
        }
    }

    /// Is this identity valid? At the client's default consistency level.
    ///
    /// A revoked, suspended or unknown identity is an `Ok` answer with that status; use
    /// [`Verification::require_valid`] to turn it into an error.
    pub async fn verify(&self, identity_id: &str) -> Result<Verification, Error> {
        self.verify_with(identity_id, VerifyOptions::default())
            .await
    }

    pub async fn verify_with(
        &self,
        identity_id: &str,
        options: VerifyOptions,
    ) -> Result<Verification, Error> {
        let message = pb::VerifyRequest {
            identity_id: identity_id.to_string(),
            platform_id: self.inner.settings.platform_id.clone(),
            consistency: Some(
                options
                    .consistency
                    .unwrap_or(self.inner.settings.consistency)
                    .to_proto(),
            ),
            probe: options.probe.as_ref().map(Template::to_proto),
            holder: options.holder.clone(),
        };
        let answer = failover::run(
            &self.inner.nodes,
            self.read_plan(options.deadline),
            move |channel, timeout| {
                let mut verifier = VerifierClient::new(channel);
                let request = request(message.clone(), timeout);
                async move { verifier.verify(request).await.map(|r| r.into_inner()) }
            },
        )
        .await?;
        Ok(Verification {
            status: IdentityStatus::from_proto(answer.status),
            pseudonym: answer.pseudonym,
            probe_matched: answer.probe.map(|p| p.matched),
            facts: ReadFacts::from_proto(answer.facts),
        })
    }

    /// A record's status, history and enrolled template kinds.
    pub async fn record(
        &self,
        identity_id: &str,
        consistency: Consistency,
    ) -> Result<Record, Error> {
        let message = pb::GetRecordRequest {
            identity_id: identity_id.to_string(),
            consistency: Some(consistency.to_proto()),
        };
        let answer = failover::run(
            &self.inner.nodes,
            self.read_plan(None),
            move |channel, timeout| {
                let mut registry = RegistryClient::new(channel);
                let request = request(message.clone(), timeout);
                async move { registry.get_record(request).await.map(|r| r.into_inner()) }
            },
        )
        .await?;
        Ok(Record::from_proto(answer))
    }

    /// Enrolls a new identity. Retried across nodes with the enrollment's request id, so it
    /// is applied once however many times it is sent.
    pub async fn enroll(&self, enrollment: &Enrollment) -> Result<Enrolled, Error> {
        let message = enrollment.to_proto();
        let answer = failover::run(
            &self.inner.nodes,
            self.leader_plan(),
            move |channel, timeout| {
                let mut registry = RegistryClient::new(channel);
                let request = request(message.clone(), timeout);
                async move { registry.enroll(request).await.map(|r| r.into_inner()) }
            },
        )
        .await?;
        Ok(Enrolled {
            identity_id: answer.identity_id,
            token: CommitToken(answer.log_index),
        })
    }

    /// ACTIVE|SUSPENDED → REVOKED.
    pub async fn revoke(&self, change: &StatusChange) -> Result<StatusChanged, Error> {
        self.change_status(change, Action::Revoke).await
    }

    /// ACTIVE → SUSPENDED.
    pub async fn suspend(&self, change: &StatusChange) -> Result<StatusChanged, Error> {
        self.change_status(change, Action::Suspend).await
    }

    /// SUSPENDED → ACTIVE.
    pub async fn reinstate(&self, change: &StatusChange) -> Result<StatusChanged, Error> {
        self.change_status(change, Action::Reinstate).await
    }

    async fn change_status(
        &self,
        change: &StatusChange,
        action: Action,
    ) -> Result<StatusChanged, Error> {
        let message = change.to_proto();
        let answer = failover::run(
            &self.inner.nodes,
            self.leader_plan(),
            move |channel, timeout| {
                let mut registry = RegistryClient::new(channel);
                let request = request(message.clone(), timeout);
                async move {
                    match action {
                        Action::Revoke => registry.revoke(request).await,
                        Action::Suspend => registry.suspend(request).await,
                        Action::Reinstate => registry.reinstate(request).await,
                    }
                    .map(|r| r.into_inner())
                }
            },
        )
        .await?;
        Ok(StatusChanged {
            status: IdentityStatus::from_proto(answer.status),
            token: CommitToken(answer.log_index),
        })
    }

    /// The cluster as the best node sees it (roles, indexes, members, digest).
    pub async fn status(&self) -> Result<pb::StatusResponse, Error> {
        self.cluster_call(
            self.read_plan(None),
            pb::StatusRequest {},
            |mut c, r| async move { c.status(r).await },
        )
        .await
    }

    /// One node's own view, by its API address (configured or not).
    pub async fn status_at(&self, addr: &str) -> Result<pb::StatusResponse, Error> {
        let node = self.inner.nodes.at(addr)?;
        let mut cluster = ClusterClient::new(node.channel.clone());
        let timeout = self.inner.settings.attempt_timeout;
        match tokio::time::timeout(
            timeout,
            cluster.status(request(pb::StatusRequest {}, timeout)),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(crate::error::single(addr, &status)),
            Err(_) => Err(Error::DeadlineExceeded {
                deadline: timeout,
                failures: Default::default(),
            }),
        }
    }

    /// Adds a node as a learner and waits until it has caught up.
    pub async fn add_learner(&self, learner: &NewLearner) -> Result<pb::MembershipResponse, Error> {
        let message = pb::AddLearnerRequest {
            node_id: learner.node_id,
            province: learner.province.clone(),
            api_addr: learner.api_addr.clone(),
            raft_addr: learner.raft_addr.clone(),
            wait_caught_up: true,
        };
        self.cluster_call(self.leader_plan(), message, |mut c, r| async move {
            c.add_learner(r).await
        })
        .await
    }

    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<pb::MembershipResponse, Error> {
        use pb::change_membership_request::Change;
        let change = match change {
            MembershipChange::Promote(ids) => Change::Promote(pb::NodeIds { ids }),
            MembershipChange::Demote(ids) => Change::Demote(pb::NodeIds { ids }),
            MembershipChange::Remove(ids) => Change::Remove(pb::NodeIds { ids }),
        };
        let message = pb::ChangeMembershipRequest {
            change: Some(change),
        };
        self.cluster_call(self.leader_plan(), message, |mut c, r| async move {
            c.change_membership(r).await
        })
        .await
    }

    /// Hands leadership to voter `to` (or, with `None`, to the most caught-up voter); answers
    /// the new leader's id.
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<u64, Error> {
        let message = pb::TransferLeaderRequest {
            to_node_id: to.unwrap_or(0),
        };
        self.cluster_call(self.leader_plan(), message, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
        .map(|r| r.leader_id)
    }

    /// Builds a snapshot at the leader now; answers its last included index.
    pub async fn trigger_snapshot(&self) -> Result<u64, Error> {
        self.cluster_call(
            self.leader_plan(),
            pb::TriggerSnapshotRequest {},
            |mut c, r| async move { c.trigger_snapshot(r).await },
        )
        .await
        .map(|r| r.snapshot_index)
    }

    async fn cluster_call<Req, Resp, F, Fut>(
        &self,
        plan: Plan,
        message: Req,
        call: F,
    ) -> Result<Resp, Error>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(ClusterClient<tonic::transport::Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send + 'static,
    {
        failover::run(&self.inner.nodes, plan, move |channel, timeout| {
            let answer = call(
                ClusterClient::new(channel),
                request(message.clone(), timeout),
            );
            async move { answer.await.map(|r| r.into_inner()) }
        })
        .await
    }
}

#[derive(Clone, Copy)]
enum Action {
    Revoke,
    Suspend,
    Reinstate,
}
