//! The node's Prometheus metrics and the `/metrics` listener that serves them.
//!
//! Names follow Prometheus conventions: the `quorumid_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters. Labels take values from small fixed sets
//! (consistency levels, outcomes, reason codes, column families) or are peer node ids; never
//! anything about a person. Gauges that mirror state (Raft, watermark, RocksDB) are read when
//! scraped; the rest are recorded where things happen.
//!
//! The endpoint answers in the OpenMetrics text format when the scraper asks for it (as
//! Prometheus does), and in the classic Prometheus text format otherwise (what
//! `promtool check metrics` reads).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use super::NodeTelemetry;
use crate::biometrics::Biometrics;
use crate::raft::Raft;
use crate::raft::store::{Cf, Store};
use crate::reads::{Freshness, Level};

type Labels<const N: usize> = [(&'static str, &'static str); N];
type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.5 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Snapshot durations, from 1 ms to about 9 minutes.
fn slow() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Every metric of one node.
pub struct Metrics {
    registry: Registry,
    pub raft_term: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_leader_changes: Counter,
    pub raft_commit_duration: Histogram,
    pub raft_last_log_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_apply_lag: Gauge,
    pub raft_replication_lag: Family<[(&'static str, u64); 1], Gauge>,
    pub snapshot_duration: HistogramFamily<1>,
    pub snapshot_size: Family<Labels<1>, Gauge>,
    pub watermark_age: Gauge<f64, AtomicU64>,
    pub verify_duration: HistogramFamily<2>,
    pub dedup_duration: Histogram,
    pub biometric_matches: Family<Labels<2>, Counter>,
    pub rejected: Family<Labels<1>, Counter>,
    pub rocksdb_sst_size: Family<Labels<1>, Gauge>,
    pub rocksdb_memtable_size: Family<Labels<1>, Gauge>,
    pub dedup_threshold: Family<Labels<1>, Gauge<f64, AtomicU64>>,
    pub dedup_gallery_size: Family<Labels<1>, Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("quorumid");
        let m = Metrics {
            registry: Registry::default(),
            raft_term: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_leader_changes: Counter::default(),
            raft_commit_duration: latency(),
            raft_last_log_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_apply_lag: Gauge::default(),
            raft_replication_lag: Family::default(),
            snapshot_duration: Family::new_with_constructor(slow),
            snapshot_size: Family::default(),
            watermark_age: Gauge::default(),
            verify_duration: Family::new_with_constructor(latency),
            dedup_duration: latency(),
            biometric_matches: Family::default(),
            rejected: Family::default(),
            rocksdb_sst_size: Family::default(),
            rocksdb_memtable_size: Family::default(),
            dedup_threshold: Family::default(),
            dedup_gallery_size: Family::default(),
        };
        let r = &mut registry;
        r.register("raft_term", "Current Raft term", m.raft_term.clone());
        r.register(
            "raft_is_leader",
            "1 if this node is the Raft leader, else 0",
            m.raft_is_leader.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Times this node saw a new leader",
            m.raft_leader_changes.clone(),
        );
        r.register_with_unit(
            "raft_commit_duration",
            "Time from proposing a write on the leader to its commit and apply there",
            Unit::Seconds,
            m.raft_commit_duration.clone(),
        );
        r.register(
            "raft_last_log_index",
            "Index of the last entry in this node's Raft log",
            m.raft_last_log_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Index of the last entry applied to this node's state",
            m.raft_applied_index.clone(),
        );
        r.register(
            "raft_apply_lag_entries",
            "Entries in this node's log not yet applied",
            m.raft_apply_lag.clone(),
        );
        r.register(
            "raft_replication_lag_entries",
            "Leader only: entries of the leader's log a peer has not yet matched",
            m.raft_replication_lag.clone(),
        );
        r.register_with_unit(
            "raft_snapshot_duration",
            "Time to build a snapshot or to install a received one",
            Unit::Seconds,
            m.snapshot_duration.clone(),
        );
        r.register_with_unit(
            "raft_snapshot_size",
            "Size of the last snapshot built or installed",
            Unit::Bytes,
            m.snapshot_size.clone(),
        );
        r.register_with_unit(
            "read_watermark_age",
            "Age of the freshness watermark: the staleness bound of a local read (+Inf: never proven)",
            Unit::Seconds,
            m.watermark_age.clone(),
        );
        r.register_with_unit(
            "verify_duration",
            "Time to answer a Verify call, by consistency level and outcome",
            Unit::Seconds,
            m.verify_duration.clone(),
        );
        r.register_with_unit(
            "enroll_dedup_duration",
            "Time of the 1:N search (faces and fingers) before an enrollment is proposed: its batch's search of the index and its own check against the batch",
            Unit::Seconds,
            m.dedup_duration.clone(),
        );
        r.register(
            "biometric_matches",
            "Biometric comparisons by check (verify_face, verify_fingerprint, dedup_face, dedup_fingerprint) and decision",
            m.biometric_matches.clone(),
        );
        r.register(
            "requests_rejected",
            "API calls answered with an error, by quorumid-reason (or gRPC code)",
            m.rejected.clone(),
        );
        r.register_with_unit(
            "rocksdb_sst_size",
            "Size of the SST files of a RocksDB column family",
            Unit::Bytes,
            m.rocksdb_sst_size.clone(),
        );
        r.register_with_unit(
            "rocksdb_memtable_size",
            "Size of the memtables of a RocksDB column family",
            Unit::Bytes,
            m.rocksdb_memtable_size.clone(),
        );
        r.register(
            "dedup_threshold",
            "The 1:N de-dup threshold a search with one template of the modality takes now: its floor, raised with the gallery to hold biometrics.dedup_fpir",
            m.dedup_threshold.clone(),
        );
        r.register(
            "dedup_gallery_size",
            "Templates in the de-dup index, by modality (faces; finger views)",
            m.dedup_gallery_size.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records a Verify call.
    pub fn verify(&self, level: Level, outcome: &'static str, took: Duration) {
        self.verify_duration
            .get_or_create(&[("level", level_label(level)), ("outcome", outcome)])
            .observe(took.as_secs_f64());
    }

    /// Records a biometric decision.
    pub fn biometric(&self, check: &'static str, matched: bool) {
        let decision = if matched { "match" } else { "no_match" };
        self.biometric_matches
            .get_or_create(&[("check", check), ("decision", decision)])
            .inc();
    }

    /// Records a snapshot built or installed.
    pub fn snapshot(&self, operation: &'static str, bytes: usize, took: Duration) {
        self.snapshot_duration
            .get_or_create(&[("operation", operation)])
            .observe(took.as_secs_f64());
        self.snapshot_size
            .get_or_create(&[("operation", operation)])
            .set(bytes as i64);
    }

    /// Reads the gauges that mirror state.
    pub fn refresh(
        &self,
        raft: &Raft,
        freshness: &Freshness,
        store: &Store,
        biometrics: &Biometrics,
    ) {
        let rules = biometrics.dedup_thresholds();
        let (faces, fingers) = (biometrics.index.faces(), biometrics.index.fingers());
        for (modality, size, threshold) in [
            ("face", faces, rules.face_for(faces)),
            ("fingerprint", fingers, rules.fingerprint_for(fingers)),
        ] {
            self.dedup_gallery_size
                .get_or_create(&[("modality", modality)])
                .set(size as i64);
            self.dedup_threshold
                .get_or_create(&[("modality", modality)])
                .set(f64::from(threshold));
        }
        let m = raft.metrics().borrow().clone();
        self.raft_term.set(m.current_term as i64);
        self.raft_is_leader
            .set(i64::from(m.current_leader == Some(m.id)));
        let last = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map_or(0, |l| l.index);
        self.raft_last_log_index.set(last as i64);
        self.raft_applied_index.set(applied as i64);
        self.raft_apply_lag.set(last.saturating_sub(applied) as i64);
        self.raft_replication_lag.clear();
        if let Some(replication) = &m.replication {
            for (peer, matched) in replication {
                if *peer != m.id {
                    let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                    self.raft_replication_lag
                        .get_or_create(&[("peer_node_id", *peer)])
                        .set(lag as i64);
                }
            }
        }
        self.watermark_age
            .set(freshness.age().map_or(f64::INFINITY, |a| a.as_secs_f64()));
        let db = store.db();
        for cf in Cf::ALL {
            let handle = store.cf(cf);
            let read = |property: &str| {
                db.property_int_value_cf(handle, property)
                    .ok()
                    .flatten()
                    .unwrap_or(0) as i64
            };
            self.rocksdb_sst_size
                .get_or_create(&[("column_family", cf.name())])
                .set(read("rocksdb.total-sst-files-size"));
            self.rocksdb_memtable_size
                .get_or_create(&[("column_family", cf.name())])
                .set(read("rocksdb.cur-size-all-mem-tables"));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn openmetrics(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The classic Prometheus text exposition (format 0.0.4).
    pub fn prometheus_text(&self) -> String {
        openmetrics_to_prometheus(&self.openmetrics())
    }
}

/// The label of a consistency level.
pub fn level_label(level: Level) -> &'static str {
    match level {
        Level::Linearizable => "linearizable",
        Level::Bounded(_) => "bounded",
        Level::AtLeast(_) => "at_least",
        Level::Local => "local",
    }
}

/// Rewrites OpenMetrics text as Prometheus text: counters are named with `_total` in their
/// HELP and TYPE lines (as their samples are), and `# UNIT` and `# EOF` lines are dropped.
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` reads when scraped.
pub struct Sources {
    pub telemetry: Arc<NodeTelemetry>,
    pub raft: Raft,
    pub freshness: Arc<Freshness>,
    pub store: Arc<Store>,
    pub biometrics: Arc<Biometrics>,
}

impl Sources {
    fn scrape(&self, headers: &HeaderMap) -> ([(header::HeaderName, &'static str); 1], String) {
        let metrics = &self.telemetry.metrics;
        metrics.refresh(&self.raft, &self.freshness, &self.store, &self.biometrics);
        let openmetrics = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("application/openmetrics-text"));
        if openmetrics {
            ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.openmetrics())
        } else {
            (
                [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
                metrics.prometheus_text(),
            )
        }
    }
}

/// Serves `GET /metrics`, and `GET /ready` (200 when the node is SERVING, as on gRPC health;
/// 503 otherwise) for probes that cannot present a client certificate, on `listener` until
/// `stop` completes.
pub async fn serve(
    listener: TcpListener,
    sources: Sources,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sources = Arc::new(sources);
    let ready = sources.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let sources = sources.clone();
                async move { sources.scrape(&headers) }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let serving = crate::api::serving(&ready.raft, &ready.freshness);
                async move {
                    if serving {
                        (axum::http::StatusCode::OK, "serving\n")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

/// Counts leader changes as this node sees them, until Raft stops.
pub async fn watch_leader(raft: Raft, telemetry: Arc<NodeTelemetry>) {
    let mut rx = raft.metrics();
    let mut known = None;
    loop {
        let leader = rx.borrow_and_update().current_leader;
        if leader.is_some() && leader != known {
            telemetry.metrics.raft_leader_changes.inc();
            known = leader;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The reason codes the API answers with (`quorumid-reason`), and the gRPC code names used
/// when an error carries none.
const REASONS: [&str; 36] = [
    "BEHIND",
    "DUPLICATE_BIOMETRIC",
    "DUPLICATE_DOCUMENT",
    "IDENTITY_ID_TAKEN",
    "INVALID_ARGUMENT",
    "INVALID_TRANSITION",
    "KEY_MISMATCH",
    "NO_LEADER",
    "NO_TEMPLATE",
    "NOT_PERMITTED",
    "MODALITY_LOCKED",
    "NO_HOLDER_KEY",
    "HOLDER_PROOF_REJECTED",
    "HOLDER_KEY_CHANGED",
    "OUT_OF_SCOPE",
    "RATE_LIMITED",
    "REQUEST_ID_REUSED",
    "SHUTTING_DOWN",
    "STALE",
    "UNKNOWN_IDENTITY",
    "CANCELLED",
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
    "OTHER",
];

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The reason label of a response, if it is an error (`grpc-status` other than 0 in the
/// headers: tonic sends a failed unary call as a trailers-only response).
pub fn rejection_reason(headers: &http::HeaderMap) -> Option<&'static str> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())?;
    if code == 0 {
        return None;
    }
    let reason = headers
        .get(crate::api::errors::REASON_KEY)
        .and_then(|v| v.to_str().ok());
    Some(match reason {
        Some(r) => REASONS
            .iter()
            .find(|known| **known == r)
            .copied()
            .unwrap_or("OTHER"),
        None => code_name(tonic::Code::from_i32(code)),
    })
}

/// The API server's response hook: counts errors by reason.
pub fn count_rejections<B>(
    telemetry: Arc<NodeTelemetry>,
) -> impl Fn(http::Response<B>) -> http::Response<B> + Clone {
    move |response| {
        if let Some(reason) = rejection_reason(response.headers()) {
            telemetry
                .metrics
                .rejected
                .get_or_create(&[("reason", reason)])
                .inc();
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_like_their_samples() {
        let metrics = Metrics::new();
        metrics.raft_leader_changes.inc();
        metrics.verify(Level::Local, "active", Duration::from_millis(3));
        let text = metrics.prometheus_text();
        assert!(text.contains("# TYPE quorumid_raft_leader_changes_total counter\n"));
        assert!(text.contains("# HELP quorumid_raft_leader_changes_total Times"));
        assert!(text.contains("quorumid_raft_leader_changes_total 1\n"));
        assert!(text.contains(
            "quorumid_verify_duration_seconds_count{level=\"local\",outcome=\"active\"} 1"
        ));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    }

    #[test]
    fn rejections_are_labelled_from_a_fixed_set() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(rejection_reason(&headers), None);
        headers.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(rejection_reason(&headers), Some("UNAVAILABLE"));
        headers.insert("quorumid-reason", "STALE".parse().unwrap());
        assert_eq!(rejection_reason(&headers), Some("STALE"));
        headers.insert("quorumid-reason", "0123456789ABCDEFG".parse().unwrap());
        assert_eq!(rejection_reason(&headers), Some("OTHER"));
        headers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(rejection_reason(&headers), None);
    }
}
