//! The state digest: a multiset hash of the registry state, the lane-wise sum of
//! SHA-256(column tag, key length, key, value) over every state record (values unsealed).
//! Adding or removing a record updates it in constant time, the order of records does not
//! matter, and replicas at the same applied index show the same digest.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::columns::Cf;

/// Multiset hash of the registry state (see the module comment).
#[derive(Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest([u64; 4]);

impl StateDigest {
    fn item(cf: Cf, key: &[u8], value: &[u8]) -> [u64; 4] {
        let mut hasher = Sha256::new();
        hasher.update([cf.tag()]);
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key);
        hasher.update(value);
        let hash = hasher.finalize();
        let mut lanes = [0u64; 4];
        for (lane, chunk) in lanes.iter_mut().zip(hash.chunks_exact(8)) {
            *lane = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        lanes
    }

    pub fn add(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        for (lane, x) in self.0.iter_mut().zip(Self::item(cf, key, value)) {
            *lane = lane.wrapping_add(x);
        }
    }

    pub fn remove(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        for (lane, x) in self.0.iter_mut().zip(Self::item(cf, key, value)) {
            *lane = lane.wrapping_sub(x);
        }
    }
}

impl fmt::Display for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for lane in self.0 {
            write!(f, "{lane:016x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateDigest({self})")
    }
}
