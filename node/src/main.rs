//! The `quorumid-node` program: `serve` one node, run a local `dev` cluster, `calibrate`
//! biometric thresholds, or issue TLS `certs`. (The `quorumid` program of `client/` is the
//! command-line tool for using and operating a cluster.)

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quorumid_node::telemetry::{LogOutput, Telemetry, TelemetryConfig};
use quorumid_node::{config::NodeConfig, dev, node::Node};

#[derive(Parser)]
#[command(
    name = "quorumid-node",
    version,
    about = "A province node of the quorumid identity registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node from a configuration file (see `config.rs` for the format).
    Serve {
        #[arg(long, env = "QUORUMID_CONFIG")]
        config: std::path::PathBuf,
    },
    /// Run a local multi-province cluster on loopback (child processes), until Ctrl-C.
    Dev(dev::DevOptions),
    /// Face thresholds for the `[biometrics]` configuration, from labelled embeddings.
    Calibrate(quorumid_node::biometrics::calibrate::CalibrateOptions),
    /// Create a cluster CA, or issue a node or caller certificate from it (mutual TLS).
    Certs(quorumid_node::security::certs::CertsOptions),
}

async fn serve(config: std::path::PathBuf) -> anyhow::Result<()> {
    let config = NodeConfig::load(&config)?;
    // Logs on standard error (QUORUMID_LOG_FORMAT=json for JSON lines, RUST_LOG to filter);
    // spans exported only if [telemetry] names an OTLP endpoint.
    let telemetry = Telemetry::init(&config.telemetry, LogOutput::stderr())?;
    let result = serve_node(config).await;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn serve_node(config: NodeConfig) -> anyhow::Result<()> {
    let node = Node::start(config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    // A leader hands over first, so the cluster has a leader again without waiting for an
    // election timeout; if that fails, stopping at once is the next best thing.
    if let Err(e) = node.hand_over().await {
        tracing::warn!(error = %e, "stopping without a hand-over");
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Dev(options) => {
            match Telemetry::init(&TelemetryConfig::default(), LogOutput::stderr()) {
                Ok(_logs) => dev::run(options).await,
                Err(e) => Err(e),
            }
        }
        Command::Calibrate(options) => quorumid_node::biometrics::calibrate::run(options),
        Command::Certs(options) => quorumid_node::security::certs::run(options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
