//! The Docker engine, as the harness uses it beside testcontainers: a bollard client that
//! negotiates the API version (the engine here speaks 1.41), the calls testcontainers does not
//! offer (kill -9, inspect for the process id and address, logs, labelled networks), clean-up
//! of leftovers by label, and the version relay.
//!
//! **The relay.** testcontainers 0.28 sends every request as API 1.53 without negotiating, and
//! an engine that speaks at most 1.41 refuses them all ("client version 1.53 is too new").
//! [`Relay`] listens on a Unix socket of its own, passes bytes both ways to the engine's socket,
//! and rewrites the version prefix `/v1.53/` of each request path to the engine's `/v1.NN/`
//! (same length, so no header changes). The harness points testcontainers at it through
//! `DOCKER_HOST`. With an engine at 1.53 or later nothing is rewritten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

/// Every container and network of the harness carries this label (value: the run's name).
pub const LABEL: &str = "quorumid-chaos.run";

/// The engine's own socket, noted before `DOCKER_HOST` is pointed at the relay.
static ENGINE_SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Where the engine listens: `DOCKER_HOST` (unix://) or the default socket.
pub fn engine_socket() -> PathBuf {
    ENGINE_SOCKET
        .get_or_init(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
        })
        .clone()
}

/// Where this process's relay listens.
pub fn relay_path() -> PathBuf {
    std::env::temp_dir().join(format!("quorumid-chaos-{}.sock", std::process::id()))
}

/// A bollard client on the engine's socket, at the API version the engine speaks.
pub async fn engine() -> anyhow::Result<Docker> {
    let socket = engine_socket();
    let docker =
        Docker::connect_with_unix(&socket.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("connecting to the Docker engine at {}", socket.display()))?;
    docker.negotiate_version().await.with_context(|| {
        format!(
            "asking the Docker engine at {} for its version (is it running?)",
            socket.display()
        )
    })
}

