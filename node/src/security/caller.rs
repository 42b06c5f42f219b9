//! Who is calling: the role and scope a client certificate grants, read from its one
//! `spiffe://quorumid/...` URI subject alternative name.
//!
//! | URI                                            | caller                                  |
//! |------------------------------------------------|-----------------------------------------|
//! | `spiffe://quorumid/node/<node id>`             | a cluster node (Raft, joining)          |
//! | `spiffe://quorumid/operator/<name>`            | an operator (Cluster service)           |
//! | `spiffe://quorumid/registrar/<PROVINCE>/<name>`| a registrar (Enroll in its province)    |
//! | `spiffe://quorumid/authority/<PROVINCE>/<name>`| a provincial authority (status changes) |
//! | `spiffe://quorumid/authority/national/<name>`  | the national authority                  |
//! | `spiffe://quorumid/platform/<platform id>`     | a platform (Verify, its own sector)     |
//!
//! Names and platform ids are 1..=64 of `[A-Za-z0-9._:-]`, provinces 1..=16 of `[A-Z0-9-]`:
//! the same rules as the API's fields, so a certificate can name only what a request could.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::api::validate;
use crate::raft::NodeId;
use crate::registry::Scope;

/// The prefix of every quorumid caller URI.
pub const TRUST_DOMAIN: &str = "spiffe://quorumid/";

/// An authenticated caller (or, on a plaintext dev node, nobody in particular).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A plaintext node (dev mode, loopback or an explicitly insecure test network): callers
    /// are not authenticated, may call everything, and are taken at their word for the
    /// authority and platform their requests declare.
    Unauthenticated,
    Node {
        node_id: NodeId,
    },
    Operator {
        name: String,
    },
    Registrar {
        province: String,
        name: String,
    },
    Authority {
        scope: Scope,
        name: String,
    },
    Platform {
        platform_id: String,
    },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    #[error("the client certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("the client certificate names no quorumid caller (a URI SAN starting {TRUST_DOMAIN})")]
    NoCaller,
    #[error("the client certificate names more than one quorumid caller")]
    SeveralCallers,
    #[error("the caller URI {uri:?} is not valid: {reason}")]
    Uri { uri: String, reason: String },
}

impl Caller {
    /// The caller a DER certificate (already verified against the cluster CA) names.
    pub fn from_certificate(der: &[u8]) -> Result<Caller, CallerError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| CallerError::Certificate(e.to_string()))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| CallerError::Certificate(e.to_string()))?;
        let mut uris = names
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(TRUST_DOMAIN) => Some(*uri),
                _ => None,
            });
        let uri = uris.next().ok_or(CallerError::NoCaller)?;
        if uris.next().is_some() {
            return Err(CallerError::SeveralCallers);
        }
        Caller::from_uri(uri)
    }

    /// Parses a caller URI (see the module's table).
    pub fn from_uri(uri: &str) -> Result<Caller, CallerError> {
        let bad = |reason: &str| CallerError::Uri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let path = uri
            .strip_prefix(TRUST_DOMAIN)
            .ok_or_else(|| bad("it must start with spiffe://quorumid/"))?;
        let parts: Vec<&str> = path.split('/').collect();
        let name = |field: &str, value: &str| {
            validate::token(field, value).map_err(|status| bad(status.message()))
        };
        let province = |value: &str| {
            validate::province("province", value).map_err(|status| bad(status.message()))
        };
        match parts.as_slice() {
            ["node", id] => match id.parse::<NodeId>() {
                Ok(node_id) if node_id > 0 => Ok(Caller::Node { node_id }),
                _ => Err(bad("a node id is a positive integer")),
            },
            ["operator", n] => Ok(Caller::Operator {
                name: name("name", n)?,
            }),
            ["registrar", p, n] => Ok(Caller::Registrar {
                province: province(p)?,
                name: name("name", n)?,
            }),
            ["authority", "national", n] => Ok(Caller::Authority {
                scope: Scope::National,
                name: name("name", n)?,
            }),
            ["authority", p, n] => Ok(Caller::Authority {
                scope: Scope::Province(province(p)?),
                name: name("name", n)?,
            }),
            ["platform", id] => Ok(Caller::Platform {
                platform_id: name("platform id", id)?,
            }),
            _ => Err(bad(
                "expected node/<id>, operator/<name>, registrar/<PROVINCE>/<name>, \
                 authority/<PROVINCE|national>/<name> or platform/<id>",
            )),
        }
    }

    /// The caller's URI (the inverse of [`Caller::from_uri`]); `None` when unauthenticated.
    pub fn uri(&self) -> Option<String> {
        let path = match self {
            Caller::Unauthenticated => return None,
            Caller::Node { node_id } => format!("node/{node_id}"),
            Caller::Operator { name } => format!("operator/{name}"),
            Caller::Registrar { province, name } => format!("registrar/{province}/{name}"),
            Caller::Authority {
                scope: Scope::National,
                name,
            } => format!("authority/national/{name}"),
            Caller::Authority {
                scope: Scope::Province(p),
                name,
            } => format!("authority/{p}/{name}"),
            Caller::Platform { platform_id } => format!("platform/{platform_id}"),
        };
        Some(format!("{TRUST_DOMAIN}{path}"))
    }

    /// The role's name, for denials and metrics (never a person's data).
    pub fn role(&self) -> &'static str {
        match self {
            Caller::Unauthenticated => "unauthenticated",
            Caller::Node { .. } => "node",
            Caller::Operator { .. } => "operator",
            Caller::Registrar { .. } => "registrar",
            Caller::Authority { .. } => "authority",
            Caller::Platform { .. } => "platform",
        }
    }
}

/// Callers are named by their URI in denials: role, scope and office, no personal data.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uri() {
            Some(uri) => f.write_str(&uri),
            None => f.write_str("an unauthenticated caller"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_through_its_uri() {
        let callers = [
            Caller::Node { node_id: 7 },
            Caller::Operator { name: "ops".into() },
            Caller::Registrar {
                province: "ON".into(),
                name: "clerk-1".into(),
            },
            Caller::Authority {
                scope: Scope::Province("QC".into()),
                name: "saaq".into(),
            },
            Caller::Authority {
                scope: Scope::National,
                name: "ircc".into(),
            },
            Caller::Platform {
                platform_id: "bank.example".into(),
            },
        ];
        for caller in callers {
            let uri = caller.uri().unwrap();
            assert_eq!(Caller::from_uri(&uri), Ok(caller), "{uri}");
        }
    }

    #[test]
    fn malformed_uris_are_refused_with_the_reason() {
        for (uri, expect) in [
            ("spiffe://other/node/1", "must start"),
            ("spiffe://quorumid/node/0", "positive"),
            ("spiffe://quorumid/node/x", "positive"),
            ("spiffe://quorumid/registrar/on/clerk", "province"),
            ("spiffe://quorumid/registrar/ON", "expected"),
            ("spiffe://quorumid/platform/a b", "platform id"),
            ("spiffe://quorumid/platform/", "platform id"),
            ("spiffe://quorumid/root/x", "expected"),
        ] {
            let err = Caller::from_uri(uri).unwrap_err().to_string();
            assert!(err.contains(expect), "{uri}: {err}");
        }
    }
}
