//! One point of the benchmark: an operation, a number of concurrent clients, a warm-up and a
//! measured window. Each client calls in a closed loop (the next call when the previous one
//! ends). Only calls that start inside the measured window count: throughput is their number
//! over the time from the window's start to the end of the last of them; latency percentiles
//! are over the successful ones.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::workload::{Op, Target, Worker};

/// No single call may take longer; a call that does counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the calls of one client in one point, whatever the duration.
const MAX_CALLS_PER_CLIENT: u64 = 5_000_000;

pub struct Point {
    pub op: Op,
    pub clients: usize,
    pub warmup: Duration,
    pub measured: Duration,
}

#[derive(Debug, Serialize)]
pub struct Measurement {
    pub system: &'static str,
    pub op: Op,
    pub clients: usize,
    pub ok: u64,
    pub errors: u64,
    /// Successful calls per second over the measured window.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// One of the errors, if any, for the log.
    pub first_error: Option<String>,
}

impl Measurement {
    pub fn line(&self) -> String {
        format!(
            "{:<8} {:<12} {:>4} clients: {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p999 {:>7.2} ms  errors {}{}",
            self.system,
            self.op.to_string(),
            self.clients,
            self.throughput,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.errors,
            self.first_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }
}

struct ClientLog {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    /// When the client's last counted call ended.
    last_done: Option<Instant>,
}

pub async fn run(target: &Target, point: &Point) -> Measurement {
    let start = Instant::now();
    let window_start = start + point.warmup;
    let window_end = window_start + point.measured;
    let clients: Vec<_> = (0..point.clients)
        .map(|index| {
            let target = target.clone();
            let op = point.op;
            tokio::spawn(async move {
                let mut worker = Worker::new(index);
                let mut log = ClientLog {
                    latencies_us: Vec::new(),
                    errors: 0,
                    first_error: None,
                    last_done: None,
                };
                for _ in 0..MAX_CALLS_PER_CLIENT {
                    let began = Instant::now();
                    if began >= window_end {
                        break;
                    }
                    let result = tokio::time::timeout(CALL_TIMEOUT, target.call(op, &mut worker))
                        .await
                        .unwrap_or_else(|_| Err("call timed out".into()));
                    if began < window_start {
                        continue;
                    }
                    log.last_done = Some(Instant::now());
                    match result {
                        Ok(()) => {
                            let us = began.elapsed().as_micros();
                            log.latencies_us.push(us.min(u32::MAX as u128) as u32);
                        }
                        Err(e) => {
                            log.errors += 1;
                            log.first_error.get_or_insert(e);
                        }
                    }
                }
                log
            })
        })
        .collect();

    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut last_done = window_end;
    for client in clients {
        match client.await {
            Ok(log) => {
                latencies.extend(log.latencies_us);
                last_done = last_done.max(log.last_done.unwrap_or(window_end));
                errors += log.errors;
                if first_error.is_none() {
                    first_error = log.first_error;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("client task failed: {e}"));
            }
        }
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1] as f64 / 1_000.0
    };
    Measurement {
        system: target.name(),
        op: point.op,
        clients: point.clients,
        ok: latencies.len() as u64,
        errors,
        throughput: latencies.len() as f64 / (last_done - window_start).as_secs_f64(),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        p999_ms: percentile(0.999),
        first_error,
    }
}
