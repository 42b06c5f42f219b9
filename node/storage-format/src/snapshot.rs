//! The snapshot file: every record of the registry state (sealed values as stored), the
//! digest they add up to, and the Raft snapshot meta, in the registry's codec (postcard).
//!
//! [`SnapshotFile::decode`] is the only way a file from a peer or a disk becomes state: it
//! refuses other formats, column families outside the state, values that fail to open with
//! this node's storage keys, and records that do not add up to the digest the file carries.

use quorumid_registry::codec::{DecodeError, decode};
use serde::{Deserialize, Serialize};

use crate::at_rest::{SealError, Sealer};
use crate::columns::Cf;
use crate::digest::StateDigest;
use crate::types::SnapshotMeta;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
pub struct SnapshotFile {
    pub format: u32,
    pub meta: SnapshotMeta,
    pub digest: StateDigest,
    /// (column family tag, key, value as stored) for every state record.
    pub records: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("snapshot format {0} is not supported (expected {SNAPSHOT_FORMAT})")]
    Format(u32),
    #[error("snapshot names column family tag {0}, which is not part of the state")]
    Column(u8),
    #[error("snapshot {cf} record: {source}")]
    Sealed { cf: &'static str, source: SealError },
    #[error("snapshot records do not add up to the digest it carries (corrupt or truncated)")]
    Digest,
}

impl SnapshotFile {
    /// Decodes and checks a snapshot: its records (sealed ones opened with `sealer`'s keys)
    /// must add up to its digest.
    pub fn decode(bytes: &[u8], sealer: &Sealer) -> Result<SnapshotFile, SnapshotError> {
        let file: SnapshotFile = decode("snapshot", bytes)?;
        if file.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format(file.format));
        }
        let mut digest = StateDigest::default();
        for (tag, key, value) in &file.records {
            let cf = Cf::from_tag(*tag)
                .filter(|cf| Cf::STATE.contains(cf))
                .ok_or(SnapshotError::Column(*tag))?;
            let value =
                sealer
                    .open_record(cf, key, value)
                    .map_err(|source| SnapshotError::Sealed {
                        cf: cf.name(),
                        source,
                    })?;
            digest.add(cf, key, &value);
        }
        if digest != file.digest {
            return Err(SnapshotError::Digest);
        }
        Ok(file)
    }

    /// The meta of a snapshot file, without checking its records (the current file, written
    /// by this node after it was checked or built).
    pub fn meta(bytes: &[u8]) -> Result<SnapshotMeta, DecodeError> {
        decode::<SnapshotFile>("snapshot", bytes).map(|file| file.meta)
    }
}

#[cfg(test)]
mod tests {
    use quorumid_registry::codec::encode;

    use super::*;

    /// A snapshot of `records` (column family, key, plain value), sealed with `sealer`.
    fn snapshot(sealer: &Sealer, records: &[(Cf, &[u8], &[u8])]) -> SnapshotFile {
        let mut digest = StateDigest::default();
        let records = records
            .iter()
            .map(|&(cf, key, value)| {
                digest.add(cf, key, value);
                let stored = sealer.seal_record(cf, key, value).into_owned();
                (cf.tag(), key.to_vec(), stored)
            })
            .collect();
        SnapshotFile {
            format: SNAPSHOT_FORMAT,
            meta: SnapshotMeta::default(),
            digest,
            records,
        }
    }

    #[test]
    fn a_snapshot_decodes_only_whole_with_its_keys_and_its_digest() {
        let sealer = Sealer::new((1, [4; 32]), []);
        let records: [(Cf, &[u8], &[u8]); 3] = [
            (Cf::Identities, b"ID-1", b"identity record"),
            (Cf::Templates, b"ID-1", &[7; 300]),
            (Cf::Requests, b"r-1", b"request"),
        ];
        let good = encode(&snapshot(&sealer, &records));
        let file = SnapshotFile::decode(&good, &sealer).expect("a real snapshot decodes");
        assert_eq!(file.records.len(), 3);
        // Sealed values stay sealed in the file; unsealed ones are as written.
        assert!(!good.windows(15).any(|w| w == b"identity record"));
        assert!(good.windows(7).any(|w| w == b"request"));
        assert_eq!(SnapshotFile::meta(&good).unwrap(), SnapshotMeta::default());

        // Another node's storage key cannot open it.
        let other = Sealer::new((1, [5; 32]), []);
        assert!(matches!(
            SnapshotFile::decode(&good, &other),
            Err(SnapshotError::Sealed {
                cf: "identities",
                source: SealError::Forged
            })
        ));
        // A record left out, or one of another column family.
        let mut short = snapshot(&sealer, &records);
        short.records.pop();
        assert!(matches!(
            SnapshotFile::decode(&encode(&short), &sealer),
            Err(SnapshotError::Digest)
        ));
        let mut foreign = snapshot(&sealer, &records);
        foreign.records[2].0 = Cf::RaftMeta.tag();
        assert!(matches!(
            SnapshotFile::decode(&encode(&foreign), &sealer),
            Err(SnapshotError::Column(1))
        ));
        let mut future = snapshot(&sealer, &records);
        future.format = 2;
        assert!(matches!(
            SnapshotFile::decode(&encode(&future), &sealer),
            Err(SnapshotError::Format(2))
        ));
        // Cut short anywhere: refused.
        for len in 0..good.len() {
            assert!(SnapshotFile::decode(&good[..len], &sealer).is_err());
        }
    }
}
