//! One chaos run from start to verdict: start the cluster, run the workload and the nemesis
//! together, heal, wait for the nodes to converge, read every node's final state, check, and
//! write the run's directory (`history.jsonl`, `final.json`, `report.json`, each node's log).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bollard::Docker;
use quorumid_client::{Consistency, VerifyOptions};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::checker::{self, CheckResult, FinalState, NodeFinal};
use crate::cluster::{Cluster, ClusterSpec};
use crate::history::{History, Outcome, Recorder, Status};
use crate::nemesis::{self, Nemesis, Observed};
use crate::schedule::{self, Kind, Schedule};
use crate::workload::{self, WorkloadSpec};

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub seed: u64,
    pub voters: u64,
    pub learners: u64,
    pub duration: Duration,
    pub clients: u32,
    pub max_ops: u64,
    pub kinds: Vec<Kind>,
    /// `name:tag` of the node image.
    pub image: String,
    /// The run writes into `<out>/seed-<seed>-<voters>n/`.
    pub out: PathBuf,
}

/// Calls of one kind and how they ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub seed: u64,
    pub voters: u64,
    pub learners: u64,
    pub duration_s: f64,
    pub schedule: Schedule,
    pub calls: BTreeMap<String, Counts>,
    pub faults_injected: usize,
    pub faults_skipped: Vec<String>,
    pub failovers_ms: Vec<u64>,
    /// Leader losses with no new leader before the fault's heal (not in `failovers_ms`).
    pub failovers_past_hold: u64,
    /// The longest stretch with no acknowledged write, and with no acknowledged
    /// LINEARIZABLE read (milliseconds).
    pub longest_without_write_ms: u64,
    pub longest_without_linearizable_read_ms: u64,
    /// How long the nodes took to converge after the heal.
    pub converged_after_ms: Option<u64>,
    pub checks: Vec<CheckResult>,
    pub passed: bool,
    pub dir: PathBuf,
}

impl Report {
    /// The short human report.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "run seed {} ({} voters, {} learners, {:.0} s): {}\n",
            self.seed,
            self.voters,
            self.learners,
            self.duration_s,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        for (call, c) in &self.calls {
            s.push_str(&format!(
                "  {call:<10} ok {:>5}  failed {:>4}  unknown {:>4}\n",
                c.ok, c.failed, c.unknown
            ));
        }
        s.push_str(&format!(
            "  faults injected {}, skipped {}; failovers (ms) {:?}, {} more not before the heal\n",
            self.faults_injected,
            self.faults_skipped.len(),
            self.failovers_ms,
            self.failovers_past_hold
        ));
        for skipped in &self.faults_skipped {
            s.push_str(&format!("    skipped: {skipped}\n"));
        }
        s.push_str(&format!(
            "  longest stretch without an acknowledged write {} ms, without a LINEARIZABLE read {} ms; converged {}\n",
            self.longest_without_write_ms,
            self.longest_without_linearizable_read_ms,
            self.converged_after_ms
                .map(|ms| format!("{ms} ms after the heal"))
                .unwrap_or_else(|| "NOT within 60 s".into())
        ));
        for c in &self.checks {
            s.push_str(&format!(
                "  [{}] {} ({} checked)\n",
                if c.passed { "ok" } else { "FAIL" },
                c.name,
                c.checked
            ));
            for v in &c.violations {
                s.push_str(&format!("        {v}\n"));
            }
        }
        s.push_str(&format!("  history and logs: {}\n", self.dir.display()));
        s
    }
}

fn longest_gap(mut times: Vec<u64>, end: u64) -> u64 {
    times.sort_unstable();
    let mut last = 0;
    let mut gap = 0;
    for t in times.into_iter().chain([end]) {
        gap = gap.max(t.saturating_sub(last));
        last = t;
    }
    gap / 1_000_000
}

/// Every node's applied index and state digest, as read at one moment.
type Converged = BTreeMap<u64, (u64, String)>;

