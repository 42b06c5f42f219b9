//! `quorumid`: the command-line tool for registrars, authorities, platforms and operators,
//! on the client library (nearest node, failover, safe write retries).
//!
//! Human tables by default, `--json` for scripts (one JSON document per answer, JSON lines
//! for bulk enrollment). Exit codes (see [`exit_code`]):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; for `verify`, the identity is ACTIVE (and the probe matched) |
//! | 1 | an unexpected failure (the message says what) |
//! | 2 | bad usage or invalid input |
//! | 3 | `verify`: the identity is not valid (revoked, suspended, unknown, probe mismatch) |
//! | 4 | the registry refused the write (duplicate, not allowed in this status, unknown id, reused request id) |
//! | 5 | the cluster could not answer (no quorum, every node stale or unreachable, deadline) |
//! | 6 | permission denied |

mod bulk;
mod commands;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use quorumid_client::{Client, Error};

pub use output::Output;

#[derive(Parser)]
#[command(
    name = "quorumid",
    version,
    about = "Verify, enroll, revoke and operate a quorumid identity registry"
)]
pub struct Cli {
    /// Node API addresses (repeat, or comma-separate); the nearest healthy one is used.
    #[arg(
        long = "node",
        global = true,
        env = "QUORUMID_NODES",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7101,http://127.0.0.1:7102,http://127.0.0.1:7103"
    )]
    nodes: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Deadline of each call, across every node tried, in milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    deadline_ms: u64,
    /// The platform id for verifications (also its pseudonym sector).
    #[arg(long, global = true, env = "QUORUMID_PLATFORM", default_value = "cli")]
    platform: String,
    /// Prefer nodes of this province.
    #[arg(long, global = true)]
    prefer_province: Option<String>,
    /// Mutual TLS: the cluster CA (PEM). With it, --tls-cert and --tls-key name this caller,
    /// and node addresses are https://.
    #[arg(long, global = true, env = "QUORUMID_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<std::path::PathBuf>,
    /// This caller's certificate (PEM), from `quorumid-node certs issue`.
    #[arg(long, global = true, env = "QUORUMID_TLS_CERT", requires = "tls_ca")]
    tls_cert: Option<std::path::PathBuf>,
    /// This caller's private key (PEM).
    #[arg(long, global = true, env = "QUORUMID_TLS_KEY", requires = "tls_ca")]
    tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: commands::Command,
}

/// The exit code for a failed command (the table above).
pub fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<Error>() {
        Some(Error::InvalidInput(_) | Error::Config(_)) => 2,
        Some(Error::ProbeMismatch) => 3,
        Some(
            Error::UnknownIdentity
            | Error::Revoked
            | Error::Suspended
            | Error::InvalidTransition(_)
            | Error::Duplicate { .. }
            | Error::RequestIdReused(_),
        ) => 4,
        Some(
            Error::Stale(_)
            | Error::NoQuorum(_)
            | Error::Unavailable(_)
            | Error::DeadlineExceeded { .. },
        ) => 5,
        Some(Error::PermissionDenied(_)) => 6,
        _ if error.downcast_ref::<commands::NotValid>().is_some() => 3,
        _ if let Some(batch) = error.downcast_ref::<bulk::Incomplete>() => batch.exit_code,
        _ if error.downcast_ref::<commands::Usage>().is_some() => 2,
        _ => 1,
    }
}

async fn connect(cli: &Cli) -> Result<Client, Error> {
    let mut builder = Client::builder()
        .endpoints(cli.nodes.iter().map(|n| n.trim().to_string()))
        .platform(cli.platform.clone())
        .deadline(Duration::from_millis(cli.deadline_ms.max(1)))
        .attempt_timeout(Duration::from_millis((cli.deadline_ms / 2).clamp(1, 2000)))
        .probe_interval(Duration::from_secs(1));
    if let Some(p) = &cli.prefer_province {
        builder = builder.province(p.clone());
    }
    if let (Some(ca), Some(cert), Some(key)) = (&cli.tls_ca, &cli.tls_cert, &cli.tls_key) {
        builder = builder.tls(quorumid_client::ClientTls::from_files(ca, cert, key)?);
    }
    builder.connect().await
}

#[tokio::main]
async fn main() -> ExitCode {
    // End quietly when the reader of our output goes away (`quorumid ... | head`).
    // SAFETY: called before any other thread exists; restores the default disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let out = Output { json: cli.json };
    let result = match connect(&cli).await {
        Ok(client) => commands::run(&cli, &client, &out).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            if out.json {
                println!(
                    "{}",
                    serde_json::json!({ "error": format!("{e:#}"), "exit_code": code })
                );
            }
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}
