//! Issuing certificates: a cluster CA and certificates naming a [`Caller`]
//! (`quorumid-node certs`). For dev clusters, tests and deployments without a PKI of their
//! own; any CA works, as long as each certificate carries its one `spiffe://quorumid/...`
//! URI.
//!
//! A directory holds `ca.pem` and `ca.key`; each issued certificate is `<name>.pem` and
//! `<name>.key` beside them. Keys are ECDSA P-256, written with mode 0600.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::Caller;

/// How long issued certificates are valid.
const VALID_DAYS: i64 = 365;
const CA_VALID_DAYS: i64 = 10 * 365;

/// A cluster CA: its certificate and the key that signs.
pub struct CertificateAuthority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks that run a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

impl CertificateAuthority {
    /// A new CA named `name`.
    pub fn create(name: &str) -> anyhow::Result<CertificateAuthority> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "quorumid");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALID_DAYS);
        let cert = params
            .self_signed(&key)
            .context("signing the CA certificate")?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA of `dir` (`ca.pem`, `ca.key`).
    pub fn load(dir: &Path) -> anyhow::Result<CertificateAuthority> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let (cert_pem, key_pem) = (read("ca.pem")?, read("ca.key")?);
        let key = KeyPair::from_pem(&key_pem).context("ca.key is not a PEM private key")?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).context("ca.pem is not a CA certificate")?;
        Ok(CertificateAuthority { cert_pem, issuer })
    }

    /// Writes `ca.pem` and `ca.key` into `dir`, refusing to replace an existing CA.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        if dir.join("ca.key").exists() {
            bail!("{} already holds a CA (ca.key)", dir.display());
        }
        write(dir, "ca.pem", &self.cert_pem, false)?;
        write(dir, "ca.key", &self.issuer.key().serialize_pem(), true)
    }

    /// A certificate for `caller`; `hosts` (DNS names or IP addresses) are the names it
    /// serves under, for nodes.
    pub fn issue(&self, caller: &Caller, hosts: &[String]) -> anyhow::Result<Issued> {
        let uri = caller
            .uri()
            .context("an unauthenticated caller has no certificate")?;
        let key = KeyPair::generate().context("generating a key")?;
        let mut params = CertificateParams::new(hosts.to_vec())
            .with_context(|| format!("host names {hosts:?}"))?;
        params
            .subject_alt_names
            .push(SanType::URI(uri.clone().try_into().context("caller URI")?));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, uri);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if matches!(caller, Caller::Node { .. }) {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        validity(&mut params, VALID_DAYS);
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing the certificate")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Writes `<name>.pem` and `<name>.key` into `dir`; returns their paths.
    pub fn save(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        write(dir, &format!("{name}.pem"), &self.cert_pem, false)?;
        write(dir, &format!("{name}.key"), &self.key_pem, true)?;
        Ok((
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        ))
    }
}

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// `quorumid-node certs`: create a CA, or issue a certificate from one.
#[derive(Debug, clap::Args)]
pub struct CertsOptions {
    /// The directory of the CA (ca.pem, ca.key) and of the issued files.
    #[arg(long, default_value = "tls")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create the cluster CA in the directory.
    Ca {
        #[arg(long, default_value = "quorumid cluster CA")]
        name: String,
    },
    /// Issue a certificate for a caller, signed by the directory's CA.
    Issue {
        /// The caller: node/<id>, operator/<name>, registrar/<PROVINCE>/<name>,
        /// authority/<PROVINCE|national>/<name> or platform/<id>.
        caller: String,
        /// A DNS name or IP address the certificate serves under (nodes); repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// File name (without extension); default: the caller with `/` as `-`.
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn run(options: CertsOptions) -> anyhow::Result<()> {
    match options.command {
        CertsCommand::Ca { name } => {
            CertificateAuthority::create(&name)?.save(&options.dir)?;
            println!("wrote {}/ca.pem and ca.key", options.dir.display());
        }
        CertsCommand::Issue {
            caller,
            hosts,
            name,
        } => {
            let parsed = Caller::from_uri(&format!("{}{caller}", super::caller::TRUST_DOMAIN))?;
            let name = name.unwrap_or_else(|| caller.replace('/', "-"));
            let ca = CertificateAuthority::load(&options.dir)?;
            let (cert, key) = ca.issue(&parsed, &hosts)?.save(&options.dir, &name)?;
            println!("wrote {} and {}", cert.display(), key.display());
        }
    }
    Ok(())
}
