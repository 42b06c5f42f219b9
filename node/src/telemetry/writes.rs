//! A write's trace from its proposal on the leader to the Raft append and the apply on every
//! node.
//!
//! Log entries carry no trace context: the replicated log holds registry commands only.
//! Instead each node remembers, in memory, the span context under which a request was
//! proposed (leader) or arrived in an AppendEntries call (followers), keyed by the request's
//! id, and opens its append and apply spans under it. The leader sends the contexts of the
//! entries in an AppendEntries call in the `quorumid-entry-traces` metadata as
//! `index=traceparent` pairs. Request ids are only keys here: they are never recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Metadata key of the per-entry trace contexts of an AppendEntries call.
pub const ENTRY_TRACES: &str = "quorumid-entry-traces";

/// How many writes' contexts a node remembers (oldest forgotten first).
const CAPACITY: usize = 4096;

/// Span contexts of recent writes, by request id.
#[derive(Default)]
pub struct WriteTraces {
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    by_request: HashMap<String, SpanContext>,
    order: VecDeque<String>,
}

impl WriteTraces {
    /// Remembers that `request_id` is written under `cx` (only if it is being recorded).
    pub fn remember(&self, request_id: &str, cx: SpanContext) {
        if !(cx.is_valid() && cx.is_sampled()) {
            return;
        }
        let mut inner = self.inner.lock().expect("write traces lock poisoned");
        if inner
            .by_request
            .insert(request_id.to_string(), cx)
            .is_none()
        {
            inner.order.push_back(request_id.to_string());
        }
        while inner.order.len() > CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.by_request.remove(&old);
            }
        }
    }

    pub fn get(&self, request_id: &str) -> Option<SpanContext> {
        let inner = self.inner.lock().expect("write traces lock poisoned");
        inner.by_request.get(request_id).cloned()
    }
}

fn traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    )
}

fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let cx = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

/// `index=traceparent;...` for the entries of an AppendEntries call.
pub fn encode_entry_traces(entries: &[(u64, SpanContext)]) -> String {
    entries
        .iter()
        .map(|(index, cx)| format!("{index}={}", traceparent(cx)))
        .collect::<Vec<_>>()
        .join(";")
}

/// The pairs of [`encode_entry_traces`]; malformed pairs are skipped.
pub fn decode_entry_traces(value: &str) -> HashMap<u64, SpanContext> {
    value
        .split(';')
        .filter_map(|pair| {
            let (index, parent) = pair.split_once('=')?;
            Some((index.parse().ok()?, parse_traceparent(parent)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(n: u8) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    #[test]
    fn entry_traces_round_trip_and_garbage_is_skipped() {
        let value = encode_entry_traces(&[(7, context(1)), (9, context(2))]);
        let decoded = decode_entry_traces(&format!("{value};x=1;5=00-zz-11-01"));
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[&7].trace_id(), context(1).trace_id());
        assert_eq!(decoded[&9].span_id(), context(2).span_id());
    }

    #[test]
    fn only_recorded_contexts_are_remembered_and_the_oldest_go_first() {
        let traces = WriteTraces::default();
        traces.remember("unsampled", SpanContext::empty_context());
        assert!(traces.get("unsampled").is_none());
        for i in 0..=CAPACITY {
            traces.remember(&format!("r{i}"), context(1));
        }
        assert!(traces.get("r0").is_none());
        assert!(traces.get(&format!("r{CAPACITY}")).is_some());
    }
}
