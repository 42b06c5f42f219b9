//! Telemetry for operators: traces across nodes (OpenTelemetry, exported over OTLP),
//! Prometheus metrics and structured logs, none of which carries personal data.
//!
//! - `config`: the `[telemetry]` section of the node configuration.
//! - `init`: the process-wide subscriber: log lines and, when configured, the OTLP exporter.
//! - `logs`: the log line (text or JSON) with node id, province and trace id.
//! - `propagation`: W3C trace context in gRPC metadata: a server span for every incoming
//!   call, and injection into every peer call.
//! - `writes`: a write's trace from its proposal on the leader to the Raft append and the
//!   apply on every node.
//! - `metrics`: the node's Prometheus metrics, the `/metrics` listener and the count of
//!   rejected requests by reason.
//!
//! What telemetry may carry: gRPC method names (from a fixed list), node ids, provinces, log
//! indices, durations, counts and reason codes. Never identity ids, document numbers or keys,
//! templates, pseudonyms, platform ids or request ids (ARCHITECTURE.md). Only this crate's
//! spans and events are exported, and no span records a request field.

mod config;
mod init;
mod logs;
pub mod metrics;
pub mod propagation;
pub mod writes;

pub use config::TelemetryConfig;
pub use init::{LogFormat, LogOutput, Telemetry};
pub use metrics::Metrics;

use crate::raft::NodeId;

/// One node's telemetry: its labels, its metrics and the trace contexts of its writes.
pub struct NodeTelemetry {
    pub node_id: NodeId,
    pub province: String,
    pub metrics: Metrics,
    pub writes: writes::WriteTraces,
}

impl NodeTelemetry {
    pub fn new(node_id: NodeId, province: &str) -> std::sync::Arc<NodeTelemetry> {
        std::sync::Arc::new(NodeTelemetry {
            node_id,
            province: province.to_string(),
            metrics: Metrics::new(),
            writes: writes::WriteTraces::default(),
        })
    }

    /// The span of applying the entry at `index`, if its write is traced.
    pub fn apply_span(&self, request_id: &str, index: u64) -> Option<tracing::Span> {
        let parent = self.writes.get(request_id)?;
        let span = tracing::info_span!("raft.apply", node_id = self.node_id, log_index = index);
        propagation::set_parent(&span, &parent);
        Some(span)
    }

    /// The span that the node's own background work runs in: it labels log lines with the
    /// node id and province, and is not exported.
    pub fn node_span(&self) -> tracing::Span {
        tracing::info_span!(
            target: "quorumid::node",
            "node",
            node_id = self.node_id,
            province = %self.province
        )
    }
}
