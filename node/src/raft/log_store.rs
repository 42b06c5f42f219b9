//! openraft's log storage on RocksDB: log entries, the vote and the commit point.
//!
//! Durability rule (DESIGN.md 5): vote, append, truncate and purge are written with a WAL
//! fsync before openraft is told they are done.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::codec::{decode, encode};
use super::store::{Cf, Store, index_from_key, index_key, synced};
use super::{Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log of one node. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl LogStore {
    pub fn new(store: Arc<Store>) -> LogStore {
        LogStore { store }
    }

    fn meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static [u8],
    ) -> Result<Option<T>, StorageError> {
        match self.store.get(Cf::RaftMeta, key).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => decode("raft metadata", &bytes).map(Some).map_err(read_err),
        }
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let db = self.store.db();
        let mut iter = db.iterator_cf(self.store.cf(Cf::Log), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(read_err)?;
                let value = self.store.unseal(Cf::Log, &key, &value).map_err(read_err)?;
                let entry: Entry = decode("log entry", &value).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let db = self.store.db();
        let from = index_key(start);
        let iter = db.iterator_cf(
            self.store.cf(Cf::Log),
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let index = index_from_key(&key).unwrap_or(u64::MAX);
            if !range.contains(&index) {
                break;
            }
            let value = self.store.unseal(Cf::Log, &key, &value).map_err(read_err)?;
            entries.push(decode("log entry", &value).map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta(LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let cf = self.store.cf(Cf::RaftMeta);
        self.store
            .db()
            .put_cf_opt(cf, VOTE, encode(vote), &synced())
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: openraft can rebuild the commit point from a quorum after a crash.
        let cf = self.store.cf(Cf::RaftMeta);
        self.store
            .db()
            .put_cf(cf, COMMITTED, encode(&committed))
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let cf = self.store.cf(Cf::Log);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let key = index_key(entry.log_id.index);
            batch.put_cf(cf, key, self.store.seal(Cf::Log, &key, &encode(&entry)));
        }
        let result = self.store.db().write_opt(batch, &synced());
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self.store.cf(Cf::Log);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(cf, index_key(u64::MAX));
        self.store
            .db()
            .write_opt(batch, &synced())
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(Cf::RaftMeta), LAST_PURGED, encode(&log_id));
        batch.delete_range_cf(
            self.store.cf(Cf::Log),
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.store
            .db()
            .write_opt(batch, &synced())
            .map_err(write_err)
    }
}
