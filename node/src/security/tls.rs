//! Mutual TLS on both ports (rustls, ring): the `[tls]` configuration, the server side (a
//! client certificate chaining to the cluster CA is required; this node's certificate is
//! re-read when its files change), the client side of peer calls, and the layer that turns
//! a verified client certificate into a [`Caller`] on every request.
//!
//! Without `[tls]` files the node serves plaintext: allowed on loopback (dev), and elsewhere
//! only with `insecure_plaintext = true`, for an isolated test network. Either way it says so
//! loudly at start.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use super::Caller;
use super::limits::RateLimits;
use crate::api::errors::{RETRY_AFTER_MS_KEY, with_reason};
use crate::raft::NodeId;

/// A TLS handshake that takes longer than this is dropped (a slow-loris guard).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, per port.
const MAX_HANDSHAKES: usize = 256;

/// `[tls]`: PEM files, typically mounted from a Kubernetes Secret.
///
/// ```toml
/// [tls]
/// ca = "/etc/quorumid/tls/ca.pem"      # the cluster CA: every node and caller chains to it
/// cert = "/etc/quorumid/tls/node.pem"  # this node: spiffe://quorumid/node/<node_id>
/// key = "/etc/quorumid/tls/node.key"
/// reload_secs = 30                     # how often cert and key are checked for rotation
/// ```
/// Overrides: `QUORUMID_TLS_CA`, `QUORUMID_TLS_CERT`, `QUORUMID_TLS_KEY`,
/// `QUORUMID_INSECURE_PLAINTEXT`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub reload_secs: u64,
    /// Serve plaintext on addresses other than loopback. For an isolated test network only:
    /// nobody is authenticated and every caller may do everything.
    pub insecure_plaintext: bool,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            ca: None,
            cert: None,
            key: None,
            reload_secs: 30,
            insecure_plaintext: false,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Either all three files or none; plaintext only where it is allowed.
    pub fn check(&self, listen: &[SocketAddr]) -> anyhow::Result<()> {
        match (&self.ca, &self.cert, &self.key) {
            (Some(_), Some(_), Some(_)) => {
                if self.reload_secs == 0 {
                    bail!("tls.reload_secs must be positive");
                }
                Ok(())
            }
            (None, None, None) => {
                if let Some(open) = listen.iter().find(|a| !a.ip().is_loopback())
                    && !self.insecure_plaintext
                {
                    bail!(
                        "refusing to serve plaintext on {open}: set [tls] ca, cert and key, or \
                         tls.insecure_plaintext = true for an isolated test network"
                    );
                }
                Ok(())
            }
            _ => bail!("[tls] needs all of ca, cert and key (PEM files), or none of them"),
        }
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn certificates(pem: &[u8], path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// This node's certificate and key, as read from their files.
struct NodeIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    certified: Arc<CertifiedKey>,
}

impl NodeIdentity {
    fn load(config: &TlsConfig, node_id: NodeId) -> anyhow::Result<NodeIdentity> {
        let (cert_path, key_path) = (config.cert.as_deref(), config.key.as_deref());
        let (Some(cert_path), Some(key_path)) = (cert_path, key_path) else {
            bail!("[tls] needs cert and key");
        };
        let cert_pem = read(cert_path, "TLS certificate")?;
        let key_pem = read(key_path, "TLS key")?;
        let chain = certificates(&cert_pem, cert_path)?;
        match Caller::from_certificate(&chain[0]) {
            Ok(Caller::Node { node_id: named }) if named == node_id => {}
            Ok(other) => bail!(
                "{} names {other}, but this is node {node_id} (it needs \
                 spiffe://quorumid/node/{node_id})",
                cert_path.display()
            ),
            Err(e) => bail!("{}: {e}", cert_path.display()),
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .with_context(|| format!("{} is not a usable private key", key_path.display()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().with_context(|| {
            format!(
                "{} does not belong to {}",
                key_path.display(),
                cert_path.display()
            )
        })?;
        Ok(NodeIdentity {
            cert_pem,
            key_pem,
            certified: Arc::new(certified),
        })
    }
}

/// The certificate the server presents: the current one, swapped on rotation.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A node's TLS state: the server configuration of both ports and what its peer calls present.
pub struct Tls {
    config: TlsConfig,
    node_id: NodeId,
    ca_pem: Vec<u8>,
    acceptor: TlsAcceptor,
    current: Arc<CurrentCert>,
    /// The identity peer calls present, and how many times it was replaced.
    client: RwLock<(NodeIdentity, u64)>,
}

impl Tls {
    /// Reads the CA, certificate and key, and checks the certificate is this node's.
    pub fn load(config: &TlsConfig, node_id: NodeId) -> anyhow::Result<Arc<Tls>> {
        let ca_path = config.ca.as_deref().context("[tls] needs ca")?;
        let ca_pem = read(ca_path, "TLS CA certificate")?;
        let mut roots = RootCertStore::empty();
        for cert in certificates(&ca_pem, ca_path)? {
            roots
                .add(cert)
                .with_context(|| format!("{} is not a usable CA certificate", ca_path.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .context("building the client certificate verifier")?;
        let identity = NodeIdentity::load(config, node_id)?;
        let current = Arc::new(CurrentCert(RwLock::new(identity.certified.clone())));
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(current.clone());
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(Tls {
            config: config.clone(),
            node_id,
            ca_pem,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            current,
            client: RwLock::new((identity, 0)),
        }))
    }

    /// Re-reads the certificate and key every `reload_secs`; a changed pair that is valid
    /// replaces the served one (new connections use it). Runs until aborted.
    pub async fn watch_rotation(self: Arc<Tls>) {
        let mut interval = tokio::time::interval(Duration::from_secs(self.config.reload_secs));
        interval.tick().await;
        loop {
            interval.tick().await;
            match NodeIdentity::load(&self.config, self.node_id) {
                Ok(fresh) => {
                    let mut client = self.client.write().unwrap_or_else(|e| e.into_inner());
                    if fresh.cert_pem == client.0.cert_pem && fresh.key_pem == client.0.key_pem {
                        continue;
                    }
                    *self.current.0.write().unwrap_or_else(|e| e.into_inner()) =
                        fresh.certified.clone();
                    *client = (fresh, client.1 + 1);
                    tracing::info!("TLS certificate and key reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "TLS files not reloaded; keeping the current certificate");
                }
            }
        }
    }

    /// Changes each time the certificate is reloaded: peer connections made before are
    /// replaced.
    pub fn generation(&self) -> u64 {
        self.client.read().unwrap_or_else(|e| e.into_inner()).1
    }

    /// `endpoint` with this node's client TLS (its certificate, the cluster CA). The
    /// endpoint's address must be `https://`.
    pub fn client(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        let client = self.client.read().unwrap_or_else(|e| e.into_inner());
        endpoint.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&self.ca_pem))
                .identity(Identity::from_pem(&client.0.cert_pem, &client.0.key_pem)),
        )
    }

    /// Accepted connections after their TLS handshake, until `stop` completes. Handshakes run
    /// concurrently (bounded, each with a timeout); one that fails is dropped and logged
    /// without the peer's identity.
    pub fn incoming(
        self: &Arc<Tls>,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                let accepted = tokio::select! {
                    _ = &mut stop => break,
                    accepted = listener.accept() => accepted,
                };
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small answers must not wait for the peer's delayed ACK.
                let _ = tcp.set_nodelay(true);
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::warn!("too many TLS handshakes in progress; connection dropped");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!("TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// The layer of both servers that attaches the [`Caller`] to every request: from the client
/// certificate on a TLS node, [`Caller::Unauthenticated`] on a plaintext one. On the peer
/// port it also refuses every caller but a node; on the API port it applies the callers'
/// rate limits.
#[derive(Clone)]
pub struct Authenticate {
    pub tls: bool,
    pub nodes_only: bool,
    pub limits: Option<Arc<RateLimits>>,
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = if self.tls {
            let certs = request.peer_certs().ok_or_else(|| {
                Status::unauthenticated("a client certificate is required on this port")
            })?;
            let leaf = certs.first().ok_or_else(|| {
                Status::unauthenticated("a client certificate is required on this port")
            })?;
            Caller::from_certificate(leaf).map_err(|e| Status::permission_denied(e.to_string()))?
        } else {
            Caller::Unauthenticated
        };
        if self.nodes_only {
            super::policy::raft(&caller)?;
        }
        if let (Some(limits), Some(uri)) = (&self.limits, caller.uri())
            && !matches!(caller, Caller::Node { .. })
            && let Err(wait) = limits.admit(&uri, Instant::now())
        {
            let mut status = with_reason(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                format!(
                    "{caller} is over its rate limit of {} requests a second; retry in {} ms",
                    limits.per_second(),
                    wait.as_millis().max(1)
                ),
            );
            let retry = wait.as_millis().max(1).to_string();
            if let Ok(value) = retry.parse() {
                status.metadata_mut().insert(RETRY_AFTER_MS_KEY, value);
            }
            return Err(status);
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}
