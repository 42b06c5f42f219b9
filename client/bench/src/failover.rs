//! Failover: the leader is killed with SIGKILL, and a writer tries the surviving members
//! until one acknowledges a write. The figure is the time from the kill to that
//! acknowledgement. Between runs the killed member restarts on its data and the cluster
//! settles (one leader, everyone caught up).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::clusters::Members;

/// One write attempt may take this long before the writer moves on to the next member.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);
/// Pause between failed attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// A run with no acknowledged write by then fails the benchmark.
const GIVE_UP: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
pub struct Failover {
    pub system: &'static str,
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    pub max_ms: f64,
}

impl Failover {
    fn new(system: &'static str, runs_ms: Vec<f64>) -> Failover {
        let mut sorted = runs_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median_ms = match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Failover {
            system,
            max_ms: sorted.last().copied().unwrap_or(f64::NAN),
            median_ms,
            runs_ms,
        }
    }
}

/// One try of `first_write`, kept to explain where a failover's time went.
struct Attempt {
    member: usize,
    started_ms: f64,
    took_ms: f64,
    outcome: String,
}

/// The attempts as lines, consecutive attempts with the same outcome (on any member)
/// folded into one: first and last start, count, the longest, the outcome.
fn timeline(attempts: &[Attempt]) -> String {
    const OUTCOME_CHARS: usize = 110;
    let mut lines: Vec<String> = Vec::new();
    for run in attempts.chunk_by(|a, b| a.outcome == b.outcome) {
        let (first, last) = (&run[0], &run[run.len() - 1]);
        let mut members: Vec<usize> = run.iter().map(|a| a.member).collect();
        members.sort_unstable();
        members.dedup();
        let longest = run.iter().map(|a| a.took_ms).fold(0.0, f64::max);
        lines.push(format!(
            "  +{:>6.1}..{:>6.1} ms  x{:<3} members {:?}  longest {:>5.1} ms  {}",
            first.started_ms,
            last.started_ms,
            run.len(),
            members,
            longest,
            first
                .outcome
                .chars()
                .take(OUTCOME_CHARS)
                .collect::<String>()
        ));
    }
    lines.join("\n")
}

/// Tries `write` on the members other than `killed`, in turn, until one succeeds. Returns
/// the time to the acknowledgement and the attempts' timeline.
async fn first_write<F, Fut>(
    killed: usize,
    members: usize,
    write: &mut F,
) -> anyhow::Result<(f64, String)>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let since = |at: Instant| at.duration_since(start).as_secs_f64() * 1_000.0;
    let others: Vec<usize> = (0..members).filter(|m| *m != killed).collect();
    let mut attempts = Vec::new();
    for attempt in 0.. {
        let member = others[attempt % others.len()];
        let began = Instant::now();
        let result = tokio::time::timeout(ATTEMPT_TIMEOUT, write(member))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")));
        attempts.push(Attempt {
            member,
            started_ms: since(began),
            took_ms: began.elapsed().as_secs_f64() * 1_000.0,
            outcome: result
                .clone()
                .err()
                .unwrap_or_else(|| "acknowledged".into()),
        });
        if result.is_ok() {
            return Ok((since(Instant::now()), timeline(&attempts)));
        }
        if start.elapsed() > GIVE_UP {
            bail!("no write was acknowledged within {GIVE_UP:?} of the kill");
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    unreachable!("the loop only ends by returning")
}

/// `runs` times: kill the leader, time `write` until a survivor acknowledges one, restart
/// the killed member and let the cluster settle.
pub async fn measure<C, F, Fut>(
    system: &'static str,
    cluster: &mut C,
    runs: usize,
    mut write: F,
) -> anyhow::Result<Failover>
where
    C: Members,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut times = Vec::new();
    for run in 0..runs {
        let leader = cluster.settled().await?;
        cluster.kill(leader).await;
        let (ms, timeline) = first_write(leader, cluster.len(), &mut write).await?;
        eprintln!(
            "{system} failover {}/{runs}: {ms:.0} ms\n{timeline}",
            run + 1
        );
        times.push(ms);
        cluster.restart(leader)?;
    }
    cluster.settled().await?;
    Ok(Failover::new(system, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(member: usize, started_ms: f64, outcome: &str) -> Attempt {
        Attempt {
            member,
            started_ms,
            took_ms: 1.0,
            outcome: outcome.into(),
        }
    }

    #[test]
    fn the_timeline_folds_repeated_outcomes_across_members() {
        let attempts = [
            attempt(1, 0.0, "leader unreachable"),
            attempt(2, 12.0, "leader unreachable"),
            attempt(1, 24.0, "no leader"),
            attempt(2, 36.0, "acknowledged"),
        ];
        let lines: Vec<String> = timeline(&attempts).lines().map(String::from).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("x2") && lines[0].contains("[1, 2]"));
        assert!(lines[0].contains("12.0") && lines[0].ends_with("leader unreachable"));
        assert!(lines[2].ends_with("acknowledged"));
    }
}
