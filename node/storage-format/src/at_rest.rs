//! Encryption at rest: values sealed with AES-256-GCM before they reach RocksDB or a snapshot
//! file, under storage keys from configuration (never stored on disk).
//!
//! A sealed value is `0x51 ‖ key id (u32, big-endian) ‖ nonce (12 bytes) ‖ ciphertext and
//! tag`. The key id lets keys rotate: new values are sealed with the active key, values
//! sealed with a retired key still open while that key is configured. The associated data
//! is the value's place (column family and key, or log index), so a value moved to another
//! record fails to open instead of being read as that record.
//!
//! Nonces are random (96 bits): rotate the storage key well before 2^32 values are sealed
//! under one key (a node writing 10,000 values a second reaches that in about five days of
//! sustained load; the rotation is a configuration change and a restart, see SECURITY.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

use crate::columns::Cf;

const FORMAT: u8 = 0x51;
const HEADER: usize = 1 + 4 + 12;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a sealed value is {0} bytes, shorter than its header and tag")]
    Truncated(usize),
    #[error("a stored value is not sealed (format byte {0:#04x}): written without encryption?")]
    Format(u8),
    #[error(
        "a value is sealed with storage key {0}, which this node does not have (configure it \
         in keys.retired_storage_keys)"
    )]
    UnknownKey(u32),
    #[error("a sealed value fails authentication: the wrong key for its id, or altered bytes")]
    Forged,
}

/// The storage keys of a node: the active one seals, every one opens.
pub struct Sealer {
    active: u32,
    keys: HashMap<u32, Aes256Gcm>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        write!(f, "Sealer(active key {}, key ids {ids:?})", self.active)
    }
}

impl Sealer {
    /// `active` seals new values; `retired` keys only open old ones.
    pub fn new(
        active: (u32, [u8; 32]),
        retired: impl IntoIterator<Item = (u32, [u8; 32])>,
    ) -> Sealer {
        let cipher = |key: [u8; 32]| Aes256Gcm::new(&key.into());
        let mut keys: HashMap<u32, Aes256Gcm> = retired
            .into_iter()
            .map(|(id, key)| (id, cipher(key)))
            .collect();
        keys.insert(active.0, cipher(active.1));
        Sealer {
            active: active.0,
            keys,
        }
    }

    pub fn seal(&self, place: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = nonce(place, plaintext);
        let cipher = &self.keys[&self.active];
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: place,
                },
            )
            .expect("AES-GCM seals any value under 64 GiB");
        let mut out = Vec::with_capacity(HEADER + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.active.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// What to store under `key` in `cf`: `value`, sealed in its place if `cf` is sealed.
    pub fn seal_record<'v>(&self, cf: Cf, key: &[u8], value: &'v [u8]) -> Cow<'v, [u8]> {
        if cf.sealed() {
            Cow::Owned(self.seal(&cf.place(key), value))
        } else {
            Cow::Borrowed(value)
        }
    }

    /// A value as stored under `key` in `cf`, opened if `cf` is sealed.
    pub fn open_record<'v>(
        &self,
        cf: Cf,
        key: &[u8],
        stored: &'v [u8],
    ) -> Result<Cow<'v, [u8]>, SealError> {
        if cf.sealed() {
            self.open(&cf.place(key), stored).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(stored))
        }
    }

    pub fn open(&self, place: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < HEADER + 16 {
            return Err(SealError::Truncated(sealed.len()));
        }
        if sealed[0] != FORMAT {
            return Err(SealError::Format(sealed[0]));
        }
        let id = u32::from_be_bytes(sealed[1..5].try_into().expect("4 bytes"));
        let cipher = self.keys.get(&id).ok_or(SealError::UnknownKey(id))?;
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[5..HEADER]),
                Payload {
                    msg: &sealed[HEADER..],
                    aad: place,
                },
            )
            .map_err(|_| SealError::Forged)
    }
}

/// A fresh random nonce for each value sealed.
#[cfg(not(feature = "fixed-nonces"))]
fn nonce(_place: &[u8], _plaintext: &[u8]) -> [u8; 12] {
    rand::random()
}

/// Reproducible test inputs only (`node/fuzz` generates its committed seeds with this
/// feature; the node never enables it): the nonce is a hash of the place and the value, so
/// sealing the same value in the same place gives the same bytes.
#[cfg(feature = "fixed-nonces")]
fn nonce(place: &[u8], plaintext: &[u8]) -> [u8; 12] {
    use sha2::{Digest, Sha256};
    let hash = Sha256::new()
        .chain_update((place.len() as u64).to_be_bytes())
        .chain_update(place)
        .chain_update(plaintext)
        .finalize();
    hash[..12].try_into().expect("12 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_place_and_with_their_key() {
        let old = Sealer::new((1, [7; 32]), []);
        let sealed_old = old.seal(b"templates\0ABC", b"template bytes");
        assert!(!sealed_old.windows(8).any(|w| w == b"template"));
        // After rotation: new values under key 2, old ones still open.
        let rotated = Sealer::new((2, [9; 32]), [(1, [7; 32])]);
        let sealed_new = rotated.seal(b"templates\0ABC", b"template bytes");
        assert_eq!(sealed_new[1..5], 2u32.to_be_bytes());
        for sealed in [&sealed_old, &sealed_new] {
            assert_eq!(
                rotated.open(b"templates\0ABC", sealed).unwrap(),
                b"template bytes"
            );
        }
        // Moved to another record, altered, unknown key, wrong key, not sealed, cut short.
        assert_eq!(
            rotated.open(b"templates\0XYZ", &sealed_new),
            Err(SealError::Forged)
        );
        let mut altered = sealed_new.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(
            rotated.open(b"templates\0ABC", &altered),
            Err(SealError::Forged)
        );
        assert_eq!(
            old.open(b"templates\0ABC", &sealed_new),
            Err(SealError::UnknownKey(2))
        );
        let impostor = Sealer::new((2, [3; 32]), []);
        assert_eq!(
            impostor.open(b"templates\0ABC", &sealed_new),
            Err(SealError::Forged)
        );
        let mut plain = vec![0u8; 40];
        plain[0] = b'{';
        assert_eq!(rotated.open(b"x", &plain), Err(SealError::Format(b'{')));
        assert_eq!(
            rotated.open(b"x", &sealed_new[..20]),
            Err(SealError::Truncated(20))
        );
        // Two seals of one value differ (random nonces).
        #[cfg(not(feature = "fixed-nonces"))]
        assert_ne!(rotated.seal(b"p", b"v"), rotated.seal(b"p", b"v"));
    }
}
