//! Per-caller rate limits on the API port: a token bucket per authenticated caller (its
//! certificate's URI). A caller over its rate gets `RESOURCE_EXHAUSTED` with reason
//! `RATE_LIMITED` and how long to wait. Nodes are never limited (Raft and joining must not
//! starve), and neither is a plaintext node, which knows no callers to tell apart.
//!
//! ```toml
//! [limits]
//! per_caller_per_second = 5000   # sustained requests per second; 0 turns limits off
//! per_caller_burst = 10000       # how many may come at once after a quiet spell
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Buckets kept at most; past this, full (idle) buckets are forgotten first.
const MAX_CALLERS: usize = 100_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub per_caller_per_second: u32,
    pub per_caller_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            per_caller_per_second: 5_000,
            per_caller_burst: 10_000,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every caller seen recently.
pub struct RateLimits {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimits {
    /// `None` when limits are off.
    pub fn new(config: &LimitsConfig) -> Option<RateLimits> {
        if config.per_caller_per_second == 0 {
            return None;
        }
        Some(RateLimits {
            per_second: f64::from(config.per_caller_per_second),
            burst: f64::from(config.per_caller_burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Takes one token from `caller`'s bucket, or says how long until one is there.
    pub fn admit(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CALLERS && !buckets.contains_key(caller) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
            });
        }
        let bucket = buckets.entry(caller.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let limits = RateLimits::new(&LimitsConfig {
            per_caller_per_second: 10,
            per_caller_burst: 5,
        })
        .unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            limits.admit("a", t0).unwrap();
        }
        let wait = limits.admit("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        limits
            .admit("b", t0)
            .expect("another caller has its own bucket");
        // A tenth of a second later, one more; a long quiet spell refills only to the burst.
        limits.admit("a", t0 + Duration::from_millis(100)).unwrap();
        assert!(limits.admit("a", t0 + Duration::from_millis(100)).is_err());
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            limits.admit("a", later).unwrap();
        }
        assert!(limits.admit("a", later).is_err());
        assert!(
            RateLimits::new(&LimitsConfig {
                per_caller_per_second: 0,
                per_caller_burst: 5
            })
            .is_none()
        );
    }
}
