//! The process-wide subscriber: every log line through [`LineFormat`](super::logs), and, when
//! an OTLP endpoint is configured, this crate's spans exported in batches.
//!
//! Log lines follow `RUST_LOG` (default below); export does not: it always takes this crate's
//! spans at INFO and above, so turning logs down does not cut traces off.

use std::io::IsTerminal;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use super::TelemetryConfig;
use super::logs::{LineFormat, NoSpanFields, NodeLabelsLayer};

/// Which log lines are written when `RUST_LOG` is not set.
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,h2=warn,tower=warn";

/// The crate whose spans are exported (and only its own: other crates' spans and events
/// could carry anything).
const EXPORTED_TARGET: &str = "quorumid_node";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where and how log lines are written.
pub struct LogOutput<W> {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. [`DEFAULT_LOG_FILTER`].
    pub filter: String,
    pub writer: W,
    /// Colour the level (only for a terminal).
    pub ansi: bool,
}

impl LogOutput<fn() -> std::io::Stderr> {
    /// Standard error, formatted as `QUORUMID_LOG_FORMAT` says (`json`, or text), filtered
    /// by `RUST_LOG`.
    pub fn stderr() -> Self {
        let json = std::env::var("QUORUMID_LOG_FORMAT").is_ok_and(|f| f == "json");
        LogOutput {
            format: if json {
                LogFormat::Json
            } else {
                LogFormat::Text
            },
            filter: std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.to_string()),
            writer: std::io::stderr,
            ansi: !json && std::io::stderr().is_terminal(),
        }
    }
}

/// The installed subscriber's handle: flushes and stops span export.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the process-wide subscriber. Spans are exported only if `config` names an
    /// OTLP endpoint. Must run inside a Tokio runtime (the exporter's gRPC channel lives there).
    pub fn init<W>(config: &TelemetryConfig, logs: LogOutput<W>) -> anyhow::Result<Telemetry>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        config.check()?;
        let filter = EnvFilter::try_new(&logs.filter)
            .with_context(|| format!("log filter {:?} is not valid", logs.filter))?;
        let provider = match &config.otlp_endpoint {
            None => None,
            Some(endpoint) => Some(tracer_provider(endpoint, config.sample_ratio)?),
        };
        let export = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("quorumid-node"))
                .with_level(true)
                .with_filter(Targets::new().with_target(EXPORTED_TARGET, Level::INFO))
        });
        let lines = tracing_subscriber::fmt::layer()
            .fmt_fields(NoSpanFields)
            .event_format(LineFormat::new(logs.format, logs.ansi))
            .with_writer(logs.writer)
            .with_filter(filter);
        tracing_subscriber::registry()
            .with(NodeLabelsLayer.with_filter(Targets::new().with_target("quorumid", Level::INFO)))
            .with(lines)
            .with(export)
            .try_init()
            .context("installing the log and trace subscriber (is one installed already?)")?;
        Ok(Telemetry { provider })
    }

    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends every finished span now. Blocks: call it from a blocking context.
    pub fn flush(&self) -> anyhow::Result<()> {
        if let Some(provider) = &self.provider {
            provider
                .force_flush()
                .context("flushing spans to the OTLP endpoint")?;
        }
        Ok(())
    }

    /// Flushes and stops the exporter. Blocks: call it from a blocking context.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: stopping the span exporter: {e}");
        }
    }
}

fn tracer_provider(endpoint: &str, sample_ratio: f64) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("building the OTLP span exporter for {endpoint}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name("quorumid-node")
                .build(),
        )
        .build())
}