/// Removes every container (with its volumes) and network a previous run left behind.
/// Answers how many of each it removed.
pub async fn remove_leftovers(docker: &Docker) -> anyhow::Result<(usize, usize)> {
    let filters: HashMap<String, Vec<String>> =
        HashMap::from([("label".to_string(), vec![LABEL.to_string()])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing leftover containers")?;
    for c in &containers {
        if let Some(id) = &c.id {
            docker
                .remove_container(
                    id,
                    Some(
                        RemoveContainerOptionsBuilder::new()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await
                .with_context(|| format!("removing leftover container {id}"))?;
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .context("listing leftover networks")?;
    for n in &networks {
        if let Some(name) = &n.name {
            docker
                .remove_network(name)
                .await
                .with_context(|| format!("removing leftover network {name}"))?;
        }
    }
    Ok((containers.len(), networks.len()))
}

/// A private bridge network for one run, labelled for clean-up.
pub async fn create_network(docker: &Docker, name: &str, run: &str) -> anyhow::Result<()> {
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            labels: Some(HashMap::from([(LABEL.to_string(), run.to_string())])),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating network {name}"))?;
    Ok(())
}

pub async fn remove_network(docker: &Docker, name: &str) -> anyhow::Result<()> {
    docker
        .remove_network(name)
        .await
        .with_context(|| format!("removing network {name}"))
}

/// What the engine says about a node's container.
#[derive(Clone, Debug, Default)]
pub struct ContainerFacts {
    pub running: bool,
    pub paused: bool,
    /// The node process's pid on the host (0 when not running).
    pub pid: i64,
    pub exit_code: Option<i64>,
    /// Its address on the run's network.
    pub ip: Option<String>,
}

pub async fn inspect(docker: &Docker, id: &str, network: &str) -> anyhow::Result<ContainerFacts> {
    let c = docker
        .inspect_container(id, None)
        .await
        .with_context(|| format!("inspecting container {id}"))?;
    let state = c.state.unwrap_or_default();
    let ip = c
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|n| n.get(network).cloned())
        .and_then(|e| e.ip_address)
        .filter(|ip| !ip.is_empty());
    Ok(ContainerFacts {
        running: state.running.unwrap_or(false),
        paused: state.paused.unwrap_or(false),
        pid: state.pid.unwrap_or(0),
        exit_code: state.exit_code,
        ip,
    })
}

/// `docker kill -s KILL`: the process dies at once, nothing is flushed.
pub async fn kill9(docker: &Docker, id: &str) -> anyhow::Result<()> {
    docker
        .kill_container(
            id,
            Some(KillContainerOptionsBuilder::new().signal("KILL").build()),
        )
        .await
        .with_context(|| format!("killing container {id}"))
}

/// The container's output (the node logs to stderr), for the run's directory.
pub async fn logs(docker: &Docker, id: &str) -> anyhow::Result<String> {
    let mut stream = docker.logs(
        id,
        Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
    );
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&chunk.context("reading container logs")?.to_string());
    }
    Ok(text)
}

/// The API version testcontainers 0.28 asks for.
const TESTCONTAINERS_API: &[u8; 7] = b"/v1.53/";

/// Relays testcontainers' requests to the engine at a version it speaks (see the module
/// comment). Dropped, it stops listening.
pub struct Relay {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens at `path`, relaying to the engine, rewriting the version to what `docker`
    /// negotiated.
    pub async fn start(path: &Path, docker: &Docker) -> anyhow::Result<Relay> {
        let v = docker.client_version();
        let to: Option<[u8; 7]> = match (v.major_version, v.minor_version) {
            (1, minor) if minor >= 53 => None,
            (1, minor @ 10..=99) => Some(
                format!("/v1.{minor}/")
                    .into_bytes()
                    .try_into()
                    .expect("seven bytes"),
            ),
            (major, minor) => bail!(
                "the Docker engine speaks API {major}.{minor}; the relay can only rewrite 1.53 \
                 to 1.10 ..= 1.52"
            ),
        };
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("listening for testcontainers at {}", path.display()))?;
        let engine = engine_socket();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let engine = engine.clone();
                tokio::spawn(async move {
                    if let Ok(upstream) = UnixStream::connect(&engine).await {
                        relay_connection(client, upstream, to).await;
                    }
                });
            }
        });
        Ok(Relay {
            path: path.to_path_buf(),
            task,
        })
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn relay_connection(client: UnixStream, upstream: UnixStream, to: Option<[u8; 7]>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let requests = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            carry.extend_from_slice(&buf[..n]);
            let keep = match to {
                Some(to) => rewrite(&mut carry, &to),
                None => 0,
            };
            let send = carry.len() - keep;
            if up_write.write_all(&carry[..send]).await.is_err() {
                break;
            }
            carry.drain(..send);
        }
        let _ = up_write.shutdown().await;
    };
    let answers = async move {
        let _ = tokio::io::copy(&mut up_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, answers);
}

/// Rewrites every complete `/v1.53/` in `data` to `to`; answers how many bytes at the end
/// must wait for more (a partial `/v1.53` that the next read may complete).
fn rewrite(data: &mut [u8], to: &[u8; 7]) -> usize {
    let pat = TESTCONTAINERS_API;
    let mut i = 0;
    while i + pat.len() <= data.len() {
        if &data[i..i + pat.len()] == pat {
            data[i..i + pat.len()].copy_from_slice(to);
            i += pat.len();
        } else {
            i += 1;
        }
    }
    // The longest tail that is a proper prefix of the pattern.
    (1..pat.len())
        .rev()
        .find(|&k| k <= data.len() && data[data.len() - k..] == pat[..k])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_rewrites_versions_even_across_reads() {
        let to = *b"/v1.41/";
        let mut whole = b"GET /v1.53/containers/json HTTP/1.1\r\n\r\n".to_vec();
        assert_eq!(rewrite(&mut whole, &to), 0);
        assert_eq!(&whole[..], b"GET /v1.41/containers/json HTTP/1.1\r\n\r\n");
        let mut first = b"POST /v1.5".to_vec();
        assert_eq!(rewrite(&mut first, &to), 5, "keeps the partial '/v1.5'");
        let mut joined = b"/v1.53/networks/create".to_vec();
        assert_eq!(rewrite(&mut joined, &to), 0);
        assert!(joined.starts_with(b"/v1.41/"));
        let mut body = b"{\"Image\":\"quorumid-node:x\"}".to_vec();
        assert_eq!(rewrite(&mut body, &to), 0);
    }
}
