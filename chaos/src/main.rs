//! The `quorumid-chaos` program.
//!
//! ```text
//! quorumid-chaos run --seed 7 --nodes 3 --duration 30s     # one run
//! quorumid-chaos --profile ci                              # CI: a few short runs, every fault kind
//! quorumid-chaos --profile long --seeds 50                 # the long run
//! quorumid-chaos check DIR                                 # check a run's saved history again
//! ```
//!
//! Exits 0 when every check of every run passed, 1 when a check failed, 2 when the harness
//! itself could not run (Docker, the image, bad arguments).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use quorumid_chaos::checker::{self, FinalState};
use quorumid_chaos::history::History;
use quorumid_chaos::run::{self, Report, RunSpec};
use quorumid_chaos::schedule::Kind;
use quorumid_chaos::{docker, image};

#[derive(Parser, Debug)]
#[command(
    name = "quorumid-chaos",
    about = "Chaos runs against quorumid node containers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    suite: SuiteArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Where runs write their history, final state, report and node logs.
    #[arg(long, global = true, default_value = "target/chaos")]
    out: PathBuf,
    /// Use this image (name:tag) as it is instead of building it from the node binary.
    #[arg(long, global = true)]
    image: Option<String>,
    /// The node binary to build the image from.
    #[arg(long, global = true)]
    node_binary: Option<PathBuf>,
    /// The image script (deploy/build-image.sh).
    #[arg(long, global = true)]
    image_script: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
struct SuiteArgs {
    /// A set of runs: `ci` (3 short runs covering every fault kind, about 3 minutes) or
    /// `long` (`--seeds` runs of 60 s, alternating 3 and 5 voters, every fault kind).
    #[arg(long, value_enum, default_value = "ci")]
    profile: Profile,
    /// How many runs (`long` only).
    #[arg(long, default_value_t = 50)]
    seeds: u64,
    /// The first seed; run i uses first-seed + i.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Profile {
    Ci,
    Long,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One run.
    Run {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Voters (3 or 5).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Learners in further provinces (needed for the membership fault).
        #[arg(long, default_value_t = 1)]
        learners: u64,
        /// How long the workload and the faults run, e.g. 30s or 2m.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 4)]
        clients: u32,
        /// At most this many calls in all.
        #[arg(long, default_value_t = 20_000)]
        max_ops: u64,
        /// The fault kinds to draw from (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        kinds: Vec<Kind>,
    },
    /// Checks a run directory's history.jsonl and final.json again.
    Check { dir: PathBuf },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30s or 2m"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("{s:?}: the unit must be ms, s or m")),
    }
}

fn run_spec(seed: u64, voters: u64, learners: u64, secs: u64, kinds: &[Kind]) -> RunSpec {
    RunSpec {
        seed,
        voters,
        learners,
        duration: Duration::from_secs(secs),
        clients: 4,
        max_ops: 20_000,
        kinds: kinds.to_vec(),
        image: String::new(),
        out: PathBuf::new(),
    }
}

/// The runs of a profile.
fn profile(args: &SuiteArgs) -> Vec<RunSpec> {
    let s = args.first_seed;
    match args.profile {
        Profile::Ci => vec![
            run_spec(s, 3, 0, 45, &Kind::PARTITIONS),
            run_spec(
                s + 1,
                3,
                0,
                40,
                &[
                    Kind::Kill,
                    Kind::KillLeader,
                    Kind::Pause,
                    Kind::RollingRestart,
                    Kind::IsolateLeader,
                ],
            ),
            run_spec(
                s + 2,
                5,
                1,
                40,
                &[
                    Kind::Membership,
                    Kind::KillLeader,
                    Kind::MajoritiesRing,
                    Kind::Bridge,
                    Kind::Pause,
                ],
            ),
        ],
        Profile::Long => (0..args.seeds)
            .map(|i| run_spec(s + i, if i % 2 == 0 { 3 } else { 5 }, 1, 60, &Kind::ALL))
            .collect(),
    }
}

