//! Carries out a [`Schedule`] against a [`Cluster`]: each fault at its time, held, then healed
//! (rules flushed, killed nodes started again with the same volume, paused ones resumed),
//! recording both ends in the history. Also watches the nodes: who says it leads in which term,
//! how long a failover took, and whether a node exited that the nemesis did not kill.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use quorumid_client::{MembershipChange, pb};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::history::{Recorder, RoleSample};
use crate::net::{self, Grudge};
use crate::schedule::{Fault, Schedule, Step};

/// What the nemesis saw besides its own actions.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Time from cutting off or killing the leader to another node leading, per occurrence.
    pub failovers_ms: Vec<u64>,
    /// Times the leader was taken away and no other node led before the heal (so the
    /// failover times above are only those shorter than their fault's hold).
    pub failovers_past_hold: u64,
    /// Nodes that had exited without being killed, as found.
    pub unexpected_exits: Vec<String>,
    /// Faults that could not be carried out (e.g. a membership change refused), with why.
    pub skipped: Vec<String>,
}

pub struct Nemesis {
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    observed: Observed,
}

impl Nemesis {
    pub fn new(cluster: Arc<Cluster>, recorder: Arc<Recorder>) -> Nemesis {
        Nemesis {
            cluster,
            recorder,
            observed: Observed::default(),
        }
    }

    /// Runs every step at its time (measured from `start`); answers what it observed.
    pub async fn run(mut self, schedule: &Schedule, start: Instant) -> anyhow::Result<Observed> {
        for step in &schedule.steps {
            tokio::time::sleep_until(start + Duration::from_millis(step.start_ms)).await;
            self.check_alive(&BTreeSet::new()).await?;
            self.step(step)
                .await
                .with_context(|| format!("nemesis step: {}", step.fault))?;
        }
        Ok(self.observed)
    }

    /// After the run: heal everything (whatever state a failed step left) and check that every
    /// node is up.
    pub async fn heal_all(cluster: &Cluster) -> anyhow::Result<()> {
        for id in cluster.ids() {
            let facts = cluster.facts(id).await?;
            if facts.paused {
                cluster.unpause(id).await?;
            } else if !facts.running {
                cluster.restart(id).await?;
            }
        }
        net::heal(cluster).await
    }

    /// Nodes found not running (or unexpectedly paused) that the nemesis did not take down.
    pub async fn check_alive(&mut self, down: &BTreeSet<u64>) -> anyhow::Result<()> {
        for id in self.cluster.ids() {
            if down.contains(&id) {
                continue;
            }
            let facts = self.cluster.facts(id).await?;
            if !facts.running {
                let note = format!(
                    "node {id} had exited on its own (exit code {:?}) at {:.1}s",
                    facts.exit_code,
                    self.recorder.now_ns() as f64 / 1e9
                );
                self.recorder.nemesis("crash", &note, &[id], false);
                self.observed.unexpected_exits.push(note);
                self.cluster.restart(id).await?;
            }
        }
        Ok(())
    }

    fn started(&self, step: &Step, nodes: &[u64], killed: bool) {
        self.recorder
            .nemesis("start", &step.fault.to_string(), nodes, killed);
    }

    fn healed(&self, step: &Step, nodes: &[u64]) {
        self.recorder
            .nemesis("heal", &step.fault.to_string(), nodes, false);
    }

    async fn leader(&self) -> anyhow::Result<u64> {
        self.cluster.wait_for_leader(Duration::from_secs(10)).await
    }

    async fn partition(
        &mut self,
        step: &Step,
        grudge: Grudge,
        old_leader: Option<u64>,
    ) -> anyhow::Result<()> {
        let nodes: Vec<u64> = grudge.keys().copied().collect();
        self.recorder.nemesis(
            "start",
            &format!("{} ({})", step.fault, net::describe(&grudge)),
            &nodes,
            false,
        );
        net::apply(&self.cluster, &grudge).await?;
        self.hold(step, old_leader).await;
        net::heal(&self.cluster).await?;
        self.healed(step, &nodes);
        Ok(())
    }

