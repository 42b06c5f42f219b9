//! The holder's credential: an Ed25519 device key bound to an identity at enrollment (or
//! later, by a registrar), and the signed proofs a holder presents with it.
//!
//! A proof signs a message that says what it is for, so a signature made for one purpose
//! never passes for another:
//!
//! ```text
//! "quorumid-holder-v1" 0 purpose 0 (len field)* at_unix_ms (u64, big-endian)
//! ```
//! where each field is preceded by its length (u32, big-endian). Purposes and fields:
//!
//! | purpose   | fields                                              | used by                |
//! |-----------|-----------------------------------------------------|------------------------|
//! | `verify`  | platform id, nonce                                  | Verifier.Verify        |
//! | `lock`    | identity id, modality, locked ("1"/"0"), request id | Holder.SetModalityLock |
//! | `history` | identity id                                         | Holder.GetHistory      |
//! | `rotate`  | identity id, new key (32 bytes), request id         | Holder.RotateKey       |
//!
//! A proof is accepted within [`PROOF_WINDOW`] of the node's clock, either way: a replay
//! after that fails. Within the window, a platform's own nonce tells its proofs apart; a
//! lock is a write with a request id, applied once.

use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};

/// How far a proof's time may be from the node's clock.
pub const PROOF_WINDOW: Duration = Duration::from_secs(300);
/// Bounds on a platform's nonce.
pub const MIN_NONCE: usize = 16;
pub const MAX_NONCE: usize = 64;

const DOMAIN: &[u8] = b"quorumid-holder-v1";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("a holder key is 32 bytes (Ed25519), got {0}")]
    KeyLength(usize),
    #[error("the holder key is not a valid Ed25519 point")]
    BadKey,
    #[error("a holder signature is 64 bytes (Ed25519), got {0}")]
    SignatureLength(usize),
    #[error(
        "the holder proof is {skew_ms} ms from this node's clock, outside the {} s window \
         (expired or replayed)",
        PROOF_WINDOW.as_secs()
    )]
    OutsideWindow { skew_ms: u64 },
    #[error("the holder proof's signature does not verify with the identity's bound key")]
    BadSignature,
}

/// The signed message of a proof.
pub fn message(purpose: &str, fields: &[&[u8]], at_unix_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + fields.iter().map(|f| f.len() + 4).sum::<usize>());
    out.extend_from_slice(DOMAIN);
    out.push(0);
    out.extend_from_slice(purpose.as_bytes());
    out.push(0);
    for field in fields {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&at_unix_ms.to_be_bytes());
    out
}

/// Checks a holder key's bytes (at enrollment and when a key is bound).
pub fn key(bytes: &[u8]) -> Result<[u8; 32], ProofError> {
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ProofError::KeyLength(bytes.len()))?;
    let point = VerifyingKey::from_bytes(&key).map_err(|_| ProofError::BadKey)?;
    // A key of small order would verify forged signatures.
    if point.is_weak() {
        return Err(ProofError::BadKey);
    }
    Ok(key)
}

/// Checks a proof: its time against `now_unix_ms`, then its signature over `message` with the
/// bound `key` (strict verification: no malleable signatures).
pub fn check(
    key: &[u8; 32],
    message: &[u8],
    signature: &[u8],
    at_unix_ms: u64,
    now_unix_ms: u64,
) -> Result<(), ProofError> {
    let skew_ms = now_unix_ms.abs_diff(at_unix_ms);
    if skew_ms > PROOF_WINDOW.as_millis() as u64 {
        return Err(ProofError::OutsideWindow { skew_ms });
    }
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| ProofError::SignatureLength(signature.len()))?;
    let key = VerifyingKey::from_bytes(key).map_err(|_| ProofError::BadKey)?;
    key.verify_strict(message, &Signature::from_bytes(&signature))
        .map_err(|_| ProofError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn a_proof_verifies_for_its_purpose_key_and_time_only() {
        let device = SigningKey::from_bytes(&[7; 32]);
        let public = key(device.verifying_key().as_bytes()).unwrap();
        let at = 1_700_000_000_000;
        let signed = message("verify", &[b"bank", b"nonce-0123456789"], at);
        let signature = device.sign(&signed).to_bytes();
        check(&public, &signed, &signature, at, at + 1_000).unwrap();
        // Another platform, purpose or time is another message.
        for other in [
            message("verify", &[b"shop", b"nonce-0123456789"], at),
            message("history", &[b"bank", b"nonce-0123456789"], at),
            message("verify", &[b"bank", b"nonce-0123456789"], at + 1),
            // Fields are length-prefixed: moving a byte across a boundary changes the message.
            message("verify", &[b"ban", b"knonce-0123456789"], at),
        ] {
            assert_eq!(
                check(&public, &other, &signature, at, at),
                Err(ProofError::BadSignature)
            );
        }
        // Another key.
        let thief = SigningKey::from_bytes(&[8; 32]);
        let forged = thief.sign(&signed).to_bytes();
        assert_eq!(
            check(&public, &signed, &forged, at, at),
            Err(ProofError::BadSignature)
        );
        // Outside the window, either way.
        let late = at + PROOF_WINDOW.as_millis() as u64 + 1;
        assert!(matches!(
            check(&public, &signed, &signature, at, late),
            Err(ProofError::OutsideWindow { .. })
        ));
        assert!(matches!(
            check(&public, &signed, &signature, late + 400_000, at),
            Err(ProofError::OutsideWindow { .. })
        ));
        assert_eq!(
            check(&public, &signed, &signature[..63], at, at),
            Err(ProofError::SignatureLength(63))
        );
    }

    #[test]
    fn malformed_and_weak_keys_are_refused() {
        assert_eq!(key(&[1; 31]), Err(ProofError::KeyLength(31)));
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(key(&identity), Err(ProofError::BadKey));
    }
}
