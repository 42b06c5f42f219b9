//! The log line: time, level, target, the node id and province, the trace and span id when
//! the line belongs to a traced call, then the message and the event's own fields. Text by
//! default, one JSON object a line with `QUORUMID_LOG_FORMAT=json`.
//!
//! Span fields are not printed (only the node labels and trace ids taken from them), so what
//! a span records never reaches the logs by accident.

use std::fmt::{self, Write as _};

use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;

/// The node a span belongs to, from its `node_id` and `province` fields.
#[derive(Clone, Debug, Default)]
pub struct NodeLabels {
    pub node_id: Option<u64>,
    pub province: Option<String>,
}

impl Visit for NodeLabels {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "node_id" {
            self.node_id = Some(value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "province" {
            self.province = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "province" {
            self.province = Some(format!("{value:?}"));
        }
    }
}

/// Remembers the node labels of every span that has them, for [`LineFormat`].
pub struct NodeLabelsLayer;

impl<S> Layer<S> for NodeLabelsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().fields().field("node_id").is_none() {
            return;
        }
        let mut labels = NodeLabels::default();
        attrs.record(&mut labels);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(labels);
        }
    }
}

/// What the line says about where it comes from.
#[derive(Default)]
struct LineContext {
    labels: NodeLabels,
    trace: Option<SpanContext>,
}

/// The node labels and trace context of the innermost span that has them.
fn line_context() -> LineContext {
    let mut found = LineContext::default();
    tracing::Span::current().with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let Some(span) = registry.span(id) else {
            return;
        };
        let ids: Vec<Id> = span.scope().map(|s| s.id()).collect();
        found.labels = span
            .scope()
            .find_map(|s| s.extensions().get::<NodeLabels>().cloned())
            .unwrap_or_default();
        drop(span);
        found.trace = ids.iter().find_map(|id| {
            let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
            let sc = cx.span().span_context().clone();
            sc.is_valid().then_some(sc)
        });
    });
    found
}

/// The event's fields, as JSON values.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// The event formatter of the log layer.
pub struct LineFormat {
    format: LogFormat,
    ansi: bool,
}

impl LineFormat {
    pub fn new(format: LogFormat, ansi: bool) -> LineFormat {
        LineFormat { format, ansi }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let meta = event.metadata();
        let context = line_context();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = match fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        match self.format {
            LogFormat::Json => {
                let mut line = Map::new();
                line.insert("timestamp".into(), time.into());
                line.insert("level".into(), meta.level().as_str().into());
                line.insert("target".into(), meta.target().into());
                if let Some(node_id) = context.labels.node_id {
                    line.insert("node_id".into(), node_id.into());
                }
                if let Some(province) = context.labels.province {
                    line.insert("province".into(), province.into());
                }
                if let Some(trace) = &context.trace {
                    line.insert("trace_id".into(), trace.trace_id().to_string().into());
                    line.insert("span_id".into(), trace.span_id().to_string().into());
                }
                line.insert("message".into(), message.into());
                if !fields.is_empty() {
                    line.insert("fields".into(), Value::Object(fields));
                }
                writeln!(writer, "{}", Value::Object(line))
            }
            LogFormat::Text => {
                let level = meta.level().as_str();
                if self.ansi {
                    let colour = match *meta.level() {
                        tracing::Level::ERROR => "31",
                        tracing::Level::WARN => "33",
                        tracing::Level::INFO => "32",
                        _ => "34",
                    };
                    write!(writer, "{time} \x1b[{colour}m{level:>5}\x1b[0m")?;
                } else {
                    write!(writer, "{time} {level:>5}")?;
                }
                if let Some(node_id) = context.labels.node_id {
                    write!(writer, " node={node_id}")?;
                }
                if let Some(province) = &context.labels.province {
                    write!(writer, " province={province}")?;
                }
                if let Some(trace) = &context.trace {
                    write!(writer, " trace_id={}", trace.trace_id())?;
                }
                write!(writer, " {}: {message}", meta.target())?;
                let mut rest = String::new();
                for (name, value) in &fields {
                    match value {
                        Value::String(s) => write!(rest, " {name}={s}")?,
                        other => write!(rest, " {name}={other}")?,
                    }
                }
                writeln!(writer, "{rest}")
            }
        }
    }
}

/// The fmt layer's span field formatter: nothing. Span fields are never printed (only the node
/// labels and trace ids taken from them), and the default formatter would write every new
/// span's fields into a string, with colour codes, on every request.
pub struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> std::fmt::Result {
        Ok(())
    }
}