    /// Waits out the fault's hold; if the leader was taken away, measures how long until
    /// another node leads.
    async fn hold(&mut self, step: &Step, old_leader: Option<u64>) {
        let began = Instant::now();
        let until = began + Duration::from_millis(step.hold_ms);
        if let Some(old) = old_leader {
            let mut seen = false;
            while Instant::now() < until {
                if let Some(new) = self.cluster.leader().await
                    && new != old
                {
                    let ms = began.elapsed().as_millis() as u64;
                    self.observed.failovers_ms.push(ms);
                    self.recorder.nemesis(
                        "failover",
                        &format!("node {new} leads {ms} ms after node {old} was taken away"),
                        &[old, new],
                        false,
                    );
                    seen = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !seen {
                self.observed.failovers_past_hold += 1;
            }
        }
        tokio::time::sleep_until(until).await;
    }

    async fn step(&mut self, step: &Step) -> anyhow::Result<()> {
        let all = self.cluster.ids();
        match &step.fault {
            Fault::Isolate { node } => self.partition(step, net::isolate(*node, &all), None).await,
            Fault::IsolateLeader => {
                let leader = self.leader().await?;
                self.partition(step, net::isolate(leader, &all), Some(leader))
                    .await
            }
            Fault::Halves { order } => self.partition(step, net::halves(order), None).await,
            Fault::Bridge { order } => self.partition(step, net::bridge(order), None).await,
            Fault::MajoritiesRing { order } => {
                self.partition(step, net::majorities_ring(order), None)
                    .await
            }
            Fault::OneWay { from, to } => {
                self.partition(step, net::one_way(*from, *to), None).await
            }
            Fault::Kill { node } => self.kill(step, *node, None).await,
            Fault::KillLeader => {
                let leader = self.leader().await?;
                self.kill(step, leader, Some(leader)).await
            }
            Fault::Pause { node } => {
                self.started(step, &[*node], false);
                self.cluster.pause(*node).await?;
                self.hold(step, None).await;
                self.cluster.unpause(*node).await?;
                self.healed(step, &[*node]);
                Ok(())
            }
            Fault::RollingRestart { order } => {
                self.started(step, order, true);
                for id in order {
                    self.cluster.stop(*id).await?;
                    self.cluster.restart(*id).await?;
                    // Let it catch up before the next one goes.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                self.healed(step, order);
                Ok(())
            }
            Fault::Membership { pick, isolated } => self.membership(step, *pick, *isolated).await,
        }
    }

    async fn kill(
        &mut self,
        step: &Step,
        node: u64,
        old_leader: Option<u64>,
    ) -> anyhow::Result<()> {
        self.started(step, &[node], true);
        self.cluster.kill(node).await?;
        self.hold(step, old_leader).await;
        self.check_alive(&BTreeSet::from([node])).await?;
        self.cluster.restart(node).await?;
        self.healed(step, &[node]);
        Ok(())
    }

    /// Promotes a learner and demotes a voter (keeping the voter count) while one node is
    /// isolated. A change the cluster refuses (no quorum, a change in progress) is recorded as
    /// skipped, not as a failure of the run: refusing is allowed, losing data is not.
    async fn membership(&mut self, step: &Step, pick: u64, isolated: u64) -> anyhow::Result<()> {
        let all = self.cluster.ids();
        let grudge = net::isolate(isolated, &all);
        let status = self
            .cluster
            .admin
            .status()
            .await
            .context("membership status")?;
        let role = |r: pb::MemberRole| -> Vec<u64> {
            status
                .members
                .iter()
                .filter(|m| m.role == r as i32)
                .map(|m| m.node_id)
                .collect()
        };
        let (voters, learners) = (role(pb::MemberRole::Voter), role(pb::MemberRole::Learner));
        if learners.is_empty() || voters.is_empty() {
            self.observed
                .skipped
                .push(format!("{}: no learner to promote", step.fault));
            return self.partition(step, grudge, None).await;
        }
        let promote = learners[(pick % learners.len() as u64) as usize];
        let demote = voters[((pick / 7) % voters.len() as u64) as usize];
        self.recorder.nemesis(
            "start",
            &format!("{} (promote {promote}, demote {demote})", step.fault),
            &[isolated, promote, demote],
            false,
        );
        net::apply(&self.cluster, &grudge).await?;
        let began = Instant::now();
        for change in [
            MembershipChange::Promote(vec![promote]),
            MembershipChange::Demote(vec![demote]),
        ] {
            let what = format!("{change:?}");
            match self.cluster.admin.change_membership(change).await {
                Ok(_) => self
                    .recorder
                    .nemesis("membership", &what, &[promote, demote], false),
                Err(e) => {
                    self.observed
                        .skipped
                        .push(format!("{what} during {}: {e}", step.fault));
                    break;
                }
            }
        }
        let rest = Duration::from_millis(step.hold_ms).saturating_sub(began.elapsed());
        tokio::time::sleep(rest).await;
        net::heal(&self.cluster).await?;
        self.healed(step, &[isolated]);
        Ok(())
    }
}

/// Samples every node's role every `every` until `stop`, recording a sample when a node's
/// (term, leader) changes.
pub async fn watch_roles(
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last: std::collections::HashMap<u64, (u64, bool)> = Default::default();
    while !*stop.borrow() {
        let statuses =
            futures::future::join_all(cluster.ids().into_iter().map(|id| cluster.status(id))).await;
        for s in statuses.into_iter().flatten() {
            let leader = s.role == pb::NodeRole::Leader as i32;
            if last.insert(s.node_id, (s.term, leader)) != Some((s.term, leader)) {
                recorder.role(RoleSample {
                    at_ns: recorder.now_ns(),
                    node: s.node_id,
                    term: s.term,
                    leader,
                    applied_index: s.applied_index,
                });
            }
        }
        tokio::time::sleep(every).await;
    }
}
