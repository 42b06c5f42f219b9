//! The node's RocksDB database and its column families (DESIGN.md section 5).
//!
//! One database per node. The Raft log and metadata, and the state machine, live in column
//! families of the same database, so they share one write-ahead log: a synced write makes
//! every earlier write durable too.
//!
//! The values of the column families that hold personal data (the log, identities, the
//! document index and templates) are sealed at rest (`quorumid_storage_format::at_rest`): [`Store::seal`]
//! before a write, opened by [`Store::get`] and [`Store::unseal`] on the way out. Keys are
//! never sealed (RocksDB orders and finds by them); none holds a template or a document
//! number (ids, keyed document hashes, log indexes).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteOptions};

pub use quorumid_storage_format::Cf;
use quorumid_storage_format::{SealError, Sealer};

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
            Some(stored) => self.unseal(cf, key, &stored).map(|v| Some(v.into_owned())),
        }
    }

    /// What to write under `key`: `value`, sealed if `cf` is sealed.
    pub fn seal<'v>(&self, cf: Cf, key: &[u8], value: &'v [u8]) -> Cow<'v, [u8]> {
        self.sealer.seal_record(cf, key, value)
    }

    /// A value as read from RocksDB (an iterator, a snapshot), opened if `cf` is sealed.
    pub fn unseal<'v>(
        &self,
        cf: Cf,
        key: &[u8],
        stored: &'v [u8],
    ) -> Result<Cow<'v, [u8]>, StoreError> {
        self.sealer
            .open_record(cf, key, stored)
            .map_err(|source| StoreError::Sealed {
                cf: cf.name(),
                source,
            })
    }

    /// The storage keys, for decoding snapshot files.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
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
