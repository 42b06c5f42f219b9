//! Telemetry on a real in-process cluster: a write sent to a follower leaves one connected
//! trace across the nodes (forward, propose, Raft append, apply), the spans exported to an
//! in-process OTLP receiver and the captured log lines hold none of the workload's personal
//! data, and `/metrics` serves every metric family in a format `promtool` accepts.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestCluster, consistency, enroll_request, reason_of};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use prost::Message as _;
use quorumid_node::config::RaftSettings;
use quorumid_node::telemetry::{LogFormat, LogOutput, Telemetry, TelemetryConfig};
use quorumid_proto::v1 as pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing_subscriber::fmt::MakeWriter;

/// An OTLP trace receiver that keeps everything it is sent.
#[derive(Clone, Default)]
struct Receiver {
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.exports.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Starts the receiver on a loopback port; returns its endpoint.
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<OtlpSpan> {
        self.exports
            .lock()
            .unwrap()
            .iter()
            .flat_map(|e| &e.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    /// Everything received, as the bytes that went over the wire.
    fn bytes(&self) -> Vec<u8> {
        self.exports
            .lock()
            .unwrap()
            .iter()
            .flat_map(|e| e.encode_to_vec())
            .collect()
    }
}

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn attribute(span: &OtlpSpan, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

/// The `node_id` attribute (tracing-opentelemetry sends a u64 as a string).
fn node_of(span: &OtlpSpan) -> Option<i64> {
    match attribute(span, "node_id")? {
        AnyValue::IntValue(n) => Some(n),
        AnyValue::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

/// A request carrying a W3C trace context, as an instrumented client would send it.
fn traced<T>(message: T, trace_id: &str, parent_span_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span_id}-01")
            .parse()
            .unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_write_leaves_one_trace_across_nodes_and_no_personal_data() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let logs = Captured::default();
    let telemetry = Telemetry::init(
        &TelemetryConfig {
            otlp_endpoint: Some(endpoint),
            sample_ratio: 1.0,
            metrics_listen: None,
        },
        LogOutput {
            format: LogFormat::Json,
            // More than the default: debug lines of this crate must be clean too.
            filter: "info,quorumid_node=debug,openraft=warn,h2=warn,tower=warn".into(),
            writer: logs.clone(),
            ansi: false,
        },
    )
    .expect("install telemetry");
    assert!(telemetry.exporting());

    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers();
    let (first, second) = (followers[0], followers[1]);

    // The workload: its personal data must not leave the nodes.
    let document = "OBS-P 7654321";
    let document_normalised = "OBSP7654321";
    // The same document written another way (and so with another synthetic face).
    let document_again = "obs-p7654321";
    let platform = "obs-platform-77";
    let enroll_request_id = "obs-enroll-4711";
    let revoke_request_id = "obs-revoke-4712";
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span_id = "00f067aa0ba902b7";

    // An enrollment sent to a follower, which forwards it to the leader.
    let enrolled = cluster
        .registry(first)
        .await
        .enroll(traced(
            enroll_request(enroll_request_id, "ON", document),
            trace_id,
            client_span_id,
        ))
        .await
        .expect("enroll through a follower")
        .into_inner();
    let identity = enrolled.identity_id.clone();

    // Verifications everywhere, a refused second enrollment, a revocation.
    let mut pseudonyms = BTreeSet::new();
    for node in cluster.nodes.keys() {
        let answer = cluster
            .verifier(*node)
            .await
            .verify(pb::VerifyRequest {
                identity_id: identity.clone(),
                platform_id: platform.into(),
                consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
                probe: None,
                holder: None,
            })
            .await
            .expect("verify")
            .into_inner();
        assert_eq!(answer.status, pb::IdentityStatus::Active as i32);
        pseudonyms.insert(answer.pseudonym);
    }
    let again = cluster
        .registry(second)
        .await
        .enroll(enroll_request("obs-enroll-4713", "ON", document_again))
        .await
        .expect_err("the same document twice");
    assert_eq!(reason_of(&again), "DUPLICATE_DOCUMENT");
    let revoked = cluster
        .revoke(second, revoke_request_id, &identity)
        .await
        .expect("revoke through a follower");
    cluster.converged(revoked.log_index).await;

    let telemetry = Arc::new(telemetry);
    let flusher = telemetry.clone();
    tokio::task::spawn_blocking(move || flusher.flush())
        .await
        .unwrap()
        .expect("flush spans to the receiver");

    // (a) The enrollment's trace is connected and crosses the nodes.
    let spans: Vec<OtlpSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| hex::encode(&s.trace_id) == trace_id)
        .collect();
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "/quorumid.v1.Registry/Enroll",
        "Forward",
        "/quorumid.v1.Raft/Forward",
        "raft.propose",
        "raft.append_entries",
        "/quorumid.v1.Raft/AppendEntries",
        "raft.apply",
    ] {
        assert!(
            names.contains(expected),
            "no {expected:?} span in {names:?}"
        );
    }
    let ids: HashSet<Vec<u8>> = spans.iter().map(|s| s.span_id.clone()).collect();
    let client = hex::decode(client_span_id).unwrap();
    for span in &spans {
        assert!(
            span.parent_span_id == client || ids.contains(&span.parent_span_id),
            "span {:?} has a parent outside the trace",
            span.name
        );
    }
    let by_name = |name: &str| -> BTreeSet<i64> {
        spans
            .iter()
            .filter(|s| s.name == name)
            .filter_map(node_of)
            .collect()
    };
    assert_eq!(
        by_name("/quorumid.v1.Registry/Enroll"),
        BTreeSet::from([first as i64])
    );
    assert_eq!(
        by_name("/quorumid.v1.Raft/Forward"),
        BTreeSet::from([leader as i64])
    );
    assert_eq!(by_name("raft.propose"), BTreeSet::from([leader as i64]));
    assert_eq!(
        by_name("raft.apply"),
        cluster.nodes.keys().map(|n| *n as i64).collect(),
        "the write's apply is traced on every node"
    );
    assert!(
        by_name("/quorumid.v1.Raft/AppendEntries").len() == 2,
        "both followers' appends are in the trace"
    );

    // (b) Nothing personal in the exported spans or the log lines.
    let exported = receiver.bytes();
    let lines = logs.text();
    let contains = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    // The checks below can fail: the data is there and searchable.
    assert!(contains(&exported, "raft.apply"));
    assert!(lines.contains("node started"), "logs were not captured");
    let mut secrets = vec![
        identity.clone(),
        document.to_string(),
        document_normalised.to_string(),
        document_again.to_string(),
        platform.to_string(),
        enroll_request_id.to_string(),
        revoke_request_id.to_string(),
    ];
    secrets.extend(pseudonyms);
    for secret in &secrets {
        assert!(
            !contains(&exported, secret),
            "exported spans contain {secret:?}"
        );
        assert!(
            !lines.contains(secret.as_str()),
            "log lines contain {secret:?}"
        );
    }

    // Every log line is one JSON object with the node's labels; lines of the traced write
    // carry its trace id.
    let mut traced_lines = 0;
    for line in lines.lines() {
        let line: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        if line["trace_id"] == trace_id {
            traced_lines += 1;
            assert!(
                line["node_id"].is_u64() && line["province"].is_string(),
                "{line}"
            );
        }
    }
    assert!(traced_lines > 0, "no log line carries the write's trace id");
    assert!(
        lines
            .lines()
            .any(|l| l.contains("\"message\":\"node started\"") && l.contains("\"node_id\"")),
        "node start lines carry the node id"
    );

    cluster.shutdown().await;
}

/// `GET path` over plain HTTP/1.1; returns the content type and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str, accept: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    (content_type, body.to_string())
}

/// Samples of a Prometheus text exposition: `name{labels}` -> value. Fails on a line that
/// does not parse, and on a sample whose family has no HELP and TYPE line.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut typed = HashSet::new();
    let mut helped = HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(
                typed.contains(family) && helped.contains(family),
                "sample {series} has no HELP/TYPE"
            );
            samples.insert(series.to_string(), value);
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_endpoint_serves_every_family_without_personal_data() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers()[0];
    let enrolled = cluster
        .enroll(follower, "metrics-enroll-1", "MET-D1234")
        .await
        .expect("enroll");
    let refused = cluster
        .enroll(leader, "metrics-enroll-2", "met d1234")
        .await
        .expect_err("a second enrollment of one document");
    assert_eq!(reason_of(&refused), "DUPLICATE_DOCUMENT");
    cluster.converged(enrolled.log_index).await;
    cluster
        .verify(
            leader,
            &enrolled.identity_id,
            consistency(pb::ConsistencyLevel::Linearizable, 0, 0),
        )
        .await
        .expect("verify");
    cluster
        .cluster(leader)
        .await
        .trigger_snapshot(pb::TriggerSnapshotRequest {})
        .await
        .expect("snapshot");

