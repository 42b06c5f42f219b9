//! `quorumid-bench`: quorumid and etcd side by side on this machine (issue 10).
//!
//! Both systems run as three real processes on loopback with fsync on, and are driven by
//! the same Rust client stack (tonic; etcd through the `etcd-client` crate) at the same
//! concurrency, point by point, alternating between the two so that drift in the machine's
//! load hits both alike.
//!
//! Layout:
//! - `clusters`: starting, killing and restarting a 3-node cluster of each system.
//! - `workload`: the operations, one shape for both systems (status changes, enrollments,
//!   reads at each consistency level).
//! - `load`: runs one point (an operation at a concurrency) and measures it.
//! - `failover`: leader `kill -9` to the first acknowledged write, repeated.
//! - `machine`: the physical limits: one fsync, one loopback round trip.
//! - `report`: the markdown table and the JSON results the chart is drawn from.

mod clusters;
mod failover;
mod load;
mod machine;
mod report;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::clusters::{EtcdCluster, QuorumidCluster};
use crate::load::Point;
use crate::report::Results;
use crate::workload::{Op, Targets, Worker};

#[derive(Debug, Parser)]
#[command(
    name = "quorumid-bench",
    about = "Benchmarks quorumid against etcd on this machine, side by side"
)]
struct Options {
    /// Operations to measure.
    #[arg(long, value_delimiter = ',', default_values_t = Op::ALL)]
    ops: Vec<Op>,
    /// Systems to measure (both are started either way): quorumid, etcd.
    #[arg(long, value_delimiter = ',', default_values_t = ["quorumid".to_string(), "etcd".to_string()])]
    systems: Vec<String>,
    /// Concurrent clients per point.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 256])]
    concurrency: Vec<usize>,
    /// Measured seconds per point.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per point (not measured).
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Leader kill -9 runs per system (0 skips the failover measurement).
    #[arg(long, default_value_t = 20)]
    failover_runs: usize,
    /// Working directory for both clusters' data (a fresh temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `quorumid-node` binary (default: next to this one).
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// The `etcd` binary (Debian: package etcd-server).
    #[arg(long, default_value = "etcd")]
    etcd_binary: PathBuf,
    /// quorumid listens on BASE+1..3 (API) and BASE+101..103 (Raft); etcd on BASE+301..303
    /// (clients) and BASE+311..313 (peers).
    #[arg(long, default_value_t = 7600)]
    base_port: u16,
    /// quorumid's Raft heartbeat, ms (default: the node's default).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// quorumid's election timeout range, ms, as MIN-MAX (default: the node's default).
    /// openraft also derives the leader lease (a voter refuses to vote while its leader's
    /// lease runs) from MAX, so MAX bounds how soon a new leader can be elected.
    #[arg(long, value_parser = parse_range)]
    election_timeout_ms: Option<(u64, u64)>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("expected MIN-MAX, got {text:?}"))?;
    let min: u64 = min.parse().map_err(|e| format!("MIN: {e}"))?;
    let max: u64 = max.parse().map_err(|e| format!("MAX: {e}"))?;
    if min == 0 || min >= max {
        return Err(format!("expected 0 < MIN < MAX, got {min}-{max}"));
    }
    Ok((min, max))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let temp;
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("quorumid-bench-")
                .tempdir_in(std::env::temp_dir())?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let node_binary = match &options.node_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("quorumid-node"),
    };

    let mut results = Results::new(machine::describe(&dir).await?);
    eprintln!("{}", results.machine);

    let mut raft = quorumid_node::config::RaftSettings::default();
    if let Some(ms) = options.heartbeat_ms {
        raft.heartbeat_ms = ms;
    }
    if let Some((min, max)) = options.election_timeout_ms {
        raft.election_timeout_min_ms = min;
        raft.election_timeout_max_ms = max;
    }
    results.raft = format!(
        "heartbeat {} ms, election timeout {}-{} ms",
        raft.heartbeat_ms, raft.election_timeout_min_ms, raft.election_timeout_max_ms
    );
    let mut quorumid = QuorumidCluster::start(
        &dir.join("quorumid"),
        &node_binary,
        options.base_port,
        &raft,
    )
    .await
    .context("starting the quorumid cluster")?;
    let mut etcd = EtcdCluster::start(
        &dir.join("etcd"),
        &options.etcd_binary,
        options.base_port + 300,
    )
    .await
    .context("starting the etcd cluster")?;

    let max_clients = options.concurrency.iter().copied().max().unwrap_or(1);
    let targets = Targets::prepare(&quorumid, &etcd, max_clients)
        .await
        .context("preparing the key sets")?;

    let wanted = |system: &str| options.systems.iter().any(|s| s == system);
    let warmup = Duration::from_secs(options.warmup_seconds);
    let measured = Duration::from_secs(options.seconds);
    for &op in &options.ops {
        for &clients in &options.concurrency {
            let point = Point {
                op,
                clients,
                warmup,
                measured,
            };
            for target in targets.both().into_iter().filter(|t| wanted(t.name())) {
                let measurement = load::run(&target, &point).await;
                eprintln!("{}", measurement.line());
                results.points.push(measurement);
            }
        }
    }

    if options.failover_runs > 0 && wanted("quorumid") {
        // A worker's index picks its node: each attempt enrolls through the member tried.
        let q = targets.quorumid.clone();
        let write = |member| {
            let q = q.clone();
            async move {
                let enrolled = q.enroll(&mut Worker::new(member)).await;
                enrolled
                    .map(drop)
                    .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
            }
        };
        let measured = failover::measure("quorumid", &mut quorumid, options.failover_runs, write);
        results
            .failover
            .push(measured.await.context("quorumid failover")?);
    }
    if options.failover_runs > 0 && wanted("etcd") {
        let e = targets.etcd.clone();
        let write = |member| {
            let e = e.clone();
            async move {
                let mut worker = Worker::new(member);
                let key = format!("bench/failover/{member}");
                let put = e.put(&mut worker, key, &e.enroll_value).await;
                put.map(drop).map_err(|e| e.to_string())
            }
        };
        let measured = failover::measure("etcd", &mut etcd, options.failover_runs, write);
        results
            .failover
            .push(measured.await.context("etcd failover")?);
    }

    quorumid.stop().await;
    etcd.stop().await;

    std::fs::write(&options.out, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", options.out.display()))?;
    println!("{}", results.markdown());
    eprintln!("results written to {}", options.out.display());
    Ok(())
}
