//! openraft's state machine on RocksDB: applies committed entries to the registry state,
//! builds and installs snapshots, and keeps a digest of the whole state.
//!
//! - `apply` runs the registry's pure `apply` for each entry over a staged view (database
//!   plus the batch's own pending writes), then commits the batch's changes, its applied log
//!   id, membership and digest in one `WriteBatch` (DESIGN.md 5).
//! - The state digest (`quorumid_storage_format::digest`, a multiset hash of every state
//!   record) is updated as records change. Replicas at the same applied index show the same
//!   digest; a snapshot carries it and is refused on install if its records do not add up.
//! - A snapshot is a consistent RocksDB snapshot of the state column families, encoded into
//!   one file (`quorumid_storage_format::snapshot`) that is written atomically (temporary
//!   file, fsync, rename, fsync directory).

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use quorumid_storage_format::snapshot::SNAPSHOT_FORMAT;
use quorumid_storage_format::{SnapshotFile, StateDigest};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::codec::{DecodeError, decode, encode};
use super::store::{Cf, Store, synced};
use super::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::registry::{
    self, Change, DocumentKey, Event, Identity, IdentityId, KeyId, RegistryState, RequestRecord,
    Response, StateError, Template,
};
use crate::telemetry::NodeTelemetry;

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
const DIGEST: &[u8] = b"digest";
const DOCUMENT_KEY_ID: &[u8] = b"document_key_id";

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snapshot_err(meta: Option<&SnapshotMeta>, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), AnyError::new(&e)).into()
}

/// What the state machine records beside the state: the applied log id, the membership it
/// applied last, and the state digest. Written with every apply batch, read together.
#[derive(Clone, Default)]
struct AppliedMeta {
    applied: Option<LogId>,
    membership: StoredMembership,
    digest: StateDigest,
}

impl AppliedMeta {
    /// Reads the three records through `get` (the database, or one of its snapshots).
    fn read(
        get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>,
    ) -> Result<AppliedMeta, ReadError> {
        fn field<T: serde::de::DeserializeOwned + Default>(
            bytes: Option<Vec<u8>>,
            what: &'static str,
        ) -> Result<T, ReadError> {
            Ok(match bytes {
                Some(b) => decode(what, &b)?,
                None => T::default(),
            })
        }
        Ok(AppliedMeta {
            applied: field(get(APPLIED)?, "applied log id")?,
            membership: field(get(MEMBERSHIP)?, "membership")?,
            digest: field(get(DIGEST)?, "state digest")?,
        })
    }

    fn write(&self, store: &Store, batch: &mut WriteBatch) {
        let cf = store.cf(Cf::SmMeta);
        batch.put_cf(cf, APPLIED, encode(&self.applied));
        batch.put_cf(cf, MEMBERSHIP, encode(&self.membership));
        batch.put_cf(cf, DIGEST, encode(&self.digest));
    }
}

fn request_time_key(at_unix_ms: u64, request_id: &str) -> Vec<u8> {
    let mut key = at_unix_ms.to_be_bytes().to_vec();
    key.extend_from_slice(request_id.as_bytes());
    key
}

fn parse_request_time_key(key: &[u8]) -> Option<(u64, String)> {
    let (time, id) = key.split_at_checked(8)?;
    let time = u64::from_be_bytes(time.try_into().ok()?);
    Some((time, String::from_utf8(id.to_vec()).ok()?))
}

fn state_err(e: impl fmt::Display) -> StateError {
    StateError(e.to_string())
}

/// Told about state changes that something outside the state machine keeps in step with
/// (the face index). Called after the changes are written, never from `registry::apply`.
pub trait ApplyObserver: Send + Sync + 'static {
    /// An identity's templates were stored.
    fn templates_applied(&self, id: &IdentityId, templates: &[Template]);
    /// The whole state changed (node start, snapshot installed): rebuild from `state`.
    fn state_replaced(&self, state: &StateReader) -> Result<(), StateError>;
}

/// Read-only access to the applied registry state, for the API.
#[derive(Clone)]
pub struct StateReader {
    store: Arc<Store>,
}