    let addr = cluster.nodes[&leader]
        .metrics_addr
        .expect("test nodes serve /metrics");
    let (content_type, text) = http_get(addr, "/metrics", "*/*").await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse_exposition(&text);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
    };
    assert_eq!(value("quorumid_raft_is_leader"), 1.0);
    assert!(value("quorumid_raft_term") >= 1.0);
    assert!(value("quorumid_raft_leader_changes_total") >= 1.0);
    assert!(value("quorumid_raft_commit_duration_seconds_count") >= 1.0);
    assert!(value("quorumid_raft_applied_index") >= enrolled.log_index as f64);
    assert!(value("quorumid_raft_apply_lag_entries") >= 0.0);
    assert!(value("quorumid_read_watermark_age_seconds") < 60.0);
    assert_eq!(
        value("quorumid_requests_rejected_total{reason=\"DUPLICATE_DOCUMENT\"}"),
        1.0
    );
    assert!(
        value("quorumid_verify_duration_seconds_count{level=\"linearizable\",outcome=\"active\"}")
            >= 1.0
    );
    assert!(value("quorumid_enroll_dedup_duration_seconds_count") >= 2.0);
    // One face enrolled: a one-face search makes one comparison, at the floor (0.438).
    assert_eq!(value("quorumid_dedup_gallery_size{modality=\"face\"}"), 1.0);
    assert!((value("quorumid_dedup_threshold{modality=\"face\"}") - 0.438).abs() < 1e-6);
    assert_eq!(
        value("quorumid_dedup_gallery_size{modality=\"fingerprint\"}"),
        0.0
    );
    assert!(
        value("quorumid_biometric_matches_total{check=\"dedup_face\",decision=\"no_match\"}")
            >= 2.0
    );
    assert!(value("quorumid_raft_snapshot_size_bytes{operation=\"build\"}") > 0.0);
    assert!(value("quorumid_raft_snapshot_duration_seconds_count{operation=\"build\"}") >= 1.0);
    assert!(value("quorumid_rocksdb_memtable_size_bytes{column_family=\"identities\"}") > 0.0);
    assert!(samples.contains_key("quorumid_rocksdb_sst_size_bytes{column_family=\"raft_log\"}"));
    for peer in cluster.followers() {
        assert!(
            value(&format!(
                "quorumid_raft_replication_lag_entries{{peer_node_id=\"{peer}\"}}"
            )) >= 0.0
        );
    }
    for secret in [
        enrolled.identity_id.as_str(),
        "MET-D1234",
        "METD1234",
        "metrics-enroll-1",
    ] {
        assert!(!text.contains(secret), "/metrics shows {secret:?}");
    }

    // Prometheus asks for OpenMetrics and gets it.
    let (content_type, openmetrics) = http_get(
        addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0",
    )
    .await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));

    // For `.ci/checks/metrics.sh`: promtool checks this scrape.
    let sample = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-sample.txt");
    std::fs::File::create(&sample)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write the metrics sample");
    cluster.shutdown().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}
