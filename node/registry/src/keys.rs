//! Cluster secrets and the keyed hashes made with them (DESIGN.md section 7).
//!
//! Document numbers are kept only as `HMAC(document key, issuer || 0 || number)`: enough to
//! enforce uniqueness, not to read a number back. A platform's pseudonym for a person is
//! `HMAC(pseudonym key, platform || 0 || identity id)`: stable for that platform, unlinkable
//! across platforms. Every node of a cluster must hold the same keys; the document key's id
//! travels in every enrollment so a node configured with another key is caught by `apply`.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::IdentityId;

type HmacSha256 = Hmac<Sha256>;

/// Keyed hash of a document number: the document's identity in the registry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocumentKey(pub [u8; 32]);

impl fmt::Debug for DocumentKey {
    // Never printed in full: a document key is personal data (DESIGN.md 7).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DocumentKey(..)")
    }
}

/// Identifies which document key made a `DocumentKey`, without revealing the key.
pub type KeyId = [u8; 8];

/// The two cluster-wide secrets, 32 bytes each.
#[derive(Clone)]
pub struct ClusterKeys {
    document: [u8; 32],
    pseudonym: [u8; 32],
}

impl fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKeys(..)")
    }
}

impl ClusterKeys {
    pub fn new(document: [u8; 32], pseudonym: [u8; 32]) -> ClusterKeys {
        ClusterKeys {
            document,
            pseudonym,
        }
    }

    pub fn document_key(&self, issuer: &str, number: &str) -> DocumentKey {
        DocumentKey(hmac(
            &self.document,
            &[issuer.as_bytes(), &[0], number.as_bytes()],
        ))
    }

    pub fn document_key_id(&self) -> KeyId {
        let full = hmac(&self.document, &[b"quorumid document key id"]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&full[..8]);
        id
    }

    /// The pseudonym of `identity` for `platform`, as 32 hex characters.
    pub fn pseudonym(&self, platform: &str, identity: &IdentityId) -> String {
        let full = hmac(
            &self.pseudonym,
            &[platform.as_bytes(), &[0], identity.as_str().as_bytes()],
        );
        hex::encode(&full[..16])
    }
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ClusterKeys {
        ClusterKeys::new([1; 32], [2; 32])
    }

    #[test]
    fn pseudonyms_differ_per_platform_and_are_stable() {
        let id = IdentityId::from_random([9; 10]);
        let a = keys().pseudonym("bank.example", &id);
        assert_eq!(a, keys().pseudonym("bank.example", &id));
        assert_ne!(a, keys().pseudonym("shop.example", &id));
        assert_eq!(a.len(), 32);
        // A different cluster key gives a different pseudonym.
        assert_ne!(
            a,
            ClusterKeys::new([1; 32], [3; 32]).pseudonym("bank.example", &id)
        );
    }

    #[test]
    fn document_keys_separate_issuer_from_number() {
        let k = keys();
        assert_eq!(k.document_key("ON", "123"), k.document_key("ON", "123"));
        assert_ne!(k.document_key("ON", "123"), k.document_key("ON1", "23"));
        assert_ne!(k.document_key("ON", "123"), k.document_key("QC", "123"));
        assert_ne!(
            k.document_key_id(),
            ClusterKeys::new([5; 32], [2; 32]).document_key_id()
        );
    }
}