/// Waits until every node answers with the same applied index and digest; answers how long
/// that took and what they answered, or `None` after 60 s. (Entries may follow, such as a new
/// leader's blank entry after one more election: the final state is the one they agreed on.)
async fn converge(cluster: &Cluster) -> Option<(u64, Converged)> {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(60) {
        let statuses =
            futures::future::join_all(cluster.ids().into_iter().map(|id| cluster.status(id))).await;
        let states: Option<Converged> = statuses
            .into_iter()
            .map(|s| s.map(|s| (s.node_id, (s.applied_index, s.state_digest))))
            .collect();
        if let Some(states) = states
            && states.values().collect::<BTreeSet<_>>().len() == 1
        {
            return Some((began.elapsed().as_millis() as u64, states));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Reads every identity the run touched at every node (LOCAL: what that node holds), and each
/// record's history once. Applied index and digest come from `converged` when the nodes
/// agreed, else from each node now.
async fn final_state(
    cluster: &Cluster,
    history: &History,
    observed: &Observed,
    converged: Option<&Converged>,
) -> FinalState {
    let identities: BTreeSet<String> = history
        .ops
        .iter()
        .filter_map(|o| o.identity().map(str::to_string))
        .collect();
    let mut nodes = Vec::new();
    for node in &cluster.nodes {
        let (applied_index, digest) = match converged.and_then(|c| c.get(&node.id)) {
            Some(agreed) => agreed.clone(),
            None => cluster
                .status(node.id)
                .await
                .map_or((0, String::new()), |s| (s.applied_index, s.state_digest)),
        };
        let mut statuses = BTreeMap::new();
        for id in &identities {
            let options = VerifyOptions {
                consistency: Some(Consistency::Local),
                ..Default::default()
            };
            if let Ok(v) = node.client.verify_with(id, options).await {
                statuses.insert(id.clone(), Status::from(v.status));
            }
        }
        nodes.push(NodeFinal {
            node: node.id,
            applied_index,
            digest,
            statuses,
        });
    }
    let mut events = BTreeMap::new();
    for id in &identities {
        if let Ok(record) = cluster.admin.record(id, Consistency::Linearizable).await {
            let mut counts = BTreeMap::new();
            for e in record.history {
                *counts.entry(e.kind.to_string()).or_insert(0) += 1;
            }
            events.insert(id.clone(), counts);
        }
    }
    FinalState {
        nodes,
        events,
        unexpected_exits: observed.unexpected_exits.clone(),
    }
}

/// Runs one seed; answers its report (also written to its directory). Errors are failures of
/// the harness (Docker, the image), not of the cluster under test.
pub async fn run(docker: Docker, spec: &RunSpec) -> anyhow::Result<Report> {
    let dir = spec.out.join(format!(
        "seed-{}-{}n",
        spec.seed,
        spec.voters + spec.learners
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ids: Vec<u64> = (1..=spec.voters + spec.learners).collect();
    let schedule = schedule::generate(spec.seed, &ids, spec.duration, &spec.kinds);
    println!("{schedule}");
    let run = format!(
        "qchaos-{}-{}",
        spec.seed,
        hex::encode(rand::random::<[u8; 3]>())
    );
    let cluster = Arc::new(
        Cluster::start(
            docker,
            ClusterSpec {
                run: run.clone(),
                image: spec.image.clone(),
                voters: spec.voters,
                learners: spec.learners,
            },
        )
        .await
        .context("starting the cluster")?,
    );
    let outcome = exercise(&cluster, spec, &schedule, &dir).await;
    for (id, text) in cluster.logs().await {
        let _ = std::fs::write(dir.join(format!("node-{id}.log")), text);
    }
    let cluster = Arc::into_inner(cluster).context("the cluster is still in use")?;
    cluster.remove().await.context("removing the cluster")?;
    outcome
}

async fn exercise(
    cluster: &Arc<Cluster>,
    spec: &RunSpec,
    schedule: &Schedule,
    dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let endpoints: Vec<(String, String)> = cluster
        .nodes
        .iter()
        .map(|n| (n.api_addr.clone(), n.province.clone()))
        .collect();
    let clients = workload::clients(&endpoints).await?;
    let start = Instant::now();
    let recorder = Arc::new(Recorder::new(start.into_std()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(nemesis::watch_roles(
        cluster.clone(),
        recorder.clone(),
        Duration::from_millis(200),
        stop_rx,
    ));
    let end = start + spec.duration;
    let workload = tokio::spawn(workload::run(
        WorkloadSpec {
            seed: spec.seed,
            clients: spec.clients,
            max_ops: spec.max_ops,
            hot_identities: 6,
        },
        clients,
        recorder.clone(),
        end,
    ));
    let nemesis = Nemesis::new(cluster.clone(), recorder.clone());
    let observed = nemesis.run(schedule, start).await;
    workload.await.context("the workload stopped")?;
    let end_ns = recorder.now_ns();
    Nemesis::heal_all(cluster).await.context("healing")?;
    let mut observed = observed?;
    let mut checker_nemesis = Nemesis::new(cluster.clone(), recorder.clone());
    checker_nemesis.check_alive(&BTreeSet::new()).await?;
    let converged = converge(cluster).await;
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    let history = recorder.snapshot();
    observed.unexpected_exits.extend(
        history
            .nemesis
            .iter()
            .filter(|n| n.phase == "crash")
            .map(|n| n.fault.clone())
            .filter(|f| !observed.unexpected_exits.contains(f))
            .collect::<Vec<_>>(),
    );
    let last = final_state(
        cluster,
        &history,
        &observed,
        converged.as_ref().map(|(_, c)| c),
    )
    .await;
    history.write_jsonl(&dir.join("history.jsonl"))?;
    std::fs::write(dir.join("final.json"), serde_json::to_vec_pretty(&last)?)?;
    let checks = checker::check(&history, &last);

    let mut calls: BTreeMap<String, Counts> = BTreeMap::new();
    for op in &history.ops {
        let c = calls.entry(op.call.name().to_string()).or_default();
        match op.outcome {
            Outcome::Ok { .. } => c.ok += 1,
            Outcome::Fail { .. } => c.failed += 1,
            Outcome::Info { .. } => c.unknown += 1,
        }
    }
    let acked = |f: &dyn Fn(&crate::history::Op) -> bool| {
        history
            .ops
            .iter()
            .filter(|o| o.acknowledged() && f(o))
            .map(|o| o.completed_ns)
            .collect::<Vec<_>>()
    };
    let report = Report {
        seed: spec.seed,
        voters: spec.voters,
        learners: spec.learners,
        duration_s: spec.duration.as_secs_f64(),
        schedule: schedule.clone(),
        calls,
        faults_injected: history
            .nemesis
            .iter()
            .filter(|n| n.phase == "start")
            .count(),
        faults_skipped: observed.skipped.clone(),
        failovers_ms: observed.failovers_ms.clone(),
        failovers_past_hold: observed.failovers_past_hold,
        longest_without_write_ms: longest_gap(acked(&|o| o.call.is_write()), end_ns),
        longest_without_linearizable_read_ms: longest_gap(
            acked(&|o| {
                matches!(
                    o.call,
                    crate::history::Call::Verify {
                        level: crate::history::Level::Linearizable,
                        ..
                    }
                )
            }),
            end_ns,
        ),
        converged_after_ms: converged.as_ref().map(|(ms, _)| *ms),
        passed: checks.iter().all(|c| c.passed),
        checks,
        dir: dir.to_path_buf(),
    };
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}