async fn prepare(common: &Common) -> anyhow::Result<(bollard::Docker, String, docker::Relay)> {
    let engine = docker::engine().await?;
    let relay = docker::Relay::start(&docker::relay_path(), &engine).await?;
    let (containers, networks) = docker::remove_leftovers(&engine).await?;
    if containers + networks > 0 {
        println!("removed {containers} leftover containers and {networks} networks");
    }
    let image = match &common.image {
        Some(image) => image.clone(),
        None => {
            let binary = common
                .node_binary
                .clone()
                .unwrap_or_else(image::default_binary);
            let script = common
                .image_script
                .clone()
                .unwrap_or_else(image::default_script);
            let tag = image::build(&script, "quorumid-node:chaos", &binary)?;
            println!("image {tag} built from {}", binary.display());
            tag
        }
    };
    Ok((engine, image, relay))
}

async fn run_all(common: &Common, mut specs: Vec<RunSpec>) -> anyhow::Result<bool> {
    let (engine, image, relay) = prepare(common).await?;
    let mut reports: Vec<Report> = Vec::new();
    let began = std::time::Instant::now();
    for spec in &mut specs {
        spec.image = image.clone();
        spec.out = common.out.clone();
        if spec.kinds.is_empty() {
            spec.kinds = Kind::ALL.to_vec();
        }
        let report = run::run(engine.clone(), spec)
            .await
            .with_context(|| format!("run with seed {}", spec.seed))?;
        println!("{}", report.summary());
        reports.push(report);
    }
    drop(relay);
    let passed = reports.iter().filter(|r| r.passed).count();
    let ops: u64 = reports
        .iter()
        .flat_map(|r| r.calls.values())
        .map(|c| c.ok + c.failed + c.unknown)
        .sum();
    let failovers: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.failovers_ms.clone())
        .collect();
    println!(
        "{} runs, {passed} passed, {} failed; {ops} calls; {} failovers, longest {} ms; {:.0} s",
        reports.len(),
        reports.len() - passed,
        failovers.len(),
        failovers.iter().max().copied().unwrap_or(0),
        began.elapsed().as_secs_f64()
    );
    Ok(passed == reports.len())
}

fn check_dir(dir: &std::path::Path) -> anyhow::Result<bool> {
    let history = History::read_jsonl(&dir.join("history.jsonl"))?;
    let path = dir.join("final.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let last: FinalState =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let results = checker::check(&history, &last);
    for c in &results {
        println!(
            "[{}] {} ({} checked)",
            if c.passed { "ok" } else { "FAIL" },
            c.name,
            c.checked
        );
        for v in &c.violations {
            println!("      {v}");
        }
    }
    Ok(results.iter().all(|c| c.passed))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // testcontainers talks to the relay (see `docker`); bollard calls of our own go to the
    // engine's socket, noted first.
    let _ = docker::engine_socket();
    let relay_path = docker::relay_path();
    // SAFETY: no other thread exists yet (the runtime is built below).
    unsafe { std::env::set_var("DOCKER_HOST", format!("unix://{}", relay_path.display())) };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Check { dir }) => check_dir(&dir),
            Some(Command::Run {
                seed,
                nodes,
                learners,
                duration,
                clients,
                max_ops,
                kinds,
            }) => {
                if !(1..=7).contains(&nodes) {
                    bail!("--nodes must be 1 to 7 voters");
                }
                let mut spec = run_spec(seed, nodes, learners, 0, &kinds);
                spec.duration = duration;
                spec.clients = clients.max(1);
                spec.max_ops = max_ops;
                run_all(&cli.common, vec![spec]).await
            }
            None => run_all(&cli.common, profile(&cli.suite)).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn the_ci_profile_covers_every_fault_kind() {
        let runs = profile(&SuiteArgs {
            profile: Profile::Ci,
            seeds: 0,
            first_seed: 1,
        });
        for kind in Kind::ALL {
            assert!(
                runs.iter().any(|r| r.kinds.contains(&kind)),
                "{kind:?} is not in the ci profile"
            );
        }
        assert!(runs.iter().any(|r| r.voters == 5 && r.learners > 0));
        // Each run is long enough for its schedule to draw every kind it lists.
        for r in &runs {
            let ids: Vec<u64> = (1..=r.voters + r.learners).collect();
            let s = quorumid_chaos::schedule::generate(r.seed, &ids, r.duration, &r.kinds);
            for kind in &r.kinds {
                assert!(
                    s.steps.iter().any(|st| st.fault.kind() == *kind),
                    "seed {}: {kind:?} not drawn in {s}",
                    r.seed
                );
            }
        }
    }
}
