//! The `[telemetry]` section of the node configuration.
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://otel-collector:4317"  # OTLP/gRPC; unset (the default): no export
//! sample_ratio = 0.1                            # share of new traces kept (0.0 to 1.0)
//! metrics_listen = "0.0.0.0:9100"               # Prometheus /metrics; unset: not served
//! ```

use std::net::SocketAddr;

use anyhow::bail;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where spans are exported (OTLP over gRPC). Unset: traces are not exported.
    pub otlp_endpoint: Option<String>,
    /// The share of new traces that are sampled. A call that arrives with a sampling
    /// decision (W3C `traceparent`) keeps it.
    pub sample_ratio: f64,
    /// Where the Prometheus `/metrics` endpoint listens. Unset: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: None,
            sample_ratio: 0.1,
            metrics_listen: None,
        }
    }
}

impl TelemetryConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            bail!(
                "telemetry.sample_ratio must be between 0.0 and 1.0, got {}",
                self.sample_ratio
            );
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: http::Uri = endpoint.parse().map_err(|e| {
                anyhow::anyhow!("telemetry.otlp_endpoint {endpoint:?} is not a URI: {e}")
            })?;
            if uri.scheme_str().is_none_or(|s| s != "http" && s != "https") || uri.host().is_none()
            {
                bail!("telemetry.otlp_endpoint must look like http://host:4317, got {endpoint:?}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_by_default_and_bad_settings_are_explained() {
        let config: TelemetryConfig = toml::from_str("").unwrap();
        assert_eq!(config.otlp_endpoint, None);
        assert_eq!(config.metrics_listen, None);
        config.check().unwrap();
        let bad = TelemetryConfig {
            sample_ratio: 1.5,
            ..TelemetryConfig::default()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("sample_ratio")
        );
        let bad = TelemetryConfig {
            otlp_endpoint: Some("collector:4317".into()),
            ..TelemetryConfig::default()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("otlp_endpoint")
        );
        let good: TelemetryConfig = toml::from_str(
            "otlp_endpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 1.0\nmetrics_listen = \"127.0.0.1:9100\"",
        )
        .unwrap();
        good.check().unwrap();
    }
}
