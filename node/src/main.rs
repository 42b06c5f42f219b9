//! The `quorumid-node` program: `serve` one node, run a local `dev` cluster, or `admin` it.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quorumid_node::{admin, config::NodeConfig, dev, node::Node};
use tracing_subscriber::EnvFilter;

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
    /// Operator commands against a running cluster.
    Admin(admin::AdminOptions),
    /// Face thresholds for the `[biometrics]` configuration, from labelled embeddings.
    Calibrate(quorumid_node::biometrics::calibrate::CalibrateOptions),
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,h2=warn,tower=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("QUORUMID_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: std::path::PathBuf) -> anyhow::Result<()> {
    let config = NodeConfig::load(&config)?;
    let node = Node::start(config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => {
            init_logging();
            serve(config).await
        }
        Command::Dev(options) => {
            init_logging();
            dev::run(options).await
        }
        Command::Calibrate(options) => quorumid_node::biometrics::calibrate::run(options),
        Command::Admin(options) => {
            // Like other command-line tools, end quietly when the reader of our output
            // goes away (`... | head`) instead of failing on a broken pipe.
            // SAFETY: called before any other thread writes to stdout; restores the default.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            admin::run(options).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
