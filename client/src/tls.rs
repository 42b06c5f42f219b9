//! [`ClientTls`]: mutual TLS settings for a cluster whose nodes require client certificates
//! (see SECURITY.md): the cluster CA, and the certificate that names this caller's role
//! (`spiffe://quorumid/platform/<id>`, `.../registrar/<PROVINCE>/<name>`, ...).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::Error;

/// The CA that node certificates chain to, and this caller's certificate and key (PEM).
#[derive(Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: Identity,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(..)")
    }
}

impl ClientTls {
    pub fn from_pem(
        ca: impl AsRef<[u8]>,
        cert: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> ClientTls {
        ClientTls {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        }
    }

    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTls, Error> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))
        };
        Ok(ClientTls::from_pem(read(ca)?, read(cert)?, read(key)?))
    }

    /// The settings of one connection; `server_name` is the name the node's certificate is
    /// checked against when the address is an IP resolved from that name.
    pub(crate) fn config(&self, server_name: Option<&str>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone());
        match server_name {
            Some(name) => config.domain_name(name),
            None => config,
        }
    }
}
