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

/// Tries `write` on the members other than `killed`, in turn, until one succeeds.
async fn first_write<F, Fut>(killed: usize, members: usize, write: &mut F) -> anyhow::Result<f64>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let others: Vec<usize> = (0..members).filter(|m| *m != killed).collect();
    for attempt in 0.. {
        let member = others[attempt % others.len()];
        let ok = tokio::time::timeout(ATTEMPT_TIMEOUT, write(member))
            .await
            .unwrap_or(false);
        if ok {
            return Ok(start.elapsed().as_secs_f64() * 1_000.0);
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
    Fut: Future<Output = bool>,
{
    let mut times = Vec::new();
    for run in 0..runs {
        let leader = cluster.settled().await?;
        cluster.kill(leader).await;
        let ms = first_write(leader, cluster.len(), &mut write).await?;
        eprintln!("{system} failover {}/{runs}: {ms:.0} ms", run + 1);
        times.push(ms);
        cluster.restart(leader)?;
    }
    cluster.settled().await?;
    Ok(Failover::new(system, times))
}
