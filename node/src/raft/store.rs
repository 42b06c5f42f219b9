//! The node's RocksDB database and its column families (DESIGN.md section 5).
//!
//! One database per node. The Raft log and metadata, and the state machine, live in column
//! families of the same database, so they share one write-ahead log: a synced write makes
//! every earlier write durable too.
//!
//! The values of the column families that hold personal data (the log, identities, the
//! document index and templates) are sealed at rest (`security::at_rest`): [`Store::seal`]
//! before a write, opened by [`Store::get`] and [`Store::unseal`] on the way out. Keys are
//! never sealed (RocksDB orders and finds by them); none holds a template or a document
//! number (ids, keyed document hashes, log indexes).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteOptions};

use crate::security::at_rest::{SealError, Sealer};

/// Column families. The `Sm*` ones hold the state machine and are covered by its digest,
/// except `SmMeta` (applied log id, membership, the digest itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// Raft log entries, keyed by big-endian index.
    Log,
    /// Vote, committed log id, last purged log id.
    RaftMeta,
    /// Applied log id, last membership, state digest.
    SmMeta,
    /// Identity id -> identity record.
    Identities,
    /// Document key -> identity id.
    Documents,
    /// Identity id -> templates.
    Templates,
    /// Request id -> remembered request.
    Requests,
    /// Big-endian proposal time ++ request id -> (): the request window's expiry order.
    RequestTimes,
    /// Registry-wide facts (the document key id).
    Registry,
    /// Identity id ++ big-endian event number -> history event.
    History,
}

impl Cf {
    /// (New column families go last: a column family's tag is its position here.)
    pub const ALL: [Cf; 10] = [
        Cf::Log,
        Cf::RaftMeta,
        Cf::SmMeta,
        Cf::Identities,
        Cf::Documents,
        Cf::Templates,
        Cf::Requests,
        Cf::RequestTimes,
        Cf::Registry,
        Cf::History,
    ];

    /// The column families that make up the registry state (snapshotted and digested).
    pub const STATE: [Cf; 7] = [
        Cf::Identities,
        Cf::Documents,
        Cf::Templates,
        Cf::Requests,
        Cf::RequestTimes,
        Cf::Registry,
        Cf::History,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Log => "raft_log",
            Cf::RaftMeta => "raft_meta",
            Cf::SmMeta => "sm_meta",
            Cf::Identities => "identities",
            Cf::Documents => "documents",
            Cf::Templates => "templates",
            Cf::Requests => "requests",
            Cf::RequestTimes => "request_times",
            Cf::Registry => "registry",
            Cf::History => "history",
        }
    }

    /// A stable one-byte tag, used in snapshots and digests.
    pub fn tag(self) -> u8 {
        Cf::ALL.iter().position(|c| *c == self).unwrap_or(0) as u8
    }

    pub fn from_tag(tag: u8) -> Option<Cf> {
        Cf::ALL.get(tag as usize).copied()
    }

    /// The column families whose values are sealed at rest.
    pub const SEALED: [Cf; 4] = [Cf::Log, Cf::Identities, Cf::Documents, Cf::Templates];

    pub fn sealed(self) -> bool {
        Cf::SEALED.contains(&self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] rocksdb::Error),
    #[error("{cf} record: {source}")]
    Sealed { cf: &'static str, source: SealError },
}

/// The node's database.
pub struct Store {
    db: DB,
    sealer: Sealer,
}

/// A sealed value's place (its associated data): column family name, a zero, the key.
fn place(cf: Cf, key: &[u8]) -> Vec<u8> {
    let mut place = Vec::with_capacity(cf.name().len() + 1 + key.len());
    place.extend_from_slice(cf.name().as_bytes());
    place.push(0);
    place.extend_from_slice(key);
    place
}

impl Store {
    pub fn open(dir: &Path, sealer: Sealer) -> Result<Arc<Store>, rocksdb::Error> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(*cf)));
        let db = DB::open_cf_descriptors(&options, dir, cfs)?;
        Ok(Arc::new(Store { db, sealer }))
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }

    /// The value under `key`, opened if `cf` is sealed.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.db.get_cf(self.cf(cf), key)? {
            None => Ok(None),
            Some(stored) if !cf.sealed() => Ok(Some(stored)),
            Some(stored) => self.unseal(cf, key, &stored).map(Some),
        }
    }

    /// What to write under `key`: `value`, sealed if `cf` is sealed.
    pub fn seal<'v>(&self, cf: Cf, key: &[u8], value: &'v [u8]) -> Cow<'v, [u8]> {
        if cf.sealed() {
            Cow::Owned(self.sealer.seal(&place(cf, key), value))
        } else {
            Cow::Borrowed(value)
        }
    }

    /// A value as read from RocksDB (an iterator, a snapshot), opened if `cf` is sealed.
    pub fn unseal(&self, cf: Cf, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        if !cf.sealed() {
            return Ok(stored.to_vec());
        }
        self.sealer
            .open(&place(cf, key), stored)
            .map_err(|source| StoreError::Sealed {
                cf: cf.name(),
                source,
            })
    }
}

/// The state column families are read by exact key, and most of those reads miss: apply
/// looks up each key it writes (for the digest) and each request id it is given, and those
/// are usually new. Bloom filters, in the memtable and in the table files, answer a miss
/// without searching (perf showed the memtable skip-list search at a fifth of the nodes'
/// CPU under write load). The log is read in index ranges and gets none.
fn cf_options(cf: Cf) -> Options {
    let mut options = Options::default();
    if Cf::STATE.contains(&cf) {
        options.set_memtable_prefix_bloom_ratio(0.1);
        options.set_memtable_whole_key_filtering(true);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        options.set_block_based_table_factory(&table);
    }
    options
}

/// Write options that fsync the WAL before the write returns.
pub fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// Big-endian encoding, so that RocksDB's byte order is numeric order.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn index_from_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}