impl StateReader {
    pub fn new(store: Arc<Store>) -> StateReader {
        StateReader { store }
    }

    pub fn identity(&self, id: &IdentityId) -> Result<Option<Identity>, StateError> {
        read_record(
            &self.store,
            Cf::Identities,
            id.as_str().as_bytes(),
            "identity",
        )
    }

    /// The first `count` events of the identity's history (its `events`, as read with it:
    /// events applied since are left out, so identity and history agree).
    pub fn history(&self, id: &IdentityId, count: u64) -> Result<Vec<Event>, StateError> {
        let db = self.store.db();
        let from = event_key(id, 0);
        let until = event_key(id, count);
        let mut events = Vec::new();
        let iter = db.iterator_cf(
            self.store.cf(Cf::History),
            IteratorMode::From(&from, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(state_err)?;
            if *key >= *until {
                break;
            }
            events.push(decode("history event", &value).map_err(state_err)?);
        }
        Ok(events)
    }

    /// The identity and its whole history, read together.
    pub fn record(&self, id: &IdentityId) -> Result<Option<(Identity, Vec<Event>)>, StateError> {
        let Some(identity) = self.identity(id)? else {
            return Ok(None);
        };
        let history = self.history(id, identity.events)?;
        Ok(Some((identity, history)))
    }

    pub fn templates(&self, id: &IdentityId) -> Result<Vec<Template>, StateError> {
        Ok(read_record(
            &self.store,
            Cf::Templates,
            id.as_str().as_bytes(),
            "templates",
        )?
        .unwrap_or_default())
    }

    /// The remembered request under `request_id`, if any.
    pub fn request(&self, request_id: &str) -> Result<Option<RequestRecord>, StateError> {
        read_record(
            &self.store,
            Cf::Requests,
            request_id.as_bytes(),
            "request record",
        )
    }

    /// Calls `f` with every identity's templates.
    pub fn for_each_templates(
        &self,
        mut f: impl FnMut(IdentityId, Vec<Template>),
    ) -> Result<(), StateError> {
        let db = self.store.db();
        for item in db.iterator_cf(self.store.cf(Cf::Templates), IteratorMode::Start) {
            let (key, value) = item.map_err(state_err)?;
            let id = IdentityId::parse(&String::from_utf8_lossy(&key)).map_err(state_err)?;
            let value = self
                .store
                .unseal(Cf::Templates, &key, &value)
                .map_err(state_err)?;
            f(id, decode("templates", &value).map_err(state_err)?);
        }
        Ok(())
    }

    /// The state digest and the applied log id it belongs to, read atomically.
    pub fn digest(&self) -> Result<(Option<LogId>, StateDigest), StateError> {
        let view = self.store.db().snapshot();
        let cf = self.store.cf(Cf::SmMeta);
        let meta = AppliedMeta::read(|key| view.get_cf(cf, key)).map_err(state_err)?;
        Ok((meta.applied, meta.digest))
    }
}

/// Identity ids have one length, so an identity's events are one contiguous key range.
fn event_key(id: &IdentityId, seq: u64) -> Vec<u8> {
    let mut key = id.as_str().as_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn read_record<T: serde::de::DeserializeOwned>(
    store: &Store,
    cf: Cf,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StateError> {
    match store.get(cf, key).map_err(state_err)? {
        None => Ok(None),
        Some(bytes) => decode(what, &bytes).map(Some).map_err(state_err),
    }
}

/// A record's place: its column family and key.
type Place = (Cf, Vec<u8>);

/// One apply batch: the database seen through the batch's own pending writes.
///
/// The database does not change while a batch is applied (its writes are staged here and
/// written at the end), so what the batch reads from it is kept too: apply reads a record,
/// then staging its new value reads the old one again for the digest.
struct Staged<'a> {
    store: &'a Store,
    pending: BTreeMap<Place, Option<Vec<u8>>>,
    /// Values read from the database during this batch (`None`: absent).
    read: RefCell<HashMap<Place, Option<Vec<u8>>>>,
    /// The smallest key of `request_times` in the database, read once per batch: while it is
    /// past a command's expiry horizon there is nothing to expire, and no scan is needed.
    first_request_time: OnceCell<Option<Vec<u8>>>,
    batch: WriteBatch,
    digest: StateDigest,
}

impl<'a> Staged<'a> {
    fn new(store: &'a Store, digest: StateDigest) -> Staged<'a> {
        Staged {
            store,
            pending: BTreeMap::new(),
            read: RefCell::new(HashMap::new()),
            first_request_time: OnceCell::new(),
            batch: WriteBatch::default(),
            digest,
        }
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let place = (cf, key.to_vec());
        if let Some(value) = self.pending.get(&place) {
            return Ok(value.clone());
        }
        if let Some(value) = self.read.borrow().get(&place) {
            return Ok(value.clone());
        }
        let value = self.store.get(cf, key).map_err(state_err)?;
        self.read.borrow_mut().insert(place, value.clone());
        Ok(value)
    }

    /// Whether no request time in the database (not counting this batch) is before `end`.
    fn none_due_before(&self, end: &[u8]) -> Result<bool, StateError> {
        let first = match self.first_request_time.get() {
            Some(first) => first,
            None => {
                let db = self.store.db();
                let first = match db
                    .iterator_cf(self.store.cf(Cf::RequestTimes), IteratorMode::Start)
                    .next()
                {
                    None => None,
                    Some(item) => Some(item.map_err(state_err)?.0.to_vec()),
                };
                self.first_request_time.get_or_init(|| first)
            }
        };
        Ok(first.as_deref().is_none_or(|first| first >= end))
    }

    fn record<T: serde::de::DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StateError> {
        match self.get(cf, key)? {
            None => Ok(None),
            Some(bytes) => decode(what, &bytes).map(Some).map_err(state_err),
        }
    }

    fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        if let Some(old) = self.get(cf, &key)? {
            self.digest.remove(cf, &key, &old);
        }
        self.digest.add(cf, &key, &value);
        let stored = self.store.seal(cf, &key, &value);
        self.batch.put_cf(self.store.cf(cf), &key, stored);
        self.pending.insert((cf, key), Some(value));
        Ok(())
    }

    fn delete(&mut self, cf: Cf, key: Vec<u8>) -> Result<(), StateError> {
        if let Some(old) = self.get(cf, &key)? {
            self.digest.remove(cf, &key, &old);
            self.batch.delete_cf(self.store.cf(cf), &key);
            self.pending.insert((cf, key), None);
        }
        Ok(())
    }

    fn stage(&mut self, change: Change) -> Result<(), StateError> {
        match change {
            Change::PutIdentity(identity) => {
                let key = identity.id.as_str().as_bytes().to_vec();
                self.put(Cf::Identities, key, encode(&identity))
            }
            Change::PutEvent {
                identity,
                seq,
                event,
            } => self.put(Cf::History, event_key(&identity, seq), encode(&event)),
            Change::PutTemplates(id, templates) => self.put(
                Cf::Templates,
                id.as_str().as_bytes().to_vec(),
                encode(&templates),
            ),
            Change::PutDocument(document, id) => {
                self.put(Cf::Documents, document.0.to_vec(), encode(&id))
            }
            Change::PutRequest(record) => {
                let time_key = request_time_key(record.at_unix_ms, &record.request_id);
                self.put(Cf::RequestTimes, time_key, Vec::new())?;
                self.put(
                    Cf::Requests,
                    record.request_id.as_bytes().to_vec(),
                    encode(&record),
                )
            }
            Change::ForgetRequest {
                request_id,
                at_unix_ms,
            } => {
                self.delete(Cf::RequestTimes, request_time_key(at_unix_ms, &request_id))?;
                self.delete(Cf::Requests, request_id.into_bytes())
            }
            Change::SetDocumentKeyId(key_id) => {
                self.put(Cf::Registry, DOCUMENT_KEY_ID.to_vec(), key_id.to_vec())
            }
        }
    }
}

impl RegistryState for Staged<'_> {
    fn identity(&self, id: &IdentityId) -> Result<Option<Identity>, StateError> {
        self.record(Cf::Identities, id.as_str().as_bytes(), "identity")
    }

    fn identity_by_document(&self, key: &DocumentKey) -> Result<Option<IdentityId>, StateError> {
        self.record(Cf::Documents, &key.0, "document index entry")
    }

    fn request(&self, request_id: &str) -> Result<Option<RequestRecord>, StateError> {
        self.record(Cf::Requests, request_id.as_bytes(), "request record")
    }

    fn requests_before(
        &self,
        before_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StateError> {
        let end = before_unix_ms.to_be_bytes();
        let mut keys = Vec::new();
        // Live keys in the database, skipping those the batch deleted; none if even the first
        // is past the horizon (the usual case: a scan per command would cost an iterator).
        let db = self.store.db();
        let scan = (!self.none_due_before(&end)?)
            .then(|| db.iterator_cf(self.store.cf(Cf::RequestTimes), IteratorMode::Start));
        for item in scan.into_iter().flatten() {
            let (key, _) = item.map_err(state_err)?;
            if key.as_ref() >= end.as_slice() || keys.len() >= limit {
                break;
            }
            if !matches!(
                self.pending.get(&(Cf::RequestTimes, key.to_vec())),
                Some(None)
            ) {
                keys.push(key.to_vec());
            }
        }
        // Keys the batch itself added.
        let pending = self
            .pending
            .range((Cf::RequestTimes, Vec::new())..(Cf::RequestTimes, end.to_vec()))
            .filter(|(_, value)| value.is_some())
            .map(|((_, key), _)| key.clone());
        keys.extend(pending);
        keys.sort();
        keys.dedup();
        keys.truncate(limit);
        keys.iter()
            .map(|k| {
                parse_request_time_key(k)
                    .ok_or_else(|| StateError("malformed request time key".into()))
            })
            .collect()
    }

    fn document_key_id(&self) -> Result<Option<KeyId>, StateError> {
        match self.get(Cf::Registry, DOCUMENT_KEY_ID)? {
            None => Ok(None),
            Some(bytes) => bytes
                .try_into()
                .map(Some)
                .map_err(|_| StateError("malformed document key id".into())),
        }
    }
}

/// Why the applied meta, or the state for a snapshot, could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("reading the state: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
}

/// Where snapshot files live, and which one is current.
struct SnapshotFiles {
    dir: PathBuf,
    counter: AtomicU64,
    /// Serialises replacing the current file, so an older snapshot never replaces a newer one.
    current: Mutex<Option<LogId>>,
}

impl SnapshotFiles {
    fn current_path(&self) -> PathBuf {
        self.dir.join("current.snap")
    }

