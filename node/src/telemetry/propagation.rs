//! W3C trace context (`traceparent`) in gRPC metadata.
//!
//! Incoming: [`server_span`] is the `trace_fn` of both tonic servers. It opens one span per
//! call, named after the method (from a fixed list, never the raw path), labelled with the
//! node, and continues the caller's trace when the call carries one. Calls on the Raft port
//! that carry no trace (heartbeats, read-index rounds) and health checks get a span that is
//! only used to label log lines, not exported.
//!
//! Outgoing: [`InjectContext`] is the interceptor of every peer client; it writes the current
//! span's context into the call's metadata. [`client_span`] opens the span of a peer call when
//! the caller is part of a trace.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::raft::NodeId;

/// Every gRPC method a node serves. A path not in this list is named `unknown`.
const METHODS: [&str; 28] = [
    "/quorumid.v1.Registry/Enroll",
    "/quorumid.v1.Registry/Revoke",
    "/quorumid.v1.Registry/Suspend",
    "/quorumid.v1.Registry/Reinstate",
    "/quorumid.v1.Registry/GetRecord",
    "/quorumid.v1.Registry/BindHolderKey",
    "/quorumid.v1.Verifier/Verify",
    "/quorumid.v1.Holder/SetModalityLock",
    "/quorumid.v1.Holder/GetHistory",
    "/quorumid.v1.Holder/RotateKey",
    "/quorumid.v1.Cluster/Status",
    "/quorumid.v1.Cluster/AddLearner",
    "/quorumid.v1.Cluster/ChangeMembership",
    "/quorumid.v1.Cluster/TransferLeader",
    "/quorumid.v1.Cluster/TriggerSnapshot",
    "/quorumid.v1.Raft/AppendEntries",
    "/quorumid.v1.Raft/Vote",
    "/quorumid.v1.Raft/InstallSnapshot",
    "/quorumid.v1.Raft/ReadIndex",
    "/quorumid.v1.Raft/Forward",
    "/quorumid.v1.Raft/Elect",
    "/quorumid.v1.Raft/WatchLeader",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "unknown",
];

/// The method of a request path, from [`METHODS`].
pub fn method_name(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == path)
        .copied()
        .unwrap_or("unknown")
}

/// Which of the node's two servers a call arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Api,
    Raft,
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The `trace_fn` of a node's server on `port`.
pub fn server_span(
    port: Port,
    node_id: NodeId,
    province: String,
) -> impl Fn(&http::Request<()>) -> Span + Clone + Send + Sync + 'static {
    move |request| {
        let method = method_name(request.uri().path());
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        let continued = parent.span().span_context().is_valid();
        let housekeeping = method.starts_with("/grpc.") || method == "unknown";
        if continued || (port == Port::Api && !housekeeping) {
            let span = tracing::info_span!(
                "rpc",
                otel.name = method,
                otel.kind = "server",
                rpc.system = "grpc",
                node_id,
                province = %province,
            );
            if continued {
                let _ = span.set_parent(parent);
            }
            span
        } else {
            tracing::info_span!(
                target: "quorumid::rpc",
                "rpc",
                method,
                node_id,
                province = %province,
            )
        }
    }
}

/// The context of the current span, if it is part of a trace that is being recorded.
pub fn current_sampled() -> Option<SpanContext> {
    let cx = Span::current().context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then_some(sc)
}

/// The span of an outgoing peer call, if the caller is part of a trace (background calls,
/// such as heartbeats and read-index rounds, are not traced).
pub fn client_span(rpc: &'static str, peer: NodeId) -> Option<Span> {
    current_sampled()?;
    Some(tracing::info_span!(
        "peer call",
        otel.name = rpc,
        otel.kind = "client",
        rpc.system = "grpc",
        peer_node_id = peer,
    ))
}

/// Makes `span` a child of `parent` (a span of this node or of another).
pub fn set_parent(span: &Span, parent: &SpanContext) {
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent.clone()));
}

/// The interceptor of peer clients: writes the current span's context into the call.
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectContext;

impl tonic::service::Interceptor for InjectContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let cx = Span::current().context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new()
                .inject_context(&cx, &mut MetadataInjector(request.metadata_mut()));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_are_named() {
        assert_eq!(
            method_name("/quorumid.v1.Verifier/Verify"),
            "/quorumid.v1.Verifier/Verify"
        );
        assert_eq!(
            method_name("/quorumid.v1.Verifier/0123456789ABCDEFG"),
            "unknown"
        );
        assert_eq!(method_name("/x"), "unknown");
    }
}