    fn replace_current(&self, last_log_id: Option<LogId>, bytes: &[u8]) -> std::io::Result<bool> {
        let mut current = self.current.lock().expect("snapshot lock poisoned");
        if current.is_some() && *current > last_log_id {
            return Ok(false);
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("incoming-{n}.tmp"));
        write_synced(&tmp, bytes)?;
        std::fs::rename(&tmp, self.current_path())?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        *current = last_log_id;
        Ok(true)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The registry state machine of one node.
pub struct StateMachine {
    store: Arc<Store>,
    observer: Option<Arc<dyn ApplyObserver>>,
    files: Arc<SnapshotFiles>,
    meta: AppliedMeta,
    telemetry: Option<Arc<NodeTelemetry>>,
}

impl StateMachine {
    /// Opens the state machine over `store`; snapshot files go in `snapshot_dir`. The
    /// observer, if any, is brought in step with the stored state before this returns.
    pub fn open(
        store: Arc<Store>,
        snapshot_dir: &Path,
        observer: Option<Arc<dyn ApplyObserver>>,
    ) -> Result<StateMachine, StorageError> {
        std::fs::create_dir_all(snapshot_dir).map_err(|e| snapshot_err(None, e))?;
        let meta = AppliedMeta::read(|key| store.db().get_cf(store.cf(Cf::SmMeta), key))
            .map_err(sm_read_err)?;
        let files = SnapshotFiles {
            dir: snapshot_dir.to_path_buf(),
            counter: AtomicU64::new(0),
            current: Mutex::new(None),
        };
        if let Ok(bytes) = std::fs::read(files.current_path())
            && let Ok(meta) = SnapshotFile::meta(&bytes)
        {
            *files.current.lock().expect("fresh lock") = meta.last_log_id;
        }
        if let Some(observer) = &observer {
            observer
                .state_replaced(&StateReader::new(store.clone()))
                .map_err(sm_read_err)?;
        }
        Ok(StateMachine {
            store,
            observer,
            files: Arc::new(files),
            meta,
            telemetry: None,
        })
    }

    /// Traces the apply of traced writes and measures snapshots. Spans and metrics stay
    /// around `registry::apply`, never inside it.
    pub fn with_telemetry(mut self, telemetry: Arc<NodeTelemetry>) -> StateMachine {
        self.telemetry = Some(telemetry);
        self
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut staged = Staged::new(&self.store, self.meta.digest);
        let mut responses = Vec::new();
        let mut applied = self.meta.applied;
        let mut membership = None;
        let mut stored_templates = Vec::new();
        // Ended once the batch is written.
        let mut spans = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let mut answers = Vec::new();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(commands) => {
                    for command in &commands {
                        let span = self
                            .telemetry
                            .as_ref()
                            .and_then(|t| t.apply_span(&command.request.request_id, index));
                        let _entered = span.as_ref().map(|s| s.enter());
                        let (response, changes) = registry::apply(&staged, index, command)
                            .map_err(|e| StorageIOError::apply(entry.log_id, AnyError::new(&e)))?;
                        for change in changes {
                            if let (Some(_), Change::PutTemplates(id, templates)) =
                                (&self.observer, &change)
                            {
                                stored_templates.push((id.clone(), templates.clone()));
                            }
                            staged.stage(change).map_err(|e| {
                                StorageIOError::apply(entry.log_id, AnyError::new(&e))
                            })?;
                        }
                        drop(_entered);
                        spans.extend(span);
                        answers.push(response);
                    }
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                }
            }
            applied = Some(entry.log_id);
            responses.push(answers);
        }
        let Staged {
            mut batch, digest, ..
        } = staged;
        self.meta.applied = applied;
        if let Some(m) = membership {
            self.meta.membership = m;
        }
        self.meta.digest = digest;
        self.meta.write(&self.store, &mut batch);
        // Not synced: the synced log replays anything lost. (Purge is synced and shares the
        // WAL, so nothing applied is lost once the log behind it is gone.)
        self.store.db().write(batch).map_err(sm_write_err)?;
        drop(spans);
        if let Some(observer) = &self.observer {
            for (id, templates) in &stored_templates {
                observer.templates_applied(id, templates);
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            files: self.files.clone(),
            telemetry: self.telemetry.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        let bytes = snapshot.into_inner();
        let file = SnapshotFile::decode(&bytes, self.store.sealer())
            .map_err(|e| snapshot_err(Some(meta), e))?;
        let mut batch = WriteBatch::default();
        // Keys are at most ~100 bytes; this upper bound is past every one of them.
        let past_every_key = [0xffu8; 256];
        for cf in Cf::STATE {
            batch.delete_range_cf(self.store.cf(cf), [].as_slice(), past_every_key.as_slice());
        }
        for (tag, key, value) in &file.records {
            let cf = Cf::from_tag(*tag).expect("tags were checked when decoding");
            batch.put_cf(self.store.cf(cf), key, value);
        }
        self.meta.applied = meta.last_log_id;
        self.meta.membership = meta.last_membership.clone();
        self.meta.digest = file.digest;
        self.meta.write(&self.store, &mut batch);
        self.store
            .db()
            .write_opt(batch, &synced())
            .map_err(|e| snapshot_err(Some(meta), e))?;
        self.files
            .replace_current(meta.last_log_id, &bytes)
            .map_err(|e| snapshot_err(Some(meta), e))?;
        if let Some(observer) = &self.observer {
            observer
                .state_replaced(&StateReader::new(self.store.clone()))
                .map_err(sm_read_err)?;
        }
        if let Some(telemetry) = &self.telemetry {
            telemetry
                .metrics
                .snapshot("install", bytes.len(), started.elapsed());
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let bytes = match std::fs::read(self.files.current_path()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snapshot_err(None, e)),
        };
        let meta = SnapshotFile::meta(&bytes).map_err(|e| snapshot_err(None, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// Builds snapshots from a consistent RocksDB snapshot, off the apply path.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    files: Arc<SnapshotFiles>,
    telemetry: Option<Arc<NodeTelemetry>>,
}

impl SnapshotBuilder {
    fn build(&self) -> Result<(SnapshotMeta, Vec<u8>), ReadError> {
        let db = self.store.db();
        let view = db.snapshot();
        let meta_cf = self.store.cf(Cf::SmMeta);
        let AppliedMeta {
            applied,
            membership,
            digest,
        } = AppliedMeta::read(|key| view.get_cf(meta_cf, key))?;
        let mut records = Vec::new();
        for cf in Cf::STATE {
            let mut options = ReadOptions::default();
            options.set_snapshot(&view);
            let iter = db.iterator_cf_opt(
                self.store.cf(cf),
                options,
                IteratorMode::From(&[], Direction::Forward),
            );
            for item in iter {
                let (key, value) = item?;
                records.push((cf.tag(), key.to_vec(), value.to_vec()));
            }
        }
        let n = self.files.counter.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match applied {
            Some(log_id) => format!("{}-{}-{n}", log_id.leader_id.term, log_id.index),
            None => format!("0-0-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let bytes = encode(&SnapshotFile {
            format: SNAPSHOT_FORMAT,
            meta: meta.clone(),
            digest,
            records,
        });
        self.files.replace_current(meta.last_log_id, &bytes)?;
        Ok((meta, bytes))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = Instant::now();
        let (meta, bytes) = self.build().map_err(|e| snapshot_err(None, e))?;
        if let Some(telemetry) = &self.telemetry {
            telemetry
                .metrics
                .snapshot("build", bytes.len(), started.elapsed());
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Outcome, Response};
    use quorumid_storage_format::Sealer;

    fn request(id: &str, at_unix_ms: u64) -> Change {
        Change::PutRequest(RequestRecord {
            request_id: id.into(),
            fingerprint: [0; 32],
            at_unix_ms,
            response: Response {
                outcome: Outcome::Rejected(crate::registry::Rejection::UnknownIdentity),
                log_index: 1,
            },
        })
    }

    /// The expiry scan is skipped while nothing is due, and finds stored and staged request
    /// times alike once something is.
    #[test]
    fn requests_before_sees_the_database_and_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Sealer::new((1, [7; 32]), [])).unwrap();
        let mut first = Staged::new(&store, StateDigest::default());
        first.stage(request("old", 1_000)).unwrap();
        first.stage(request("newer", 5_000)).unwrap();
        store.db().write(first.batch).unwrap();

        let mut staged = Staged::new(&store, StateDigest::default());
        staged.stage(request("staged", 2_000)).unwrap();
        assert_eq!(
            staged.requests_before(500, 10).unwrap(),
            vec![],
            "nothing stored or staged before 500"
        );
        assert_eq!(
            staged.requests_before(3_000, 10).unwrap(),
            vec![(1_000, "old".to_string()), (2_000, "staged".to_string())]
        );
        staged
            .stage(Change::ForgetRequest {
                request_id: "old".into(),
                at_unix_ms: 1_000,
            })
            .unwrap();
        assert_eq!(
            staged.requests_before(6_000, 10).unwrap(),
            vec![(2_000, "staged".to_string()), (5_000, "newer".to_string())],
            "a request forgotten in this batch is not due again"
        );
    }
}
